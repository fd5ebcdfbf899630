//! The **authorize** stage: parses the request into the Kubernetes authorization
//! attributes (exactly as the API server derives them) and refuses what kgate cannot
//! check.
//!
//! Refused here: paths that do not parse, `Impersonate-*` headers (a caller acting as
//! someone else would be judged by kgate as itself), and upgrade protocols other than
//! the API server's own (SPDY/3.1, WebSocket). Policy rules (allow, deny, approve)
//! come with the policy issue; until then every other request is allowed.

use http::{HeaderMap, Method, Uri};

use super::forward;
use crate::{request_info::RequestInfo, status::Status};

/// The request's attributes, or a 400 Status naming what did not parse.
pub fn attributes(method: &Method, uri: &Uri) -> Result<RequestInfo, Status> {
    RequestInfo::parse(method, uri)
        .map_err(|e| Status::bad_request(format!("kgate: cannot parse the request path: {e}")))
}

pub fn authorize(info: &RequestInfo, headers: &HeaderMap) -> Result<(), Status> {
    if let Some(name) = headers
        .keys()
        .find(|k| k.as_str().starts_with("impersonate-"))
    {
        return Err(Status::forbidden(format!(
            "kgate: {name} headers are not allowed through kgate: impersonation would hide the real caller from policy"
        )));
    }
    if let Some(protocol) = forward::upgrade_protocol(headers)
        && !forward::is_supported_upgrade(protocol)
    {
        return Err(Status::bad_request(format!(
            "kgate: upgrade to {protocol:?} is not supported (only SPDY/3.1 and websocket, as the API server)"
        )));
    }
    let _ = info;
    Ok(())
}
