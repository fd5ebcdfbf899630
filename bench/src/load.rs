//! The load generator: an open loop at a fixed arrival rate (latency below
//! saturation), a closed loop (throughput at saturation) and a new-connection loop
//! (TLS handshakes/s).
//!
//! The open loop avoids coordinated omission: request `i` is due at `start + i/rate`
//! whatever happened to the others, a pacer thread releases it at that instant, and
//! its latency runs from the due time, not from when it was sent, so a stall in the
//! server shows as the latency of every request that should have gone out during it.
//! The pacer is an OS thread with 1 µs timer slack (tokio's timer has 1 ms
//! resolution, far coarser than the latencies measured). Its own lateness is part of
//! every row, direct included, and cancels out in the "added" columns.
//!
//! HTTP/2 requests share one warm connection (as client-go does); HTTP/1.1 requests
//! take an idle connection from a warm pool of [`H1_POOL`], waiting (counted) when all
//! are busy.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::client::{Conn, Get, Proto, Target, connect};

/// Warm HTTP/1.1 connections of the open loop.
pub const H1_POOL: usize = 32;

/// Latencies in nanoseconds, 3 significant digits, up to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What one load run measured.
pub struct Outcome {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // request counts stay far below 2^52
        let ok = self.ok as f64;
        ok / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A percentile in µs.
    pub fn us(&self, percentile: f64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ns = self.latency.value_at_quantile(percentile / 100.0) as f64;
        ns / 1000.0
    }
}

/// Collects results from many tasks.
#[derive(Clone)]
struct Tally {
    latency: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Arc::new(Mutex::new(histogram())),
            errors: Arc::new(AtomicU64::new(0)),
            first_error: Arc::new(Mutex::new(None)),
        }
    }

    fn record(&self, result: &anyhow::Result<u64>, since: Instant) {
        match result {
            Ok(_) => {
                let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let mut h = self.latency.lock().expect("histogram lock");
                h.saturating_record(ns);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("error lock");
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn finish(self, elapsed: Duration) -> Outcome {
        let latency = self.latency.lock().expect("histogram lock").clone();
        Outcome {
            ok: latency.len(),
            latency,
            errors: self.errors.load(Ordering::Relaxed),
            first_error: self.first_error.lock().expect("error lock").take(),
            elapsed,
        }
    }
}

/// Warm connections: opened, and each has served a few requests.
async fn warm(target: &Target, proto: Proto, get: &Get, count: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut conn = connect(target, proto).await?;
        for _ in 0..5 {
            conn.get(target, get).await?;
        }
        conns.push(conn);
    }
    Ok(conns)
}

/// Sends `rate` GETs per second for `duration`, on a schedule (see the module doc).
pub async fn open_loop(
    target: &Target,
    proto: Proto,
    get: &Get,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let pool = warm(
        target,
        proto,
        get,
        if proto == Proto::H2 { 1 } else { H1_POOL },
    )
    .await?;
    // Idle connections wait in a channel; a request takes one and gives it back.
    let (idle_tx, idle_rx) = mpsc::unbounded_channel();
    let h2 = pool.first().and_then(Conn::share);
    if h2.is_none() {
        for conn in pool {
            idle_tx.send(conn).ok();
        }
    }
    let idle_rx = Arc::new(tokio::sync::Mutex::new(idle_rx));
    let tally = Tally::new();
    let count = u64::from(rate) * duration.as_secs().max(1);
    let interval = Duration::from_secs(1) / rate.max(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(20);
    let pacer = {
        let (target, get, tally) = (target.clone(), get.clone(), tally.clone());
        std::thread::spawn(move || {
            // The pacer's sleeps end within a microsecond of the due time, not the
            // default 50 µs (Linux timer slack); best effort.
            let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1000");
            for i in 0..count {
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (target, get, tally, done) =
                    (target.clone(), get.clone(), tally.clone(), done_tx.clone());
                let (h2, idle_tx, idle_rx) = (
                    h2.as_ref().and_then(Conn::share),
                    idle_tx.clone(),
                    idle_rx.clone(),
                );
                runtime.spawn(async move {
                    let result = match h2 {
                        Some(mut conn) => conn.get(&target, &get).await,
                        None => {
                            let conn = idle_rx.lock().await.recv().await;
                            match conn {
                                Some(mut conn) => {
                                    let result = conn.get(&target, &get).await;
                                    if result.is_ok() {
                                        idle_tx.send(conn).ok();
                                    } else if let Ok(fresh) = connect(&target, proto).await {
                                        idle_tx.send(fresh).ok();
                                    }
                                    result
                                }
                                None => Err(anyhow::anyhow!("connection pool closed")),
                            }
                        }
                    };
                    tally.record(&result, due);
                    drop(done);
                });
            }
        })
    };
    // Every spawned request holds a sender: the channel closes when the pacer is done
    // and the last request has finished.
    while done_rx.recv().await.is_some() {}
    pacer.join().ok().context("pacer thread panicked")?;
    Ok(tally.finish(start.elapsed()))
}

/// `concurrency` workers, each sending its next GET when the last one is answered,
/// for `duration`. HTTP/1.1: a connection per worker; HTTP/2: the workers share
/// `concurrency / 8` connections (at least one).
pub async fn closed_loop(
    target: &Target,
    proto: Proto,
    get: &Get,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let conns = match proto {
        Proto::H1 => concurrency,
        Proto::H2 => (concurrency / 8).max(1),
    };
    let pool = warm(target, proto, get, conns).await?;
    let mut workers: Vec<Conn> = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        workers.push(match pool[i % conns].share() {
            Some(shared) => shared,
            None => connect(target, proto).await?,
        });
    }
    drop(pool);
    let tally = Tally::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in workers {
        let (target, get, tally) = (target.clone(), get.clone(), tally.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = conn.get(&target, &get).await;
                let failed = result.is_err();
                tally.record(&result, sent);
                if failed {
                    match connect(&target, proto).await {
                        Ok(fresh) => conn = fresh,
                        Err(_) => return,
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(tally.finish(started.elapsed()))
}

/// `concurrency` workers, each opening a new TLS connection per request (HTTP/1.1,
/// one GET, then closed), for `duration`: the cost of a new connection.
pub async fn handshake_loop(
    target: &Target,
    get: &Get,
    concurrency: usize,
    duration: Duration,
) -> Outcome {
    let tally = Tally::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (target, get, tally) = (target.clone(), get.clone(), tally.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = async {
                    let mut conn = connect(&target, Proto::H1).await?;
                    conn.get(&target, &get).await
                }
                .await;
                tally.record(&result, sent);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    tally.finish(started.elapsed())
}

/// Opens `count` HTTP/2 connections, each after one GET, and returns them open and
/// idle (64 handshakes at a time).
pub async fn idle_connections(
    target: &Target,
    get: &Get,
    count: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(count);
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0;
    while conns.len() < count {
        while started < count && tasks.len() < 64 {
            let (target, get) = (target.clone(), get.clone());
            tasks.spawn(async move {
                let mut conn = connect(&target, Proto::H2).await?;
                conn.get(&target, &get).await?;
                anyhow::Ok(conn)
            });
            started += 1;
        }
        match tasks.join_next().await {
            Some(result) => conns.push(result??),
            None => break,
        }
    }
    Ok(conns)
}
