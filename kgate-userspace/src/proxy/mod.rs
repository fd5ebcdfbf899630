//! The request path. Each stage is a module; [`serve_connection`] and `handle` are
//! their order, top to bottom:
//!
//! 1. [`accept`]: the kernel's origin record for the connection, or refuse it;
//! 2. [`tls`]: terminate TLS (h2 and http/1.1);
//! 3. [`identify`]: who is calling;
//! 4. [`authorize`]: the request's Kubernetes attributes, and the decision;
//! 5. [`approve`]: hold for a human;
//! 6. [`forward`]: to the real API server, streaming, upgrades included;
//! 7. [`mask`]: rewrite sensitive response fields (Accept negotiated
//!    before forward, the body masked after); an access review's answer gets kgate's
//!    policy folded in ([`review`]);
//! 8. [`record`]: what happened.
//!
//! Every refusal a client sees is a Kubernetes `Status` with the right HTTP code.
//! Clients that hold a connection without moving it forward are cut off
//! ([`deadline`]).

pub mod accept;
pub mod approve;
pub mod authorize;
pub mod deadline;
pub mod dial;
pub mod forward;
pub mod identify;
pub mod record;
pub mod restore;
pub mod review;
pub mod tls;
pub mod upgrade;
pub mod workers;

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
    deadline::{HANDSHAKE_TIMEOUT, STALLED_WRITE_TIMEOUT, StallGuard},
    forward::{ForwardError, Upstream},
    record::Subject,
    upgrade::StreamTap,
};
use crate::{
    approval::Approvals,
    body::{self, Body},
    config::DirectClients,
    connection::Connection,
    ebpf::OriginTable,
    identity::{Identifier, Refusal},
    mask::{self, Masker},
    metrics::{ConnectionLabels, Metrics},
    policy::{Decision, store::PolicyStore, types::Action},
    record::Recorder,
    status::{Status, respond, respond_to},
};

/// Largest request head accepted, as the API server's default (Go's 1 MiB).
const MAX_HEADER_BYTES: usize = 1 << 20;
/// hyper's own read limit sits above it, so that a head between the two gets a
/// Kubernetes Status from [`handle`] rather than hyper's bare 431.
const HYPER_HEADER_LIMIT: usize = 2 * MAX_HEADER_BYTES;

