//! A faithful Kubernetes API-server double: HTTPS (h2 and http/1.1), bearer-token
//! authentication, discovery, core/v1 namespaces, pods, secrets, configmaps,
//! serviceaccounts and apps/v1 deployments (with `scale`), apiextensions.k8s.io/v1
//! customresourcedefinitions (defaulted and validated as the real server does, for the
//! release `Config::version` names: crd.rs), watches, `as=Table`, pod logs and exec
//! over WebSocket. The real `kubectl` and kube-rs work against it.
//!
//! It records every request it receives (method, path, user, notable headers) so that
//! proxy tests can assert what reached "the API server".
//!
//! Request bodies are read as JSON, YAML or Kubernetes protobuf; answers are JSON.
//! Validation is the server's (OpenAPI v3 says so, and `fieldValidation=Strict` is
//! honoured for top-level and metadata fields); strategic merge patches merge by
//! key; service-account tokens are issued, reviewed and published (OIDC, JWKS) with
//! rotating keys.
//!
//! Not here: authorization (every authenticated user may do anything, including
//! impersonation), admission and defaulting (but for CRDs), protobuf answers,
//! server-side apply, controllers (a Deployment never gets pods).

mod api;
mod authn;
pub mod client;
pub mod crd;
mod delete;
mod openapi;
pub mod pki;
mod protobuf;
mod resources;
mod reviews;
mod scale;
mod selector;
mod store;
mod strategic;
mod streams;
mod table;
mod tokens;

use std::{
    collections::HashSet,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

pub use self::resources::ServerVersion;
pub use self::streams::LOG_INTERVAL;
pub use self::tokens::{DEFAULT_ISSUER, Subject};
use self::{store::Store, tokens::Signer};
use crate::pki::Ca;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The `kubernetes` Service's ClusterIP: the first address of kubeadm's default range.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The API server's request body limit (3 MiB).
const MAX_BODY: usize = 3 << 20;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Extra IP SANs for the serving certificate (the listen IP is always included).
    pub extra_ips: Vec<IpAddr>,
    /// The `iss` of issued service-account tokens (default: `DEFAULT_ISSUER`).
    pub issuer: String,
    /// The release `/version` reports and CRD admission follows (default 1.32.4).
    pub version: ServerVersion,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            bookmark_interval: Duration::from_secs(1),
            extra_ips: Vec::new(),
            issuer: DEFAULT_ISSUER.to_owned(),
            version: ServerVersion::default(),
        }
    }
}

/// One request as it reached the double.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub user: Option<String>,
    pub headers: Vec<(String, String)>,
}

struct State {
    store: Store,
    signer: Signer,
    tokens: Mutex<HashSet<String>>,
    requests: Mutex<Vec<Logged>>,
    bookmark_interval: Duration,
    /// Users a SubjectAccessReview says no to (everyone else may do anything).
    denied_users: Mutex<HashSet<String>>,
    version: ServerVersion,
    /// What a SelfSubjectAccessReview says RBAC does not grant.
    refused_access: Mutex<Vec<reviews::Refusal>>,
}

