//! What the recorder's integration tests share: an audit webhook receiver (HTTPS on
//! loopback, with a test CA), and helpers for requests through the agent, its admin
//! endpoint and its Prometheus metrics.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::{
    apiserver::Handle,
    harness::{Agent, HttpsClient, https_client, text},
};

pub async fn get(
    client: &HttpsClient,
    agent: &Agent,
    token: &str,
    path: &str,
) -> (StatusCode, String) {
    send(client, agent, token, http::Method::GET, path).await
}

/// A request without a body, `method` `path`, through `agent` as `token`.
pub async fn send(
    client: &HttpsClient,
    agent: &Agent,
    token: &str,
    method: http::Method,
    path: &str,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", agent.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    (status, text(response.into_body()).await)
}

/// The agent's admin endpoint at `port`: `/metrics` (as the admin) or a probe.
pub async fn admin(agent: &Agent, port: u16, token: &str, path: &str) -> (StatusCode, String) {
    let client = https_client(&agent.ca_pem, false);
    let req = Request::get(format!("https://127.0.0.1:{port}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    (status, text(response.into_body()).await)
}

/// The value of an unlabelled sample in a Prometheus exposition.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The audit IDs the double saw on requests for `path`.
pub fn seen_audit_ids(server: &Handle, path_prefix: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(path_prefix))
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "audit-id")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === Receiver ===

/// An audit webhook receiver on loopback: drops every connection while `down` (as a
/// dead receiver behind a load balancer would; the port stays ours, so no other test
/// can take it), answers 500 while `failing`, keeps every batch it acknowledged.
#[derive(Clone, Default)]
pub struct Receiver {
    pub down: Arc<AtomicBool>,
    pub failing: Arc<AtomicBool>,
    /// Batches holding this text are refused with 400, as bad.
    pub poison: Arc<Mutex<Option<String>>>,
    pub refused: Arc<AtomicU64>,
    pub batches: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts serving on a free loopback port (returned) with the certificate `pair`;
    /// expects `token`. `down` decides whether it answers at all.
    pub async fn start(pair: &crate::pki::Pair, token: &str, down: bool) -> (Self, u16) {
        let receiver = Self::default();
        receiver.down.store(down, Ordering::SeqCst);
        let port = receiver.serve(pair, token).await;
        (receiver, port)
    }

    async fn serve(&self, pair: &crate::pki::Pair, token: &str) -> u16 {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (receiver, token) = (self.clone(), format!("Bearer {token}"));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if receiver.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let (receiver, acceptor, token) =
                    (receiver.clone(), acceptor.clone(), token.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let (receiver, token) = (receiver.clone(), token.clone());
                        async move { Ok::<_, Infallible>(receiver.handle(req, &token).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        token: &str,
    ) -> Response<Full<Bytes>> {
        let answer = |code: StatusCode, body: &str| {
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap()
        };
        if req.method() != http::Method::POST
            || req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(token)
            || req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                != Some("application/json")
        {
            return answer(StatusCode::UNAUTHORIZED, "{}");
        }
        // A sender killed mid-request leaves a cut-off body: not a batch.
        let Ok(body) = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
        else {
            return answer(StatusCode::BAD_REQUEST, "{}");
        };
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"kind":"Status","code":500}"#,
            );
        }
        if let Some(poison) = self.poison.lock().unwrap().as_deref()
            && String::from_utf8_lossy(&body).contains(poison)
        {
            return answer(StatusCode::BAD_REQUEST, r#"{"kind":"Status","code":400}"#);
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(list) => {
                self.batches.lock().unwrap().push(list);
                answer(StatusCode::OK, "{}")
            }
            Err(_) => answer(StatusCode::BAD_REQUEST, "{}"),
        }
    }

    /// (audit ID, stage) of every event received.
    pub fn received(&self) -> HashSet<(String, String)> {
        self.items().into_iter().collect()
    }

    /// (audit ID, stage) of every event received, duplicates included.
    pub fn items(&self) -> Vec<(String, String)> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|list| list["items"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                (
                    e["auditID"].as_str().unwrap_or_default().to_owned(),
                    e["stage"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}
