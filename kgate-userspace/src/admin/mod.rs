//! The agent's admin endpoint (HTTPS, the serving certificate): `/healthz` and
//! `/readyz` for the kubelet's probes (no credentials, as probes send none),
//! `/metrics` (Prometheus) and `/status` (JSON, what `kgate status` shows) for
//! callers the API server vouches for, as the kubelet does it: the bearer token by
//! TokenReview (or local verification), then a SubjectAccessReview for `get` on the
//! non-resource path. The node's recorded sessions ([`sessions`], under `/sessions`)
//! take a narrower permission: `get`/`list` on the virtual resource `sessions.kgate.io`.
//!
//! [`heartbeat`] publishes the same status in a Lease for `kgate status`, with what a
//! cluster-wide `kgate sessions` needs to reach this endpoint (pod, port, the serving
//! certificate's fingerprint).
//!
//! Not here: profiling.

pub(crate) mod heartbeat;
pub(crate) mod sessions;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

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
    api_status::{Status, respond},
    body,
    identity::{Identifier, UserInfo},
    metrics::Metrics,
    policy::store::PolicyStore,
    proxy::tls::ServingCert,
    record::Recorder,
};

/// What `/status` reports about this agent (and its heartbeat Lease carries, for
/// `kgate status` and `kgate check`). Everything the node's kernel and cgroups say is
/// read once at start ([`Host`]); the certificate's names and expiry at each load.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentStatus {
    pub node: String,
    pub version: String,
    /// Kernel programs attached and the targets programmed.
    pub enforcing: bool,
    pub targets: Vec<String>,
    /// Endpoint discovery has listed the API server's Service and slices and the
    /// kernel holds the result (always true without discovery).
    pub targets_synced: bool,
    pub policy_generation: u64,
    /// What is in force, comparable across agents ([`crate::policy::PolicySet::digest`]).
    pub policy_digest: String,
    pub policies_loaded: bool,
    pub pod_index_synced: bool,
    pub approvals_held: i64,
    /// Target connects the kernel programs redirected, refused (no agent address) and
    /// left to exempt cgroups, since they were attached.
    pub kernel_connects: Option<crate::ebpf::Counts>,
    /// The node's kernel release (`uname -r`).
    pub kernel_release: Option<String>,
    /// The kernel features the attached programs prove the node has (the names of
    /// [`crate::ebpf::FEATURES`]); empty without the kernel programs.
    pub bpf_features: Vec<&'static str>,
    /// A cgroup v2 (unified) hierarchy is mounted where the agent runs.
    pub cgroup_v2: bool,
    /// The cgroup the kernel programs are attached to.
    pub cgroup: Option<String>,
    /// The kubelet's cgroup driver as that cgroup's name shows it (`systemd`,
    /// `cgroupfs`), when it shows it.
    pub cgroup_driver: Option<&'static str>,
    /// The serving certificate's subject alternative names.
    pub cert_sans: Vec<String>,
    /// When the serving certificate expires (seconds since the epoch).
    pub cert_not_after: Option<i64>,
    /// The serving certificate's SHA-256 fingerprint (hex, of its DER): a cluster-wide
    /// `kgate sessions` pins the agent's certificate to it.
    pub cert_sha256: Option<String>,
    /// The agent's pod (`POD_NAMESPACE`/`POD_NAME` from the downward API), which
    /// `kgate sessions` port-forwards to, and the admin endpoint's port in it.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub admin_port: Option<u16>,
    /// The record log's last write and sync succeeded (true without a log).
    pub recorder_writable: bool,
    /// The record webhook's progress, with one configured.
    pub webhook: Option<WebhookStatus>,
    /// Every OIDC issuer's keys have loaded once (true without OIDC authenticators).
    pub oidc_keys_loaded: bool,
    /// Each approval notification target's health (none configured: absent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::approval::notify::TargetStatus>,
    pub ready: bool,
}

/// How far the record webhook is behind the durable log.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookStatus {
    /// Durable records the receiver has not acknowledged yet.
    pub lag_records: u64,
    /// The last POST failed (refused, no answer, not 2xx); the sink retries it.
    pub failing: bool,
}

