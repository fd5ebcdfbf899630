//! Worker threads. Each runs a single-threaded runtime that serves the client
//! connections handed to it, with its own connections to the API server, so a
//! request never leaves the thread that read it.
//!
//! A request crosses several tasks: the client connection's, the request's own (for
//! HTTP/2), and the upstream connection's. On one work-stealing runtime, each hand-off
//! at moderate load woke a parked thread on the other core and moved the work there.
//! With a connection and its upstream pinned to one thread those wakes are gone: over
//! HTTP/2 the added median fell by about a third and the CPU per request by a fifth
//! (docs/bench.md). A connection never moves, so each new one goes to the worker with
//! the fewest open.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::{net::TcpStream, sync::mpsc};
use tracing::{Instrument as _, error, info_span, warn};

use super::{Proxy, forward::Upstream, serve_connection};
use crate::metrics::WorkerLabels;

type Incoming = (std::net::TcpStream, SocketAddr);

/// The worker threads, and where the next connection goes.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least loaded worker starts, so that ties rotate.
    next: AtomicUsize,
}

struct Worker {
    incoming: mpsc::UnboundedSender<Incoming>,
    /// Connections handed to the worker and not yet closed (also a metric).
    open: Gauge<i64, AtomicI64>,
}

// === impl Workers ===

impl Workers {
    /// Starts one worker thread per upstream (each worker owns one).
    pub(crate) fn start(proxy: &Arc<Proxy>, upstreams: Vec<Upstream>) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(upstreams.len());
        for (index, upstream) in upstreams.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (incoming, received) = mpsc::unbounded_channel();
            let open = proxy
                .metrics
                .node
                .open_connections
                .get_or_create(&WorkerLabels {
                    worker: u32::try_from(index).unwrap_or(u32::MAX),
                })
                .clone();
            let (proxy, counted) = (proxy.clone(), open.clone());
            std::thread::Builder::new()
                .name(format!("kgate-worker-{index}"))
                .spawn(move || runtime.block_on(serve(proxy, upstream, received, counted)))?;
            workers.push(Worker { incoming, open });
        }
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands an accepted connection to the worker with the fewest open connections.
    pub(crate) fn dispatch(&self, tcp: TcpStream, peer: SocketAddr) {
        let mut connection = match tcp.into_std() {
            Ok(tcp) => (tcp, peer),
            Err(error) => {
                warn!(%error, %peer, "cannot hand the connection to a worker");
                return;
            }
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for worker in least_loaded(&self.workers, start, |w| w.open.get()) {
            worker.open.inc();
            match worker.incoming.send(connection) {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    worker.open.dec();
                    connection = returned;
                }
            }
        }
        error!(%peer, "no worker thread is running: connection closed");
    }
}

/// `workers` from the least loaded to the most, ties in rotating order from `start`.
fn least_loaded<T>(workers: &[T], start: usize, load: impl Fn(&T) -> i64) -> Vec<&T> {
    let n = workers.len().max(1);
    let mut order: Vec<(i64, usize, &T)> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| (load(w), (i + n - start % n) % n, w))
        .collect();
    order.sort_by_key(|&(load, rank, _)| (load, rank));
    order.into_iter().map(|(_, _, w)| w).collect()
}

/// One worker's accept side: serves every connection it is handed until the agent
/// stops.
async fn serve(
    proxy: Arc<Proxy>,
    upstream: Upstream,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    open: Gauge<i64, AtomicI64>,
) {
    let upstream = Arc::new(upstream);
    while let Some((tcp, peer)) = incoming.recv().await {
        let closed = Closed(open.clone());
        let tcp = match TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(error) => {
                warn!(%error, %peer, "worker cannot take the connection");
                continue;
            }
        };
        let (proxy, upstream) = (proxy.clone(), upstream.clone());
        tokio::spawn(
            async move {
                serve_connection(proxy, upstream, tcp, peer).await;
                drop(closed);
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

/// Counts a connection closed when dropped, however its task ends.
struct Closed(Gauge<i64, AtomicI64>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::least_loaded;

    /// The workers' indices in the order `least_loaded` gives for these loads.
    fn order(loads: &[i64], start: usize) -> Vec<usize> {
        let workers: Vec<(usize, i64)> = loads.iter().copied().enumerate().collect();
        least_loaded(&workers, start, |w| w.1)
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_ties_rotate() {
        // Fewest open first; of two with one open, the first from where the search
        // starts. Every worker is in the order, so a dead one can be skipped.
        assert_eq!(order(&[3, 1, 1, 2], 0), [1, 2, 3, 0]);
        assert_eq!(order(&[3, 1, 1, 2], 2), [2, 1, 3, 0]);
        assert_eq!(order(&[3, 1, 1, 2], 3), [1, 2, 3, 0]);
        // Equal loads spread round robin, also once the counter wraps past the count.
        let firsts: Vec<usize> = (0..5).map(|start| order(&[0, 0, 0], start)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1]);
    }
}
