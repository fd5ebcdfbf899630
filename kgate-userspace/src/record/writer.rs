//! The writer thread: the one owner of the record log. Requests hand it serialized
//! events over a bounded queue; it writes whatever has queued up as one group.
//!
//! - `strict`: a group with a record that asked for an acknowledgement (a request
//!   about to be forwarded) is written and `fdatasync`ed, then those records get it:
//!   concurrent requests share one sync (group commit). A failed write or sync is
//!   acknowledged as an error, and the request path refuses the request (fail
//!   closed). A group no one waits for (response records) is written and rides on
//!   the next sync, at most 100 ms later. Captured stream chunks are acknowledged
//!   (a stream's backlog bound waits on it), so a group holding them is synced at
//!   once.
//! - `batch`: groups are written as they come and synced every `flush` interval;
//!   nothing waits for the disk.
//!
//! In both, after a group the writer naps for 2 ms ([`queue::HOLD`]): records no one
//! waits for (response records) queue up meanwhile without waking it, and go with the
//! next group. So a busy proxy hands them over without a wake-up each ([`queue`]).
//!
//! In strict mode the log keeps a reserve ([`Log::reserve`]): the writer tops it up
//! after a group's acknowledgements when nothing else is queued, so that each
//! request's sync overwrites zeros instead of growing the file.
//!
//! The thread runs under `SCHED_BATCH` ([`sched`]): it never preempts the request
//! that wakes it.
//!
//! A full queue is never silent: the record is counted in [`Stats::dropped`] and a
//! warning is logged (rate limited), and a strict request is refused.

use std::{
    io::{self, Write},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};
use tracing::{debug, error, warn};

use self::queue::{PushError, Queue, Taken};
use super::{
    log::{self, Log, Position},
    stats::Stats,
};

mod queue;
// The one system call std offers no wrapper for.
#[allow(unsafe_code)]
mod sched;

/// The most records written as one group.
const MAX_GROUP: usize = 4096;
/// In strict mode, how long a written record no request waits for may stay unsynced.
const LAZY_SYNC: Duration = Duration::from_millis(100);

pub(crate) type Ack = oneshot::Receiver<Result<(), String>>;

struct Item {
    payload: Vec<u8>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Where the writer puts records.
pub struct Sinks {
    pub log: Option<Log>,
    /// Also print each record as a JSON line on stdout.
    pub stdout: bool,
    /// Where the log's durable end is published after each sync, for readers that
    /// follow the writer (the webhook sink): they never read what a crash could undo.
    pub committed: Option<watch::Sender<Position>>,
}

/// The request side of the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: Arc<Senders>,
    stats: Arc<Stats>,
    last_drop_warning: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// The senders' hold on the queue: when the last goes, the writer drains it and ends.
struct Senders(Arc<Queue<Item>>);

impl Drop for Senders {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Ends the queue when the writer thread ends, however it ends: later records are
/// refused, and the waiters of queued ones learn that the writer stopped.
struct Stopping(Arc<Queue<Item>>);

impl Drop for Stopping {
    fn drop(&mut self) {
        drop(self.0.stop());
    }
}

/// Why a record was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the record queue is full")]
    QueueFull,
    #[error("the record writer has stopped")]
    WriterStopped,
    #[error("the record is larger than {} bytes", log::MAX_RECORD)]
    TooLarge,
}

// === impl Writer ===

impl Writer {
    /// Starts the writer thread. `flush` is `None` in strict mode (sync every group).
    pub fn spawn(
        sinks: Sinks,
        capacity: usize,
        flush: Option<Duration>,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        let queue = Arc::new(Queue::new(capacity));
        let thread_stats = stats.clone();
        let stopping = Stopping(queue.clone());
        std::thread::Builder::new()
            .name("kgate-record".into())
            .spawn(move || {
                sched::batch();
                run(sinks, &stopping.0, flush, &thread_stats);
                drop(stopping);
            })?;
        Ok(Self {
            queue: Arc::new(Senders(queue)),
            stats,
            last_drop_warning: Arc::default(),
        })
    }

