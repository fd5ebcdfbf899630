//! Whether the object a held request names exists, asked of the API server before an
//! approval is created for it. The object is read (`GET`) with the caller's own
//! credentials, exactly as the held request would be forwarded (or as the agent
//! impersonating the caller), so the check learns nothing the caller could not; the
//! API server's audit log shows it as the caller's read. When the API server answers
//! 404, its Status is the client's answer, as it would have been without kgate.
//!
//! Only requests that a missing object fails are checked: `get`, `delete`, a `patch`
//! other than server-side apply, and a `create` of a named object's subresource
//! (`pods/exec`, `pods/eviction`, `serviceaccounts/token`). Not `create` of a
//! collection, and not `update`: a `PUT` creates the object for kinds whose strategy
//! allows create-on-update (Endpoints, Events, Leases, RuntimeClasses, …), and a
//! server-side apply `PATCH` creates it for every kind (k8s.io/apiserver
//! `genericregistry.Store.Update`, `handlers/patch.go` `applyPatcher.createNewObject`).
//!
//! Not here: whether the caller may read the object (a 403 or any answer but a 404
//! Status leaves the request held, as before), or holding it.

use http::{
    HeaderMap, HeaderValue, Method, Request, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT},
};
use http_body_util::BodyExt;
use tracing::debug;

use crate::{
    body,
    connection::Connection,
    identity::Identity,
    proxy::{forward::Upstream, upgrade::StreamTap},
    request_info::RequestInfo,
    status::Status,
};

/// Largest answer read for its Status; the API server's NotFound is a few hundred bytes.
const MAX_STATUS_BYTES: usize = 64 << 10;

/// The API server's 404 Status when the object the request names does not exist;
/// `None` when it exists, when the request is not checked, or when the API server does
/// not say (unreachable, a 403, a 404 that is no Status).
pub async fn missing(
    upstream: &Upstream,
    identity: &Identity,
    conn: &Connection,
    info: &RequestInfo,
    headers: &HeaderMap,
) -> Option<Status> {
    let path = object_path(info, headers)?;
    // Metadata only, where the API server offers it (every built-in and custom
    // resource): an existing Secret's values need not cross for this.
    let mut req = Request::builder().method(Method::GET).uri(&path).header(
        ACCEPT,
        HeaderValue::from_static(
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        ),
    );
    for name in [AUTHORIZATION, USER_AGENT] {
        if let Some(value) = headers.get(&name) {
            req = req.header(name, value);
        }
    }
    let req = req.body(body::full(bytes::Bytes::new())).ok()?;
    let impersonate = identity.impersonate.then_some(&*identity.user);
    let tap = StreamTap::new(format!("get {path}"));
    let response = match upstream
        .forward(conn.peer, req, impersonate, false, tap)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            debug!(%error, path, "existence check failed; the request is held");
            return None;
        }
    };
    if response.status() != StatusCode::NOT_FOUND {
        return None;
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            bytes.extend_from_slice(&data);
        }
        if bytes.len() > MAX_STATUS_BYTES {
            return None;
        }
    }
    let status: Status = serde_json::from_slice(&bytes).ok()?;
    (status.kind == "Status" && status.code == StatusCode::NOT_FOUND.as_u16()).then_some(status)
}

/// The path of the object a request names, when a missing object fails the request
/// (see the module docs).
fn object_path(info: &RequestInfo, headers: &HeaderMap) -> Option<String> {
    if !info.is_resource_request || info.name.is_empty() {
        return None;
    }
    let checked = match info.verb.as_str() {
        "get" | "delete" => true,
        "patch" => !is_apply_patch(headers),
        "create" => !info.subresource.is_empty(),
        _ => false,
    };
    if !checked {
        return None;
    }
    let mut path = format!("/{}", info.api_prefix);
    for segment in [&info.api_group, &info.api_version] {
        if !segment.is_empty() {
            path.push('/');
            path.push_str(&escape(segment));
        }
    }
    // A namespace's own requests carry its name as their namespace too.
    if !info.namespace.is_empty() && info.resource != "namespaces" {
        path.push_str("/namespaces/");
        path.push_str(&escape(&info.namespace));
    }
    path.push('/');
    path.push_str(&escape(&info.resource));
    path.push('/');
    path.push_str(&escape(&info.name));
    Some(path)
}

/// Server-side apply (`application/apply-patch+yaml`, `+cbor`) creates what is missing.
fn is_apply_patch(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/apply-patch")
        })
}

/// A decoded path segment, percent-encoded again where a path segment needs it.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
