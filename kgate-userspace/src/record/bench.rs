//! What making a record durable costs, measured in-process for `cargo xtask bench`
//! (`kgate bench-record DIR`, hidden): the disk's own `fdatasync`, the log's append
//! and sync on the caller's thread, and the path strict mode takes (the request's
//! task hands the record to the writer thread and waits for its acknowledgement),
//! one record at a time at 1k records/s, as a request at 1k req/s would.
//!
//! The difference between the last two is what the two thread hand-offs cost (the
//! writer thread's wake-up, and the acknowledgement waking the request's worker).
//!
//! Only with the `bench` feature: the agent people run ships no benchmark code.

use std::{
    fs::OpenOptions,
    os::unix::fs::FileExt as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    STRICT_RESERVE,
    log::{self, Limits, Log},
    stats::Stats,
    writer::{Sinks, Writer},
};

/// The size of a typical `RequestReceived` event at level Metadata.
const PAYLOAD: usize = 600;
/// The pause between records: 1k records/s, so that each one finds the threads idle.
const GAP: Duration = Duration::from_millis(1);

/// Latencies of one way, nanoseconds, sorted.
pub(crate) struct Samples(Vec<u64>);

impl Samples {
    /// The `p`th percentile in µs.
    pub(crate) fn us(&self, p: f64) -> f64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let at = ((self.0.len() as f64 - 1.0) * p / 100.0).round() as usize;
        #[allow(clippy::cast_precision_loss)]
        let ns = self.0.get(at).copied().unwrap_or(0) as f64;
        ns / 1000.0
    }
}

/// Records made durable per second by [`THREADS`] threads of [`TASKS`] tasks each,
/// every task waiting for its record before making the next (a saturated proxy).
pub(crate) struct Throughput {
    pub(crate) inline: f64,
    pub(crate) writer: f64,
}

/// The agent's worker threads on this machine's two cores, and requests in flight on
/// each.
const THREADS: usize = 2;
const TASKS: usize = 4;
/// How long each throughput way runs.
const BUSY: Duration = Duration::from_secs(3);

/// The three ways, `count` records each.
pub(crate) struct Costs {
    /// `pwrite` of a framed record over zeros, then `fdatasync`: the disk's cost.
    pub(crate) disk: Samples,
    /// [`Log::append`] and [`Log::sync`] on the calling thread.
    pub(crate) inline: Samples,
    /// [`Writer::submit`] with an acknowledgement, awaited on a current-thread
    /// runtime (as the agent's workers are).
    pub(crate) writer: Samples,
    pub(crate) throughput: Throughput,
}

/// Measures in `dir` (made if missing; its files are removed afterwards), which
/// should be on the disk the record log uses.
pub(crate) fn measure(dir: &Path, count: usize) -> anyhow::Result<Costs> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let payload = vec![b'x'; PAYLOAD];
    let disk = disk(&dir.join("disk"), &payload, count)?;
    let inline = inline(&dir.join("inline"), &payload, count)?;
    let writer = writer(&dir.join("writer"), &payload, count)?;
    let throughput = Throughput {
        inline: busy_inline(&dir.join("busy-inline"), &payload)?,
        writer: busy_writer(&dir.join("busy-writer"), &payload)?,
    };
    for sub in ["disk", "inline", "writer", "busy-inline", "busy-writer"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    Ok(Costs {
        disk,
        inline,
        writer,
        throughput,
    })
}

fn disk(dir: &Path, payload: &[u8], count: usize) -> anyhow::Result<Samples> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("sync"))?;
    let mut framed = Vec::new();
    log::frame(payload, &mut framed);
    let span = (framed.len() * count) as u64;
    // Zeros first, as the log's reserve does: each sync then commits data only.
    file.write_all_at(&vec![0; usize::try_from(span)?], 0)?;
    file.sync_all()?;
    let mut at = 0;
    timed(count, || {
        let start = Instant::now();
        file.write_all_at(&framed, at)?;
        at += framed.len() as u64;
        file.sync_data()?;
        Ok(start.elapsed())
    })
}

fn open_log(dir: &Path) -> anyhow::Result<Log> {
    let limits = Limits {
        segment_bytes: 256 << 20,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    };
    let (mut log, _) = Log::open(dir, limits).context("opening the bench's record log")?;
    log.reserve(STRICT_RESERVE);
    log.reserve_ahead()?;
    Ok(log)
}

