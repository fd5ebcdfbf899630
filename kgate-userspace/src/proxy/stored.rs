//! Reading the object a request names, as its caller: with the caller's own
//! credentials (or as the agent impersonating the caller), exactly as the request
//! itself is forwarded, so kgate learns nothing the caller could not read and the API
//! server's audit log shows the read as the caller's.
//!
//! Used before forwarding: by approve (does the object exist?) and by the mask
//! stage's write half (the stored values to restore). Not here: what either makes of
//! the answer.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT},
};
use http_body_util::BodyExt;

use super::{
    forward::{ForwardError, Upstream, credentials},
    upgrade::StreamTap,
};
use crate::{
    body::{self, Body},
    identity::Identity,
    request_info::RequestInfo,
};

/// GETs `path` upstream as the caller whose request carried `headers` (its
/// credentials and user agent), asking for `accept`.
pub(crate) async fn get(
    upstream: &Upstream,
    client: SocketAddr,
    identity: &Identity,
    headers: &HeaderMap,
    path: &str,
    accept: &'static str,
) -> Result<Response<Body>, ForwardError> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(ACCEPT, HeaderValue::from_static(accept));
    for name in [AUTHORIZATION, USER_AGENT] {
        if let Some(value) = headers.get(&name) {
            req = req.header(name, value);
        }
    }
    let req = req
        .body(body::empty())
        .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
    let tap = StreamTap::new(format!("get {path}"));
    upstream
        .forward(client, req, credentials(identity), false, tap)
        .await
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("the body is over the size limit")]
    TooLarge,
    #[error("{0}")]
    Failed(body::BoxError),
}

/// A whole body, at most `limit` bytes.
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Failed)?;
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// The path of the object a request names: a request to a subresource (`status`,
/// `exec`) names the object it belongs to.
pub(crate) fn object_path(info: &RequestInfo) -> String {
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
    path
}

/// Server-side apply (`application/apply-patch+yaml`, `+cbor`), which creates what is
/// missing.
pub(crate) fn is_apply_patch(headers: &HeaderMap) -> bool {
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
