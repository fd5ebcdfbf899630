//! The audit webhook sink: sends the durable log's records, in order, to anything that
//! takes kube-apiserver's audit webhook: `POST` of an `audit.k8s.io/v1` `EventList`
//! over HTTPS, where any 2xx answer acknowledges the batch and anything else (or no
//! answer within the timeout) is a failure.
//!
//! - It reads the log itself ([`super::reader`]), up to the durable end the writer
//!   publishes, so the request path never waits for it: a slow or dead receiver only
//!   grows the lag (`kgate_record_webhook_lag_records`), bounded by the log's
//!   retention.
//! - A failed batch is retried, the same batch, with capped exponential backoff,
//!   until it is acknowledged. Unlike kube-apiserver, which drops a batch after a
//!   few tries, nothing is given up: the log is the buffer. The one exception is a
//!   batch the receiver rejects as bad (400, 413, 415, 422), which no retry can
//!   fix: it is sent in halves, and a single record still rejected is skipped,
//!   logged and counted (`..._webhook_rejected_records`), so that it cannot hold
//!   back every record after it.
//! - The position after the last acknowledged batch is saved ([`super::cursor`]) by
//!   a task beside the sending (the latest one whenever it changes, so the cursor's
//!   fsyncs never pace the batches), and a restarted agent goes on from there.
//!   Delivery is at least once: a crash between the receiver's answers and the
//!   cursor save sends those batches again. Without a cursor the whole log is sent.
//! - Retention wins over the webhook: when it deletes a segment the sink has not sent
//!   (the receiver was down for longer than the log holds), those records are lost
//!   to the receiver; retention logs it as it deletes them ([`log::Log::warn_unconsumed`]),
//!   and the sink logs and counts them (`..._webhook_skipped_records`) when it
//!   reaches the gap.
//!
//! Not here: mTLS client certificates, kubeconfig-style receiver configuration.

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    cursor::Cursor,
    event,
    log::{self, Position},
    reader,
    stats::{Stats, WebhookStats},
};
use crate::config;

