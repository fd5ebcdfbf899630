//! The **authorize** stage: parses the request into the Kubernetes authorization
//! attributes (exactly as the API server derives them) and refuses what kgate cannot
//! check.
//!
//! Refused here: paths that do not parse, `Impersonate-*` headers unless
//! `identity.clientImpersonation` is `policy` (then each identity acted as needs a
//! policy allow for verb `impersonate`, and the request is decided as that identity),
//! upgrade protocols other than the API server's own (SPDY/3.1, WebSocket), and what
//! policy denies (403 naming the rule). What policy holds for approval goes on to the
//! approve stage.

use http::{HeaderMap, Method, Uri};

use super::upgrade;
use crate::connection::Connection;
use crate::{
    api_status::Status,
    config::ClientImpersonation,
    identity::{Identity, Impersonation, UserInfo, Workload, impersonation},
    policy::{Caller, Decision, PolicySet, types::Action},
    request_info::RequestInfo,
};

/// The request's attributes, or a 400 Status naming what did not parse.
pub(crate) fn attributes(method: &Method, uri: &Uri) -> Result<RequestInfo, Status> {
    RequestInfo::parse(method, uri)
        .map_err(|e| Status::bad_request(format!("kgate: cannot parse the request path: {e}")))
}

/// What kgate never lets through, and the identity the client asks to act as (its
/// `Impersonate-*` headers), when `mode` lets it ask.
pub(crate) fn authorize(
    info: &RequestInfo,
    headers: &HeaderMap,
    mode: ClientImpersonation,
) -> Result<Option<UserInfo>, Status> {
    let requested = match mode {
        ClientImpersonation::Refuse => {
            if let Some(name) = headers
                .keys()
                .find(|k| k.as_str().starts_with("impersonate-"))
            {
                return Err(Status::forbidden(format!(
                    "kgate: {name} headers are not allowed through kgate: impersonation would hide the real caller from policy (identity.clientImpersonation is refuse)"
                )));
            }
            None
        }
        ClientImpersonation::Policy => impersonation::requested(headers)
            .map_err(|e| Status::bad_request(format!("kgate: {e}")))?,
    };
    if let Some(protocol) = upgrade::upgrade_protocol(headers)
        && !upgrade::is_supported_upgrade(protocol)
    {
        return Err(Status::bad_request(format!(
            "kgate: upgrade to {protocol:?} is not supported (only SPDY/3.1 and websocket, as the API server)"
        )));
    }
    let _ = info;
    Ok(requested)
}

/// The identity `identity` acts as through `requested`, when policy allows it verb
/// `impersonate` on each part (the user or service account, every group, extra and
/// the UID), as the API server's impersonation filter asks RBAC; otherwise the 403
/// naming the rule and the part. Only an allow lets it through: an impersonation is
/// never held for approval.
pub(crate) fn impersonate(
    policy: &PolicySet,
    identity: &Identity,
    conn: &Connection,
    requested: UserInfo,
) -> Result<Identity, Status> {
    let caller = caller(identity, conn);
    for question in impersonation::questions(&requested) {
        let decision = policy.evaluate(&caller, &question);
        if decision.action != Action::Allow {
            let mut what = question.resource.to_string();
            if !question.subresource.is_empty() {
                what = format!("{what}/{}", question.subresource);
            }
            let held = if decision.action == Action::Approve {
                " (impersonation is never held for approval)"
            } else {
                ""
            };
            return Err(Status::forbidden(format!(
                "kgate: denied by policy {}: {} may not impersonate {what} {:?}{held}",
                decision.source, identity.user.username, question.name
            )));
        }
    }
    Ok(Identity {
        user: std::sync::Arc::new(impersonation::acting_as(&requested)),
        workload: identity.workload.clone(),
        impersonate: identity.impersonate,
        issuer: identity.issuer.clone(),
        impersonation: Some(Impersonation {
            by: identity.user.clone(),
            requested: std::sync::Arc::new(requested),
        }),
    })
}

/// The policy decision for this request and caller; a deny becomes the 403 Status.
pub(crate) fn decide(
    policy: &PolicySet,
    identity: &Identity,
    conn: &Connection,
    info: &RequestInfo,
) -> Result<Decision, (Decision, Status)> {
    let decision = policy.evaluate(&caller(identity, conn), info);
    if decision.action == Action::Deny {
        let message = match &decision.message {
            Some(m) => format!("kgate: denied by policy {}: {m}", decision.source),
            None => format!(
                "kgate: denied by policy {}: {} may not {} {}",
                decision.source,
                identity.user.username,
                info.verb,
                describe(info)
            ),
        };
        return Err((decision, Status::forbidden(message)));
    }
    Ok(decision)
}

/// The caller as policy sees it: the identity, and the connection's process.
pub(crate) fn caller<'a>(identity: &'a Identity, conn: &'a Connection) -> Caller<'a> {
    let (pod_labels, container) = match &identity.workload {
        Workload::Pod { pod, container } => (Some(&pod.labels), container.as_deref()),
        _ => (None, None),
    };
    Caller {
        user: Some(&identity.user),
        pod_labels,
        container,
        process: conn.origin.as_ref().map(kgate_common::Origin::comm),
    }
}

/// `pods "web-0" in namespace "demo"`, `deployments.apps/scale`, `path /healthz`.
fn describe(info: &RequestInfo) -> String {
    if !info.is_resource_request {
        return format!("path {}", info.path);
    }
    let mut out = info.resource.to_string();
    if !info.api_group.is_empty() {
        out = format!("{out}.{}", info.api_group);
    }
    if !info.subresource.is_empty() {
        out = format!("{out}/{}", info.subresource);
    }
    if !info.name.is_empty() {
        out = format!("{out} {:?}", info.name);
    }
    if !info.namespace.is_empty() {
        out = format!("{out} in namespace {:?}", info.namespace);
    }
    out
}
