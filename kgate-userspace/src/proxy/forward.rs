//! The **forward** stage: sends a checked request to the real API server over a pooled
//! rustls connection and streams the response back, bodies unbuffered both ways.
//!
//! - HTTP/2 clients' requests go over HTTP/2 when the API server offers it, spread
//!   over lanes ([`lanes`]): connections of at most [`lanes::STREAMS_PER_LANE`]
//!   streams each, whose connection window covers every stream's window. One agent
//!   speaks for every pod of its node, so neither the API server's limit on concurrent
//!   streams nor clients that stop reading (large lists, watches) may hold the other
//!   pods' requests back.
//! - HTTP/1.1 clients' requests go over pooled HTTP/1.1 connections, one request at a
//!   time on each, keeping the clients' own connection-level parallelism.
//! - Protocol upgrades (exec, attach, port-forward over SPDY/3.1 or WebSocket) go over
//!   HTTP/1.1 connections never reused, since h2 cannot carry them.
//! - No proxy timeout on streams: watches, `logs -f` and exec streams last as long as
//!   both ends want. Dead peers are found by TCP and HTTP/2 keep-alives, not by a
//!   deadline. Only the response head of a request that is not long-running has a
//!   deadline (`upstream.responseTimeoutSeconds`), so that a hung API server gives
//!   clients a 504 instead of a wait without end.
//! - Hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways; headers a client
//!   could use to claim another identity or address (`X-Forwarded-*`, `Forwarded`,
//!   `X-Real-Ip`) are dropped and `X-Forwarded-For` set to what the kernel saw.
//! - A client's `Impersonate-*` headers are always dropped; the ones that go upstream
//!   are written from what kgate checked ([`Credentials`]).
//!
//! Not here: deciding whether a request may go (authorize) or rewriting the response
//! (mask); this stage only moves bytes it was handed.

use std::{
    fs,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
    header::{self, AUTHORIZATION, CONNECTION, HOST, UPGRADE},
    uri::PathAndQuery,
};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tracing::debug;

mod lanes;

use self::lanes::{Held, Lanes};
use super::{
    dial::{Dialer, Endpoints},
    upgrade::{StreamTap, upgrade_protocol},
};
use crate::body::{self, Body};
use crate::{
    config,
    identity::{Identity, UserInfo},
};

