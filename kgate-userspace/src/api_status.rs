//! Refusals as the API server writes them: a `metav1.Status` (kind Status, status
//! Failure, a `metav1.StatusReason`, the HTTP code) whose message starts with `kgate: `,
//! so that kubectl prints "Error from server (Forbidden): kgate: …" and client-go's
//! `errors.IsForbidden`, `IsTooManyRequests`, … classify it as they would the server's.
//!
//! Each constructor picks the code and reason that kube-apiserver (or its aggregator,
//! for proxying) sends in the same situation. Where the API server has no equivalent
//! (a 502, a 431), the reason is the one client-go itself derives from that code.
//!
//! One refusal is sent in another form than the API server's: on the discovery paths
//! that client-go reads raw (see [`Status::encode_for`]) the message goes as
//! `text/plain`, since client-go shows a Status there as "unknown".
//!
//! [`respond`] writes one as the response. Not here: choosing which refusal a failure
//! deserves (the stage that failed decides).

use std::fmt;

use bytes::Bytes;
use http::{
    Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use serde::{Deserialize, Serialize};

use crate::body::{self, Body};

/// The `Status` object of a failed request (`metav1.Status`). Absent fields
/// deserialize to their defaults, so an upstream Status parses too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Status {
    pub kind: String,
    pub api_version: String,
    pub metadata: ListMeta,
    pub status: String,
    pub message: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    pub code: u16,
}

/// Always empty on a refusal; kubectl and client-go expect the key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListMeta {}

/// `metav1.StatusDetails`: what the refusal is about, and when to retry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// For a refused resource request, the resource (as the API server fills it in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// `metav1.StatusCause`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusCause {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// Every message a client sees from kgate starts with this.
const MESSAGE_PREFIX: &str = "kgate: ";

/// A refusal as the API server would send it: a `Status` body with its HTTP code.
pub(crate) fn respond(status: &Status) -> Response<Body> {
    respond_to("", status)
}

/// A refusal of a request for `path`, in the form its client reads: see
/// [`Status::encode_for`].
/// A Status with `details.retryAfterSeconds` also carries a `Retry-After` header, as
/// the API server's `responsewriters.ErrorNegotiated` sets it; client-go's retry logic
/// reads the header.
pub(crate) fn respond_to(path: &str, status: &Status) -> Response<Body> {
    let (content_type, body) = status.encode_for(path);
    let mut response = Response::builder()
        .status(status.http_status())
        .header(CONTENT_TYPE, content_type);
    if let Some(seconds) = status.retry_after_seconds().filter(|s| *s > 0) {
        response = response.header(RETRY_AFTER, seconds);
    }
    response
        .body(body::full(body))
        .expect("a Status response is always valid")
}

// === impl Status ===

