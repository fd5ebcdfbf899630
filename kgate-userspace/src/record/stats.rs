//! The recorder's counters, read by `/metrics` and `/status`: the writer's and the
//! webhook sink's. Plain atomics, below both, so neither imports the other for them.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64},
};

/// Counters anyone may read (`/metrics` shows them).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records written to the log (or to stdout, without a log).
    pub written: AtomicU64,
    /// Records lost because the queue was full.
    pub dropped: AtomicU64,
    /// Records refused because they were empty or larger than [`super::log::MAX_RECORD`].
    pub too_large: AtomicU64,
    /// Groups whose write or sync failed.
    pub write_errors: AtomicU64,
    /// Records in those groups: lost in batch mode, refused requests in strict mode.
    pub write_failed_records: AtomicU64,
    /// The last write or sync failed (the next one that succeeds clears it).
    pub failing: AtomicBool,
    /// Damaged segments the recovery scan found at start-up.
    pub damaged_segments: AtomicU64,
    /// `fdatasync` calls made.
    pub syncs: AtomicU64,
    /// The sequence number after the last durable record (with a log).
    pub durable_end: AtomicU64,
    /// The webhook sink's counters.
    pub webhook: WebhookStats,
}

/// The webhook sink's counters.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// A webhook is configured.
    pub enabled: AtomicBool,
    /// Records the receiver acknowledged.
    pub sent: AtomicU64,
    /// POSTs that failed (refused, non-2xx, timed out), each retry counted.
    pub failed_attempts: AtomicU64,
    /// Records passed over because they could not be read (deleted by retention
    /// before they were sent, damaged) or were not JSON.
    pub skipped: AtomicU64,
    /// Records the receiver rejected as bad (400, 413, 415, 422) even alone.
    pub rejected: AtomicU64,
    /// The last POST failed (the next one that gets an answer clears it).
    pub failing: AtomicBool,
    /// The sequence number after the last record the receiver acknowledged (or that
    /// was skipped): with [`Stats::durable_end`], the lag.
    pub acked: Arc<AtomicU64>,
}