/// Whose credentials a request goes upstream with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Credentials<'a> {
    /// The caller's own, as it sent them.
    Caller,
    /// The caller's own, acting as the identity it asked for and kgate's policy let it
    /// impersonate: the headers are rewritten from `requested`, and the API server
    /// checks the caller's `impersonate` permission again.
    CallerImpersonating(&'a UserInfo),
    /// The agent's, impersonating the identity the request is decided as.
    Agent(&'a UserInfo),
}

/// How `identity`'s requests go upstream.
pub(crate) fn credentials(identity: &Identity) -> Credentials<'_> {
    match (&identity.impersonation, identity.impersonate) {
        (_, true) => Credentials::Agent(&identity.user),
        (Some(impersonation), false) => Credentials::CallerImpersonating(&impersonation.requested),
        (None, false) => Credentials::Caller,
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("reading {0}: {1}")]
    ReadFailed(String, #[source] std::io::Error),
    #[error("{0}: {1}")]
    BadCredential(String, String),
    #[error("upstream TLS configuration: {0}")]
    TlsConfigFailed(#[source] rustls::Error),
    #[error("invalid upstream server name {0:?}")]
    BadServerName(String),
    /// The API server could not be reached or broke the exchange: the upstream side's
    /// fault, a 503 for the client.
    #[error("upstream API server unavailable: {0}")]
    Upstream(#[source] hyper_util::client::legacy::Error),
    /// The request could not be rebuilt for upstream: the client's fault, a 400.
    #[error("request cannot be forwarded: {0}")]
    BadRequest(String),
    /// No response head in time from an API server that took the request: a 504.
    #[error("the upstream API server did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Pooled clients to the real API server.
pub(crate) struct Upstream {
    base: Uri,
    /// HTTP/2 when the API server offers it: for HTTP/2 clients' requests.
    lanes: Lanes<Client<HttpsConnector<Dialer>, Body>>,
    /// HTTP/1.1, pooled: for HTTP/1.1 clients' requests.
    http1: Client<HttpsConnector<Dialer>, Body>,
    /// HTTP/1.1, never reused: each upgrade takes its connection over.
    upgrades: Client<HttpsConnector<Dialer>, Body>,
    /// The agent's own bearer token, for impersonated requests.
    agent_token: Option<AgentToken>,
    /// Deadline on the response head of requests that are not long-running.
    response_timeout: Duration,
}

/// The most an HTTP/1.1 upstream connection reads ahead of its client: each request
/// holds a connection while it runs, so this times the concurrent large answers is
/// what they may buffer (hyper's default, about 400 KiB, took 10 MiB for 20 concurrent
/// 20 MB lists).
const HTTP1_READ_BUFFER: usize = 64 * 1024;

/// A bearer token file, re-read when it may have rotated.
struct AgentToken {
    path: PathBuf,
    current: Mutex<(Option<HeaderValue>, Option<Instant>)>,
}

/// How often the agent's token file is re-read (kubelet rotates projected tokens at
/// 80% of their lifetime, at least an hour).
const TOKEN_REREAD: Duration = Duration::from_secs(30);

// === impl Upstream ===

impl Upstream {
    /// `endpoints` is where connections to `base` go while it is not empty (endpoint
    /// discovery fills it).
    pub(crate) fn new(
        cfg: &config::Upstream,
        base: Uri,
        endpoints: &Endpoints,
    ) -> Result<Self, ForwardError> {
        let tls = client_tls(cfg)?;
        let server_name = match &cfg.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| ForwardError::BadServerName(name.clone()))?,
            ),
            None => None,
        };
        let connector = |tls: ClientConfig, h2: bool| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            // Finds dead API servers under idle watches without a request deadline.
            http.set_keepalive(Some(Duration::from_secs(30)));
            http.set_connect_timeout(Some(Duration::from_secs(10)));
            let authority = base
                .authority()
                .cloned()
                .unwrap_or_else(|| http::uri::Authority::from_static("invalid"));
            let http = Dialer::new(http, authority, endpoints.clone());
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only();
            let builder = match &server_name {
                Some(name) => {
                    builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
                }
                None => builder,
            };
            if h2 {
                builder.enable_all_versions().wrap_connector(http)
            } else {
                builder.enable_http1().wrap_connector(http)
            }
        };
        let h2 = connector(tls.clone(), true);
        let lane = move || {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_while_idle(true)
                .http2_initial_stream_window_size(lanes::STREAM_WINDOW)
                .http2_initial_connection_window_size(lanes::CONNECTION_WINDOW)
                .build(h2.clone())
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_max_buf_size(HTTP1_READ_BUFFER)
            .build(connector(tls.clone(), false));
        let upgrades = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector(tls, false));
        Ok(Self {
            base,
            lanes: Lanes::new(lane),
            http1,
            upgrades,
            agent_token: cfg.token_file.clone().map(|path| AgentToken {
                path,
                current: Mutex::new((None, None)),
            }),
            response_timeout: Duration::from_secs(cfg.response_timeout_seconds),
        })
    }

    /// Forwards `req`, which came from `client`, with `credentials`. For an upgrade,
    /// the client's and the upstream's upgraded streams are relayed in a task of their
    /// own, through `tap`. Unless `long_running`, the response head must come within
    /// the response timeout.
    pub(crate) async fn forward(
        &self,
        client: SocketAddr,
        mut req: Request<Body>,
        credentials: Credentials<'_>,
        long_running: bool,
        tap: StreamTap,
    ) -> Result<Response<Body>, ForwardError> {
        let upgrade = upgrade_protocol(req.headers()).is_some();
        let client_http1 = req.version() <= Version::HTTP_11;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut upstream_req = self.upstream_request(client, req, upgrade)?;
        match credentials {
            Credentials::Caller => {}
            Credentials::CallerImpersonating(user) => {
                impersonation_headers(upstream_req.headers_mut(), user)?;
            }
            Credentials::Agent(user) => {
                let token = self
                    .agent_token
                    .as_ref()
                    .map(AgentToken::header)
                    .transpose()?;
                impersonate_headers(upstream_req.headers_mut(), user, token)?;
            }
        }

        let mut slot = None;
        let sent = if upgrade {
            self.upgrades.request(upstream_req)
        } else if client_http1 {
            self.http1.request(upstream_req)
        } else {
            let (lane, taken) = self.lanes.take();
            slot = Some(taken);
            lane.request(upstream_req)
        };
        let mut response = if long_running {
            sent.await
        } else {
            tokio::time::timeout(self.response_timeout, sent)
                .await
                .map_err(|_| ForwardError::Timeout(self.response_timeout))?
        }
        .map_err(blame)?;

        if let Some(client_upgrade) = client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let tap = tap.negotiated(response.headers());
            tokio::spawn(relay(client_upgrade, upstream_upgrade, tap));
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, body::stream(body)));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = match slot {
            Some(slot) => body::stream(Held::new(body, slot)),
            None => body::stream(body),
        };
        Ok(Response::from_parts(parts, body))
    }

    fn upstream_request(
        &self,
        client: SocketAddr,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Request<Body>, ForwardError> {
        let (mut parts, incoming) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = self.base.clone().into_parts();
        uri.path_and_query = Some(path);
        parts.uri = Uri::from_parts(uri).map_err(|e| ForwardError::BadRequest(e.to_string()))?;
        // The pool picks h2 or HTTP/1.1 by ALPN; the request itself must not insist.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        // The URI's authority becomes Host / :authority.
        parts.headers.remove(HOST);
        for name in UNTRUSTED {
            parts.headers.remove(*name);
        }
        // Only what kgate checked may impersonate: see `Credentials`.
        let client_impersonation: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("impersonate-"))
            .cloned()
            .collect();
        for name in client_impersonation {
            parts.headers.remove(name);
        }
        // Printed on the stack: the header value is the one copy.
        let mut ip = [0u8; 45];
        let unused = {
            let mut rest = &mut ip[..];
            write!(rest, "{}", client.ip()).expect("an IP address prints in 45 bytes");
            rest.len()
        };
        let printed = ip.len() - unused;
        parts.headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_bytes(&ip[..printed]).expect("an IP address is a valid header value"),
        );
        Ok(Request::from_parts(parts, incoming))
    }
}