impl Status {
    fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.starts_with(MESSAGE_PREFIX) {
            message
        } else {
            format!("{MESSAGE_PREFIX}{message}")
        };
        Self {
            kind: "Status".to_owned(),
            api_version: "v1".to_owned(),
            metadata: ListMeta {},
            status: "Failure".to_owned(),
            message,
            reason: reason.to_owned(),
            details: None,
            code: code.as_u16(),
        }
    }

    /// 400 BadRequest: the request cannot be understood or checked.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401 Unauthorized: no credentials, or credentials that do not authenticate.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 403 Forbidden: policy refuses the request. See [`Status::for_resource`].
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 404 NotFound: nothing is served at this path.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 405 MethodNotAllowed: the path is served, but not for this method.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 406 NotAcceptable: the client accepts no format kgate can check (the API
    /// server's content negotiation answers an unservable `Accept` the same way).
    pub(crate) fn not_acceptable(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    /// 409 Conflict: the request names more than one thing (an ambiguous session ID
    /// prefix), as the API server answers a request that conflicts with the state.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 413 RequestEntityTooLarge: the body is larger than kgate will hold, as the
    /// API server answers a body over its own limit.
    pub(crate) fn request_entity_too_large(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    /// 415 UnsupportedMediaType: a body in an encoding kgate cannot check, as the
    /// API server answers a content type it does not decode.
    pub(crate) fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    /// 422 Invalid: the request is understood but cannot be carried out as written,
    /// as the API server answers an invalid object or a JSON patch that does not apply.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    /// 431: the request head is larger than the API server accepts (1 MiB). metav1
    /// has no reason of its own for it; RequestEntityTooLarge is the nearest.
    pub(crate) fn header_too_large(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    /// 500 InternalError: kgate itself failed. The API server also lists the error as
    /// a cause; the message already says it, so kgate does not repeat it.
    pub(crate) fn internal_error(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 502 with reason InternalError: the API server answered, but not with HTTP that
    /// kgate could pass on. metav1 has no bad-gateway reason; InternalError is what
    /// client-go derives from a bare 502, so clients classify it the same either way.
    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::BAD_GATEWAY, "InternalError", message)
    }

    /// 503 ServiceUnavailable: the API server cannot be reached (or a component kgate
    /// needs is down). The aggregator answers an unreachable backend this way, and
    /// clients treat it as transient.
    pub(crate) fn service_unavailable(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 504 Timeout: a request kgate held (e.g. waiting for approval) or forwarded did
    /// not complete in time, as the API server's request-timeout filter answers.
    pub(crate) fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    /// Names the refused object the way the API server's `NewForbidden` does: the
    /// group, the resource (in `kind`) and the name, each when known.
    #[must_use]
    pub(crate) fn for_resource(mut self, group: &str, resource: &str, name: &str) -> Self {
        let details = self.details.get_or_insert_with(StatusDetails::default);
        group.clone_into(&mut details.group);
        resource.clone_into(&mut details.kind);
        name.clone_into(&mut details.name);
        self
    }

    #[must_use]
    pub(crate) fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(StatusDetails::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    /// The value for a `Retry-After` header, when the refusal has one.
    pub(crate) fn retry_after_seconds(&self) -> Option<u32> {
        self.details.as_ref()?.retry_after_seconds
    }

    pub(crate) fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body (`application/json`).
    pub(crate) fn to_json(&self) -> Bytes {
        // Strings, integers and optional structs of them always serialize.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The content type and body of this refusal of a request for `path` (the
    /// percent-decoded path): the JSON Status, except where client-go never decodes
    /// one.
    ///
    /// client-go reads discovery (`/api`, `/apis`), `/version` and OpenAPI with
    /// `Result.Raw()`, which returns the error `transformResponse` made without looking
    /// for a Status: `newUnstructuredResponseError` takes the body as the message only
    /// for a `text/*` content type and says "unknown" otherwise (k8s.io/client-go
    /// rest/request.go; discovery/discovery_client.go `downloadLegacy`, `downloadAPIs`,
    /// `ServerVersion`, `OpenAPISchema`; openapi/groupversion.go). The API server's own
    /// JSON Status there prints as `Error from server (Forbidden): unknown`, which is
    /// what kubectl without a discovery cache showed of every kgate refusal. So there
    /// the message goes as `text/plain; charset=utf-8` with a trailing newline, the form
    /// of Go's `http.Error` (which the API server's own plain-text errors use): kubectl
    /// then prints `Error from server (Forbidden): kgate: …`, and `errors.IsForbidden`
    /// still holds (client-go derives the reason from the code). Group-version discovery (`/api/v1`, `/apis/G/V`) is decoded with
    /// `Into`, which finds a Status: it keeps the JSON form.
    pub(crate) fn encode_for(&self, path: &str) -> (&'static str, Bytes) {
        if is_read_raw(path) {
            let text = format!("{}\n", self.message);
            ("text/plain; charset=utf-8", Bytes::from(text))
        } else {
            ("application/json", self.to_json())
        }
    }
}

/// The paths whose answers client-go reads with `Raw()` (see [`Status::encode_for`]).
fn is_read_raw(path: &str) -> bool {
    matches!(
        path,
        "/api" | "/apis" | "/version" | "/openapi/v2" | "/openapi/v3"
    ) || path.starts_with("/openapi/v3/")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests;