fn inline(dir: &Path, payload: &[u8], count: usize) -> anyhow::Result<Samples> {
    let mut log = open_log(dir)?;
    let mut framed = Vec::new();
    timed(count, || {
        let start = Instant::now();
        framed.clear();
        log::frame(payload, &mut framed);
        log.append(&framed, 1)?;
        log.sync()?;
        let took = start.elapsed();
        // As the writer does between groups, off the timed path.
        log.reserve_ahead()?;
        Ok(took)
    })
}

fn writer(dir: &Path, payload: &[u8], count: usize) -> anyhow::Result<Samples> {
    let log = open_log(dir)?;
    let sinks = Sinks {
        log: Some(log),
        stdout: false,
        committed: None,
    };
    let writer = Writer::spawn(sinks, 1024, None, Arc::new(Stats::default()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    timed(count, || {
        // While the acknowledgement is pending, the runtime parks in epoll as an idle
        // worker does.
        runtime.block_on(async {
            let start = Instant::now();
            let ack = writer
                .submit(payload.to_vec(), true)?
                .context("a strict writer acknowledges")?;
            ack.await
                .context("the writer stopped")?
                .map_err(anyhow::Error::msg)?;
            Ok(start.elapsed())
        })
    })
}

/// [`THREADS`] current-thread runtimes of [`TASKS`] tasks, each task running `one`
/// in a loop for [`BUSY`]: records per second.
fn busy<F, Fut>(one: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let one = one.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let tasks = tokio::task::LocalSet::new();
                    let handles: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let one = one.clone();
                            tasks.spawn_local(async move {
                                let mut done = 0_u64;
                                while start.elapsed() < BUSY {
                                    one().await?;
                                    done += 1;
                                }
                                anyhow::Ok(done)
                            })
                        })
                        .collect();
                    tasks
                        .run_until(async {
                            let mut total = 0;
                            for handle in handles {
                                total += handle.await??;
                            }
                            Ok(total)
                        })
                        .await
                })
            })
        })
        .collect();
    let mut total = 0;
    for thread in threads {
        total += thread
            .join()
            .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Each task appends and syncs under one lock, blocking its thread: a sync that
/// finds its record already durable (another task's covered it) is skipped.
fn busy_inline(dir: &Path, payload: &[u8]) -> anyhow::Result<f64> {
    let log = Arc::new(std::sync::Mutex::new((open_log(dir)?, 0_u64)));
    let payload = Arc::new(payload.to_vec());
    busy(move || {
        let (log, payload) = (log.clone(), payload.clone());
        async move {
            let mut framed = Vec::new();
            log::frame(&payload, &mut framed);
            {
                let mut guard = log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let (log, durable) = &mut *guard;
                log.append(&framed, 1)?;
                let mine = log.next_seq();
                if *durable < mine {
                    log.sync()?;
                    *durable = log.next_seq();
                    log.reserve_ahead()?;
                }
            }
            // As a request would go on to other work: the other tasks get their turn.
            tokio::task::yield_now().await;
            Ok(())
        }
    })
}

/// Each task hands its record to the writer thread and waits for the acknowledgement.
fn busy_writer(dir: &Path, payload: &[u8]) -> anyhow::Result<f64> {
    let sinks = Sinks {
        log: Some(open_log(dir)?),
        stdout: false,
        committed: None,
    };
    let writer = Writer::spawn(sinks, 1024, None, Arc::new(Stats::default()))?;
    let payload = Arc::new(payload.to_vec());
    busy(move || {
        let (writer, payload) = (writer.clone(), payload.clone());
        async move {
            let ack = writer
                .submit(payload.to_vec(), true)?
                .context("a strict writer acknowledges")?;
            ack.await
                .context("the writer stopped")?
                .map_err(anyhow::Error::msg)
        }
    })
}

/// Runs `one` `count` times, [`GAP`] apart; `one` times what it measures itself.
fn timed(
    count: usize,
    mut one: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Samples> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        std::thread::sleep(GAP);
        samples.push(u64::try_from(one()?.as_nanos()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    Ok(Samples(samples))
}