/// Which side broke a failed exchange: the client's own request body (a malformed
/// chunk, a short body: hyper reports the body stream's error as a user error) is the
/// client's fault, a 400; anything else is the upstream's.
fn blame(error: hyper_util::client::legacy::Error) -> ForwardError {
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_user()
        {
            let why = std::error::Error::source(hyper)
                .map_or_else(|| hyper.to_string(), ToString::to_string);
            return ForwardError::BadRequest(format!("the request body is malformed: {why}"));
        }
        source = cause.source();
    }
    ForwardError::Upstream(error)
}

// === impl AgentToken ===

impl AgentToken {
    fn header(&self) -> Result<HeaderValue, ForwardError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(value), Some(read)) = &*current
            && read.elapsed() < TOKEN_REREAD
        {
            return Ok(value.clone());
        }
        let token = fs::read_to_string(&self.path)
            .map_err(|e| ForwardError::ReadFailed(self.path.display().to_string(), e))?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                ForwardError::BadCredential(self.path.display().to_string(), "not a token".into())
            })?;
        value.set_sensitive(true);
        *current = (Some(value.clone()), Some(Instant::now()));
        Ok(value)
    }
}

/// Replaces the caller's credentials with the agent's and asks the API server to act
/// as `user`.
fn impersonate_headers(
    headers: &mut HeaderMap,
    user: &UserInfo,
    agent: Option<HeaderValue>,
) -> Result<(), ForwardError> {
    headers.remove(AUTHORIZATION);
    if let Some(agent) = agent {
        headers.insert(AUTHORIZATION, agent);
    }
    impersonation_headers(headers, user)
}

/// `Impersonate-User`, `-Uid`, `-Group` and `-Extra-*` (percent-encoded keys) for
/// `user`. A name that cannot be a header value is an error, never left out: one group
/// fewer is another identity.
fn impersonation_headers(headers: &mut HeaderMap, user: &UserInfo) -> Result<(), ForwardError> {
    // Go's HTTP stack sends UTF-8 names as they are; only control characters cannot be
    // carried.
    let value = |v: &str| {
        HeaderValue::from_bytes(v.as_bytes()).map_err(|_| {
            ForwardError::BadRequest(format!(
                "the identity {:?} cannot be sent to the API server: {v:?} is not a valid header value",
                user.username
            ))
        })
    };
    headers.insert(
        HeaderName::from_static("impersonate-user"),
        value(&user.username)?,
    );
    if !user.uid.is_empty() {
        headers.insert(
            HeaderName::from_static("impersonate-uid"),
            value(&user.uid)?,
        );
    }
    for group in &user.groups {
        headers.append(HeaderName::from_static("impersonate-group"), value(group)?);
    }
    for (key, values) in &user.extra {
        let name = HeaderName::from_bytes(
            format!("impersonate-extra-{}", escape_extra_key(key)).as_bytes(),
        )
        .map_err(|e| ForwardError::BadRequest(format!("extra key {key:?}: {e}")))?;
        for v in values {
            headers.append(name.clone(), value(v)?);
        }
    }
    Ok(())
}

/// An extra key as the API server reads it from a header name: percent-encoded
/// outside of the characters a header name may carry unescaped.
fn escape_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Headers a client must not be able to set: they claim a source address or a proxy
/// hop that kgate did not see.
const UNTRUSTED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
];

/// Removes hop-by-hop headers: the standard ones and any that `Connection` names. For
/// an upgrade, `Connection: Upgrade` and `Upgrade` are end-to-end by necessity.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Relays an upgraded connection both ways until both sides close.
async fn relay(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    tap: StreamTap,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let result = tap
        .relay(TokioIo::new(client), TokioIo::new(upstream))
        .await;
    debug!(?result, "upgraded stream closed");
}

fn client_tls(cfg: &config::Upstream) -> Result<ClientConfig, ForwardError> {
    let mut roots = RootCertStore::empty();
    let ca = read(&cfg.ca_file)?;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| {
            ForwardError::BadCredential(cfg.ca_file.display().to_string(), e.to_string())
        })?;
        roots.add(cert).map_err(|e| {
            ForwardError::BadCredential(cfg.ca_file.display().to_string(), e.to_string())
        })?;
    }
    if roots.is_empty() {
        return Err(ForwardError::BadCredential(
            cfg.ca_file.display().to_string(),
            "no CA certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ForwardError::TlsConfigFailed)?
        .with_root_certificates(roots);
    match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&read(cert_file)?)
                    .filter_map(Result::ok)
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| {
                ForwardError::BadCredential(key_file.display().to_string(), e.to_string())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(ForwardError::TlsConfigFailed)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ForwardError> {
    fs::read(path).map_err(|e| ForwardError::ReadFailed(path.display().to_string(), e))
}

#[cfg(test)]
mod tests;