    /// Queues a record; with `ack`, the returned receiver resolves once the record is
    /// durable (strict) or written (batch).
    pub fn submit(&self, payload: Vec<u8>, ack: bool) -> Result<Option<Ack>, SubmitError> {
        if payload.len() > log::MAX_RECORD || payload.is_empty() {
            self.stats.too_large.fetch_add(1, Ordering::Relaxed);
            warn!(bytes = payload.len(), "record dropped: empty or too large");
            return Err(SubmitError::TooLarge);
        }
        let (tx, rx) = if ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        match self.queue.0.push(Item { payload, ack: tx }, ack) {
            Ok(()) => Ok(rx),
            Err(PushError::Full) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self
                    .last_drop_warning
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    *last = Some(Instant::now());
                    warn!(dropped, "record queue full: records are being dropped");
                }
                Err(SubmitError::QueueFull)
            }
            Err(PushError::Stopped) => Err(SubmitError::WriterStopped),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

fn run(mut sinks: Sinks, queue: &Queue<Item>, flush: Option<Duration>, stats: &Stats) {
    let mut buf = Vec::new();
    let mut group: Vec<Item> = Vec::new();
    // When the oldest written but unsynced record was written.
    let mut dirty: Option<Instant> = None;
    // After a group: until when records no one waits for do not wake the writer.
    let mut nap_until: Option<Instant> = None;
    let sync_every = flush.unwrap_or(LAZY_SYNC);
    let stdout = io::stdout();
    loop {
        // Wait for records; with unsynced records, no longer than the sync is due.
        let sync_at = dirty.map(|since| since + sync_every);
        if let Taken::Closed = queue.take(&mut group, MAX_GROUP, nap_until, sync_at) {
            if dirty.is_some()
                && let Some(log) = &mut sinks.log
            {
                let _ = log.sync();
            }
            return;
        }
        let mut result = Ok(());
        if !group.is_empty() {
            buf.clear();
            for item in &group {
                log::frame(&item.payload, &mut buf);
            }
            if let Some(log) = &mut sinks.log {
                result = log.append(&buf, group.len() as u64);
                dirty.get_or_insert_with(Instant::now);
            }
            if sinks.stdout {
                let mut out = stdout.lock();
                // Log shippers get the audit events; captured stream frames (exec
                // stdin/stdout, unmaskable) stay in the node's log.
                for item in group
                    .iter()
                    .filter(|i| super::event::is_audit_event(&i.payload))
                {
                    let _ = out.write_all(&item.payload);
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
            }
        }
        let waited_for = group.iter().any(|item| item.ack.is_some());
        let sync_due = (flush.is_none() && waited_for)
            || dirty.is_some_and(|since| since.elapsed() >= sync_every);
        if result.is_ok()
            && sync_due
            && let Some(log) = &mut sinks.log
        {
            result = log.sync();
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            dirty = None;
            if result.is_ok()
                && let Some(committed) = &sinks.committed
            {
                let end = log.end();
                stats.durable_end.store(end.seq, Ordering::Relaxed);
                committed.send_replace(end);
            }
        }
        let result = result.map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                // Only written records prove the disk takes them again: a sync with
                // nothing new to write succeeds on a full disk too.
                if !group.is_empty() {
                    stats.failing.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .write_failed_records
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                stats.failing.store(true, Ordering::Relaxed);
                error!(error = %e, records = group.len(), "record log write failed");
            }
        }
        let busy = !group.is_empty();
        for item in group.drain(..) {
            if let Some(ack) = item.ack {
                let _ = ack.send(result.clone());
            }
        }
        // After the acknowledgements and only with nothing queued, so that no record
        // waits for the zeros: a stream going at the disk's pace, or a saturated
        // proxy, appends as without a reserve instead of writing twice.
        if busy
            && queue.is_empty()
            && let Some(log) = &mut sinks.log
            && let Err(error) = log.reserve_ahead()
        {
            // Records still go into what is left of the reserve, and fail when it is
            // used up. The disk is full either way, so the recorder says so now: a
            // small record that fits where a larger one just failed must not make it
            // look writable while requests are refused.
            stats.failing.store(true, Ordering::Relaxed);
            debug!(%error, "cannot zero-fill the record log ahead");
        }
        nap_until = busy.then(|| Instant::now() + queue::HOLD);
    }
}
