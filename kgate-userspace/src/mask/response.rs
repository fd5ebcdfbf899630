//! The masked response: checks that the upstream answer is something the masker can
//! read (JSON, not compressed), then streams its body through a [`Scanner`].
//!
//! A failure before the first masked byte becomes a 502 Status; a failure after it
//! ends the body with an error, so that the client sees a broken response (HTTP/1.1:
//! no final chunk; HTTP/2: a reset stream), never the bytes after the failure.
//!
//! Not here: which requests are masked (`Masker::plan`), what is masked (`rules`).

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{
    Response,
    header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tracing::warn;

use super::{Plan, scanner::Scanner};
use crate::{
    api_status::Status,
    body::{Body, BoxError},
};

/// Wraps the upstream response to a planned request: its body masked as it streams,
/// or a 502 Status when the answer cannot be masked (a content type other than JSON,
/// a content encoding, or, for a non-watch response, a body that fails before its
/// first masked byte). `Content-Length` is dropped: masking changes the length.
///
/// For a watch, the headers go out at once (a quiet watch must not hold them back);
/// for any other response, the first masked unit is read before they do.
pub(crate) async fn mask_response(
    plan: &Plan,
    response: Response<Body>,
) -> Result<Response<Body>, Status> {
    let (mut parts, body) = response.into_parts();
    if body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    let refuse = |why: String| {
        Status::bad_gateway(format!(
            "kgate: the API server's answer to this {} request cannot be masked: {why}; \
             kgate never passes on an unmasked body",
            plan.resource
        ))
    };
    if let Some(encoding) = parts.headers.get(CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(refuse(format!("it is encoded as {encoding:?}")));
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !is_json(&content_type) {
        return Err(refuse(format!(
            "its content type is {content_type:?}, not application/json"
        )));
    }
    parts.headers.remove(CONTENT_LENGTH);
    // An error answer to a watch is a plain Status object, not an event stream.
    let watch = plan.watch && parts.status.is_success();
    let scanner = plan.scanner(watch);
    let mut masked = MaskBody {
        inner: body,
        scanner,
        pending: None,
        done: false,
    };
    if !watch {
        masked.prime().await.map_err(|e| refuse(e.to_string()))?;
    }
    Ok(Response::from_parts(parts, masked.boxed_unsync()))
}

/// Whether a Content-Type is JSON (any parameters).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The upstream body, masked as it streams.
pub(crate) struct MaskBody {
    inner: Body,
    scanner: Scanner,
    /// Output read ahead by [`MaskBody::prime`].
    pending: Option<Bytes>,
    done: bool,
}

// === impl MaskBody ===

impl MaskBody {
    /// Reads until the first masked output (or the end, or an error).
    async fn prime(&mut self) -> Result<(), BoxError> {
        match self.frame().await {
            Some(Ok(frame)) => {
                self.pending = frame.into_data().ok();
                Ok(())
            }
            Some(Err(error)) => Err(error),
            None => Ok(()),
        }
    }
}

impl http_body::Body for MaskBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(data) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        while !this.done {
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers: the API server sends none with JSON; dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Err(error) = this.scanner.feed(&data, &mut out) {
                        this.done = true;
                        warn!(%error, "masking failed mid-response; the response is cut off");
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    this.done = true;
                    if let Err(error) = this.scanner.finish() {
                        warn!(%error, "masking failed at the end of the response");
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
