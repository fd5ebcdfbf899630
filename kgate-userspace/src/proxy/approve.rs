//! The **approve** stage: a request that policy holds waits for a human (see
//! [`crate::approval`]). A write's body is read first (up to the API server's own
//! request limit), so the approver sees what would be written and the same bytes are
//! forwarded once approved. Bodies of objects with masked fields (Secrets, and what
//! mask rules cover) are withheld from the approval.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Limited};

use super::{accept::Connection, body};
use crate::{
    approval::Approvals, identity::Identity, policy::Decision, request_info::RequestInfo,
    status::Status,
};

/// The API server's own limit on a request body (3 MiB).
const MAX_HELD_BODY: usize = 3 << 20;
/// How much of a body the approval object shows.
const MAX_SHOWN_BODY: usize = 64 << 10;

/// Holds `req` until it is approved (the request to forward, its body read) or
/// refused (the Status to send).
pub async fn approve(
    approvals: Option<&Approvals>,
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
    let shown = if bytes.is_empty() {
        None
    } else if masked || info.resource == "secrets" {
        // What masking hides from responses is not copied into approvals either.
        Some("(withheld: the object has fields kgate masks)".to_owned())
    } else if bytes.len() > MAX_SHOWN_BODY {
        Some(format!("({} bytes, too large to show)", bytes.len()))
    } else {
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    let process = conn.origin.as_ref().map(|o| match &conn.exe {
        Some(exe) => format!("{} (pid {}, {exe})", o.comm(), o.pid()),
        None => format!("{} (pid {})", o.comm(), o.pid()),
    });
    let approval = approvals
        .hold(identity, process, info, decision, shown)
        .await?;
    Ok((Request::from_parts(parts, body::full(bytes)), approval))
}
