//! Durable request records: `audit.k8s.io/v1` events ([`event`]) and the captured
//! frames of exec/attach/port-forward streams ([`stream`]) in an append-only,
//! segmented, checksummed log ([`log`]) that one writer thread owns ([`writer`]), and
//! the `kgate sessions` views over it ([`sessions`], [`replay`]).
//!
//! The record **stage** (what goes into an event, and when) is
//! [`crate::proxy::record`]; this module is the plumbing beside it.
//!
//! Not here: request or response bodies (only the `Metadata` level is recorded),
//! shipping records off the node.

pub mod event;
pub mod log;
pub mod replay;
pub mod sessions;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod writer;

use std::{
    io,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tracing::info;

use self::{
    event::Event,
    log::{Limits, Log},
    writer::{Sinks, Stats, SubmitError, Writer},
};
use crate::config::{self, Durability};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record.dir {0}: opening the record log failed: {1}")]
    OpenFailed(PathBuf, #[source] io::Error),
    #[error("starting the record writer failed: {0}")]
    WriterStartFailed(#[source] io::Error),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the record log write failed: {0}")]
    WriteFailed(String),
}

/// Where the request path sends its events. Without a sink it only logs them.
pub struct Recorder {
    writer: Option<Writer>,
    durability: Durability,
    /// Events are written durably (a `record.dir`).
    durable: bool,
    stats: Arc<Stats>,
}

// === impl Recorder ===

impl Recorder {
    /// Log lines only.
    pub fn disabled() -> Self {
        Self {
            writer: None,
            durability: Durability::Batch,
            durable: false,
            stats: Arc::default(),
        }
    }

    /// Opens the log (running its recovery scan) and starts the writer.
    pub fn new(cfg: &config::Record) -> Result<Self, RecordError> {
        if cfg.dir.is_none() && !cfg.stdout {
            return Ok(Self::disabled());
        }
        let stats = Arc::new(Stats::default());
        let log = match &cfg.dir {
            Some(dir) => {
                let (log, recovery) = Log::open(dir, limits(cfg))
                    .map_err(|e| RecordError::OpenFailed(dir.clone(), e))?;
                stats
                    .damaged_segments
                    .store(recovery.damaged.len() as u64, Ordering::Relaxed);
                info!(
                    dir = %dir.display(),
                    segments = recovery.segments,
                    records = recovery.records,
                    damaged = recovery.damaged.len(),
                    durability = ?cfg.durability,
                    "record log open"
                );
                Some(log)
            }
            None => None,
        };
        let flush = match cfg.durability {
            Durability::Strict => None,
            Durability::Batch => Some(Duration::from_millis(cfg.flush_millis)),
        };
        let writer = Writer::spawn(
            Sinks {
                log,
                stdout: cfg.stdout,
            },
            cfg.queue_records,
            flush,
            stats.clone(),
        )
        .map_err(RecordError::WriterStartFailed)?;
        Ok(Self {
            writer: Some(writer),
            durability: cfg.durability,
            durable: cfg.dir.is_some(),
            stats,
        })
    }

    /// Whether forwarding must wait until the request's record is durable.
    pub fn strict(&self) -> bool {
        self.durable && self.durability == Durability::Strict
    }

    /// Whether events go anywhere but the log line.
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Records `event` and, in strict mode, waits until it is on disk.
    pub async fn durable(&self, event: &Event) -> Result<(), RecordError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let ack = writer.submit(to_json(event), self.strict())?;
        match ack {
            Some(ack) => match ack.await {
                Ok(result) => result.map_err(RecordError::WriteFailed),
                Err(_) => Err(SubmitError::WriterStopped.into()),
            },
            None => Ok(()),
        }
    }

    /// Records `event` without waiting. A lost record is counted by the writer.
    pub fn submit(&self, event: &Event) {
        if let Some(writer) = &self.writer {
            let _ = writer.submit(to_json(event), false);
        }
    }

    /// Where captured stream frames go; `None` when records go nowhere.
    pub fn stream_sink(&self) -> Option<stream::Sink> {
        self.writer.clone().map(stream::Sink::new)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

fn to_json(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("an event always serializes")
}

fn limits(cfg: &config::Record) -> Limits {
    Limits {
        segment_bytes: cfg.segment_bytes,
        max_bytes: cfg.max_bytes,
        max_age: Duration::from_secs(cfg.max_age_hours.saturating_mul(3600)),
    }
}
