//! The `record:` section: where request records go, how durably, and where they are
//! exported (stdout, an audit webhook). Validated with the rest of the config.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Where request records go. Every request becomes an `audit.k8s.io/v1` `Event`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Record {
    /// `Metadata` (default): who, what, the decision and the outcome, no bodies.
    /// `Request`: also the request's body as `requestObject` (on the event of the
    /// response, as kube-apiserver does), when it is JSON, a JSON object where
    /// masking rules cover the resource, and at most `requestObjectMaxBytes`; masked
    /// by the `mask` rules whoever the caller is. Otherwise the event says why it has
    /// none (`kgate.io/request-object`). `RequestResponse`: also the response's body as
    /// `responseObject`, as the client got it (masked), when it is JSON and at most
    /// `responseObjectMaxBytes`; that event is written once the body has been sent.
    /// Watches and streams keep their bodies out of the record at every level.
    #[serde(default)]
    pub level: Level,
    /// The largest request body recorded at level `Request`. Default 262144 (256 KiB).
    #[serde(default = "default_request_object_max_bytes")]
    pub request_object_max_bytes: usize,
    /// The largest response body recorded at level `RequestResponse`. Default 262144
    /// (256 KiB).
    #[serde(default = "default_request_object_max_bytes")]
    pub response_object_max_bytes: usize,
    /// Directory of the durable record log (segment files). Default: none, so no
    /// records are written to disk and each request is a log line only. One agent per
    /// directory: the agent locks it (`LOCK`) at start-up, and a second agent on it
    /// exits with an error naming the holder's PID.
    pub dir: Option<PathBuf>,
    /// `strict` (default): a forwarded request's `RequestReceived` record is on disk
    /// (`fdatasync`, shared by concurrent requests) before the request is forwarded,
    /// and a request whose record cannot be written is refused with a 503. `batch`:
    /// records are queued and synced every `flushMillis`; a full queue or a failed
    /// write loses records (counted and logged), never requests.
    #[serde(default)]
    pub durability: Durability,
    /// A segment file is closed and a new one started past this size. Default 64 MiB.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// The oldest segments are deleted while the log is larger. Default 1 GiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Segments older than this are deleted. Default 168 (7 days).
    #[serde(default = "default_max_age_hours")]
    pub max_age_hours: u64,
    /// Records waiting for the writer, at most. Default 65536.
    #[serde(default = "default_queue_records")]
    pub queue_records: usize,
    /// In `batch` mode, how often the log is synced, in milliseconds. Default 1000.
    #[serde(default = "default_flush_millis")]
    pub flush_millis: u64,
    /// Also print every record as a JSON line on stdout (with or without `dir`), for
    /// log shippers. Default `false`.
    #[serde(default)]
    pub stdout: bool,
    /// Send the durable log's records to an audit webhook. Needs `dir`. Default: off.
    #[serde(default)]
    pub webhook: Option<Webhook>,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            level: Level::default(),
            request_object_max_bytes: default_request_object_max_bytes(),
            response_object_max_bytes: default_request_object_max_bytes(),
            dir: None,
            durability: Durability::default(),
            segment_bytes: default_segment_bytes(),
            max_bytes: default_max_bytes(),
            max_age_hours: default_max_age_hours(),
            queue_records: default_queue_records(),
            flush_millis: default_flush_millis(),
            stdout: false,
            webhook: None,
        }
    }
}

/// An audit level, as kube-apiserver's audit policy names them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Level {
    #[default]
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Durability {
    #[default]
    Strict,
    Batch,
}

/// An audit webhook: what kube-apiserver's `--audit-webhook-*` backend talks to. The
/// durable log's records are POSTed as `audit.k8s.io/v1` `EventList` batches over
/// HTTPS; a non-2xx answer or no answer is a failure, retried with capped exponential
/// backoff, forever (records wait in the log, bounded by its retention), except that
/// a batch rejected as bad (400, 413, 415, 422) is split down to the records the
/// receiver refuses even alone, which are skipped and counted. Delivery is
/// at least once: a batch the receiver took but whose acknowledgement kgate did not
/// persist (a crash in between) is sent again.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// `https://host[:port]/path` of the receiver. Required.
    pub url: String,
    /// CA bundle (PEM) that signs the receiver's certificate. Required.
    pub ca_file: PathBuf,
    /// Name to verify the receiver's certificate against. Default: the URL's host.
    pub server_name: Option<String>,
    /// Bearer token sent with each batch, re-read for every batch (so it may
    /// rotate). Default: none.
    pub token_file: Option<PathBuf>,
    /// The most records in one batch. Default 400 (kube-apiserver's
    /// `--audit-webhook-batch-max-size`).
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// How long a record may wait for its batch to fill before the batch is sent
    /// anyway, in milliseconds. Default 1000.
    #[serde(default = "default_batch_max_wait_millis")]
    pub batch_max_wait_millis: u64,
    /// The wait before the first retry of a failed batch, in milliseconds; it doubles
    /// with each further failure. Default 500.
    #[serde(default = "default_initial_backoff_millis")]
    pub initial_backoff_millis: u64,
    /// The longest wait between retries, in milliseconds. Default 30000.
    #[serde(default = "default_max_backoff_millis")]
    pub max_backoff_millis: u64,
    /// How long one POST may take before it counts as failed, in seconds. Default 30.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_request_object_max_bytes() -> usize {
    256 << 10
}

