//! Refusals as the API server writes them: a `metav1.Status` (kind Status, status
//! Failure, a reason from `metav1.StatusReason`, the HTTP code) whose message names
//! kgate, so that kubectl prints "Error from server (Forbidden): kgate: …".

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

/// A failure `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    pub code: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

impl Status {
    fn failure(code: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            api_version: "v1",
            kind: "Status",
            metadata: Metadata {},
            status: "Failure",
            message,
            reason,
            details: None,
            code: code.as_u16(),
        }
    }

    /// 400: the request cannot be understood or checked.
    pub fn bad_request(message: String) -> Self {
        Self::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: String) -> Self {
        Self::failure(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 403: policy refuses the request.
    pub fn forbidden(message: String) -> Self {
        Self::failure(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 406: the client accepts no format kgate can check.
    pub fn not_acceptable(message: String) -> Self {
        Self::failure(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    /// 413: the request body is larger than kgate will hold.
    pub fn request_entity_too_large(message: String) -> Self {
        Self::failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    /// 431: the request head is larger than the API server accepts (1 MiB). metav1
    /// has no reason of its own for it; RequestEntityTooLarge is the nearest.
    pub fn header_too_large(message: String) -> Self {
        Self::failure(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    /// 429 with a retry hint, as the API server's priority and fairness sends.
    pub fn too_many_requests(message: String, retry_after_seconds: u32) -> Self {
        let mut status = Self::failure(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
        status.details = Some(Details {
            retry_after_seconds: Some(retry_after_seconds),
        });
        status
    }

    /// 500: kgate itself failed.
    pub fn internal_error(message: String) -> Self {
        Self::failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 503: the API server (or kgate's recorder) cannot be reached. The API server's
    /// own proxy answers an unreachable backend this way, and clients retry on it.
    pub fn service_unavailable(message: String) -> Self {
        Self::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 504: a held request timed out (e.g. waiting for approval).
    pub fn timeout(message: String) -> Self {
        Self::failure(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn to_json(&self) -> Bytes {
        // A struct of strings and integers always serializes.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn statuses_have_the_api_server_shape() {
        let cases = [
            (Status::bad_request("kgate: x".into()), 400, "BadRequest"),
            (Status::unauthorized("kgate: x".into()), 401, "Unauthorized"),
            (Status::forbidden("kgate: x".into()), 403, "Forbidden"),
            (
                Status::not_acceptable("kgate: x".into()),
                406,
                "NotAcceptable",
            ),
            (
                Status::request_entity_too_large("kgate: x".into()),
                413,
                "RequestEntityTooLarge",
            ),
            (
                Status::internal_error("kgate: x".into()),
                500,
                "InternalError",
            ),
            (
                Status::service_unavailable("kgate: x".into()),
                503,
                "ServiceUnavailable",
            ),
            (Status::timeout("kgate: x".into()), 504, "Timeout"),
        ];
        for (status, code, reason) in cases {
            assert_eq!(status.http_status().as_u16(), code);
            let v: Value = serde_json::from_slice(&status.to_json()).unwrap();
            assert_eq!(
                v,
                json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                       "message": "kgate: x", "reason": reason, "code": code})
            );
        }
        let v: Value =
            serde_json::from_slice(&Status::too_many_requests("kgate: slow".into(), 5).to_json())
                .unwrap();
        assert_eq!(v["details"], json!({"retryAfterSeconds": 5}));
        assert_eq!(v["code"], 429);
    }
}
