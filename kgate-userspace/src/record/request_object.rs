//! The request body kept for the record at level `Request`: a copy taken as the body
//! streams to the API server (nothing waits for it, nothing is buffered ahead of the
//! forward), parsed and masked when the response's event is written.
//!
//! A body is kept only when it is JSON or YAML (server-side apply's
//! `application/apply-patch+yaml`, which kubectl and kube-rs fill with JSON, itself
//! YAML), whole (the copy saw its end), at most the configured size and, where mask
//! rules cover the resource, an object (so that every masked field can be found).
//! Otherwise the event gets no `requestObject`, and [`Captured::object`] says why.
//!
//! The same copy serves response bodies at `RequestResponse` ([`Captured::for_response`]).
//!
//! Not here: protobuf or CBOR bodies.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde_json::Value;

use crate::{body::Body, mask::Plan};

/// What the copy saw.
#[derive(Debug, Default)]
struct State {
    bytes: Vec<u8>,
    /// More arrived than the limit: the copy was let go.
    over: bool,
    /// The body's end was seen.
    ended: bool,
    seen: u64,
}

/// The copy of one request's body, for its record.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    state: Arc<Mutex<State>>,
    limit: usize,
    /// `Content-Length`: a body that has all of it is whole even before its end is
    /// polled (the API server may answer first).
    expected: Option<u64>,
    syntax: Option<Syntax>,
    mask: Option<Plan>,
    /// The config field that sets `limit`, for the reason a body is left out.
    limit_field: &'static str,
}

/// The request body, passing through unchanged while a copy is taken.
struct Tee {
    inner: Body,
    state: Arc<Mutex<State>>,
    limit: usize,
}

/// How a kept body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// JSON, the JSON patch types included.
    Json,
    /// YAML: `application/yaml` and server-side apply's `application/apply-patch+yaml`.
    Yaml,
}

/// How a body with these headers is read; `None` for what is not kept (protobuf,
/// CBOR, anything else).
pub(crate) fn syntax(headers: &http::HeaderMap) -> Option<Syntax> {
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())?
        .trim()
        .to_ascii_lowercase();
    if media.ends_with("json") {
        Some(Syntax::Json)
    } else if matches!(
        media.as_str(),
        "application/yaml" | "application/apply-patch+yaml"
    ) {
        Some(Syntax::Yaml)
    } else {
        None
    }
}

/// Wraps `body` so that a copy of up to `limit` bytes is kept. `syntax`: how the
/// body is read (`None`: it is not kept); `mask`: the rules its object is masked by.
pub(crate) fn tee(
    body: Body,
    limit: usize,
    expected: Option<u64>,
    syntax: Option<Syntax>,
    mask: Option<Plan>,
) -> (Body, Captured) {
    let state = Arc::new(Mutex::new(State::default()));
    let tee = Tee {
        inner: body,
        state: state.clone(),
        limit,
    };
    let captured = Captured {
        state,
        limit,
        expected,
        syntax,
        mask,
        limit_field: "record.requestObjectMaxBytes",
    };
    (Body::new(tee), captured)
}

// === impl Tee ===

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let limit = self.limit;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.seen += data.len() as u64;
                    if !state.over && state.bytes.len() + data.len() <= limit {
                        state.bytes.extend_from_slice(data);
                    } else {
                        state.over = true;
                        state.bytes = Vec::new();
                    }
                }
            }
            Poll::Ready(None) => state.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Captured ===

impl Captured {
    /// For a response body: the limit is `record.responseObjectMaxBytes`.
    #[must_use]
    pub(crate) fn for_response(mut self) -> Self {
        self.limit_field = "record.responseObjectMaxBytes";
        self
    }

    /// The body's end, as its reader learnt it from `is_end_stream` without polling
    /// for it (hyper does so with HTTP/2).
    pub(crate) fn mark_ended(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended = true;
    }

    /// Whether all of the body has passed: its end was seen, or its `Content-Length`.
    pub(crate) fn whole(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.ended || self.expected.is_some_and(|n| n == state.seen)
    }

