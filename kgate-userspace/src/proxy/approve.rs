//! The **approve** stage: a request that policy holds waits for a human (see
//! [`crate::approval`]). A request about an object that does not exist is not held: the
//! object is read first, with the caller's credentials, and the API server's 404 is the
//! answer. A write's body is read first (up to the API server's own request limit), so
//! the approver sees what would be written and the same bytes are forwarded once
//! approved. Bodies of objects with masked fields (Secrets, and what mask rules cover)
//! are withheld from the approval; a delete's options, which hold no object values,
//! are shown.

mod exists;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Limited};

use super::forward::Upstream;
use crate::body;
use crate::connection::Connection;
use crate::{
    api_status::Status, approval::Approvals, identity::Identity, policy::Decision,
    request_info::RequestInfo,
};

/// The API server's own limit on a request body (3 MiB).
const MAX_HELD_BODY: usize = 3 << 20;
/// How much of a body the approval object shows.
const MAX_SHOWN_BODY: usize = 64 << 10;

/// Holds `req` until it is approved (the request to forward, its body read) or
/// refused (the Status to send). `upstream` answers whether the object it names exists.
#[expect(
    clippy::too_many_arguments,
    reason = "the stage's inputs as the request path holds them"
)]
pub(crate) async fn approve(
    approvals: Option<&Approvals>,
    upstream: &Upstream,
    identity: &Identity,
    conn: &Connection,
    info: &RequestInfo,
    decision: &Decision,
    masked: bool,
    req: Request<body::Lingering>,
) -> Result<(Request<body::Body>, String), Status> {
    let Some(approvals) = approvals else {
        return Err(Status::forbidden(format!(
            "kgate: policy {} holds this request for approval, and this agent has no approval store",
            decision.source
        )));
    };
    // Before an approval is created, not after: a human asked about an object that is
    // not there decides nothing.
    if let Some(not_found) = exists::missing(upstream, identity, conn, info, req.headers()).await {
        return Err(not_found);
    }
    let (parts, incoming) = req.into_parts();
    let bytes: Bytes = Limited::new(incoming, MAX_HELD_BODY)
        .collect()
        .await
        .map_err(|e| {
            Status::request_entity_too_large(format!(
                "kgate: a request held for approval must have a body under {MAX_HELD_BODY} bytes: {e}"
            ))
        })?
        .to_bytes();
    let shown = shown_body(&bytes, masked, info);
    let process = conn.origin.as_ref().map(|o| match &conn.exe {
        Some(exe) => format!("{} (pid {}, {exe})", o.comm(), o.pid()),
        None => format!("{} (pid {})", o.comm(), o.pid()),
    });
    let approval = approvals
        .hold(identity, process, info, decision, shown)
        .await?;
    Ok((Request::from_parts(parts, body::full(bytes)), approval))
}

/// What the approval shows of a held request's body.
fn shown_body(bytes: &[u8], masked: bool, info: &RequestInfo) -> Option<String> {
    if bytes.is_empty() {
        None
    } else if (masked || info.resource == "secrets") && !is_delete_options(bytes, info) {
        // What masking hides from responses is not copied into approvals either (not
        // even its size).
        Some("(withheld: the object has fields kgate masks)".to_owned())
    } else if bytes.len() > MAX_SHOWN_BODY {
        Some(format!("({} bytes, too large to show)", bytes.len()))
    } else {
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// A delete's body that is a `DeleteOptions` (meta/v1) and nothing else: grace period,
/// preconditions (uid, resourceVersion), propagation, dry run. It holds no value of the
/// object, so an approver may see it even where the object's values are masked.
fn is_delete_options(bytes: &[u8], info: &RequestInfo) -> bool {
    const FIELDS: [&str; 8] = [
        "kind",
        "apiVersion",
        "gracePeriodSeconds",
        "preconditions",
        "orphanDependents",
        "propagationPolicy",
        "dryRun",
        "ignoreStoreReadErrorWithClusterBreakingPotential",
    ];
    if !matches!(info.verb.as_str(), "delete" | "deletecollection") {
        return false;
    }
    let Ok(serde_json::Value::Object(options)) = serde_json::from_slice(bytes) else {
        return false;
    };
    options.iter().all(|(key, value)| match key.as_str() {
        "kind" => value == "DeleteOptions",
        "preconditions" => value.as_object().is_some_and(|p| {
            p.iter()
                .all(|(k, v)| matches!(k.as_str(), "uid" | "resourceVersion") && !v.is_object())
        }),
        key => FIELDS.contains(&key) && !value.is_object(),
    })
}

#[cfg(test)]
mod tests;