/// What the agent learned about its node at start: none of it changes while it runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Host {
    pub kernel_release: Option<String>,
    pub bpf_features: Vec<&'static str>,
    pub cgroup_v2: bool,
    pub cgroup: Option<std::path::PathBuf>,
}

impl Host {
    /// Reads the kernel release; the rest is what the agent attached (`enforcing`: to
    /// `cgroup`) and found (`cgroup_v2`).
    pub(crate) fn read(
        cgroup_v2: bool,
        attached_to: Option<std::path::PathBuf>,
        enforcing: bool,
    ) -> Self {
        Self {
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| r.trim().to_owned()),
            bpf_features: if enforcing {
                crate::ebpf::FEATURES
                    .iter()
                    .map(|(name, _)| *name)
                    .collect()
            } else {
                Vec::new()
            },
            cgroup_v2,
            cgroup: attached_to,
        }
    }
}

pub(crate) struct Admin {
    pub identity: Arc<Identifier>,
    pub policy: Arc<PolicyStore>,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<Metrics>,
    pub client: kube::Client,
    pub node: String,
    pub enforcing: bool,
    /// The kernel programs' counters (with the kernel programs).
    pub kernel: Option<crate::ebpf::KernelCounters>,
    pub targets: tokio::sync::watch::Receiver<crate::ebpf::Programmed>,
    pub serving: Arc<ServingCert>,
    pub host: Host,
    /// The record log's directory (`record.dir`), which `/sessions` reads.
    pub record_dir: Option<std::path::PathBuf>,
    /// The agent's pod as the downward API names it (namespace, name).
    pub pod: Option<(String, String)>,
    pub admin_port: Option<u16>,
    /// Approval notifications, when targets are configured.
    pub notifier: Option<Arc<crate::approval::notify::Notifier>>,
}

// === impl Admin ===

impl Admin {
    /// Serves the admin endpoint on `listen` until the agent stops.
    pub(crate) async fn serve(
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
            "/loglevel" => self.log_level(req).await,
            path if path == "/sessions" || path.starts_with("/sessions/") => {
                sessions::serve(self, req).await
            }
            path @ ("/metrics" | "/status") => {
                if let Err(status) = self.authorize(&req, path, "get").await {
                    return respond(&status);
                }
                if path == "/metrics" {
                    // The gauges that status computes, fresh for this scrape.
                    self.status();
                    Response::builder()
                        .header(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(body::full(self.metrics.render()))
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
                "kgate: the admin endpoint serves /healthz, /readyz, /metrics, /status, /loglevel and /sessions",
            )),
        }
    }

