//! The request path. Each stage is a module; [`serve_connection`] and `handle` are
//! their order, top to bottom:
//!
//! 1. [`accept`]: the kernel's origin record for the connection, or refuse it;
//! 2. [`tls`]: terminate TLS (h2 and http/1.1);
//! 3. [`identify`]: who is calling;
//! 4. [`authorize`]: the request's Kubernetes attributes, and the decision;
//! 5. [`approve`]: hold for a human;
//! 6. [`forward`]: to the real API server, streaming, upgrades included;
//! 7. [`mask`]: rewrite sensitive response fields (Accept negotiated and a write's
//!    placeholders restored before forward, the body masked after); an access
//!    review's answer gets kgate's policy folded in ([`review`]);
//! 8. [`record`]: what happened. With strict durability a request that may change the
//!    cluster is forwarded only once its received record is on disk; a read goes
//!    upstream while the record is written, and its answer waits for it.
//!
//! A request's context (`context::Context`) carries what each stage learned; every
//! stage refuses with a typed [`refusal::Refusal`], which becomes a Kubernetes
//! `Status` with the right HTTP code in one place.
//! Clients that hold a connection without moving it forward are cut off
//! ([`deadline`]).

pub(crate) mod accept;
pub(crate) mod approve;
pub(crate) mod authorize;
mod context;
pub(crate) mod deadline;
pub(crate) mod dial;
pub(crate) mod forward;
pub(crate) mod identify;
pub(crate) mod mask;
pub(crate) mod record;
pub(crate) mod refusal;
pub(crate) mod review;
pub(crate) mod stored;
pub(crate) mod tls;
pub(crate) mod upgrade;
pub(crate) mod workers;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use http::{HeaderName, Request, Response};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use self::{
    accept::CgroupNames,
    context::Context,
    deadline::{HANDSHAKE_TIMEOUT, STALLED_WRITE_TIMEOUT, StallGuard},
    forward::Upstream,
};
use crate::{
    api_status::{Status, respond},
    approval::Approvals,
    body::{self, Body},
    config::DirectClients,
    connection::Connection,
    ebpf::OriginTable,
    identity::Identifier,
    mask::Masker,
    metrics::{ConnectionLabels, Metrics},
    policy::store::PolicyStore,
    record::Recorder,
    request_info::RequestInfo,
};

/// Largest request head accepted, as the API server's default (Go's 1 MiB).
const MAX_HEADER_BYTES: usize = 1 << 20;
/// hyper's own read limit sits above it, so that a head between the two gets a
/// Kubernetes Status from [`handle`] rather than hyper's bare 431.
const HYPER_HEADER_LIMIT: usize = 2 * MAX_HEADER_BYTES;

/// What every connection shares.
pub(crate) struct Proxy {
    /// `None` in standalone mode (no kernel programs).
    pub origins: Option<OriginTable>,
    pub direct_clients: DirectClients,
    pub cgroups: CgroupNames,
    pub tls: TlsAcceptor,
    pub identity: Arc<Identifier>,
    pub policy: Arc<PolicyStore>,
    /// `None` when policy may not hold requests (no approval store).
    pub approvals: Option<Approvals>,
    pub masker: Masker,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<Metrics>,
}