/// A running double; stops when dropped.
pub struct Handle {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

pub struct ApiServer;

impl ApiServer {
    /// Starts the double on the current tokio runtime.
    pub async fn start(config: Config) -> anyhow::Result<Handle> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let ca = Ca::new("apiserver-double CA")?;
        let mut ips = vec![addr.ip(), IpAddr::from([127, 0, 0, 1])];
        ips.extend(&config.extra_ips);
        let pair = ca.issue(&["kubernetes", "kubernetes.default.svc", "localhost"], &ips)?;
        let tls = tls_acceptor(&pair.cert_pem, &pair.key_pem)?;
        let token = format!("admin-{:016x}", rand_u64());
        let state = Arc::new(State {
            store: Store::new(),
            signer: Signer::new(&config.issuer),
            tokens: Mutex::new(HashSet::from([token.clone()])),
            requests: Mutex::default(),
            bookmark_interval: config.bookmark_interval,
            denied_users: Mutex::default(),
            version: config.version,
            refused_access: Mutex::default(),
        });
        seed(&state.store, addr);
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As kube-apiserver: Go sets TCP_NODELAY on every connection. Without
                // it, Nagle's algorithm and the peer's delayed ACK hold small writes
                // (a handshake's last flight, an h2 frame) for up to 40 ms.
                let _ = tcp.set_nodelay(true);
                let (tls, state) = (tls.clone(), serve_state.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(state, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Handle {
            addr,
            ca_pem: ca.cert_pem(),
            token,
            state,
            task,
        })
    }
}

impl Handle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A token with full access.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// SubjectAccessReviews for `user` answer "not allowed" from now on.
    pub fn deny_access_reviews_for(&self, user: &str) {
        self.state
            .denied_users
            .lock()
            .unwrap()
            .insert(user.to_owned());
    }

    /// RBAC grants `user` everything but `verb` on `resource` (and every other
    /// refusal): SelfSubjectAccessReviews that ask about it answer `allowed: false`.
    /// Requests themselves are not refused (the double does not authorize them).
    pub fn refuse_access(&self, user: &str, verb: &str, resource: &str) {
        self.state
            .refused_access
            .lock()
            .unwrap()
            .push(reviews::Refusal {
                user: user.to_owned(),
                verb: verb.to_owned(),
                resource: resource.to_owned(),
            });
    }

    /// Makes another bearer token valid.
    pub fn add_token(&self, token: &str) {
        self.state.tokens.lock().unwrap().insert(token.to_owned());
    }

    /// A service-account token as TokenRequest would issue it.
    pub fn mint_token(
        &self,
        subject: &Subject,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> String {
        self.state
            .signer
            .mint(subject, audiences, expiration_seconds)
            .0
    }

    /// A token shaped like `mint_token`'s but signed by a key the double never had.
    pub fn mint_foreign_token(
        &self,
        subject: &Subject,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> String {
        Signer::new(&self.state.signer.issuer)
            .mint(subject, audiences, expiration_seconds)
            .0
    }

    /// Signs with a new key from now on; tokens signed with the old keys stay valid
    /// and the JWKS publishes every key, until `retire_old_signing_keys`.
    pub fn rotate_signing_key(&self) {
        self.state.signer.rotate();
    }

    /// Drops every signing key but the newest: tokens they signed stop verifying.
    pub fn retire_old_signing_keys(&self) {
        self.state.signer.retire_old_keys();
    }

    /// A JWT with arbitrary claims, signed with the double's key (for broken tokens).
    pub fn sign_claims(&self, claims: &Value) -> String {
        self.state.signer.sign(claims)
    }

    /// The object stored for `resource`/`namespace`/`name`.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = resources::RESOURCES.iter().find(|r| r.name == resource)?;
        self.state.store.get(r.name, namespace, name)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Creates an object directly (no HTTP), as a controller would.
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> anyhow::Result<Value> {
        let r = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .ok_or_else(|| anyhow::anyhow!("unknown resource {resource}"))?;
        self.state
            .store
            .create(r.name, namespace, object)
            .map_err(|_| anyhow::anyhow!("{resource} exists"))
    }

    /// Replaces an object directly (no HTTP).
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        mut object: Value,
    ) -> anyhow::Result<Value> {
        let r = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .ok_or_else(|| anyhow::anyhow!("unknown resource {resource}"))?;
        object["metadata"]["resourceVersion"] = json!("");
        self.state
            .store
            .update(r.name, namespace, object)
            .map_err(|_| anyhow::anyhow!("{resource} missing"))
    }

    /// Inserts `count` ConfigMaps of about `size` bytes each into `namespace`.
    pub fn insert_configmaps(&self, namespace: &str, count: usize, size: usize) {
        let filler = "x".repeat(size);
        for i in 0..count {
            let obj = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": format!("bulk-{i:07}")}, "data": {"blob": filler}});
            let _ = self.state.store.create("configmaps", namespace, obj);
        }
    }

    /// Inserts `count` Secrets into `namespace`, each with one `data` value of `size`
    /// base64 characters (`eHh4`, "xxx", repeated).
    pub fn insert_secrets(&self, namespace: &str, count: usize, size: usize) {
        let filler = "eHh4".repeat(size / 4);
        for i in 0..count {
            let obj = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": format!("bulk-{i:07}")}, "type": "Opaque", "data": {"blob": filler}});
            let _ = self.state.store.create("secrets", namespace, obj);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A buffered request (upgrades keep their connection in `upgrade`).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The authenticated user as an authentication.k8s.io/v1 UserInfo (null: anonymous).
    pub user: Value,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_all(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body decoded by its Content-Type (JSON, YAML or Kubernetes protobuf, as the
    /// real server reads), or the 415/400 Status the real server answers.
    pub fn decode_body(&self) -> Result<Value, hyper::Response<Body>> {
        let media = self
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let decoded = match media {
            "application/json" | "*/*" | "" => {
                serde_json::from_slice(&self.body).map_err(|e| e.to_string())
            }
            "application/yaml" => serde_yaml::from_slice(&self.body).map_err(|e| e.to_string()),
            "application/vnd.kubernetes.protobuf" => protobuf::decode(&self.body),
            other => {
                return Err(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (not {other})"
                    ),
                ));
            }
        };
        decoded.map_err(|e| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the body of the request could not be decoded as {media}: {e}"),
            )
        })
    }

    pub fn accept(&self) -> String {
        self.header("accept").unwrap_or_default().to_owned()
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes. One over it is refused the
/// way Go's server refuses it: the answer goes out while the rest of the body is read
/// and discarded in the background for a while (Go's lingering close), then the
/// connection closes. Closing at once would reset the connection under the client's
/// unread answer.
async fn read_limited(mut body: hyper::body::Incoming) -> Result<Bytes, ()> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(drop)?.into_data() else {
            continue;
        };
        if read.len() + data.len() > MAX_BODY {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = body.frame().await {}
                })
                .await;
            });
            return Err(());
        }
        read.extend_from_slice(&data);
    }
    Ok(read.into())
}

