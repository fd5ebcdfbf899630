//! The load generator's connections: TLS (rustls, the same CA the server's certificate
//! chains to) and one hyper client connection each, HTTP/2 or HTTP/1.1 by ALPN.
//!
//! Connections are made by hand rather than through a pooling client, so that the
//! benchmark decides exactly how many exist and when each is opened: warm ones for the
//! latency rows, a new one per request for the handshake row. Session resumption is
//! off: every handshake is a full one, as client-go's are (it keeps no session cache).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H2 => "HTTP/2",
        }
    }
}

/// One server to measure: where it listens and how to trust it.
#[derive(Clone)]
pub struct Target {
    /// `direct`, `nginx`, `kgate` or `kgate-batch`.
    pub via: &'static str,
    pub addr: SocketAddr,
    /// The name its certificate is verified against (and sent as SNI).
    server_name: ServerName<'static>,
    /// `host:port` for the `Host` header and HTTP/2's `:authority`.
    authority: String,
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl Target {
    /// A server on loopback whose certificate is for `localhost`.
    pub fn new(via: &'static str, addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Self> {
        Self::named(via, addr, "localhost", &addr.to_string(), ca_pem)
    }

    /// A server at `addr` whose certificate is for `server_name` (a DNS name or an
    /// IP address), addressed as `authority`.
    pub fn named(
        via: &'static str,
        addr: SocketAddr,
        server_name: &str,
        authority: &str,
        ca_pem: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            via,
            addr,
            server_name: ServerName::try_from(server_name.to_owned())
                .with_context(|| format!("server name {server_name:?}"))?,
            authority: authority.to_owned(),
            h1: Arc::new(tls_config(ca_pem, b"http/1.1")?),
            h2: Arc::new(tls_config(ca_pem, b"h2")?),
        })
    }
}

fn tls_config(ca_pem: &str, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA certificate")?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A request as the benchmark sends it: one path, a bearer token; a GET, or with
/// `write`, a PATCH.
#[derive(Clone)]
pub struct Get {
    pub path: String,
    pub token: String,
    /// A PATCH instead: a JSON merge patch setting this data key of the ConfigMap at
    /// `path` to a new value each time (so that every request changes the object).
    pub write: Option<&'static str>,
}

impl Get {
    /// A GET of `path`.
    pub fn new(path: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            token: token.into(),
            write: None,
        }
    }

    fn request(&self, uri: String) -> anyhow::Result<Request<Full<Bytes>>> {
        let builder = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token));
        Ok(match self.write {
            None => builder.method(http::Method::GET).body(Full::default())?,
            Some(key) => {
                let n = WRITES.fetch_add(1, Ordering::Relaxed);
                builder
                    .method(http::Method::PATCH)
                    .header("content-type", "application/merge-patch+json")
                    .header("accept", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"data":{{"{key}":"{n}"}}}}"#
                    ))))?
            }
        })
    }
}

/// The value the next PATCH writes.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// One open client connection.
pub enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Opens a TCP + TLS connection and starts HTTP on it (the connection's driver runs
/// as a task until either side closes).
pub async fn connect(target: &Target, proto: Proto) -> anyhow::Result<Conn> {
    let io = tls(target, proto).await?;
    Ok(match proto {
        Proto::H1 => {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Conn::H1(send)
        }
        Proto::H2 => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Conn::H2(send)
        }
    })
}

/// An HTTP/2 connection for requests with bodies (the scale rows' writes).
pub async fn connect_writer(target: &Target) -> anyhow::Result<http2::SendRequest<Full<Bytes>>> {
    let (send, conn) =
        http2::handshake(TokioExecutor::new(), tls(target, Proto::H2).await?).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// One request on a new HTTP/2 connection, whatever the answer: its status and body
/// (the upstream mode's checks before the load: who the token is, whether the path
/// answers).
pub async fn once(
    target: &Target,
    method: http::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut send = connect_writer(target).await?;
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://{}{path}", target.authority))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let response = send.send_request(req.body(Full::new(body))?).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// TCP + TLS to the target, with `proto` negotiated by ALPN (an error when the server
/// does not agree to HTTP/2).
async fn tls(
    target: &Target,
    proto: Proto,
) -> anyhow::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to {} ({})", target.via, target.addr))?;
    tcp.set_nodelay(true)?;
    let config = match proto {
        Proto::H1 => target.h1.clone(),
        Proto::H2 => target.h2.clone(),
    };
    let tls = TlsConnector::from(config)
        .connect(target.server_name.clone(), tcp)
        .await
        .with_context(|| format!("TLS handshake with {}", target.via))?;
    if proto == Proto::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("{} did not negotiate h2", target.via);
    }
    Ok(TokioIo::new(tls))
}

impl Conn {
    /// Sends the request and reads the whole response; returns the body's length. A
    /// status other than 200 is an error: a refused request must not count as served.
    pub async fn get(&mut self, target: &Target, get: &Get) -> anyhow::Result<u64> {
        let mut body = self.send(target, get).await?;
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len() as u64;
            }
        }
        Ok(bytes)
    }

    /// Sends the request and returns the response body once the status is 200.
    pub async fn send(
        &mut self,
        target: &Target,
        get: &Get,
    ) -> anyhow::Result<hyper::body::Incoming> {
        let response = match self {
            Self::H1(send) => {
                let mut req = get.request(get.path.clone())?;
                req.headers_mut()
                    .insert(http::header::HOST, target.authority.parse()?);
                send.ready().await?;
                send.send_request(req).await?
            }
            Self::H2(send) => {
                let req = get.request(format!("https://{}{}", target.authority, get.path))?;
                send.ready().await?;
                send.send_request(req).await?
            }
        };
        if response.status() != StatusCode::OK {
            let status = response.status();
            let text = response.into_body().collect().await?.to_bytes();
            bail!(
                "{} answered {status}: {}",
                target.via,
                String::from_utf8_lossy(&text[..text.len().min(300)])
            );
        }
        Ok(response.into_body())
    }

    /// An HTTP/2 connection serves many requests at once: a handle for one more.
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::H2(send) => Some(Self::H2(send.clone())),
            Self::H1(_) => None,
        }
    }
}
