//! Where the forward stage's connections go: the API server's ready endpoints, as
//! endpoint discovery last saw them, or `upstream.server`'s own address while it has
//! seen none.
//!
//! The dialer sits under TLS, so the certificate is still checked against
//! `upstream.server`'s name (or `upstream.serverName`) whichever endpoint answered: an
//! endpoint list can only choose among servers that prove to be the API server.
//! Each new connection starts at the next endpoint (round robin) and moves on to the
//! following one when a connect fails.
//!
//! Not here: health checks (a dead endpoint costs a failed connect until discovery
//! marks it not ready) or balancing of requests, which ride pooled connections.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use http::{Uri, uri::Authority};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpStream;
use tracing::{debug, warn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The endpoint list the dialer reads and discovery writes.
#[derive(Clone, Default)]
pub(crate) struct Endpoints(Arc<Inner>);

#[derive(Default)]
struct Inner {
    addrs: RwLock<Arc<[SocketAddr]>>,
    next: AtomicUsize,
}

// === impl Endpoints ===

impl Endpoints {
    pub(crate) fn set(&self, addrs: Vec<SocketAddr>) {
        *self
            .0
            .addrs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addrs.into();
    }

    pub(crate) fn get(&self) -> Arc<[SocketAddr]> {
        self.0
            .addrs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every endpoint once, starting at the next one in turn.
    fn rotation(&self) -> Vec<SocketAddr> {
        let addrs = self.get();
        if addrs.is_empty() {
            return Vec::new();
        }
        let start = self.0.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        addrs[start..]
            .iter()
            .chain(&addrs[..start])
            .copied()
            .collect()
    }
}

/// A connector for `hyper_util`'s client: TCP to an endpoint of the upstream.
#[derive(Clone)]
pub(crate) struct Dialer {
    http: HttpConnector,
    /// The authority of `upstream.server`: only its connections are re-aimed.
    upstream: Authority,
    endpoints: Endpoints,
}

// === impl Dialer ===

impl Dialer {
    pub(crate) fn new(http: HttpConnector, upstream: Authority, endpoints: Endpoints) -> Self {
        Self {
            http,
            upstream,
            endpoints,
        }
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let candidates = if uri.authority() == Some(&self.upstream) {
            self.endpoints.rotation()
        } else {
            Vec::new()
        };
        let mut http = self.http.clone();
        Box::pin(async move {
            if candidates.is_empty() {
                return tower_service::Service::call(&mut http, uri)
                    .await
                    .map_err(Into::into);
            }
            let mut last = None;
            for addr in candidates {
                let Ok(target) = Uri::builder()
                    .scheme("https")
                    .authority(addr.to_string())
                    .path_and_query("/")
                    .build()
                else {
                    continue;
                };
                match tower_service::Service::call(&mut http, target).await {
                    Ok(stream) => {
                        debug!(endpoint = %addr, "upstream connection");
                        return Ok(stream);
                    }
                    Err(error) => {
                        warn!(endpoint = %addr, %error, "API server endpoint unreachable; trying the next");
                        last = Some(error);
                    }
                }
            }
            Err(last.map_or_else(|| "no usable API server endpoint".into(), Into::into))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_starts_at_the_next_endpoint_and_covers_all() {
        let e = Endpoints::default();
        assert!(e.rotation().is_empty());
        let a: SocketAddr = "10.0.0.1:6443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:6443".parse().unwrap();
        e.set(vec![a, b]);
        assert_eq!(e.rotation(), vec![a, b]);
        assert_eq!(e.rotation(), vec![b, a]);
        assert_eq!(e.rotation(), vec![a, b]);
    }

    #[tokio::test]
    async fn connects_to_a_live_endpoint_after_a_dead_one() {
        use tower_service::Service as _;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        // A port that was free a moment ago: nothing listens there.
        let dead_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let endpoints = Endpoints::default();
        endpoints.set(vec![dead_addr, live_addr]);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let mut dialer = Dialer::new(http, Authority::from_static("api.example:443"), endpoints);
        let accept = tokio::spawn(async move { live.accept().await.map(|(_, peer)| peer) });
        let stream = dialer
            .call(Uri::from_static("https://api.example:443/"))
            .await
            .unwrap();
        let local = stream.inner().local_addr().unwrap();
        assert_eq!(accept.await.unwrap().unwrap(), local);
        // Other authorities are dialled as named.
        let err = dialer
            .call(Uri::from_static("https://127.0.0.1:1/"))
            .await
            .err();
        assert!(err.is_some(), "port 1 is not listening");
    }
}