    /// `GET /loglevel`: the log filter in force; `PUT /loglevel` with `RUST_LOG`-style
    /// directives as the body replaces it (SubjectAccessReview verb `update`).
    async fn log_level(&self, req: Request<Incoming>) -> Response<body::Body> {
        let verb = match *req.method() {
            http::Method::GET => "get",
            http::Method::PUT => "update",
            _ => {
                return respond(&Status::method_not_allowed(
                    "kgate: /loglevel takes GET, or PUT with a filter such as `debug` or `kgate=debug,info`",
                ));
            }
        };
        let user = match self.authorize(&req, "/loglevel", verb).await {
            Ok(user) => user,
            Err(status) => return respond(&status),
        };
        if verb == "get" {
            return text(StatusCode::OK, &format!("{}\n", crate::logging::current()));
        }
        use http_body_util::BodyExt as _;
        let body = match http_body_util::Limited::new(req.into_body(), 4096)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return respond(&Status::bad_request(format!(
                    "kgate: cannot read the filter (at most 4 KiB): {e}"
                )));
            }
        };
        let Ok(directives) = std::str::from_utf8(&body) else {
            return respond(&Status::bad_request("kgate: the filter is not UTF-8"));
        };
        match crate::logging::set_filter(directives) {
            Ok(now) => {
                info!(filter = now, by = user.username, "log filter changed");
                text(StatusCode::OK, &format!("{now}\n"))
            }
            Err(message) => respond(&Status::bad_request(format!("kgate: {message}"))),
        }
    }

    pub(crate) fn status(&self) -> AgentStatus {
        let policy = self.policy.current();
        self.metrics.policy_generation.set(policy.generation);
        let policies_loaded = self.policy.ready();
        let pod_index_synced = self.identity.pods_synced();
        let programmed = self.targets.borrow().clone();
        let cert = self.serving.info();
        let node_metrics = &self.metrics.node;
        node_metrics
            .targets
            .set(i64::try_from(programmed.targets.len()).unwrap_or(i64::MAX));
        node_metrics
            .targets_synced
            .set(i64::from(programmed.synced));
        if let Some(cert) = &cert {
            node_metrics.cert_not_after.set(cert.not_after);
        }
        let kernel_connects = self.kernel.as_ref().map(crate::ebpf::KernelCounters::read);
        if let Some(c) = kernel_connects {
            node_metrics.kernel([c.redirected, c.refused, c.exempt]);
        }
        let recorder_writable = self.recorder.writable();
        let stats = self.recorder.stats();
        let webhook = stats
            .webhook
            .enabled
            .load(Ordering::Relaxed)
            .then(|| WebhookStatus {
                lag_records: stats
                    .durable_end
                    .load(Ordering::Relaxed)
                    .saturating_sub(stats.webhook.acked.load(Ordering::Relaxed)),
                failing: stats.webhook.failing.load(Ordering::Relaxed),
            });
        let host = &self.host;
        let oidc_keys_loaded = self.identity.oidc_keys_loaded();
        AgentStatus {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            enforcing: self.enforcing,
            targets: programmed.targets.iter().map(ToString::to_string).collect(),
            targets_synced: programmed.synced,
            policy_generation: policy.generation,
            policy_digest: policy.digest.clone(),
            policies_loaded,
            pod_index_synced,
            approvals_held: self.metrics.approvals_held.get(),
            kernel_connects,
            kernel_release: host.kernel_release.clone(),
            bpf_features: host.bpf_features.clone(),
            cgroup_v2: host.cgroup_v2,
            cgroup: host.cgroup.as_ref().map(|p| p.display().to_string()),
            cgroup_driver: host.cgroup.as_deref().and_then(crate::cgroup::driver_of),
            cert_sans: cert.as_ref().map(|c| c.sans.clone()).unwrap_or_default(),
            cert_not_after: cert.as_ref().map(|c| c.not_after),
            cert_sha256: cert.map(|c| c.sha256),
            pod_namespace: self.pod.as_ref().map(|p| p.0.clone()),
            pod_name: self.pod.as_ref().map(|p| p.1.clone()),
            admin_port: self.admin_port,
            recorder_writable,
            webhook,
            oidc_keys_loaded,
            notifications: self
                .notifier
                .as_ref()
                .map(|n| n.status())
                .unwrap_or_default(),
            ready: policies_loaded
                && pod_index_synced
                && programmed.synced
                && recorder_writable
                && oidc_keys_loaded,
        }
    }

    /// The caller's token, then a SubjectAccessReview for `verb` on `path`.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        path: &str,
        verb: &str,
    ) -> Result<UserInfo, Status> {
        self.review(
            req,
            json!({"nonResourceAttributes": {"path": path, "verb": verb}}),
            &format!("{verb} {path}"),
        )
        .await
    }

    /// The caller's token, then a SubjectAccessReview with `attributes` (the spec's
    /// `nonResourceAttributes` or `resourceAttributes`); `what` names the question in
    /// the 403.
    async fn review(
        &self,
        req: &Request<Incoming>,
        attributes: serde_json::Value,
        what: &str,
    ) -> Result<UserInfo, Status> {
        let user = self.identity.authenticate_headers(req.headers()).await?;
        let mut spec = json!({
            "user": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra,
        });
        if let (Some(spec), serde_json::Value::Object(attributes)) =
            (spec.as_object_mut(), attributes)
        {
            spec.extend(attributes);
        }
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
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
                "kgate: {} may not {what} on the agent's admin endpoint",
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
