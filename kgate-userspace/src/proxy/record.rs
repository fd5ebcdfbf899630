//! The **record** stage: every request becomes an `audit.k8s.io/v1` event with who
//! (user, pod, container, process), what (the request's attributes), the decision,
//! the outcome and the latency, handed to the [`Recorder`] (and logged as a line).
//!
//! When: with strict durability a request that will be forwarded is first recorded
//! at stage `RequestReceived` and forwarded only once that record is on disk; a
//! request whose record cannot be written is refused (503, fail closed). Every
//! request, refused or forwarded, then gets its final record when the response head
//! is sent: `ResponseComplete`, or `ResponseStarted` for watches and upgraded streams
//! (whose bodies flow on after it); an upgraded stream's `ResponseComplete` follows
//! when it closes ([`super::upgrade::Completion`]).
//!
//! Upgraded streams (exec, attach, port-forward) are relayed and captured by
//! [`super::upgrade::StreamTap`].

use std::{
    borrow::Cow,
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::{
    HeaderValue, Method, StatusCode,
    header::{CONTENT_LENGTH, UPGRADE, USER_AGENT},
};
use jiff::Timestamp;
use tracing::info;

use kgate_common::Origin;

use crate::{
    api_status::Status,
    body::Body,
    connection::Connection,
    identity::{EXTRA_POD_UID, Identity, Unidentified, UserInfo, Workload},
    mask::Masker,
    metrics::Metrics,
    policy::{Decision, types::Action},
    record::{
        Durable, RecordError, Recorder,
        event::{self, Event, EventRef, MicroTime, ObjectRefRef, ResponseStatusRef},
        request_object::{self, Captured},
    },
    request_info::RequestInfo,
};

/// How a request ended, as far as the record is concerned.
pub(crate) struct Outcome<'a> {
    pub status: StatusCode,
    pub latency: Duration,
    /// A refusal kgate made itself.
    pub refused: Option<&'a Status>,
    /// The approval that released a held request.
    pub approval: Option<&'a str>,
}

/// What is known of a request from the moment it arrives: its audit ID, when it came,
/// and over which connection.
pub(crate) struct Pending {
    pub audit_id: String,
    connection: Arc<str>,
    received: Timestamp,
    request_uri: String,
    user_agent: String,
    peer: SocketAddr,
    /// At level `Request`: the copy of the body, for the final record.
    request_body: OnceLock<Captured>,
    /// At level `RequestResponse`: the response body the final record waits for, or
    /// why it does not.
    response_body: OnceLock<Result<response::Held, String>>,
    /// The masked fields whose stored values a write had put back (pointers only).
    restored: OnceLock<String>,
    /// What kgate made of an access review's answer.
    review: OnceLock<String>,
}

/// The caller and the request, as far as they are known.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub conn: &'a Connection,
    pub identity: Option<&'a Identity>,
    /// Without an identity: why identify refused, and what it had verified by then
    /// (the user, the workload, a stolen token's pod).
    pub refusal: Option<&'a Unidentified>,
    pub info: &'a RequestInfo,
    pub decision: Option<&'a Decision>,
}

impl<'a> Subject<'a> {
    /// The verified user and the connection's workload: the identity's, or what a
    /// refusal had established.
    fn who(self) -> (Option<&'a Arc<UserInfo>>, Option<&'a Workload>) {
        match (self.identity, self.refusal) {
            (Some(identity), _) => (Some(&identity.user), Some(&identity.workload)),
            (None, Some(refusal)) => (refusal.user(), refusal.workload()),
            (None, None) => (None, None),
        }
    }
}

// === impl Pending ===

impl Pending {
    /// `connection` names the client connection (a session is one connection's
    /// requests).
    pub(crate) fn new<B>(connection: &Arc<str>, peer: SocketAddr, req: &http::Request<B>) -> Self {
        Self {
            audit_id: uuid::Uuid::new_v4().to_string(),
            connection: connection.clone(),
            received: Timestamp::now(),
            request_uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
            user_agent: req
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            peer,
            request_body: OnceLock::new(),
            response_body: OnceLock::new(),
            restored: OnceLock::new(),
            review: OnceLock::new(),
        }
    }

    /// Notes what kgate made of an access review's answer, for the final record.
    pub(crate) fn reviewed(&self, note: String) {
        let _ = self.review.set(note);
    }

