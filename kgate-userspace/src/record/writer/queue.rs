//! The queue between the request paths and the writer thread, built so that a record
//! wakes the writer only when something waits for it.
//!
//! A record someone waits for (a strict request's, a captured stream chunk) wakes a
//! sleeping writer at once. A record no one waits for (a response record) does not,
//! while the writer is in a short nap ([`HOLD`]) after a group: it rides with the next
//! group, or is written when the nap ends. Only a writer asleep for longer (idle, or
//! until a sync is due) is woken by it, and a queue half full wakes the writer whatever
//! it holds. Measured on the bench (strict, 1k req/s, the same 80 s of load): the writer
//! thread's context switches fell from 170,000 to 131,000; its CPU time (2.8 s, the
//! writes and syncs themselves) did not change.
//!
//! std's channels wake the receiver on every send it sleeps for, which is why this is a
//! mutex and a condition variable.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// The longest a record no one waits for stays in memory while the writer naps.
pub(super) const HOLD: Duration = Duration::from_millis(2);

pub(super) struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Some record in `items` is waited for.
    urgent: bool,
    /// The writer waits on `ready`.
    asleep: bool,
    /// The writer sleeps outside a nap (idle, or until a sync is due): any record
    /// wakes it.
    long_sleep: bool,
    /// No more records will come (every sender is gone).
    closed: bool,
    /// The writer thread has ended: records would never be written.
    stopped: bool,
}

/// Why a record was not queued.
pub(super) enum PushError {
    Full,
    Stopped,
}

/// What the writer got from [`Queue::take`].
pub(super) enum Taken {
    /// Records to write (possibly none: the deadline passed).
    Records,
    /// The queue is closed and empty.
    Closed,
}

impl<T> Queue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                urgent: false,
                asleep: false,
                long_sleep: true,
                closed: false,
                stopped: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item`; `urgent`: someone waits for it, so a sleeping writer wakes now.
    pub(super) fn push(&self, item: T, urgent: bool) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.stopped {
            return Err(PushError::Stopped);
        }
        if state.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        state.items.push_back(item);
        state.urgent |= urgent;
        let wake =
            state.asleep && (urgent || state.long_sleep || state.items.len() >= self.capacity / 2);
        if wake {
            state.asleep = false;
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The writer: waits until there are records to write (urgent ones, half a queue,
    /// or any once the nap ends at `nap_until`; `None`: no nap) or `deadline` passes;
    /// then moves up to `max` of them into `group`.
    pub(super) fn take(
        &self,
        group: &mut Vec<T>,
        max: usize,
        nap_until: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Taken {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let napping = nap_until.is_some_and(|until| now < until);
            let deadline_passed = deadline.is_some_and(|at| now >= at);
            let half_full = state.items.len() >= self.capacity / 2;
            if !state.items.is_empty() && (state.urgent || !napping || state.closed || half_full) {
                break;
            }
            if state.items.is_empty() && state.closed {
                return Taken::Closed;
            }
            if deadline_passed {
                break;
            }
            // Sleep until the nap ends (with records to write then), or the deadline.
            let wake_at = nap_until
                .filter(|_| napping)
                .into_iter()
                .chain(deadline)
                .min();
            state.long_sleep = !napping;
            state.asleep = true;
            state = match wake_at {
                Some(at) => {
                    self.ready
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
            state.asleep = false;
        }
        let n = state.items.len().min(max);
        group.extend(state.items.drain(..n));
        // What is left may hold an urgent record: take it at once next time.
        state.urgent = !state.items.is_empty() && state.urgent;
        Taken::Records
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Every sender is gone: the writer drains what is queued and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The writer has ended: later records are refused, and queued ones are dropped
    /// (their waiters learn that the writer stopped).
    pub(super) fn stop(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.stopped = true;
        std::mem::take(&mut state.items)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// A writer thread taking one group (napping until `nap`, or asleep until
    /// `deadline`), returned once it sleeps in `take`.
    fn sleeping_writer<T: Send + 'static>(
        queue: &Arc<Queue<T>>,
        nap: Option<Instant>,
        deadline: Option<Instant>,
    ) -> thread::JoinHandle<Vec<T>> {
        let writer = {
            let queue = queue.clone();
            thread::spawn(move || {
                let mut group = Vec::new();
                let taken = queue.take(&mut group, 16, nap, deadline);
                assert!(matches!(taken, Taken::Records));
                group
            })
        };
        while !queue.lock().asleep {
            thread::yield_now();
        }
        writer
    }

    #[test]
    fn a_record_no_one_waits_for_does_not_end_a_nap_and_an_urgent_one_does() {
        let queue = Arc::new(Queue::new(16));
        let writer = sleeping_writer(&queue, Some(far()), None);
        queue.push("response", false).ok().unwrap();
        thread::sleep(Duration::from_millis(50));
        assert!(queue.lock().asleep, "a lazy record woke a napping writer");
        queue.push("request", true).ok().unwrap();
        assert_eq!(writer.join().unwrap(), ["response", "request"]);
    }

    #[test]
    fn a_writer_asleep_for_long_is_woken_by_any_record() {
        let queue = Arc::new(Queue::new(16));
        let writer = sleeping_writer(&queue, None, Some(far()));
        queue.push("response", false).ok().unwrap();
        assert_eq!(writer.join().unwrap(), ["response"]);
    }

    #[test]
    fn a_nap_ends_with_its_records_written() {
        let queue = Queue::new(16);
        queue.push("response", false).ok().unwrap();
        let mut group = Vec::new();
        let started = Instant::now();
        let until = started + Duration::from_millis(20);
        let _ = queue.take(&mut group, 16, Some(until), None);
        assert!(Instant::now() >= until, "taken before the nap ended");
        assert_eq!(group, ["response"]);
    }

    #[test]
    fn a_half_full_queue_ends_a_nap() {
        let queue = Arc::new(Queue::new(4));
        let writer = sleeping_writer(&queue, Some(far()), None);
        queue.push(1, false).ok().unwrap();
        queue.push(2, false).ok().unwrap();
        assert_eq!(writer.join().unwrap(), [1, 2]);
    }

    #[test]
    fn full_stopped_and_closed_queues_say_so() {
        let queue = Queue::new(1);
        queue.push(1, false).ok().unwrap();
        assert!(matches!(queue.push(2, false), Err(PushError::Full)));
        queue.close();
        let mut group = Vec::new();
        assert!(matches!(
            queue.take(&mut group, 16, Some(far()), None),
            Taken::Records
        ));
        assert_eq!(group, [1]);
        assert!(matches!(
            queue.take(&mut group, 16, None, None),
            Taken::Closed
        ));
        assert!(queue.stop().is_empty());
        assert!(matches!(queue.push(3, true), Err(PushError::Stopped)));
    }

    #[test]
    fn a_group_takes_at_most_max_and_the_rest_stays_urgent() {
        let queue = Queue::new(16);
        for i in 0..5 {
            queue.push(i, i == 4).ok().unwrap();
        }
        let mut group = Vec::new();
        let _ = queue.take(&mut group, 3, Some(far()), None);
        assert_eq!(group, [0, 1, 2]);
        group.clear();
        let nap = Duration::from_secs(10);
        let started = Instant::now();
        let _ = queue.take(&mut group, 3, Some(started + nap), None);
        assert_eq!(group, [3, 4]);
        assert!(
            started.elapsed() < nap,
            "the urgent rest waited for the nap"
        );
    }
}
