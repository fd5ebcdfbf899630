//! The agent's admin endpoint (HTTPS, the serving certificate): `/healthz` and
//! `/readyz` for the kubelet's probes (no credentials, as probes send none),
//! `/metrics` (Prometheus) and `/status` (JSON, what `kgate status` shows) for
//! callers the API server vouches for, as the kubelet does it: the bearer token by
//! TokenReview (or local verification), then a SubjectAccessReview for `get` on the
//! non-resource path.
//!
//! Not here: runtime log levels, profiling.

pub mod cli;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::{
    identity::UserInfo,
    proxy::{Proxy, body, respond},
    status::Status,
};

/// What `/status` reports about this agent.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub node: String,
    pub version: String,
    /// Kernel programs attached and the targets programmed.
    pub enforcing: bool,
    pub targets: Vec<String>,
    pub policy_generation: u64,
    pub policies_loaded: bool,
    pub pod_index_synced: bool,
    pub approvals_held: i64,
    /// When the serving certificate expires (seconds since the epoch).
    pub cert_not_after: Option<i64>,
    /// The record log's last write and sync succeeded (true without a log).
    pub recorder_writable: bool,
    pub ready: bool,
}

pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub client: kube::Client,
    pub node: String,
    pub enforcing: bool,
    pub targets: Vec<String>,
    pub cert_file: std::path::PathBuf,
}

// === impl Admin ===

impl Admin {
    /// Serves the admin endpoint on `listen` until the agent stops.
    pub async fn serve(
        self: Arc<Self>,
        listen: SocketAddr,
        tls: TlsAcceptor,
    ) -> std::io::Result<()> {
        let listener = TcpListener::bind(listen).await?;
        info!(%listen, "admin endpoint listening");
        tokio::spawn(async move {
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(error) => {
                        warn!(%error, "admin accept failed");
                        continue;
                    }
                };
                let (admin, tls) = (self.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(admin.handle(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<body::Body> {
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" => {
                let status = self.status();
                if status.ready {
                    text(StatusCode::OK, "ok")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::to_string(&status).unwrap_or_default(),
                    )
                }
            }
            path @ ("/metrics" | "/status") => {
                if let Err(status) = self.authorize(&req, path).await {
                    return respond(&status);
                }
                if path == "/metrics" {
                    Response::builder()
                        .header(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(body::full(self.proxy.metrics.render()))
                        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "metrics"))
                } else {
                    Response::builder()
                        .header(CONTENT_TYPE, "application/json")
                        .body(body::full(
                            serde_json::to_vec(&self.status()).unwrap_or_default(),
                        ))
                        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "status"))
                }
            }
            _ => respond(&Status::not_found(
                "kgate: the admin endpoint serves /healthz, /readyz, /metrics and /status",
            )),
        }
    }

    fn status(&self) -> AgentStatus {
        let policy = self.proxy.policy.current();
        self.proxy.metrics.policy_generation.set(policy.generation);
        let policies_loaded = self.proxy.policy.ready();
        let pod_index_synced = self.proxy.identity.pods_synced();
        let recorder_writable = self.proxy.recorder.writable();
        AgentStatus {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            enforcing: self.enforcing,
            targets: self.targets.clone(),
            policy_generation: policy.generation,
            policies_loaded,
            pod_index_synced,
            approvals_held: self.proxy.metrics.approvals_held.get(),
            cert_not_after: std::fs::read(&self.cert_file)
                .ok()
                .and_then(|pem| crate::cert::not_after(&pem).ok()),
            recorder_writable,
            ready: policies_loaded && pod_index_synced && recorder_writable,
        }
    }

    /// The caller's token, then a SubjectAccessReview for `get` on `path`.
    async fn authorize(&self, req: &Request<Incoming>, path: &str) -> Result<UserInfo, Status> {
        let user = self
            .proxy
            .identity
            .authenticate_headers(req.headers())
            .await?;
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra,
                "nonResourceAttributes": {"path": path, "verb": "get"},
            },
        });
        let unavailable = |e: String| {
            Status::service_unavailable(format!("kgate: cannot authorize the caller: {e}"))
        };
        let sar = Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&review).unwrap_or_default())
            .map_err(|e| unavailable(e.to_string()))?;
        let answer: serde_json::Value = self
            .client
            .request(sar)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if answer["status"]["allowed"].as_bool() == Some(true) {
            Ok((*user).clone())
        } else {
            Err(Status::forbidden(format!(
                "kgate: {} may not get {path} on the agent's admin endpoint",
                user.username
            )))
        }
    }
}

fn text(code: StatusCode, body: &str) -> Response<body::Body> {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(body.to_owned()))
        .unwrap_or_else(|_| Response::new(body::empty()))
}