    /// At level `Request`: keeps a copy of the body as it streams upstream, for the
    /// final record (masked by `masker`'s rules for this resource, whoever asks).
    pub(crate) fn capture_body(
        &self,
        recorder: &Recorder,
        masker: &Masker,
        info: &RequestInfo,
        req: http::Request<Body>,
    ) -> http::Request<Body> {
        let Some(limit) = recorder.request_object_limit() else {
            return req;
        };
        let length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        // Upgrades (exec, attach, port-forward) carry streams, not objects.
        let has_body = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) && length != Some(0)
            && !req.headers().contains_key(UPGRADE)
            && !http_body::Body::is_end_stream(req.body());
        if !has_body || !recorder.enabled() {
            return req;
        }
        let syntax = request_object::syntax(req.headers());
        let (parts, body) = req.into_parts();
        let (body, captured) =
            request_object::tee(body, limit, length, syntax, masker.record_plan(info));
        let _ = self.request_body.set(captured);
        http::Request::from_parts(parts, body)
    }

    /// At level `RequestResponse`: makes the final record wait for `response`'s body
    /// and carry a copy of it. `masked`: what the client gets is masked data (the
    /// masker rewrote it, or no mask rule covers it); otherwise the body stays out of
    /// the record. Watches and upgrades keep their bodies out at every level.
    pub(crate) fn capture_response(
        &self,
        recorder: &Recorder,
        info: &RequestInfo,
        masked: bool,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let Some(limit) = recorder.response_object_limit() else {
            return response;
        };
        if info.verb == "watch"
            || response.status() == StatusCode::SWITCHING_PROTOCOLS
            || response.headers().contains_key(UPGRADE)
        {
            return response;
        }
        if !masked {
            let _ = self.response_body.set(Err(
                "omitted: served unmasked to a subject granted unmasked reads".to_owned(),
            ));
            return response;
        }
        let (response, held) = response::hold(recorder, limit, response);
        let _ = self.response_body.set(Ok(held));
        response
    }

    /// Notes the fields whose stored values the mask stage put back into the write.
    pub(crate) fn restored(&self, fields: &[String]) {
        if !fields.is_empty() {
            let _ = self.restored.set(fields.join(","));
        }
    }

    /// The `Audit-ID` header the API server gets, so its audit log joins kgate's.
    pub(crate) fn audit_id_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.audit_id).expect("a UUID is a valid header value")
    }

    /// Strict durability: records the request as received. A request that changes
    /// nothing (`read_only`) goes upstream at once and the returned [`Durable`] must
    /// resolve before any of its answer goes out ([`Pending::answered`]); any other
    /// waits here until its record is on disk. The 503 to refuse the request with when
    /// it cannot be recorded.
    pub(crate) async fn received(
        &self,
        recorder: &Recorder,
        subject: Subject<'_>,
        read_only: bool,
    ) -> Result<Option<Durable>, Status> {
        if !recorder.strict() {
            return Ok(None);
        }
        let event = self.event_ref(subject, event::STAGE_RECEIVED, None, recorder.level());
        let durable = recorder
            .durable_later(&event)
            .map_err(|error| self.unrecorded(&error, "it is not forwarded"))?;
        if read_only {
            return Ok(Some(durable));
        }
        durable
            .wait()
            .await
            .map_err(|error| self.unrecorded(&error, "it is not forwarded"))?;
        Ok(None)
    }

    /// A read forwarded before its record was durable: waits for the record, or the
    /// 503 that replaces the answer when it cannot be written.
    pub(crate) async fn answered(&self, durable: Durable) -> Result<(), Status> {
        durable
            .wait()
            .await
            .map_err(|error| self.unrecorded(&error, "its answer is not sent"))
    }

    fn unrecorded(&self, error: &RecordError, consequence: &str) -> Status {
        tracing::error!(%error, audit_id = self.audit_id, "request refused: it cannot be recorded");
        Status::service_unavailable(format!(
            "kgate: the request cannot be recorded, so {consequence}: {error}"
        ))
    }

    /// Records how the request ended (for a watch or stream: its response head);
    /// for an upgraded stream (`101`), returns the event recorded, which its
    /// completion record follows.
    pub(crate) fn finish(
        &self,
        recorder: &Recorder,
        metrics: &Metrics,
        subject: Subject<'_>,
        outcome: &Outcome<'_>,
    ) -> Option<Event> {
        log_line(&self.audit_id, subject, outcome);
        let label = match subject.decision {
            None => "refused",
            Some(d) => match (d.action, d.shadowed) {
                (_, Some(Action::Deny)) => "shadow-deny",
                (_, Some(_)) => "shadow-approve",
                (action, None) => action.name(),
            },
        };
        metrics.request(label, outcome.status, outcome.latency.as_secs_f64());
        if !recorder.enabled() {
            return None;
        }
        let upgraded = outcome.status == StatusCode::SWITCHING_PROTOCOLS;
        let stage = if subject.info.verb == "watch" || upgraded {
            event::STAGE_STARTED
        } else {
            event::STAGE_COMPLETE
        };
        let mut event = self.event_ref(subject, stage, Some(outcome), recorder.level());
        if let Some(captured) = self.request_body.get() {
            match captured.object() {
                Ok(object) => event.request_object = object,
                Err(why) => {
                    event.annotations.insert(event::REQUEST_OBJECT, why.into());
                }
            }
        }
        match self.response_body.get() {
            Some(Ok(held)) => held.event(event.to_owned()),
            Some(Err(why)) => {
                event
                    .annotations
                    .insert(event::RESPONSE_OBJECT, why.as_str().into());
                recorder.submit(&event);
            }
            None => recorder.submit(&event),
        }
        upgraded.then(|| event.to_owned())
    }

    /// The audit event of the request at `stage`, at level Metadata (what the tests
    /// read; the request path writes [`Pending::event_ref`]).
    #[cfg(test)]
    pub(crate) fn event(
        &self,
        subject: Subject<'_>,
        stage: &'static str,
        outcome: Option<&Outcome<'_>>,
    ) -> Event {
        self.event_ref(subject, stage, outcome, event::LEVEL_METADATA)
            .to_owned()
    }

    /// The audit event of the request at `stage`, borrowing what the request path
    /// holds.
    pub(crate) fn event_ref<'a>(
        &'a self,
        subject: Subject<'a>,
        stage: &'static str,
        outcome: Option<&'a Outcome<'a>>,
        level: &'static str,
    ) -> EventRef<'a> {
        let (user, workload) = subject.who();
        let Subject {
            conn,
            identity,
            refusal,
            info,
            decision,
        } = subject;
        let mut annotations = BTreeMap::new();
        let mut note = |key: &'static str, value: Cow<'a, str>| {
            annotations.insert(key, value);
        };
        note(event::CONNECTION, Cow::Borrowed(&self.connection));
        if let Some(fields) = self.restored.get() {
            note(event::RESTORED, Cow::Borrowed(fields));
        }
        if let Some(workload) = workload {
            note(event::WORKLOAD, Cow::Owned(workload.describe()));
            if let Workload::Pod { pod, container } = workload {
                note(
                    event::POD,
                    Cow::Owned(format!("{}/{}", pod.namespace, pod.name)),
                );
                if let Some(container) = container {
                    note(event::CONTAINER, Cow::Borrowed(container));
                }
            }
        }
        // A stolen token: the pod it belongs to, beside the one it came from.
        if let Some(Unidentified::StolenToken { token_pod, .. }) = refusal {
            note(
                event::TOKEN_POD,
                Cow::Owned(format!("{}/{}", token_pod.namespace, token_pod.name)),
            );
            note(event::TOKEN_POD_UID, Cow::Borrowed(&token_pod.uid));
        }
        if let Some(issuer) = identity.and_then(|i| i.issuer.as_deref()) {
            note(event::ISSUER, Cow::Borrowed(issuer));
        }
        if let Some(identity) = identity {
            let bound = identity.user.extra.contains_key(EXTRA_POD_UID);
            note(
                event::BINDING,
                Cow::Borrowed(if bound {
                    "bound-to-this-pod"
                } else {
                    "unbound"
                }),
            );
        } else if outcome.is_some_and(|o| o.status == StatusCode::FORBIDDEN) {
            // identify refused a token used from the wrong place.
            note(event::BINDING, Cow::Borrowed("refused"));
        }
        if let Some(origin) = &conn.origin {
            note(
                event::PROCESS,
                Cow::Owned(format!("{} (pid {})", origin.comm(), origin.pid())),
            );
        }
        if let Some(exe) = &conn.exe {
            note(event::EXE, Cow::Borrowed(exe));
        }
        if let Some(decision) = decision {
            note(event::DECISION, Cow::Borrowed(decision.action.name()));
            note(event::RULE, Cow::Borrowed(&decision.source));
            if let Some(would) = decision.shadowed {
                note(event::WOULD, Cow::Borrowed(would.name()));
            }
        }
        if let Some(review) = self.review.get() {
            note(event::REVIEW, Cow::Borrowed(review));
        }
        let mut response_status = None;
        if let Some(outcome) = outcome {
            if let Some(approval) = outcome.approval {
                note(event::APPROVAL, Cow::Borrowed(approval));
            }
            note(
                event::LATENCY_US,
                Cow::Owned(outcome.latency.as_micros().to_string()),
            );
            response_status = Some(match outcome.refused {
                Some(status) => ResponseStatusRef {
                    code: outcome.status.as_u16(),
                    status: &status.status,
                    reason: &status.reason,
                    message: &status.message,
                },
                None => ResponseStatusRef {
                    code: outcome.status.as_u16(),
                    status: "",
                    reason: "",
                    message: "",
                },
            });
        }
        EventRef {
            kind: "Event",
            api_version: event::API_VERSION,
            level,
            audit_id: &self.audit_id,
            stage,
            request_uri: &self.request_uri,
            verb: &info.verb,
            // The caller; with impersonation, whom it acted as beside it.
            user: EventRef::user_or_nobody(
                identity
                    .and_then(|i| i.impersonation.as_ref())
                    .map_or(user, |i| Some(&i.by))
                    .map(|u| &**u),
            ),
            impersonated_user: identity
                .filter(|i| i.impersonation.is_some())
                .map(|i| &*i.user),
            source_ips: [self.peer.ip()],
            user_agent: &self.user_agent,
            object_ref: info.is_resource_request.then(|| ObjectRefRef {
                resource: &info.resource,
                namespace: &info.namespace,
                name: &info.name,
                api_group: &info.api_group,
                api_version: &info.api_version,
                subresource: &info.subresource,
            }),
            response_status,
            request_object: None,
            request_received_timestamp: MicroTime(self.received),
            stage_timestamp: MicroTime(Timestamp::now()),
            annotations,
        }
    }
}

