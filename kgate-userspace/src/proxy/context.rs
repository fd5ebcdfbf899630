//! One request's context through the stages (pingora's per-request `CTX`): what each
//! stage learned, for the stages after it and for the record. Each method is one
//! stage's step for this request, with the same contract: it reads the context, adds
//! what it found, and refuses with a typed [`Refusal`]. [`Context::finish`] sends and
//! records whatever the chain ended with.
//!
//! Not here: the order of the stages (`handle`, in `proxy`), or their rules (each
//! stage's module and its domain module).

use std::{sync::Arc, time::Instant};

use http::{HeaderMap, Request, Response, StatusCode};
use tracing::warn;

use super::{
    Proxy, approve, authorize,
    forward::{ForwardError, Upstream, credentials},
    identify, mask,
    record::{self, Pending, Subject},
    refusal::{Kind, Refusal},
    review::Review,
    upgrade::{Completion, StreamTap, upgrade_protocol},
};
use crate::{
    api_status::{Status, respond},
    body::{self, Body, Lingering},
    connection::Connection,
    identity::{Identity, Unidentified},
    metrics::{Metrics, RefusalLabels},
    policy::{Decision, types::Action},
    record::Durable,
    request_info::RequestInfo,
};

/// What is known of one request, stage by stage.
pub(super) struct Context<'a> {
    proxy: &'a Proxy,
    upstream: &'a Upstream,
    conn: &'a Connection,
    info: RequestInfo,
    pending: Pending,
    started: Instant,
    /// identify: the verified caller, or why there is none.
    identity: Option<Identity>,
    unidentified: Option<Unidentified>,
    /// authorize: the policy's decision.
    decision: Option<Decision>,
    /// mask: how the response is masked (`None`: it is not).
    mask: Option<crate::mask::Plan>,
    /// review: an access review whose answer kgate rewrites.
    review: Option<Review>,
    /// approve: the approval that released a held request.
    approval: Option<String>,
    /// forward: the request went upstream (a refusal after it is of the answer).
    forwarded: bool,
    /// record: an upgraded stream's last record, written when it closes.
    completion: Option<Completion>,
    /// record (strict, a read): the received record still on its way to disk.
    durable: Option<Durable>,
}

// === impl Context ===

impl<'a> Context<'a> {
    pub(super) fn new(
        proxy: &'a Proxy,
        upstream: &'a Upstream,
        conn: &'a Connection,
        info: RequestInfo,
        pending: Pending,
        started: Instant,
    ) -> Self {
        Self {
            proxy,
            upstream,
            conn,
            info,
            pending,
            started,
            identity: None,
            unidentified: None,
            decision: None,
            mask: None,
            review: None,
            approval: None,
            forwarded: false,
            completion: None,
            durable: None,
        }
    }

    /// identify: the caller, verified and bound to the connection's pod.
    pub(super) async fn identify(&mut self, headers: &HeaderMap) -> Result<(), Refusal> {
        let _timer = StageTimer::new(&self.proxy.metrics, "identify");
        match identify::identify(&self.proxy.identity, self.conn, headers).await {
            Ok(identity) => {
                self.identity = Some(identity);
                Ok(())
            }
            Err(why) => {
                let refusal = Refusal::unidentified(&why);
                self.unidentified = Some(why);
                Err(refusal)
            }
        }
    }

    /// authorize: headers kgate never lets through, then the policy's decision. With
    /// the cluster's policies not loaded yet, kgate cannot decide: 503.
    pub(super) fn authorize(&mut self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.proxy.policy.ready() {
            let status = Status::service_unavailable(
                "kgate: the cluster's policies have not loaded yet; retry shortly",
            )
            .with_retry_after(1);
            return Err(Refusal::new(Kind::PoliciesNotLoaded, status));
        }
        let _timer = StageTimer::new(&self.proxy.metrics, "authorize");
        let mode = self.proxy.identity.client_impersonation();
        let requested = authorize::authorize(&self.info, headers, mode)
            .map_err(|status| Refusal::new(Kind::NotAllowed, status))?;
        let policy = self.proxy.policy.current();
        if let Some(requested) = requested {
            let identity = self.identity.as_ref().expect("identify ran");
            let acting = authorize::impersonate(&policy, identity, self.conn, requested)
                .map_err(|status| Refusal::new(Kind::PolicyDenied, status))?;
            self.identity = Some(acting);
        }
        let identity = self.identity.as_ref().expect("identify ran");
        let decided = authorize::decide(&policy, identity, self.conn, &self.info);
        let (decision, refused) = match decided {
            Ok(decision) => (decision, None),
            Err((decision, status)) => (decision, Some(status)),
        };
        self.decision = Some(decision);
        refused.map_or(Ok(()), |status| {
            Err(Refusal::new(Kind::PolicyDenied, status))
        })
    }