/// The API server's own limit on a request body (3 MiB): nothing larger arrives.
const MAX_REQUEST_OBJECT_BYTES: usize = 3 << 20;

fn default_segment_bytes() -> u64 {
    64 << 20
}

fn default_max_bytes() -> u64 {
    1 << 30
}

fn default_max_age_hours() -> u64 {
    7 * 24
}

fn default_queue_records() -> usize {
    65536
}

fn default_flush_millis() -> u64 {
    1000
}

fn default_batch_max_records() -> usize {
    400
}

fn default_batch_max_wait_millis() -> u64 {
    1000
}

fn default_initial_backoff_millis() -> u64 {
    500
}

fn default_max_backoff_millis() -> u64 {
    30_000
}

fn default_timeout_seconds() -> u64 {
    30
}

/// A batch larger than this would be a request no receiver should have to take.
const MAX_BATCH_RECORDS: usize = 10_000;

// === impl Record ===

impl Record {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        if self.request_object_max_bytes == 0
            || self.request_object_max_bytes > MAX_REQUEST_OBJECT_BYTES
        {
            return Err(invalid(
                "record.requestObjectMaxBytes",
                &format!("must be between 1 and {MAX_REQUEST_OBJECT_BYTES}"),
            ));
        }
        if self.response_object_max_bytes == 0
            || self.response_object_max_bytes > MAX_REQUEST_OBJECT_BYTES
        {
            return Err(invalid(
                "record.responseObjectMaxBytes",
                &format!("must be between 1 and {MAX_REQUEST_OBJECT_BYTES}"),
            ));
        }
        if self.segment_bytes < 4096 {
            return Err(invalid("record.segmentBytes", "must be at least 4096"));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(invalid(
                "record.maxBytes",
                "must be at least record.segmentBytes",
            ));
        }
        if self.max_age_hours == 0 {
            return Err(invalid("record.maxAgeHours", "must be at least 1"));
        }
        if self.queue_records == 0 {
            return Err(invalid("record.queueRecords", "must be at least 1"));
        }
        if self.flush_millis == 0 {
            return Err(invalid("record.flushMillis", "must be at least 1"));
        }
        if self.dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(invalid("record.dir", "must be an absolute path"));
        }
        if let Some(webhook) = &self.webhook {
            if self.dir.is_none() {
                return Err(invalid(
                    "record.webhook",
                    "needs record.dir: the webhook sends what the durable log holds, so \
                     that an outage or a restart loses nothing",
                ));
            }
            webhook.validate()?;
        }
        Ok(())
    }
}

// === impl Webhook ===

impl Webhook {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        self.uri()?;
        if self.batch_max_records == 0 || self.batch_max_records > MAX_BATCH_RECORDS {
            return Err(invalid(
                "record.webhook.batchMaxRecords",
                &format!("must be between 1 and {MAX_BATCH_RECORDS}"),
            ));
        }
        if self.batch_max_wait_millis == 0 {
            return Err(invalid(
                "record.webhook.batchMaxWaitMillis",
                "must be at least 1",
            ));
        }
        if self.initial_backoff_millis == 0 {
            return Err(invalid(
                "record.webhook.initialBackoffMillis",
                "must be at least 1",
            ));
        }
        if self.max_backoff_millis < self.initial_backoff_millis {
            return Err(invalid(
                "record.webhook.maxBackoffMillis",
                "must be at least record.webhook.initialBackoffMillis",
            ));
        }
        if self.timeout_seconds == 0 {
            return Err(invalid(
                "record.webhook.timeoutSeconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The receiver's URL: `https`, a host.
    pub fn uri(&self) -> Result<http::Uri, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "record.webhook.url",
            message,
        };
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", self.url)))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(invalid(format!(
                "{:?} must be https://host[:port][/path]",
                self.url
            )));
        }
        Ok(uri)
    }
}

#[cfg(test)]
mod tests;