async fn route(
    state: Arc<State>,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let Ok(body) = read_limited(body).await else {
        let mut response = status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "request body too large",
        );
        let close = header::HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
        return response;
    };
    let query_str = parts.uri.query().unwrap_or_default().to_owned();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: form_urlencoded::parse(query_str.as_bytes())
            .into_owned()
            .collect(),
        headers: parts.headers,
        body,
        upgrade,
        user: Value::Null,
    };
    let user = authn::authenticate(&state, &req);
    log(
        &state,
        &req,
        &query_str,
        user.as_ref()
            .ok()
            .and_then(|u| u.as_ref()?["username"].as_str().map(str::to_owned)),
    );
    let user = match user {
        Ok(user) => user,
        Err(response) => return response,
    };
    let mut req = req;
    req.user = user.clone().unwrap_or(Value::Null);
    let path = req.path.trim_end_matches('/');
    let anonymous_ok = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    if user.is_none() && !anonymous_ok {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "forbidden: User \"system:anonymous\" cannot {} path \"{}\"",
                req.method.as_str().to_lowercase(),
                req.path
            ),
        );
    }
    match path {
        "/version" => json_response(StatusCode::OK, &resources::version(state.version)),
        "/healthz" | "/livez" | "/readyz" => {
            response(StatusCode::OK, "text/plain; charset=utf-8", full("ok"))
        }
        "/api" => json_response(StatusCode::OK, &resources::api_versions()),
        "/apis" => json_response(StatusCode::OK, &resources::api_groups()),
        "/api/v1" => json_response(
            StatusCode::OK,
            &resources::resource_list("", "v1").expect("served"),
        ),
        "/.well-known/openid-configuration" => {
            json_response(StatusCode::OK, &state.signer.openid_configuration())
        }
        "/openid/v1/jwks" => json_response(StatusCode::OK, &state.signer.jwks()),
        "/openapi/v3" => json_response(StatusCode::OK, &openapi::index()),
        _ => {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            match segs.as_slice() {
                ["apis", g, v] => match resources::resource_list(g, v) {
                    Some(list) => json_response(StatusCode::OK, &list),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                },
                ["api" | "apis", ..] => api::handle(&state, req),
                ["openapi", "v3", gv @ ..] => match openapi::document(&gv.join("/")) {
                    Some(doc) => json_response(StatusCode::OK, &doc),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                },
                _ => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            }
        }
    }
}