    /// mask (first half) and review: ask the upstream for a format kgate can read, or
    /// refuse. A policy rule may grant these subjects unmasked reads of these resources.
    pub(super) fn negotiate(&mut self, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let not_acceptable = |status| Refusal::new(Kind::NotAcceptable, status);
        let unmasked = self.decision.as_ref().is_some_and(|d| d.unmasked);
        let username = self.identity.as_ref().map(|i| i.user.username.as_str());
        self.mask = match (unmasked, username) {
            (false, Some(username)) => self.proxy.masker.plan(&self.info, username),
            _ => None,
        };
        if let Some(plan) = &self.mask {
            crate::mask::negotiate(plan, headers).map_err(not_acceptable)?;
        }
        self.review = Review::of(&self.info);
        if let Some(review) = self.review {
            review.negotiate(headers).map_err(not_acceptable)?;
        }
        Ok(())
    }

    /// approve: a request that policy holds waits here for a human; any other goes on
    /// with its body streaming.
    pub(super) async fn approve(
        &mut self,
        req: Request<Lingering>,
    ) -> Result<Request<Body>, Refusal> {
        let (Some(decision), Some(identity)) = (&self.decision, &self.identity) else {
            return Ok(req.map(body::stream));
        };
        if decision.action != Action::Approve {
            return Ok(req.map(body::stream));
        }
        let _held = HeldGauge::new(&self.proxy.metrics);
        let _timer = StageTimer::new(&self.proxy.metrics, "approve");
        let (req, approval) = approve::approve(
            self.proxy.approvals.as_ref(),
            self.upstream,
            identity,
            self.conn,
            &self.info,
            decision,
            self.mask.is_some(),
            req,
        )
        .await
        .map_err(|status| Refusal::new(Kind::NotApproved, status))?;
        tracing::info!(approval, rule = &*decision.source, "held request approved");
        self.approval = Some(approval);
        Ok(req)
    }

    /// mask (writes): kgate's placeholders go back to the stored values, or the write
    /// is refused; none reaches the API server.
    pub(super) async fn restore(&mut self, req: Request<Body>) -> Result<Request<Body>, Refusal> {
        let (Some(plan), Some(identity)) = (&self.mask, &self.identity) else {
            return Ok(req);
        };
        let _timer = StageTimer::new(&self.proxy.metrics, "restore");
        let (req, restored) = mask::restore(
            self.upstream,
            self.conn.peer,
            identity,
            &self.info,
            plan,
            req,
        )
        .await
        .map_err(|status| Refusal::new(Kind::NotRestorable, status))?;
        self.pending.restored(&restored);
        Ok(req)
    }

    /// record (first half): at level Request a copy of the body is kept as it streams
    /// upstream; with strict durability, nothing that changes the cluster is forwarded
    /// unrecorded, and a read's record is written while the read goes upstream (see
    /// [`Context::recorded`]).
    pub(super) async fn received(&mut self, req: Request<Body>) -> Result<Request<Body>, Refusal> {
        let (recorder, masker) = (&self.proxy.recorder, &self.proxy.masker);
        let req = self.pending.capture_body(recorder, masker, &self.info, req);
        let read_only = self.info.changes_nothing() && upgrade_protocol(req.headers()).is_none();
        self.durable = self
            .pending
            .received(recorder, self.subject(), read_only)
            .await
            .map_err(|status| Refusal::new(Kind::NotRecorded, status))?;
        Ok(req)
    }

    /// record (strict reads): nothing of a read's answer leaves kgate before its
    /// received record is on disk; when it cannot be written the answer is dropped
    /// for a 503.
    pub(super) async fn recorded(&mut self) -> Result<(), Refusal> {
        let Some(durable) = self.durable.take() else {
            return Ok(());
        };
        let _timer = StageTimer::new(&self.proxy.metrics, "recorded");
        self.pending
            .answered(durable)
            .await
            .map_err(|status| Refusal::new(Kind::NotRecorded, status))
    }

    /// forward: to the API server, an upgrade's frames captured as they are relayed.
    /// A failure upstream is answered here (502/503/504), as the API server's own
    /// aggregator would.
    pub(super) async fn forward(&mut self, req: Request<Body>) -> Response<Body> {
        let info = &self.info;
        let upgrade = upgrade_protocol(req.headers()).is_some();
        // The name is for an upgraded stream's closing log line only.
        let mut tap = StreamTap::new(if upgrade {
            format!("{} {}", info.verb, info.path)
        } else {
            String::new()
        });
        let sink = upgrade.then(|| self.proxy.recorder.stream_sink()).flatten();
        self.completion = sink.map(|sink| {
            let sink = sink.counting(self.proxy.metrics.stream_capture_failures.clone());
            if crate::record::stream::is_captured(&info.subresource) {
                tap.capture(sink.clone(), &self.pending.audit_id, &info.subresource);
            }
            tap.completing(sink)
        });
        let identity = self.identity.as_ref().expect("identify ran");
        self.forwarded = true;
        let _timer = StageTimer::new(&self.proxy.metrics, "forward");
        let forwarded = self
            .upstream
            .forward(
                self.conn.peer,
                req,
                credentials(identity),
                info.is_long_running(),
                tap,
            )
            .await;
        forwarded.unwrap_or_else(|error| {
            warn!(%error, "forward failed");
            respond(&forward_status(&error))
        })
    }

