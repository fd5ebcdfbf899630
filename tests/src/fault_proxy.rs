//! A fault injector on the agent's path to the API server: a TLS endpoint (with its own
//! CA) that forwards every request to the double, or misbehaves as told. The mode can
//! change at any time, so tests see both the failure and the recovery.
//!
//! Connection faults ([`Fault::Down`], [`Fault::Reset`], [`Fault::Garbage`],
//! [`Fault::Blackhole`]) also close the connections already open, as a crashed API
//! server's would be; request faults ([`Fault::Delay`], [`Fault::Respond`]) apply to
//! each request as it arrives.
//!
//! Not here: upgrades (exec, port-forward) are not forwarded.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::watch, task::JoinHandle};

use crate::pki::Ca;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What the path to the API server does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards every request.
    None,
    /// Nothing listens on the port: connects are refused.
    Down,
    /// Connections are accepted and reset at once.
    Reset,
    /// Connections are answered with bytes that are not TLS, then closed.
    Garbage,
    /// TLS completes, then nothing is ever answered.
    Blackhole,
    /// Each request is forwarded after this delay.
    Delay(Duration),
    /// Requests whose path starts with `prefix` get this answer instead of the double's.
    Respond {
        prefix: String,
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

impl Fault {
    fn breaks_connections(&self) -> bool {
        matches!(
            self,
            Self::Down | Self::Reset | Self::Garbage | Self::Blackhole
        )
    }
}

/// A running fault proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    ca_pem: String,
    mode: watch::Sender<Fault>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to the double at `upstream` (trusting `upstream_ca_pem`), with
    /// no fault.
    pub async fn start(upstream: &str, upstream_ca_pem: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let ca = Ca::new("fault-proxy CA")?;
        let pair = ca.issue(&["localhost"], &[addr.ip()])?;
        let tls = crate::apiserver::tls_acceptor(&pair.cert_pem, &pair.key_pem)?;
        let upstream: Uri = upstream.parse()?;
        let clients = Arc::new(Clients {
            http2: crate::harness::https_client_with(upstream_ca_pem, true),
            http1: crate::harness::https_client_with(upstream_ca_pem, false),
            upstream,
        });
        let (mode, rx) = watch::channel(Fault::None);
        let task = tokio::spawn(accept_loop(listener, addr, tls, clients, rx));
        Ok(Self {
            addr,
            ca_pem: ca.cert_pem(),
            mode,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA the agent must trust for this proxy (its `upstream.caFile`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Clients {
    http2: Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>,
    http1: Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>,
    upstream: Uri,
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    clients: Arc<Clients>,
    mut mode: watch::Receiver<Fault>,
) {
    let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let mut broken = false;
    loop {
        if *mode.borrow() == Fault::Down {
            drop(listener);
            for conn in conns.lock().unwrap().drain(..) {
                conn.abort();
            }
            while *mode.borrow_and_update() == Fault::Down {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            listener = loop {
                // The port was ours a moment ago; retry briefly if the kernel lags.
                match TcpListener::bind(addr).await {
                    Ok(listener) => break listener,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            broken = mode.borrow().breaks_connections();
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                // Into or out of a connection fault: no connection outlives it.
                let now = mode.borrow().breaks_connections();
                if std::mem::replace(&mut broken, now) || now {
                    for conn in conns.lock().unwrap().drain(..) {
                        conn.abort();
                    }
                }
                continue;
            }
        };
        let Ok((tcp, _)) = accepted else {
            continue;
        };
        let fault = mode.borrow().clone();
        let (tls, clients, mode) = (tls.clone(), clients.clone(), mode.clone());
        let conn = tokio::spawn(async move {
            match fault {
                Fault::Reset | Fault::Down => {
                    let _ = tcp.set_zero_linger();
                }
                Fault::Garbage => {
                    let mut tcp = tcp;
                    let _ = tcp.write_all(b"\x00garbage, not TLS\r\n\r\n").await;
                }
                Fault::Blackhole => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        std::future::pending::<()>().await;
                        drop(stream);
                    }
                }
                _ => serve(tcp, tls, clients, mode).await,
            }
        });
        let mut conns = conns.lock().unwrap();
        conns.retain(|c| !c.is_finished());
        conns.push(conn);
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    clients: Arc<Clients>,
    mode: watch::Receiver<Fault>,
) {
    let Ok(stream) = tls.accept(tcp).await else {
        return;
    };
    let service = service_fn(move |req| {
        let (clients, fault) = (clients.clone(), mode.borrow().clone());
        async move { Ok::<_, Infallible>(answer(&clients, fault, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(clients: &Clients, fault: Fault, req: Request<Incoming>) -> Response<Body> {
    match fault {
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::Respond {
            prefix,
            status,
            content_type,
            body,
        } if req.uri().path().starts_with(&prefix) => {
            return Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, content_type)
                .body(
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .expect("a canned response");
        }
        _ => {}
    }
    let http2 = req.version() == http::Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    let mut uri = clients.upstream.clone().into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = Uri::from_parts(uri).expect("the double's URL with this path");
    parts.headers.remove(header::HOST);
    let client = if http2 {
        &clients.http2
    } else {
        &clients.http1
    };
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(|b| b.map_err(BoxError::from).boxed_unsync()),
        Err(error) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(
                Full::new(Bytes::from(format!("fault proxy: {error}")))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("a 502"),
    }
}
