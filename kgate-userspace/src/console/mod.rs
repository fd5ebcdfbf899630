//! `kgate console`: a local web console over the cluster's kgate state. Nodes (the
//! agents' heartbeats, as `kgate status`), approvals (live over Server-Sent Events,
//! approved or denied as the viewer), and recorded sessions (a timeline per session,
//! exec/attach streams played in the page). One hyper server, a plain `match` on the
//! path ([`api`]); the page itself is embedded in the binary ([`assets`]).
//!
//! Protection follows `kubectl port-forward` ([`guard`]): loopback by default, with
//! `Host`, `Origin` and CSRF checks; any other address needs TLS and a sign-in with
//! each viewer's own token ([`viewer`]), so the API server's RBAC and the decided-by
//! field are the viewer's.
//!
//! Not here: what decisions do ([`crate::decisions`]), reading records
//! ([`source`] over [`crate::record`]), the node rows ([`crate::cli`]'s status).

mod api;
mod assets;
mod events;
pub(crate) mod guard;
pub(crate) mod source;
mod viewer;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use http::{Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use self::{
    guard::{Exposure, GuardError, Rules},
    source::SessionSource,
    viewer::{Credentials, Viewers},
};
use crate::body::{self, Body};

/// What `kgate console` was asked for.
pub(crate) struct Settings {
    pub listen: SocketAddr,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Each viewer signs in with their own token even on loopback (a shared machine).
    pub sign_in: bool,
    /// Where the agents' heartbeat Leases are.
    pub namespace: String,
    pub sessions: Arc<dyn SessionSource>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("reading the TLS certificate or key: {0}")]
    TlsLoadFailed(String),
    #[error("no usable kubeconfig (KUBECONFIG or ~/.kube/config): {0}")]
    KubeconfigFailed(String),
    #[error("listening on {0}: {1}")]
    BindFailed(SocketAddr, #[source] std::io::Error),
}

/// The running console's state, shared by every request.
pub(crate) struct Console {
    exposure: Exposure,
    bound: SocketAddr,
    scheme: &'static str,
    /// Per process: embedded in the page, required on every change.
    csrf: String,
    namespace: String,
    sessions: Arc<dyn SessionSource>,
    viewers: Viewers,
}

/// Binds, then serves until the process ends; `bound` hears the address once bound.
///
/// # Errors
///
/// A console that must not start (a non-loopback address without TLS), or cannot
/// (kubeconfig, certificate, address in use).
pub(crate) async fn serve(
    settings: Settings,
    bound: impl FnOnce(SocketAddr, &str),
) -> Result<(), ConsoleError> {
    let exposure = guard::exposure(settings.listen, settings.tls.is_some())?;
    let tls = settings
        .tls
        .as_ref()
        .map(|(c, k)| acceptor(c, k))
        .transpose()?;
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| ConsoleError::KubeconfigFailed(e.to_string()))?;
    let credentials = if exposure == Exposure::Remote || settings.sign_in {
        Credentials::ViewerToken
    } else {
        Credentials::Kubeconfig
    };
    let viewers = Viewers::new(credentials, kube_config)
        .map_err(|e| ConsoleError::KubeconfigFailed(e.to_string()))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| ConsoleError::BindFailed(settings.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConsoleError::BindFailed(settings.listen, e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let console = Arc::new(Console {
        exposure,
        bound: addr,
        scheme,
        csrf: viewer::random_hex(32),
        namespace: settings.namespace,
        sessions: settings.sessions,
        viewers,
    });
    let url = format!("{scheme}://{}", display_host(addr));
    info!(%url, ?exposure, ?credentials, "console listening");
    bound(addr, &url);
    if !assets::BUILT {
        // The API still serves (scripts, tests); the page says the same.
        warn!("{}", assets::NOT_BUILT);
    }
    accept(&listener, &console, tls.as_ref()).await
}

/// Serves every connection `listener` accepts, over TLS when given.
async fn accept(listener: &TcpListener, console: &Arc<Console>, tls: Option<&TlsAcceptor>) -> ! {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, "console accept failed");
                continue;
            }
        };
        let (console, tls) = (console.clone(), tls.cloned());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(console.handle(req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
            };
        });
    }
}

/// `localhost:PORT` for a loopback address, else the address.
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ConsoleError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let fail = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        ConsoleError::TlsLoadFailed(format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| fail(cert, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

// === impl Console ===

impl Console {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let rules = Rules {
            exposure: self.exposure,
            bound: self.bound,
            scheme: self.scheme,
            csrf: &self.csrf,
        };
        if let Err(refusal) = rules.check(req.method(), req.headers()) {
            return error(StatusCode::FORBIDDEN, &refusal.to_string());
        }
        let path = req.uri().path().to_owned();
        let mut response = if path.starts_with("/api/") {
            api::handle(self, req).await
        } else if let Some(name) = path.strip_prefix("/assets/") {
            assets::asset(name)
        } else if is_page(&path) {
            assets::page(&self.csrf, self.viewers.credentials)
        } else {
            error(StatusCode::NOT_FOUND, &format!("no page {path}"))
        };
        secure_headers(response.headers_mut());
        response
    }
}

/// The app's own routes (client-side routing): each serves the page.
fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/" | "/nodes" | "/approvals" | "/sessions" | "/signin"
    ) || ["/approvals/", "/sessions/"]
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// What every answer carries: the page runs only its own scripts (the player needs
/// WebAssembly and inline styles), is never framed, and leaks no URL.
fn secure_headers(h: &mut http::HeaderMap) {
    use http::HeaderValue as V;
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        V::from_static(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, V::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, V::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, V::from_static("no-referrer"));
}

/// An error as the API answers it: JSON with a message.
pub(crate) fn error(code: StatusCode, message: &str) -> Response<Body> {
    json_response(code, &json!({ "message": message }))
}

pub(crate) fn json_response(code: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(body))
        .unwrap_or_else(|_| Response::new(body::empty()))
}
