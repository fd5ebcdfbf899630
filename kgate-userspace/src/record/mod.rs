//! Durable request records: `audit.k8s.io/v1` events ([`event`]) and the captured
//! frames of exec/attach/port-forward streams ([`stream`]) in an append-only,
//! segmented, checksummed log ([`log`]) that one writer thread owns ([`writer`]), the
//! `kgate sessions` views over it ([`sessions`], [`replay`]), and its export: JSON
//! lines on stdout (by the writer) and an audit webhook ([`webhook`]) that follows the
//! log with a [`reader`] and a durable [`cursor`]. One agent writes a directory: the
//! log holds its [`lock`].
//!
//! The record **stage** (what goes into an event, and when) is
//! [`crate::proxy::record`]; this module is the plumbing beside it.
//!
//! Not here: response bodies (levels `Metadata` and `Request` only).

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod cursor;
pub mod event;
pub(crate) mod lock;
pub mod log;
pub(crate) mod reader;
pub mod replay;
pub(crate) mod request_object;
pub mod sessions;
pub(crate) mod stats;
pub mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod webhook;
pub(crate) mod writer;

use std::{
    io,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::watch;
use tracing::info;

use self::{
    event::EventRef,
    log::{Limits, Log, OpenError},
    stats::Stats,
    webhook::Sink,
    writer::{Sinks, SubmitError, Writer},
};
use crate::config::{self, Durability, Level};

/// How far ahead strict mode zero-fills the active segment ([`Log::reserve`]): the
/// records of about 700 requests at the default level (a request's two events take
/// about 1.5 KB), topped up when half of it is used.
const STRICT_RESERVE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record.dir {0}: opening the record log failed: {1}")]
    OpenFailed(PathBuf, #[source] io::Error),
    /// Another agent writes the directory, or its lock cannot be taken.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("starting the record writer failed: {0}")]
    WriterStartFailed(#[source] io::Error),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the record log write failed: {0}")]
    WriteFailed(String),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
}

/// A record on its way to disk (see [`Recorder::durable_later`]).
pub(crate) struct Durable(Option<writer::Ack>);

impl Durable {
    /// Resolves once the record is on disk (at once outside strict mode).
    pub(crate) async fn wait(self) -> Result<(), RecordError> {
        match self.0 {
            Some(ack) => match ack.await {
                Ok(result) => result.map_err(RecordError::WriteFailed),
                Err(_) => Err(SubmitError::WriterStopped.into()),
            },
            None => Ok(()),
        }
    }
}

/// Where the request path sends its events. Without a sink it only logs them.
pub struct Recorder {
    writer: Option<Writer>,
    durability: Durability,
    /// Events are written durably (a `record.dir`).
    durable: bool,
    /// At level `Request`, the largest request body recorded.
    request_objects: Option<usize>,
    /// At level `RequestResponse`: the largest response body recorded.
    response_objects: Option<usize>,
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
            request_objects: None,
            response_objects: None,
            stats: Arc::default(),
        }
    }

    /// Opens the log (running its recovery scan) and starts the writer and, when one
    /// is configured, the webhook sink (a task on the current tokio runtime).
    pub fn new(cfg: &config::Record) -> Result<Self, RecordError> {
        if cfg.dir.is_none() && !cfg.stdout {
            return Ok(Self::disabled());
        }
        // Checked before the log is opened: a bad receiver setting changes nothing.
        let sink = cfg.webhook.as_ref().map(Sink::new).transpose()?;
        let stats = Arc::new(Stats::default());
        let log = match &cfg.dir {
            Some(dir) => {
                let (mut log, recovery) = Log::open(dir, limits(cfg)).map_err(|e| match e {
                    OpenError::Locked(e) => RecordError::Lock(e),
                    OpenError::ScanFailed(e) => RecordError::OpenFailed(dir.clone(), e),
                })?;
                if cfg.durability == Durability::Strict {
                    log.reserve(STRICT_RESERVE);
                }
                if sink.is_some() {
                    // Until the sink has loaded its cursor, everything counts as unsent.
                    log.warn_unconsumed(stats.webhook.acked.clone());
                }
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
        let (committed, following) = match &log {
            Some(log) => {
                stats.durable_end.store(log.end().seq, Ordering::Relaxed);
                let (tx, rx) = watch::channel(log.end());
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        if let (Some(sink), Some(dir), Some(following)) = (sink, &cfg.dir, following) {
            tokio::spawn(sink.run(dir.clone(), following, stats.clone()));
        }
        let writer = Writer::spawn(
            Sinks {
                log,
                stdout: cfg.stdout,
                committed,
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
            request_objects: matches!(cfg.level, Level::Request | Level::RequestResponse)
                .then_some(cfg.request_object_max_bytes),
            response_objects: (cfg.level == Level::RequestResponse)
                .then_some(cfg.response_object_max_bytes),
            stats,
        })
    }

    /// Whether forwarding must wait until the request's record is durable.
    pub fn strict(&self) -> bool {
        self.durable && self.durability == Durability::Strict
    }

    /// The audit level of every event.
    pub fn level(&self) -> &'static str {
        match (self.request_objects, self.response_objects) {
            (_, Some(_)) => event::LEVEL_REQUEST_RESPONSE,
            (Some(_), None) => event::LEVEL_REQUEST,
            (None, None) => event::LEVEL_METADATA,
        }
    }

    /// At level `RequestResponse`, the largest response body recorded.
    pub fn response_object_limit(&self) -> Option<usize> {
        self.response_objects.filter(|_| self.enabled())
    }

    /// At level `Request`, the largest request body recorded.
    pub fn request_object_limit(&self) -> Option<usize> {
        self.request_objects
    }

    /// Whether events go anywhere but the log line.
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Records `event` and returns at once; in strict mode the [`Durable`] it returns
    /// resolves when the record is on disk (the request path forwards a read
    /// meanwhile, and waits before any of the answer goes out).
    pub(crate) fn durable_later(&self, event: &EventRef<'_>) -> Result<Durable, RecordError> {
        let Some(writer) = &self.writer else {
            return Ok(Durable(None));
        };
        Ok(Durable(writer.submit(event.to_json(), self.strict())?))
    }

    /// Records `event` without waiting. A lost record is counted by the writer.
    pub fn submit(&self, event: &EventRef<'_>) {
        if let Some(writer) = &self.writer {
            let _ = writer.submit(event.to_json(), false);
        }
    }

    /// The writer, for a record written later (see `proxy::record::response`).
    pub fn writer(&self) -> Option<Writer> {
        self.writer.clone()
    }

    /// Where captured stream frames go; `None` when records go nowhere.
    pub fn stream_sink(&self) -> Option<stream::Sink> {
        self.writer.clone().map(stream::Sink::new)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Whether the last write (and sync) of the log succeeded. Without a log, true.
    pub fn writable(&self) -> bool {
        !self.stats.failing.load(Ordering::Relaxed)
    }
}

fn limits(cfg: &config::Record) -> Limits {
    Limits {
        segment_bytes: cfg.segment_bytes,
        max_bytes: cfg.max_bytes,
        max_age: Duration::from_secs(cfg.max_age_hours.saturating_mul(3600)),
    }
}
