//! Whether the object a held request names exists, asked of the API server before an
//! approval is created for it. The object is read as the caller (`proxy::stored`), so
//! the check learns nothing the caller could not. When the API server answers
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

use http::{HeaderMap, StatusCode};
use tracing::debug;

use crate::{
    api_status::Status,
    connection::Connection,
    identity::Identity,
    proxy::{forward::Upstream, stored},
    request_info::RequestInfo,
};

/// Largest answer read for its Status; the API server's NotFound is a few hundred bytes.
const MAX_STATUS_BYTES: usize = 64 << 10;

/// The API server's 404 Status when the object the request names does not exist;
/// `None` when it exists, when the request is not checked, or when the API server does
/// not say (unreachable, a 403, a 404 that is no Status).
pub(super) async fn missing(
    upstream: &Upstream,
    identity: &Identity,
    conn: &Connection,
    info: &RequestInfo,
    headers: &HeaderMap,
) -> Option<Status> {
    let path = object_path(info, headers)?;
    // Metadata only, where the API server offers it (every built-in and custom
    // resource): an existing Secret's values need not cross for this.
    let accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
    let response = match stored::get(upstream, conn.peer, identity, headers, &path, accept).await {
        Ok(response) => response,
        Err(error) => {
            debug!(%error, path, "existence check failed; the request is held");
            return None;
        }
    };
    if response.status() != StatusCode::NOT_FOUND {
        return None;
    }
    let bytes = stored::read_body(response.into_body(), MAX_STATUS_BYTES)
        .await
        .ok()?;
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
        "patch" => !stored::is_apply_patch(headers),
        "create" => !info.subresource.is_empty(),
        _ => false,
    };
    if !checked {
        return None;
    }
    Some(stored::object_path(info))
}

#[cfg(test)]
mod tests;
