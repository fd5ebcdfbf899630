//! Upstream HTTP/2 connections for HTTP/2 clients' requests, each carrying at most
//! [`STREAMS_PER_LANE`] of them at once, with a connection window that covers every
//! stream's window.
//!
//! One agent speaks for every pod of its node, and over one shared connection two
//! kinds of client could hold every other pod back:
//! - Streams that never end. An HTTP/2 connection carries as many concurrent streams as
//!   the server's `SETTINGS_MAX_CONCURRENT_STREAMS` allows: 250 on kube-apiserver unless
//!   `--http2-max-streams-per-connection` says otherwise (the generic API server makes
//!   Go's default explicit, `secure_serving.go`), and a node's informers easily hold
//!   more watches than that. Over one connection the stream after the limit would wait
//!   for a watch to end, which may be never: the request hangs without an error.
//! - Clients that stop reading. What a stream's client leaves unread holds the
//!   stream's flow-control window, and the connection's window is shared. With hyper's
//!   defaults (2 MiB per stream, 5 MiB per connection) three clients that stopped
//!   reading large lists or watches took the whole connection window, and every other
//!   request on the connection hung.
//!
//! So each lane is a client with a pool of its own (so a connection of its own), and a
//! request takes a slot in the first lane with room, opening a lane when none has any.
//! The slot is given back when the response body is dropped, that is when the request
//! ends either way. A lane's connection window is [`STREAMS_PER_LANE`] stream windows
//! ([`CONNECTION_WINDOW`]), so however many of its clients stop reading, the others'
//! data still flows. The cost is the memory stalled streams may hold: a stream window
//! each (256 KiB), 25 MiB for a full lane of them.
//!
//! Not here: HTTP/1.1 clients' requests (pooled HTTP/1.1, a connection each while they
//! run), and upgrades (HTTP/1.1, a connection each).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Streams per upstream connection: well under kube-apiserver's 250, so that an API
/// server configured lower still has room, and a lost connection takes few watches
/// with it.
pub(super) const STREAMS_PER_LANE: usize = 100;

/// A stream's HTTP/2 flow-control window: what the API server may send ahead of the
/// client. 256 KiB carries a list at 256 MB/s over a 1 ms round trip.
pub(super) const STREAM_WINDOW: u32 = 256 * 1024;

/// A lane's connection window: every stream's window at once, so that no set of
/// streams left unread can take it all ([`STREAMS_PER_LANE`] × [`STREAM_WINDOW`]).
#[allow(clippy::cast_possible_truncation)]
pub(super) const CONNECTION_WINDOW: u32 = STREAMS_PER_LANE as u32 * STREAM_WINDOW;

/// A set of clients, each with its own connection, handed out by free slots.
pub(super) struct Lanes<C> {
    lanes: Mutex<Vec<Lane<C>>>,
    new_lane: Box<dyn Fn() -> C + Send + Sync>,
}

struct Lane<C> {
    client: C,
    open: Arc<AtomicUsize>,
}

/// A taken slot of a lane, given back on drop.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: Clone> Lanes<C> {
    pub(super) fn new(new_lane: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Self {
            lanes: Mutex::new(Vec::new()),
            new_lane: Box::new(new_lane),
        }
    }

    /// The client of the first lane with a free slot (a new lane when all are full),
    /// and the slot.
    pub(super) fn take(&self) -> (C, Slot) {
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lane = match lanes
            .iter()
            .position(|l| l.open.load(Ordering::Acquire) < STREAMS_PER_LANE)
        {
            Some(i) => &lanes[i],
            None => {
                lanes.push(Lane {
                    client: (self.new_lane)(),
                    open: Arc::new(AtomicUsize::new(0)),
                });
                lanes.last().expect("just pushed")
            }
        };
        lane.open.fetch_add(1, Ordering::AcqRel);
        (lane.client.clone(), Slot(lane.open.clone()))
    }

    /// Lanes opened so far, and slots taken in each.
    #[cfg(test)]
    fn load(&self) -> Vec<usize> {
        let lanes = self.lanes.lock().expect("not poisoned");
        lanes
            .iter()
            .map(|l| l.open.load(Ordering::Acquire))
            .collect()
    }
}

/// A response body that holds its lane's slot until it is dropped.
pub(super) struct Held<B> {
    inner: B,
    _slot: Slot,
}

impl<B> Held<B> {
    pub(super) fn new(inner: B, slot: Slot) -> Self {
        Self { inner, _slot: slot }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Held<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Lanes, STREAMS_PER_LANE};

    #[test]
    fn a_lane_takes_at_most_its_streams_and_freed_slots_are_reused() {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let lanes = Lanes::new(|| MADE.fetch_add(1, Ordering::SeqCst));
        let mut slots: Vec<_> = (0..STREAMS_PER_LANE * 2 + 1)
            .map(|_| lanes.take())
            .collect();
        assert_eq!(
            lanes.load(),
            [STREAMS_PER_LANE, STREAMS_PER_LANE, 1],
            "a third lane only when two are full"
        );
        assert_eq!(slots[0].0, 0);
        assert_eq!(slots[STREAMS_PER_LANE].0, 1);
        // A watch of the first lane ends: the next one goes there, not to a new lane.
        slots.swap_remove(3);
        let (client, _slot) = lanes.take();
        assert_eq!(client, 0);
        assert_eq!(lanes.load(), [STREAMS_PER_LANE, STREAMS_PER_LANE, 1]);
        drop(slots);
        assert_eq!(lanes.load(), [1, 0, 0]);
        assert_eq!(MADE.load(Ordering::SeqCst), 3);
    }
}