fn log(state: &State, req: &Req, query: &str, user: Option<String>) {
    let notable = |k: &str| {
        k.starts_with("impersonate-")
            || k.starts_with("x-forwarded")
            || matches!(
                k,
                "audit-id" | "forwarded" | "x-real-ip" | "upgrade" | "accept"
            )
    };
    let headers = req
        .headers
        .iter()
        .filter(|(k, _)| notable(k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.requests.lock().unwrap().push(Logged {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: query.to_owned(),
        user,
        headers,
    });
}

fn seed(store: &Store, addr: SocketAddr) {
    let started = store::now();
    for ns in ["default", "kube-system", "kgate-system", "demo"] {
        let _ = store.create("namespaces", "", json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}, "status": {"phase": "Active"}}));
    }
    seed_kubernetes_service(store, addr);
    for node in ["node-1", "node-2"] {
        let _ = store.create("nodes", "", json!({"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "addresses": [{"type": "Hostname", "address": node}]}}));
    }
    let objects = [
        (
            "serviceaccounts",
            json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "bot"}}),
        ),
        (
            "pods",
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "bot", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.213.0.2", "hostIP": "10.213.0.1", "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"running": {"startedAt": started}}}]}}),
        ),
        (
            "secrets",
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db-creds"}, "type": "Opaque",
            "data": {"username": "YWRtaW4=", "password": "czNjcjN0LXBhc3N3b3Jk"}}),
        ),
        (
            "configmaps",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app-config"}, "data": {"mode": "demo"}}),
        ),
        (
            "deployments",
            json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
        ),
    ];
    for (resource, obj) in objects {
        let resource = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .expect("served")
            .name;
        let _ = store.create(resource, "demo", obj);
    }
}

/// The `kubernetes` Service and its EndpointSlice, as the API server maintains them: the
/// ClusterIP (the first address of the service range) on port 443, and the API server's
/// own advertised address and secure port as the one endpoint.
fn seed_kubernetes_service(store: &Store, addr: SocketAddr) {
    let (ip, family) = match addr.ip() {
        ip if ip.is_unspecified() => (IpAddr::from([127, 0, 0, 1]), "IPv4"),
        ip if ip.is_ipv4() => (ip, "IPv4"),
        ip => (ip, "IPv6"),
    };
    let service = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE_IP, "clusterIPs": [KUBERNETES_SERVICE_IP],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]
        },
        "status": {"loadBalancer": {}}
    });
    let slice = json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "kubernetes", "labels": {
    "kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]
    });
    let _ = store.create("services", "default", service);
    let _ = store.create("endpointslices", "default", slice);
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// A TLS acceptor for `cert_pem`/`key_pem` offering h2 and http/1.1 (the double's, and
/// kgate-tests' fault proxy's).
pub fn tls_acceptor(cert_pem: &str, key_pem: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

// === responses ===

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed by a channel: what watches, logs and big lists write into.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

pub fn response(code: StatusCode, content_type: &str, body: Body) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("valid response")
}

pub fn json_response(code: StatusCode, value: &Value) -> hyper::Response<Body> {
    response(
        code,
        "application/json",
        full(serde_json::to_vec(value).unwrap_or_default()),
    )
}

/// A `Status` failure as the real server writes it.
pub fn status(code: StatusCode, reason: &str, message: &str) -> hyper::Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}
