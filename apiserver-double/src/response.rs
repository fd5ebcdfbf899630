//! Responses as the real server writes them: the body type every handler returns
//! (buffered or fed by a channel), a JSON answer, and a `Status` failure.
//!
//! Not here: the `Status` bodies that carry `details` (api.rs builds those) and the
//! exec/attach statuses on an error channel (streams/status.rs).

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed by a channel: what watches, logs and big lists write into.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

pub fn response(code: StatusCode, content_type: &str, body: Body) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("valid response")
}

pub fn json_response(code: StatusCode, value: &Value) -> hyper::Response<Body> {
    response(
        code,
        "application/json",
        full(serde_json::to_vec(value).unwrap_or_default()),
    )
}

/// A `Status` failure as the real server writes it.
pub fn status(code: StatusCode, reason: &str, message: &str) -> hyper::Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}