    /// review: the API server's answer to an access review, with kgate's decision for
    /// the same question folded in.
    pub(super) async fn review(&self, response: Response<Body>) -> Result<Response<Body>, Refusal> {
        let (Some(review), Some(identity)) = (self.review, &self.identity) else {
            return Ok(response);
        };
        let (policy, caller) = (
            self.proxy.policy.current(),
            authorize::caller(identity, self.conn),
        );
        review
            .answer(&policy, &caller, &self.pending, response)
            .await
            .map_err(|status| {
                warn!(message = status.message, "access review answer refused");
                Refusal::new(Kind::NotMaskable, status)
            })
    }

    /// mask: sensitive response fields are rewritten as the body streams.
    pub(super) async fn mask(&self, response: Response<Body>) -> Result<Response<Body>, Refusal> {
        let Some(plan) = &self.mask else {
            return Ok(response);
        };
        let masked = crate::mask::mask_response(plan, response)
            .await
            .map_err(|status| {
                warn!(message = status.message, "response cannot be masked");
                Refusal::new(Kind::NotMaskable, status)
            })?;
        self.proxy.metrics.masked_responses.inc();
        Ok(masked)
    }

    /// record: sends what the chain ended with, a refusal as its Status, and records
    /// it. At level RequestResponse the event waits for the body it carries, which must
    /// be masked data.
    pub(super) fn finish(self, ended: Result<Response<Body>, Refusal>) -> Response<Body> {
        let (mut response, refusal) = match ended {
            Ok(response) => (response, None),
            Err(refusal) => (refusal.respond(&self.info.path), Some(refusal)),
        };
        // Every answer names its record, as the API server's answers name theirs.
        response
            .headers_mut()
            .entry(http::header::HeaderName::from_static("audit-id"))
            .or_insert_with(|| self.pending.audit_id_header());
        if let Some(refusal) = &refusal {
            let metrics = &self.proxy.metrics;
            metrics
                .refusals
                .get_or_create(&RefusalLabels {
                    kind: refusal.kind.as_str(),
                    side: refusal.side().as_str(),
                })
                .inc();
            if refusal.kind == Kind::StolenToken {
                metrics.stolen_tokens.inc();
            }
        }
        let response = if self.forwarded {
            let masked = self.mask.is_some() || self.proxy.masker.record_plan(&self.info).is_none();
            self.pending
                .capture_response(&self.proxy.recorder, &self.info, masked, response)
        } else {
            response
        };
        let outcome = record::Outcome {
            status: response.status(),
            latency: self.started.elapsed(),
            refused: refusal.as_ref().map(|r| &r.status),
            approval: self.approval.as_deref(),
        };
        let (recorder, metrics) = (&self.proxy.recorder, &self.proxy.metrics);
        let recorded = self
            .pending
            .finish(recorder, metrics, self.subject(), &outcome);
        if let (Some(event), Some(completion)) = (recorded, &self.completion)
            && outcome.status == StatusCode::SWITCHING_PROTOCOLS
        {
            completion.started(event);
        }
        response
    }

    /// The caller and the request, as far as the stages got.
    fn subject(&self) -> Subject<'_> {
        Subject {
            conn: self.conn,
            identity: self.identity.as_ref(),
            refusal: self.unidentified.as_ref(),
            info: &self.info,
            decision: self.decision.as_ref(),
        }
    }
}

fn forward_status(error: &ForwardError) -> Status {
    match error {
        ForwardError::BadRequest(_) => Status::bad_request(format!("kgate: {error}")),
        ForwardError::Timeout(_) => Status::gateway_timeout(format!("kgate: {error}")),
        _ => Status::service_unavailable(format!("kgate: {error}")),
    }
}

/// Times one stage into `kgate_stage_seconds`, however its future ends.
struct StageTimer<'a> {
    metrics: &'a Metrics,
    stage: &'static str,
    started: Instant,
}

impl<'a> StageTimer<'a> {
    fn new(metrics: &'a Arc<Metrics>, stage: &'static str) -> Self {
        Self {
            metrics,
            stage,
            started: Instant::now(),
        }
    }
}

impl Drop for StageTimer<'_> {
    fn drop(&mut self) {
        self.metrics.node.stage(self.stage, self.started.elapsed());
    }
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
