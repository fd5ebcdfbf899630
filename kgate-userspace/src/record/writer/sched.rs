//! The writer thread's scheduling policy: `SCHED_BATCH`, so that a request waking it
//! is not preempted by it.
//!
//! Under the default policy the woken writer preempts the worker thread that queued
//! the record, on the worker's CPU, before the worker has sent the request upstream:
//! in strict mode that is once per request, on its critical path. Measured on the
//! bench (2 cores, 1k req/s, `fdatasync` turned off to isolate the wake-up): the
//! record stage before forwarding took 28–40 µs on average with the default policy
//! and 10–14 µs with `SCHED_BATCH`; strict mode at saturation went from 0.74–0.79×
//! nginx's req/s to 0.78–0.90×. A `SCHED_BATCH` thread keeps its normal share of the
//! CPU; it only waits for the next scheduling point instead of preempting, and a
//! request that waits for its record (a write) yields its CPU to it at once.
//!
//! The other way, a writer that takes a CPU as soon as a record or its sync's
//! completion wakes it, measured no better for strict reads at 1k req/s: three
//! alternating rounds each of `SCHED_FIFO` (priority 1), nice −10 and `SCHED_BATCH`
//! put strict reads +34 to +124 µs, +48 to +93 µs and +34 to +136 µs behind batch at
//! the median (docs/bench.md).

use tracing::debug;

/// Puts the calling thread under `SCHED_BATCH`; a failure leaves it as it was.
pub(super) fn batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the one sched_param passed by reference, which
    // outlives the call; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
    if rc != 0 {
        debug!(error = %std::io::Error::last_os_error(), "the record writer keeps the default scheduling policy");
    }
}