    /// The body as the record keeps it (masked; `None` when it was empty), or why it
    /// keeps none.
    pub(crate) fn object(&self) -> Result<Option<Value>, String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(syntax) = self.syntax else {
            return Err("omitted: not JSON or YAML".into());
        };
        if state.over {
            return Err(format!(
                "omitted: larger than {} ({} bytes)",
                self.limit_field, self.limit
            ));
        }
        let whole = state.ended || self.expected.is_some_and(|n| n == state.seen);
        if !whole {
            return Err("omitted: the body had not all arrived when the response began".into());
        }
        if state.bytes.is_empty() {
            return Ok(None);
        }
        let mut value: Value = match syntax {
            Syntax::Json => serde_json::from_slice(&state.bytes)
                .map_err(|e| format!("omitted: not valid JSON ({e})"))?,
            Syntax::Yaml => serde_yaml::from_slice(&state.bytes)
                .map_err(|e| format!("omitted: not valid YAML ({e})"))?,
        };
        if let Some(plan) = &self.mask
            && !plan.mask_object(&mut value)
        {
            return Err("omitted: masked fields of a body that is not an object".into());
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::{body, mask::MaskConfig};

    fn plan(resource: &str) -> Option<Plan> {
        let masker = crate::mask::Masker::new(&MaskConfig::default()).unwrap();
        let uri: http::Uri = format!("/api/v1/namespaces/demo/{resource}")
            .parse()
            .unwrap();
        let info = crate::request_info::RequestInfo::parse(&http::Method::POST, &uri).unwrap();
        masker.record_plan(&info)
    }

    async fn through(
        body: &[u8],
        limit: usize,
        json: bool,
        mask: Option<Plan>,
    ) -> Result<Value, String> {
        let syntax = json.then_some(Syntax::Json);
        through_maybe_empty(body, limit, syntax, mask)
            .await
            .map(|v| v.expect("a body"))
    }

    async fn through_maybe_empty(
        body: &[u8],
        limit: usize,
        syntax: Option<Syntax>,
        mask: Option<Plan>,
    ) -> Result<Option<Value>, String> {
        let (tee, captured) = tee(body::full(body.to_vec()), limit, None, syntax, mask);
        let forwarded = tee.collect().await.unwrap().to_bytes();
        assert_eq!(forwarded, body, "the body passes unchanged");
        captured.object()
    }

    #[tokio::test]
    async fn secrets_are_masked_and_other_objects_kept() {
        let secret = br#"{"kind":"Secret","metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="},"stringData":{"token":"hunter2"}}"#;
        let object = through(secret, 1 << 20, true, plan("secrets"))
            .await
            .unwrap();
        let text = object.to_string();
        assert!(
            !text.contains("aHVudGVyMg==") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(object["data"]["password"], crate::mask::MASKED_BASE64);
        let map = br#"{"kind":"ConfigMap","data":{"a":"b"}}"#;
        let object = through(map, 1 << 20, true, plan("configmaps"))
            .await
            .unwrap();
        assert_eq!(object["data"]["a"], "b");
    }

    /// Server-side apply's bodies: JSON as kubectl and kube-rs send them, or YAML, both
    /// as `application/apply-patch+yaml`; a Secret's values masked either way.
    #[tokio::test]
    async fn apply_patches_are_read_as_yaml_and_masked() {
        let headers = |t: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(t),
            );
            h
        };
        assert_eq!(
            syntax(&headers("application/apply-patch+yaml")),
            Some(Syntax::Yaml)
        );
        assert_eq!(
            syntax(&headers("application/merge-patch+json")),
            Some(Syntax::Json)
        );
        assert_eq!(syntax(&headers("application/apply-patch+cbor")), None);
        assert_eq!(
            syntax(&headers("application/vnd.kubernetes.protobuf")),
            None
        );
        for body in [
            &br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="}}"#[..],
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  password: aHVudGVyMg==\n",
        ] {
            let object = through_maybe_empty(body, 1 << 20, Some(Syntax::Yaml), plan("secrets"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(object["metadata"]["name"], "s");
            assert_eq!(object["data"]["password"], crate::mask::MASKED_BASE64);
        }
        let err = through_maybe_empty(b"a: [", 1 << 20, Some(Syntax::Yaml), None)
            .await
            .unwrap_err();
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[tokio::test]
    async fn what_cannot_be_kept_says_why() {
        let patch = br#"[{"op":"add","path":"/data/x","value":"c2VjcmV0"}]"#;
        let err = through(patch, 1 << 20, true, plan("secrets"))
            .await
            .unwrap_err();
        assert!(err.contains("not an object"), "{err}");
        // A JSON patch of a resource no rule masks is kept as it is.
        assert!(
            through(patch, 1 << 20, true, plan("configmaps"))
                .await
                .unwrap()
                .is_array()
        );
        let err = through(b"{\"a\":1}", 4, true, None).await.unwrap_err();
        assert!(err.contains("requestObjectMaxBytes"), "{err}");
        let err = through(b"k8s\0...", 1 << 20, false, None)
            .await
            .unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        assert_eq!(
            through_maybe_empty(b"", 1 << 20, Some(Syntax::Json), None).await,
            Ok(None)
        );
        let err = through(b"{\"a\":", 1 << 20, true, None).await.unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn a_body_not_yet_read_is_not_recorded() {
        let (_tee, captured) = tee(
            body::full(b"{}".to_vec()),
            1024,
            Some(2),
            Some(Syntax::Json),
            None,
        );
        let err = captured.object().unwrap_err();
        assert!(err.contains("not all arrived"), "{err}");
    }
}
