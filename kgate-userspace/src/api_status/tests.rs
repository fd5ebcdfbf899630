use serde_json::{Value, json};

use super::*;

fn body(status: &Status) -> Value {
    serde_json::from_slice(&status.to_json()).expect("a Status is JSON")
}

#[test]
fn refusals_have_the_api_server_shape() {
    let cases = [
        (Status::bad_request("kgate: x"), 400, "BadRequest"),
        (Status::unauthorized("kgate: x"), 401, "Unauthorized"),
        (Status::forbidden("kgate: x"), 403, "Forbidden"),
        (Status::not_acceptable("kgate: x"), 406, "NotAcceptable"),
        (
            Status::request_entity_too_large("kgate: x"),
            413,
            "RequestEntityTooLarge",
        ),
        (
            Status::header_too_large("kgate: x"),
            431,
            "RequestEntityTooLarge",
        ),
        (Status::internal_error("kgate: x"), 500, "InternalError"),
        (Status::bad_gateway("kgate: x"), 502, "InternalError"),
        (
            Status::service_unavailable("kgate: x"),
            503,
            "ServiceUnavailable",
        ),
        (Status::gateway_timeout("kgate: x"), 504, "Timeout"),
    ];
    for (status, code, reason) in cases {
        assert_eq!(status.http_status().as_u16(), code, "{reason}");
        assert_eq!(status.retry_after_seconds(), None);
        assert_eq!(
            body(&status),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": "kgate: x", "reason": reason,
                       "code": code}),
            "{reason}"
        );
    }
}

#[test]
fn a_refusal_that_says_when_to_retry_carries_retry_after() {
    let status = Status::gateway_timeout("kgate: approval timed out").with_retry_after(5);
    assert_eq!(status.retry_after_seconds(), Some(5));
    assert_eq!(
        body(&status),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                   "status": "Failure", "message": "kgate: approval timed out",
                   "reason": "Timeout", "details": {"retryAfterSeconds": 5},
                   "code": 504})
    );
    let response = respond(&status);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "5");
    let response = respond(&Status::gateway_timeout("kgate: x"));
    assert!(!response.headers().contains_key(http::header::RETRY_AFTER));
}

#[test]
fn forbidden_names_the_object() {
    let status = Status::forbidden("kgate: rule no-secrets denies get secrets")
        .for_resource("", "secrets", "db");
    assert_eq!(
        body(&status)["details"],
        json!({"name": "db", "kind": "secrets"})
    );
    let status = Status::forbidden("x").for_resource("apps", "deployments", "");
    assert_eq!(
        body(&status)["details"],
        json!({"group": "apps", "kind": "deployments"})
    );
}

#[test]
fn every_message_names_kgate_once() {
    assert_eq!(Status::forbidden("denied").message, "kgate: denied");
    assert_eq!(Status::forbidden("kgate: denied").message, "kgate: denied");
    assert_eq!(
        Status::internal_error(String::from("boom")).to_string(),
        "500 (InternalError): kgate: boom"
    );
}

#[test]
fn raw_read_discovery_paths_get_the_message_as_text() {
    let status = Status::forbidden("kgate: denied by policy p (default)");
    for path in [
        "/api",
        "/apis",
        "/version",
        "/openapi/v2",
        "/openapi/v3",
        "/openapi/v3/apis/apps/v1",
    ] {
        let (content_type, body) = status.encode_for(path);
        assert_eq!(content_type, "text/plain; charset=utf-8", "{path}");
        assert_eq!(
            &body[..],
            b"kgate: denied by policy p (default)\n",
            "{path}"
        );
    }
    for path in [
        "/api/v1",
        "/apis/apps/v1",
        "/apis/apps",
        "/api/v1/namespaces/demo/pods",
        "/healthz",
        "/openapi",
        "/apis/",
        "/versions",
    ] {
        assert_eq!(
            status.encode_for(path),
            ("application/json", status.to_json()),
            "{path}"
        );
    }
}

#[test]
fn round_trips_through_json() {
    let status = Status::gateway_timeout("approval timed out").with_retry_after(30);
    let back: Status = serde_json::from_slice(&status.to_json()).unwrap();
    assert_eq!(back, status);
    // An API server Status with a cause parses too.
    let upstream: Status = serde_json::from_value(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "boom", "reason": "InternalError", "code": 500,
        "details": {"causes": [{"message": "boom"}]}
    }))
    .unwrap();
    assert_eq!(upstream.details.unwrap().causes[0].message, "boom");
}