/// The payload read for one batch, at most (a batch holds at least one record).
const MAX_BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("record.webhook.caFile {0}: {1}")]
    BadCa(PathBuf, String),
    #[error("record.webhook: TLS configuration: {0}")]
    TlsConfigFailed(#[source] rustls::Error),
    #[error("record.webhook.serverName: invalid name {0:?}")]
    BadServerName(String),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("reading record.webhook.tokenFile {0}: {1}")]
    TokenUnreadable(PathBuf, #[source] std::io::Error),
    #[error("the token in {0} is not a valid header value")]
    BadToken(PathBuf),
    #[error("building the request: {0}")]
    BadRequest(#[source] http::Error),
    #[error("the receiver is unreachable: {0}")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    #[error("the receiver answered {0}: {1}")]
    Refused(http::StatusCode, String),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A configured sink, before it runs.
pub(crate) struct Sink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    token_file: Option<PathBuf>,
    cfg: config::Webhook,
}

// === impl Sink ===

impl Sink {
    /// Checks the receiver's settings (URL, CA) and builds its client.
    pub(crate) fn new(cfg: &config::Webhook) -> Result<Self, WebhookError> {
        let uri = cfg.uri()?;
        let ca = fs::read(&cfg.ca_file)
            .map_err(|e| WebhookError::BadCa(cfg.ca_file.clone(), e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| WebhookError::BadCa(cfg.ca_file.clone(), e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| WebhookError::BadCa(cfg.ca_file.clone(), e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(WebhookError::BadCa(
                cfg.ca_file.clone(),
                "no CA certificate".into(),
            ));
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(WebhookError::TlsConfigFailed)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // A batch is a head and a body written apart: without this, Nagle and the
        // receiver's delayed ACK hold each batch back ~40 ms.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let builder = match &cfg.server_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(
                ServerName::try_from(name.clone())
                    .map_err(|_| WebhookError::BadServerName(name.clone()))?,
            )),
            None => builder,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(builder.enable_all_versions().wrap_connector(http));
        Ok(Self {
            client,
            uri,
            token_file: cfg.token_file.clone(),
            cfg: cfg.clone(),
        })
    }

    /// Sends the log in `dir` from the saved cursor on, following `committed` (the
    /// writer's durable end), until the writer stops.
    pub(crate) async fn run(
        self,
        dir: PathBuf,
        mut committed: watch::Receiver<Position>,
        stats: Arc<Stats>,
    ) {
        let stats = &stats.webhook;
        let cursor = Cursor::new(&dir);
        let end = *committed.borrow();
        let mut at = match cursor.load() {
            Some(at) if at.seq <= end.seq => at,
            // The recovery scan cut the log back below what was sent (damage): what
            // the cursor passed was sent, what follows the new end is new.
            Some(at) if log::segment_path(&dir, at.segment).exists() => {
                warn!(
                    ?at,
                    ?end,
                    "the webhook cursor is past the repaired log's end: going on from there"
                );
                end
            }
            Some(at) => {
                warn!(
                    ?at,
                    ?end,
                    "the webhook cursor names segments that are gone: sending the whole log"
                );
                oldest(&dir)
            }
            None => oldest(&dir),
        };
        info!(url = %self.uri, ?at, "record webhook sending");
        stats.acked.store(at.seq, Ordering::Relaxed);
        stats.enabled.store(true, Ordering::Relaxed);
        // The cursor is saved beside the sending, so that its two fsyncs do not pace
        // the batches; a crash may then resend a little more (at least once anyway).
        let (acked, saved) = watch::channel(at);
        tokio::spawn(save_cursor(cursor, saved));
        let max_wait = Duration::from_millis(self.cfg.batch_max_wait_millis);
        let max_records = self.cfg.batch_max_records;
        let mut waiting_since: Option<Instant> = None;
        // The writer stopped (the agent is shutting down): send what is left, then end.
        let mut closed = false;
        loop {
            let end = *committed.borrow_and_update();
            let pending = end.seq.saturating_sub(at.seq);
            if pending == 0 {
                waiting_since = None;
                if closed || committed.changed().await.is_err() {
                    return;
                }
                continue;
            }
            // A batch goes when it is full or its oldest record has waited long enough.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if !closed && pending < max_records as u64 && since.elapsed() < max_wait {
                let wait = max_wait.saturating_sub(since.elapsed());
                if let Ok(Err(_)) = tokio::time::timeout(wait, committed.changed()).await {
                    closed = true;
                }
                continue;
            }
            waiting_since = None;
            let batch = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    reader::read(&dir, at, end, max_records, MAX_BATCH_BYTES)
                })
                .await
            };
            let batch = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(error)) => {
                    warn!(%error, ?at, "the record webhook cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(self.cfg.max_backoff_millis)).await;
                    continue;
                }
                Err(error) => {
                    warn!(%error, "the record webhook's reader failed; retrying");
                    tokio::time::sleep(Duration::from_millis(self.cfg.max_backoff_millis)).await;
                    continue;
                }
            };
            if batch.records.is_empty() && batch.skipped == 0 && batch.next == at {
                // The log is shorter than the writer says: nothing to do but wait.
                warn!(
                    ?at,
                    ?end,
                    "record webhook: the durable records are not in the log yet"
                );
                tokio::time::sleep(Duration::from_millis(self.cfg.max_backoff_millis)).await;
                continue;
            }
            if batch.skipped > 0 {
                stats.skipped.fetch_add(batch.skipped, Ordering::Relaxed);
                warn!(
                    records = batch.skipped,
                    reason = batch.skip_reason.as_deref().unwrap_or("?"),
                    "record webhook: records lost to the receiver before they were sent"
                );
            }
            // Captured stream frames (exec stdin/stdout) are not audit events: they
            // stay on the node.
            let events: Vec<Vec<u8>> = batch
                .records
                .into_iter()
                .filter(|r| !r.starts_with(b"{") || event::is_audit_event(r))
                .collect();
            let total = events.len();
            let records: Vec<Vec<u8>> = events.into_iter().filter(|r| is_json(r)).collect();
            let invalid = (total - records.len()) as u64;
            if invalid > 0 {
                stats.skipped.fetch_add(invalid, Ordering::Relaxed);
                warn!(
                    records = invalid,
                    "record webhook: records that are not JSON skipped"
                );
            }
            self.send(&records, &committed, at, stats).await;
            at = batch.next;
            stats.acked.store(at.seq, Ordering::Relaxed);
            acked.send_replace(at);
        }
    }

    /// Sends `records` in order. A batch the receiver rejects as bad (400, 413, 415,
    /// 422: sending it again cannot help) is split in halves, down to single records,
    /// so that one record it cannot take does not hold back the rest; such a record is
    /// skipped, logged and counted. Every other failure is retried.
    async fn send(
        &self,
        records: &[Vec<u8>],
        committed: &watch::Receiver<Position>,
        at: Position,
        stats: &WebhookStats,
    ) {
        let mut parts = VecDeque::new();
        parts.push_back(0..records.len());
        while let Some(range) = parts.pop_front() {
            let part = &records[range.clone()];
            if part.is_empty() {
                continue;
            }
            match self.deliver(event_list(part), committed, at, stats).await {
                Ok(()) => {
                    stats.sent.fetch_add(part.len() as u64, Ordering::Relaxed);
                }
                Err(error) if part.len() > 1 => {
                    warn!(%error, records = part.len(), "record webhook: batch rejected; sending it in halves");
                    let mid = range.start + part.len() / 2;
                    parts.push_front(mid..range.end);
                    parts.push_front(range.start..mid);
                }
                Err(error) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    let audit_id = serde_json::from_slice::<serde_json::Value>(&part[0])
                        .ok()
                        .and_then(|e| e["auditID"].as_str().map(str::to_owned));
                    warn!(%error, audit_id, "record webhook: the receiver rejects this record; skipped");
                }
            }
        }
    }

    /// POSTs `body` until the receiver acknowledges it, or rejects it as bad.
    async fn deliver(
        &self,
        body: Bytes,
        committed: &watch::Receiver<Position>,
        at: Position,
        stats: &WebhookStats,
    ) -> Result<(), PostError> {
        let mut backoff = Duration::from_millis(self.cfg.initial_backoff_millis);
        let max = Duration::from_millis(self.cfg.max_backoff_millis);
        loop {
            match self.post(body.clone()).await {
                Ok(()) => {
                    stats.failing.store(false, Ordering::Relaxed);
                    return Ok(());
                }
                Err(error) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if error.is_rejection() {
                        // The receiver answers: it is the record it refuses.
                        stats.failing.store(false, Ordering::Relaxed);
                        return Err(error);
                    }
                    stats.failing.store(true, Ordering::Relaxed);
                    let lag = committed.borrow().seq.saturating_sub(at.seq);
                    warn!(%error, retry_in = ?backoff, lag, "record webhook batch failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), PostError> {
        let mut req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(path) = &self.token_file {
            let token = fs::read_to_string(path)
                .map_err(|e| PostError::TokenUnreadable(path.clone(), e))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| PostError::BadToken(path.clone()))?;
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Full::new(body)).map_err(PostError::BadRequest)?;
        let timeout = Duration::from_secs(self.cfg.timeout_seconds);
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(PostError::Unreachable)?;
            let status = response.status();
            // Read the answer to its end, so the connection can be reused.
            let answer = response
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&answer[..answer.len().min(512)]);
                Err(PostError::Refused(status, text.into_owned()))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PostError::TimedOut(timeout))?
    }
}

