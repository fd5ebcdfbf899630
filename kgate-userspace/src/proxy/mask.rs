//! The **mask** stage, applying [`crate::mask`] to one request: before forward, the
//! upstream is asked for a format kgate can mask ([`crate::mask::negotiate`]) and a
//! write's placeholders are restored ([`restore`]); after, the response is masked as it
//! streams ([`crate::mask::mask_response`]).
//!
//! Writes: a write that carries kgate's placeholders gets the stored values back in
//! their place before it is forwarded, or is refused; a placeholder never reaches the
//! API server (the domain module's `restore` says which fields and patch operations).
//!
//! Only writes (create, update, patch) to resources kgate masks for this caller are
//! read here: their body is held (up to the API server's 3 MiB limit) and parsed. A body
//! without a placeholder, and without a JSON patch operation that reads values, is
//! forwarded byte for byte, without a look at the stored object. Otherwise the stored
//! object is read upstream with the caller's own credentials (the same ones the write
//! goes with, so kgate reads nothing the caller could not), the placeholders are
//! restored, and the write is made conditional on the `resourceVersion` that was read,
//! so a concurrent change fails with the API server's own 409 Conflict.
//!
//! Encodings: JSON and YAML bodies are parsed; a protobuf body is searched for the
//! placeholders' bytes (protobuf strings are never escaped) and refused if it holds one;
//! any other encoding of a masked resource's write, or a compressed body, is refused.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{
    HeaderValue, Request, StatusCode,
    header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
};
use serde_json::Value;

use super::{
    forward::Upstream,
    stored::{self, ReadError},
};
use crate::body::{self, Body};
use crate::{
    api_status::{Status, StatusCause, StatusDetails},
    identity::Identity,
    mask::{MASKED_BASE64, MASKED_TEXT, Plan, RestoreError, Restored},
    request_info::RequestInfo,
};

/// The API server's own limit on a request body (3 MiB).
const MAX_BODY: usize = 3 << 20;
/// The largest stored object read back (the API server stores at most ~1.5 MiB in
/// etcd by default; room for JSON's overhead).
const MAX_STORED: usize = 16 << 20;

/// How a write's body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Json,
    JsonPatch,
    Yaml,
    Protobuf,
}

/// Restores the placeholders in `req`'s body, or refuses it. Returns the request to
/// forward and what was restored (empty when nothing was).
pub(crate) async fn restore(
    upstream: &Upstream,
    client: SocketAddr,
    identity: &Identity,
    info: &RequestInfo,
    plan: &Plan,
    req: Request<Body>,
) -> Result<(Request<Body>, Restored), Status> {
    if !matches!(info.verb.as_str(), "create" | "update" | "patch") {
        return Ok((req, Restored::new()));
    }
    if req
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(Status::unsupported_media_type(format!(
            "kgate: a write to {} must not be compressed: kgate checks it for masked values",
            info.resource
        )));
    }
    let encoding = encoding(&req)?;
    let (mut parts, incoming) = req.into_parts();
    let bytes = stored::read_body(incoming, MAX_BODY)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => Status::request_entity_too_large(format!(
                "Request entity too large: limit is {MAX_BODY}"
            )),
            ReadError::Failed(e) => {
                Status::bad_request(format!("kgate: reading the request body failed: {e}"))
            }
        })?;
    let raw_placeholder = memchr::memmem::find(&bytes, MASKED_TEXT.as_bytes()).is_some()
        || memchr::memmem::find(&bytes, MASKED_BASE64.as_bytes()).is_some();
    let parsed = match encoding {
        _ if bytes.is_empty() => return Ok(unchanged(parts, bytes)),
        Encoding::Protobuf if raw_placeholder => {
            return Err(Status::unsupported_media_type(
                "kgate: this protobuf body carries kgate's placeholder for a masked value; kgate restores stored values only in JSON or YAML bodies, so send the write as JSON",
            ));
        }
        Encoding::Protobuf => return Ok(unchanged(parts, bytes)),
        Encoding::Json | Encoding::JsonPatch => serde_json::from_slice::<Value>(&bytes).ok(),
        Encoding::Yaml => serde_yaml::from_slice::<Value>(&bytes).ok(),
    };
    let Some(mut value) = parsed else {
        // Malformed: the API server refuses it too. Unchecked, it may not carry a
        // placeholder the parser could not see.
        if raw_placeholder {
            return Err(Status::bad_request(
                "kgate: the request body is not valid JSON or YAML, and it carries kgate's placeholder for a masked value",
            ));
        }
        return Ok(unchanged(parts, bytes));
    };
    let json_patch = encoding == Encoding::JsonPatch;
    let reads = json_patch && crate::mask::patch_reads(&value);
    if !crate::mask::has_placeholder(&value) && !reads {
        return Ok(unchanged(parts, bytes));
    }
    let stored = if info.verb == "create" {
        None
    } else {
        stored(upstream, client, identity, info, &parts).await?
    };
    let restored = match (&stored, json_patch) {
        (Some(stored), true) => plan.restore_json_patch(&mut value, stored),
        (None, true) => {
            return Err(Status::not_found(format!(
                "kgate: {} {:?} not found",
                info.resource, info.name
            )));
        }
        (stored, false) => plan.restore_object(&mut value, stored.as_ref()),
    }
    .map_err(|e| invalid(info, &value, &e))?;
    if restored.is_empty() {
        return Ok(unchanged(parts, bytes));
    }
    if let Some(rv) = stored
        .as_ref()
        .and_then(|s| s["metadata"]["resourceVersion"].as_str())
    {
        crate::mask::guard(&mut value, json_patch, rv);
    }
    let body = serde_json::to_vec(&value)
        .map_err(|e| Status::internal_error(format!("kgate: re-encoding the write: {e}")))?;
    if encoding == Encoding::Yaml && !stored::is_apply_patch(&parts.headers) {
        // Server-side apply takes JSON under its YAML type; other writes are told.
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok((Request::from_parts(parts, body::full(body)), restored))
}