/// The request as one structured log line.
fn log_line(audit_id: &str, subject: Subject<'_>, outcome: &Outcome<'_>) {
    let (user, workload) = subject.who();
    let Subject {
        conn,
        identity,
        refusal,
        info,
        decision,
    } = subject;
    let token_pod = match refusal {
        Some(Unidentified::StolenToken { token_pod, .. }) => Some(token_pod.to_string()),
        _ => None,
    };
    info!(
        audit_id,
        user = identity
            .and_then(|i| i.impersonation.as_ref())
            .map_or(user, |i| Some(&i.by))
            .map(|u| u.username.as_str()),
        acting_as = identity
            .filter(|i| i.impersonation.is_some())
            .map(|i| i.user.username.as_str()),
        issuer = identity.and_then(|i| i.issuer.as_deref()),
        workload = workload.map(Workload::describe),
        token_pod,
        impersonated = identity.is_some_and(|i| i.impersonate),
        pid = conn.origin.map(|o| o.pid()),
        exe = conn.exe.as_deref(),
        comm = conn.origin.as_ref().map(Origin::comm),
        cgroup = conn.cgroup.as_deref().unwrap_or("?"),
        verb = %info.verb,
        api_group = %info.api_group,
        resource = %info.resource,
        subresource = %info.subresource,
        namespace = %info.namespace,
        name = %info.name,
        path = %info.path,
        decision = decision.map(|d| format!("{:?}", d.action)),
        rule = decision.map(|d| &*d.source),
        would = decision.and_then(|d| d.shadowed).map(|a| format!("{a:?}")),
        approval = outcome.approval,
        status = outcome.status.as_u16(),
        latency_us = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX),
        refused = outcome.refused.map(|s| s.message.as_str()),
        "request"
    );
}

mod response;
#[cfg(test)]
mod tests;