/// Serves one TCP connection from accept to close.
///
/// `upstream` is the serving worker's own: its connections to the API server live on
/// the same thread.
pub(crate) async fn serve_connection(
    proxy: Arc<Proxy>,
    upstream: Arc<Upstream>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let conn = match accept::accept(
        proxy.origins.as_ref(),
        proxy.direct_clients,
        &proxy.cgroups,
        peer,
    ) {
        Ok(conn) => Arc::new(conn),
        Err(reason) => {
            warn!(reason, "connection refused");
            proxy
                .metrics
                .node
                .connections
                .get_or_create(&ConnectionLabels { origin: "refused" })
                .inc();
            return;
        }
    };
    let origin = if conn.origin.is_some() {
        "kernel"
    } else {
        "direct"
    };
    proxy
        .metrics
        .node
        .connections
        .get_or_create(&ConnectionLabels { origin })
        .inc();
    match &conn.origin {
        Some(origin) => tracing::info!(
            dst = %origin.destination(),
            pid = origin.pid(),
            comm = origin.comm(),
            cgroup_id = origin.cgroup_id,
            cgroup = conn.cgroup.as_deref().unwrap_or("?"),
            netns_cookie = origin.netns_cookie,
            "accepted redirected connection"
        ),
        None => tracing::info!("accepted direct connection (no origin record)"),
    }
    // Names the connection in every record: a session is one connection's requests.
    let conn_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let _ = tcp.set_nodelay(true);
    let tcp = StallGuard::new(tcp, STALLED_WRITE_TIMEOUT);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, proxy.tls.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake not done in time: connection closed");
            return;
        }
    };
    // Set by the first request head: until then the connection is on the clock.
    let first_request = Arc::new(tokio::sync::Notify::new());
    let requested = first_request.clone();
    let service = service_fn(move |req| {
        requested.notify_one();
        let (proxy, upstream) = (proxy.clone(), upstream.clone());
        let (conn, conn_id) = (conn.clone(), conn_id.clone());
        async move {
            let req = body::Lingering::new(req);
            Ok::<_, Infallible>(handle(proxy, upstream, conn, conn_id, req).await)
        }
    });
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        // hyper's default, stated: it also closes keep-alive connections idle this long.
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(HYPER_HEADER_LIMIT);
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(HYPER_HEADER_LIMIT).unwrap_or(u32::MAX))
        // As many concurrent streams as kube-apiserver grants by default (250, Go's
        // default made explicit in k8s.io/apiserver's secure_serving.go): a client
        // whose watches fit on one connection to the API server must fit through
        // kgate too, and hyper's own default is 200.
        .max_concurrent_streams(250)
        // Finds clients that vanished under a quiet watch; no deadline on the stream.
        .keep_alive_interval(std::time::Duration::from_secs(30));
    let served = http.serve_connection_with_upgrades(TokioIo::new(tls), service);
    // Neither the protocol detection nor the HTTP/2 preface has a deadline of its own.
    let no_request = async {
        if tokio::time::timeout(HANDSHAKE_TIMEOUT, first_request.notified())
            .await
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = served => if let Err(error) = result {
            debug!(%error, "connection ended with an error");
        },
        () = no_request => debug!("no request head in time: connection closed"),
    }
}

/// One request through the stages, in order. Each stage either adds to the request's
/// `Context` or refuses with a typed [`refusal::Refusal`]; `finish` answers and records
/// either.
async fn handle(
    proxy: Arc<Proxy>,
    upstream: Arc<Upstream>,
    conn: Arc<Connection>,
    conn_id: Arc<str>,
    mut req: Request<body::Lingering>,
) -> Response<Body> {
    let started = Instant::now();
    // Before anything is known of it, a request kgate cannot read is not recorded.
    let info = match admit(&req) {
        Ok(info) => info,
        Err(status) => return respond(&status),
    };
    // record: the request's audit ID, which the API server gets too.
    let pending = record::Pending::new(&conn_id, conn.peer, &req);
    req.headers_mut().insert(
        HeaderName::from_static("audit-id"),
        pending.audit_id_header(),
    );
    let mut ctx = Context::new(&proxy, &upstream, &conn, info, pending, started);
    let ended = async {
        ctx.identify(req.headers()).await?;
        ctx.authorize(req.headers())?;
        ctx.negotiate(req.headers_mut())?;
        let req = ctx.approve(req).await?;
        let req = ctx.restore(req).await?;
        let req = ctx.received(req).await?;
        let response = ctx.forward(req).await;
        ctx.recorded().await?;
        let response = ctx.review(response).await?;
        ctx.mask(response).await
    }
    .await;
    ctx.finish(ended)
}

/// A request kgate can read at all: a head within the API server's limit, and a path
/// it can derive the request's attributes from.
fn admit<B>(req: &Request<B>) -> Result<RequestInfo, Status> {
    let head_bytes = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > MAX_HEADER_BYTES {
        return Err(Status::header_too_large(format!(
            "kgate: request headers of {head_bytes} bytes exceed the limit of {MAX_HEADER_BYTES}"
        )));
    }
    authorize::attributes(req.method(), req.uri()).inspect_err(|status| {
        debug!(path = %req.uri(), message = status.message, "unparseable request");
    })
}