/// What every connection shares.
pub struct Proxy {
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
pub async fn serve_connection(
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

/// One request through the stages, in order.
async fn handle(
    proxy: Arc<Proxy>,
    upstream: Arc<Upstream>,
    conn: Arc<Connection>,
    conn_id: Arc<str>,
    mut req: Request<body::Lingering>,
) -> Response<Body> {
    let started = Instant::now();
    let head_bytes = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > MAX_HEADER_BYTES {
        return respond(&Status::header_too_large(format!(
            "kgate: request headers of {head_bytes} bytes exceed the limit of {MAX_HEADER_BYTES}"
        )));
    }
    let info = match authorize::attributes(req.method(), req.uri()) {
        Ok(info) => info,
        Err(status) => {
            debug!(path = %req.uri(), message = status.message, "unparseable request");
            return respond(&status);
        }
    };
    // record: the request's audit ID, which the API server gets too.
    let pending = record::Pending::new(&conn_id, conn.peer, &req);
    req.headers_mut().insert(
        HeaderName::from_static("audit-id"),
        pending.audit_id_header(),
    );
    let subject = |identity, decision| Subject {
        conn: &conn,
        identity,
        refusal: None,
        info: &info,
        decision,
    };
    let refuse = |status: &Status, subject: Subject<'_>| {
        let response = respond_to(&info.path, status);
        let outcome = record::Outcome::refused(&response, status, started);
        pending.finish(&proxy.recorder, &proxy.metrics, subject, &outcome);
        response
    };
    let stage = Instant::now();
    let identified = identify::identify(&proxy.identity, &conn, req.headers()).await;
    proxy.metrics.node.stage("identify", stage.elapsed());
    let identity = match identified {
        Ok(identity) => identity,
        Err(refusal) => {
            if matches!(refusal, Refusal::StolenToken { .. }) {
                proxy.metrics.stolen_tokens.inc();
            }
            let refused = Subject {
                refusal: Some(&refusal),
                ..subject(None, None)
            };
            return refuse(&refusal.status(), refused);
        }
    };
    if !proxy.policy.ready() {
        let status = Status::service_unavailable(
            "kgate: the cluster's policies have not loaded yet; retry shortly",
        )
        .with_retry_after(1);
        return refuse(&status, subject(Some(&identity), None));
    }
    let stage = Instant::now();
    let decision = authorize::authorize(&info, req.headers())
        .map_err(|status| (None, status))
        .and_then(|()| {
            authorize::decide(&proxy.policy.current(), &identity, &conn, &info)
                .map_err(|(d, status)| (Some(d), status))
        });
    proxy.metrics.node.stage("authorize", stage.elapsed());
    let decision: Decision = match decision {
        Ok(decision) => decision,
        Err((decision, status)) => {
            return refuse(&status, subject(Some(&identity), decision.as_ref()));
        }
    };
    let decided = subject(Some(&identity), Some(&decision));
    // mask (first half): ask the upstream for a format kgate can mask, or refuse.
    // A policy rule may grant these subjects unmasked reads of these resources.
    let mask_plan = if decision.unmasked {
        None
    } else {
        proxy.masker.plan(&info, &identity.user.username)
    };
    if let Some(plan) = &mask_plan
        && let Err(status) = mask::negotiate(plan, req.headers_mut())
    {
        return refuse(&status, decided);
    }
    // review: an access review's answer is read, to fold kgate's policy into it.
    let review = review::Review::of(&info);
    if let Some(Err(status)) = review.map(|r| r.negotiate(req.headers_mut())) {
        return refuse(&status, decided);
    }
    // approve: requests that policy holds wait here for a human.
    let (req, approval) = if decision.action == Action::Approve {
        let _held = HeldGauge::new(&proxy.metrics);
        let stage = Instant::now();
        let approved = approve::approve(
            proxy.approvals.as_ref(),
            &upstream,
            &identity,
            &conn,
            &info,
            &decision,
            mask_plan.is_some(),
            req,
        )
        .await;
        proxy.metrics.node.stage("approve", stage.elapsed());
        match approved {
            Ok((req, approval)) => {
                tracing::info!(approval, rule = decision.source, "held request approved");
                (req, Some(approval))
            }
            Err(status) => return refuse(&status, decided),
        }
    } else {
        (req.map(body::stream), None)
    };
    // mask (writes): kgate's placeholders go back to the stored values, or the write
    // is refused; none reaches the API server.
    let req = match &mask_plan {
        Some(plan) => {
            let stage = Instant::now();
            let restored =
                restore::restore(&upstream, conn.peer, &identity, &info, plan, req).await;
            proxy.metrics.node.stage("restore", stage.elapsed());
            match restored {
                Ok((req, restored)) => {
                    pending.restored(&restored);
                    req
                }
                Err(status) => return refuse(&status, decided),
            }
        }
        None => req,
    };
    // record: at level Request, a copy of the body is kept as it streams upstream.
    let req = pending.capture_body(&proxy.recorder, &proxy.masker, &info, req);
    // record (first half): with strict durability, nothing is forwarded unrecorded.
    if let Err(status) = pending.received(&proxy.recorder, decided).await {
        return refuse(&status, decided);
    }
    // record (streams): an upgrade's frames are captured as it is relayed.
    let mut tap = StreamTap::new(format!("{} {}", info.verb, info.path));
    let upgrade = upgrade::upgrade_protocol(req.headers()).is_some();
    let completion = upgrade
        .then(|| proxy.recorder.stream_sink())
        .flatten()
        .map(|sink| {
            let sink = sink.counting(proxy.metrics.stream_capture_failures.clone());
            if crate::record::stream::is_captured(&info.subresource) {
                tap.capture(sink.clone(), &pending.audit_id, &info.subresource);
            }
            tap.completing(sink)
        });
    let impersonate = identity.impersonate.then_some(&*identity.user);
    let stage = Instant::now();
    let forwarded = upstream
        .forward(conn.peer, req, impersonate, info.is_long_running(), tap)
        .await;
    proxy.metrics.node.stage("forward", stage.elapsed());
    let response = match forwarded {
        Ok(response) => response,
        Err(error) => {
            warn!(%error, "forward failed");
            respond(&forward_status(&error))
        }
    };
    // review: the API server's answer, with kgate's decision for the same question.
    let mut refused = None;
    let response = match review {
        Some(review) => {
            let (policy, caller) = (proxy.policy.current(), authorize::caller(&identity, &conn));
            let answered = review.answer(&policy, &caller, &pending, response).await;
            answered.unwrap_or_else(|status| {
                warn!(message = status.message, "access review answer refused");
                respond(refused.insert(status))
            })
        }
        None => response,
    };
    // mask: sensitive response fields are rewritten as the body streams.
    let response = match &mask_plan {
        Some(plan) => match mask::mask_response(plan, response).await {
            Ok(response) => {
                proxy.metrics.masked_responses.inc();
                response
            }
            Err(status) => {
                warn!(message = status.message, "response cannot be masked");
                let response = respond(&status);
                refused = Some(status);
                response
            }
        },
        None => response,
    };
    // record: at level RequestResponse the event waits for the body it carries, which
    // must be masked data.
    let masked = mask_plan.is_some() || proxy.masker.record_plan(&info).is_none();
    let response = pending.capture_response(&proxy.recorder, &info, masked, response);
    let outcome = record::Outcome {
        status: response.status(),
        latency: started.elapsed(),
        refused: refused.as_ref(),
        approval: approval.as_deref(),
    };
    let recorded = pending.finish(&proxy.recorder, &proxy.metrics, decided, &outcome);
    if let (Some(event), Some(completion)) = (recorded, completion)
        && outcome.status == http::StatusCode::SWITCHING_PROTOCOLS
    {
        completion.started(event);
    }
    response
}

/// Counts a held request for as long as it is held, however its future ends.
struct HeldGauge<'a>(&'a Metrics);

impl<'a> HeldGauge<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.approvals_held.inc();
        Self(metrics)
    }
}

impl Drop for HeldGauge<'_> {
    fn drop(&mut self) {
        self.0.approvals_held.dec();
    }
}

fn forward_status(error: &ForwardError) -> Status {
    match error {
        ForwardError::BadRequest(_) => Status::bad_request(format!("kgate: {error}")),
        ForwardError::Timeout(_) => Status::gateway_timeout(format!("kgate: {error}")),
        _ => Status::service_unavailable(format!("kgate: {error}")),
    }
}
