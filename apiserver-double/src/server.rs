//! The server: a TCP listener, TLS with a certificate from a CA made at start (h2 and
//! http/1.1 by ALPN), one hyper connection per client (upgrades kept for exec, attach
//! and port-forward), each request handed to routing.rs; the state every handler
//! shares; the [`Handle`] a test holds, which stops the server when dropped.
//!
//! Not here: what a test does to a running double besides HTTP (control.rs).

use std::{
    collections::HashSet,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    Config, Logged, ServerVersion, pki::Ca, reviews, routing::route, seed::seed, store::Store,
    tokens::Signer,
};

/// Concurrent HTTP/2 streams a client may open on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 250;

/// What every handler shares: the objects, the token signer, the request log, and
/// the answers tests set for access reviews.
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) signer: Signer,
    pub(crate) tokens: Mutex<HashSet<String>>,
    pub(crate) requests: Mutex<Vec<Logged>>,
    pub(crate) bookmark_interval: Duration,
    /// Users a SubjectAccessReview says no to (everyone else may do anything).
    pub(crate) denied_users: Mutex<HashSet<String>>,
    pub(crate) version: ServerVersion,
    /// What a SelfSubjectAccessReview says RBAC does not grant.
    pub(crate) refused_access: Mutex<Vec<reviews::Refusal>>,
    /// The `jwks_uri` of OIDC discovery; `None`: discovery is not served.
    pub(crate) jwks_uri: Option<String>,
    /// Tokens that authenticated, for `--token-success-cache-ttl`.
    pub(crate) token_cache: crate::authn::TokenCache,
    /// `--api-audiences` (the issuer when none were configured).
    pub(crate) api_audiences: Vec<String>,
}

/// A running double; stops when dropped.
pub struct Handle {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    pub(crate) state: Arc<State>,
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
            jwks_uri: crate::tokens::discovery_jwks_uri(
                &config.issuer,
                config.jwks_uri.as_deref(),
                &external_address(addr),
            ),
            token_cache: crate::authn::TokenCache::new(config.token_success_cache_ttl),
            api_audiences: if config.api_audiences.is_empty() {
                vec![config.issuer.clone()]
            } else {
                config.api_audiences.clone()
            },
        });
        seed(&state.store, addr, config.version);
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
                        async move { Ok::<_, Infallible>(with_audit_id(state, req).await) }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // kube-apiserver's limit unless --http2-max-streams-per-connection
                    // sets another: the generic server makes Go's default of 250
                    // explicit (k8s.io/apiserver/pkg/server/secure_serving.go). A
                    // client past it waits for a stream to end.
                    builder
                        .http2()
                        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
                    let _ = builder
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
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address clients outside reach the double at (kube-apiserver's
/// `ExternalAddress`): the listen address, loopback for an unspecified one.
fn external_address(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    SocketAddr::new(ip, addr.port()).to_string()
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

/// Routes `req` and answers with its `Audit-Id`, as kube-apiserver's `WithAuditInit`
/// filter (staging/src/k8s.io/apiserver/pkg/endpoints/filters/with_audit_init.go) does:
/// the client's own ID when it sent one, else a new one.
async fn with_audit_id(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<crate::Body> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = req.headers().get("audit-id").cloned().unwrap_or_else(|| {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        http::HeaderValue::from_str(&format!("00000000-0000-4000-8000-{n:012x}"))
            .expect("a UUID is a valid header value")
    });
    let mut response = route(state, req).await;
    response
        .headers_mut()
        .insert(http::HeaderName::from_static("audit-id"), id);
    response
}