/// A 422 as the API server words an invalid object, so kubectl prints it as
/// `The Secret "db" is invalid: /data/x: kgate: …`: the kind and name from the body
/// (a create has no name in its path), the field as the cause.
fn invalid(info: &RequestInfo, body: &Value, error: &RestoreError) -> Status {
    let message = format!("kgate: {error}");
    let mut status = Status::invalid(message.clone());
    let name = body["metadata"]["name"].as_str().unwrap_or(&info.name);
    status.details = Some(StatusDetails {
        name: name.to_owned(),
        group: info.api_group.to_string(),
        kind: body["kind"].as_str().unwrap_or(&info.resource).to_owned(),
        causes: vec![StatusCause {
            reason: "FieldValueInvalid".to_owned(),
            message,
            field: error.field().to_owned(),
        }],
        retry_after_seconds: None,
    });
    status
}

/// The request as it came, its body read.
fn unchanged(parts: http::request::Parts, bytes: Bytes) -> (Request<Body>, Restored) {
    (
        Request::from_parts(parts, body::full(bytes)),
        Restored::new(),
    )
}

/// The body's encoding, from its `Content-Type`; a type kgate cannot check is refused.
fn encoding<B>(req: &Request<B>) -> Result<Encoding, Status> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(match media.as_str() {
        // No body type: an empty body, or one the API server refuses (415) anyway.
        "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "" => Encoding::Json,
        "application/json-patch+json" => Encoding::JsonPatch,
        "application/yaml" | "application/apply-patch+yaml" => Encoding::Yaml,
        "application/vnd.kubernetes.protobuf" => Encoding::Protobuf,
        other => {
            return Err(Status::unsupported_media_type(format!(
                "kgate: a write in {other:?} cannot be checked for masked values; send JSON"
            )));
        }
    })
}

/// The object as stored, read with the caller's credentials; `None` when it does not
/// exist (only server-side apply may then create it).
async fn stored(
    upstream: &Upstream,
    client: SocketAddr,
    identity: &Identity,
    info: &RequestInfo,
    parts: &http::request::Parts,
) -> Result<Option<Value>, Status> {
    let unavailable = |why: String| {
        Status::service_unavailable(format!(
            "kgate: this write carries kgate's placeholders for masked values, and the stored object could not be read to restore them: {why}"
        ))
    };
    let path = stored::object_path(info);
    let response = stored::get(
        upstream,
        client,
        identity,
        &parts.headers,
        &path,
        "application/json",
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    let status = response.status();
    let bytes = stored::read_body(response.into_body(), MAX_STORED)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if status == StatusCode::NOT_FOUND
        && info.verb == "patch"
        && stored::is_apply_patch(&parts.headers)
    {
        return Ok(None);
    }
    if !status.is_success() {
        // The API server's own refusal of the read (404 for a missing object, 403 for
        // a caller who may not read it) is what the write would have met as well.
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        return Err(match status {
            StatusCode::NOT_FOUND => Status::not_found(message),
            StatusCode::FORBIDDEN => Status::forbidden(format!(
                "kgate: this write carries kgate's placeholders for masked values, and restoring them needs a read of the stored object, which the API server refused: {message}"
            )),
            _ => unavailable(message),
        }
        .for_resource(&info.api_group, &info.resource, &info.name));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| unavailable(format!("the API server's answer is not JSON: {e}")))
}
