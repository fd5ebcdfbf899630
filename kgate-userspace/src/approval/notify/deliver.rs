//! One notification target's HTTPS client: where its URL comes from (inline, a file,
//! a Secret; the last two read at each send, so they may rotate), one POST, and what
//! its answer means (2xx sent; 429, 5xx and no answer retried; any other 4xx final).
//!
//! The URL is never in an error message, a log line or a label: a Slack webhook URL is
//! the credential itself. Errors say what failed (`HTTP 503`, `connect`, `timed out`)
//! and name the target.
//!
//! Not here: when to retry ([`super::Backoff`]), what is sent ([`super::body`]).

use std::{fs, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

use crate::config::{NotifyTarget, https_url};

/// Why a target cannot be set up (at start-up).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("approval.notify target {0}: caFile {1}: {2}")]
    BadCa(String, std::path::PathBuf, String),
    #[error("approval.notify target {0}: no CA certificate on this host: {1}")]
    NoRoots(String, String),
    #[error("approval.notify target {0}: TLS configuration: {1}")]
    TlsConfigFailed(String, #[source] rustls::Error),
    #[error("approval.notify target {0}: urlFile: {1}")]
    BadUrlFile(String, String),
}

/// Why one POST failed. No variant holds the URL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("the URL cannot be read: {0}")]
    UrlUnavailable(String),
    #[error("connect: {0}")]
    Unreachable(String),
    #[error("HTTP {0}")]
    Refused(http::StatusCode),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

// === impl PostError ===

impl PostError {
    /// The receiver refuses this notification for good: sending it again cannot help.
    /// 408 and 429 are the receiver asking for later.
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, Self::Refused(status)
            if status.is_client_error() && !matches!(status.as_u16(), 408 | 429))
    }
}

/// Where the URL comes from.
enum Source {
    Inline(Uri),
    File(std::path::PathBuf),
    Secret(Box<SecretSource>),
}

struct SecretSource {
    api: Api<Secret>,
    name: String,
    key: String,
}

/// A target ready to send.
pub(crate) struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    source: Source,
    timeout: Duration,
}

// === impl Sender ===

impl Sender {
    /// Builds the client and checks what can be checked now: the CA, and a `urlFile`'s
    /// URL (a Secret is read at the first send: the API server may not answer yet).
    pub(crate) fn new(
        cfg: &NotifyTarget,
        client: Option<&kube::Client>,
    ) -> Result<Self, TargetError> {
        let name = cfg.name.clone();
        let mut roots = RootCertStore::empty();
        if let Some(ca_file) = &cfg.ca_file {
            let bad = |e: String| TargetError::BadCa(name.clone(), ca_file.clone(), e);
            let pem = fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no CA certificate".into()));
            }
        } else {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TargetError::NoRoots(
                    name,
                    "set caFile, or give the agent the host's CA bundle".into(),
                ));
            }
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TargetError::TlsConfigFailed(name.clone(), e))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(cfg.timeout_seconds)));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let client_http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let source = match (&cfg.url, &cfg.url_file, &cfg.secret_ref, client) {
            (Some(url), _, _, _) => Source::Inline(
                https_url(url).map_err(|m| TargetError::BadUrlFile(name.clone(), m.into()))?,
            ),
            (None, Some(file), _, _) => {
                read_file(file)
                    .map_err(|e| TargetError::BadUrlFile(name.clone(), e.to_string()))?;
                Source::File(file.clone())
            }
            (None, None, Some(secret), Some(client)) => Source::Secret(Box::new(SecretSource {
                api: Api::namespaced(client.clone(), &secret.namespace),
                name: secret.name.clone(),
                key: secret.key.clone(),
            })),
            _ => {
                return Err(TargetError::BadUrlFile(
                    name,
                    "no url, urlFile or secretRef (or no API client for secretRef)".into(),
                ));
            }
        };
        Ok(Self {
            client: client_http,
            source,
            timeout: Duration::from_secs(cfg.timeout_seconds),
        })
    }

    /// The URL as it is now.
    async fn url(&self) -> Result<Uri, PostError> {
        match &self.source {
            Source::Inline(uri) => Ok(uri.clone()),
            Source::File(path) => read_file(path),
            Source::Secret(secret) => {
                let SecretSource { api, name, key } = &**secret;
                let secret = api.get(name).await.map_err(|e| {
                    PostError::UrlUnavailable(format!("Secret {name}: {}", kube_reason(&e)))
                })?;
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .ok_or_else(|| {
                        PostError::UrlUnavailable(format!("Secret {name} has no key {key}"))
                    })?;
                let text = std::str::from_utf8(&value.0).map_err(|_| {
                    PostError::UrlUnavailable(format!("Secret {name} key {key} is not text"))
                })?;
                https_url(text).map_err(|m| {
                    PostError::UrlUnavailable(format!("Secret {name} key {key}: the URL {m}"))
                })
            }
        }
    }

    /// One POST of `body`.
    pub(crate) async fn post(
        &self,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<(), PostError> {
        let uri = self.url().await?;
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|_| PostError::UrlUnavailable("not a request URL".into()))?;
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| PostError::Unreachable(chain(&e)))?;
            let status = response.status();
            // Read the answer to its end, so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(PostError::Refused(status))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::TimedOut(self.timeout))?
    }
}

fn read_file(path: &std::path::Path) -> Result<Uri, PostError> {
    let text = fs::read_to_string(path)
        .map_err(|e| PostError::UrlUnavailable(format!("{}: {}", path.display(), e.kind())))?;
    https_url(&text)
        .map_err(|m| PostError::UrlUnavailable(format!("{}: the URL {m}", path.display())))
}

/// The causes of a client error, without its request (so without the URL): hyper's
/// connection errors name neither the host nor the path, and the TLS errors the
/// certificate's problem.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    if out.is_empty() {
        error.to_string()
    } else {
        out.join(": ")
    }
}

/// The API server's reason for a failed read, never the request URL.
fn kube_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        _ => "the API server cannot be reached".into(),
    }
}