/// Saves the latest acknowledged position whenever it changes, until the sink ends.
async fn save_cursor(cursor: Cursor, mut acked: watch::Receiver<Position>) {
    let cursor = Arc::new(cursor);
    while acked.changed().await.is_ok() {
        let at = *acked.borrow_and_update();
        let saving = cursor.clone();
        match tokio::task::spawn_blocking(move || saving.save(at)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(%error, "cannot save the webhook cursor: a restart sends these records again");
            }
            Err(error) => warn!(%error, "saving the webhook cursor failed"),
        }
    }
}

/// The start of the oldest segment in `dir`.
fn oldest(dir: &Path) -> Position {
    let first = log::list_segments(dir)
        .ok()
        .and_then(|s| s.first().map(|(first, _)| *first))
        .unwrap_or(0);
    Position {
        segment: first,
        offset: 0,
        seq: first,
    }
}

fn is_json(record: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(record).is_ok()
}

/// The `EventList` of `records` (the log's serialized events, put in as they are).
fn event_list(records: &[Vec<u8>]) -> Bytes {
    let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 96);
    body.extend_from_slice(
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
    );
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.extend_from_slice(b"]}");
    body.into()
}

// === impl PostError ===

impl PostError {
    /// The receiver says the batch itself is bad: the same bytes will never pass.
    /// Authentication (401, 403) and throttling (429) are not: they may be fixed.
    fn is_rejection(&self) -> bool {
        matches!(self, Self::Refused(status, _) if matches!(status.as_u16(), 400 | 413 | 415 | 422))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_list_holds_the_records() {
        let records = vec![
            br#"{"kind":"Event","auditID":"a"}"#.to_vec(),
            br#"{"kind":"Event","auditID":"b"}"#.to_vec(),
        ];
        assert!(records.iter().all(|r| is_json(r)) && !is_json(b"not json"));
        let list: serde_json::Value = serde_json::from_slice(&event_list(&records)).unwrap();
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(list["items"][1]["auditID"], "b");
        let empty: serde_json::Value = serde_json::from_slice(&event_list(&[])).unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));
    }

    #[test]
    fn only_a_bad_batch_is_a_rejection() {
        let refused = |code: u16| {
            PostError::Refused(http::StatusCode::from_u16(code).unwrap(), String::new())
        };
        for code in [400, 413, 415, 422] {
            assert!(refused(code).is_rejection(), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 502, 503] {
            assert!(!refused(code).is_rejection(), "{code}");
        }
        assert!(!PostError::TimedOut(Duration::from_secs(1)).is_rejection());
    }
}
