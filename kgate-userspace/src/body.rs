//! The one body type of the request path: streamed, boxed, whatever its source.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies: an upstream or client stream, or a small fixed body.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// Wraps a hyper body (the client's request, the upstream's response) without buffering.
pub(crate) fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// How much of an unread HTTP/1.1 request body kgate still reads, after answering
/// without it, so the client sees the answer. Go's server (the API server's) drains
/// 256 KiB and then lingers; this is the API server's whole body limit plus room.
const LINGER_BYTES: usize = 4 << 20;
/// How long the rest of such a body may take to arrive before the connection closes.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// A client's request body that, dropped before its end on an HTTP/1.1 connection,
/// is read to its end (up to `LINGER_BYTES` and `LINGER_TIME`) and discarded.
///
/// kgate answers many requests without their body: refusals, approvals over the
/// size limit, an upstream's early 413. hyper then closes the connection with the
/// body's bytes still unread, the kernel answers them with a reset, and a reset can
/// destroy the answer in the client's receive queue before the client reads it: it
/// sees "connection reset" instead of the Status. Reading on lets the answer arrive,
/// as the API server's own lingering close does. HTTP/2 needs none of this: a
/// stream's unread body ends with a `RST_STREAM(NO_ERROR)` after the response.
pub(crate) struct Lingering {
    inner: Option<Incoming>,
    linger: bool,
}

impl Lingering {
    pub(crate) fn new(req: Request<Incoming>) -> Request<Self> {
        let linger = req.version() <= Version::HTTP_11;
        req.map(|inner| Self {
            inner: Some(inner),
            linger,
        })
    }
}

impl http_body::Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // Read to its end: nothing left to linger for (a chunked body's
            // `is_end_stream` never says so).
            self.inner = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if !self.linger || http_body::Body::is_end_stream(&inner) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(inner));
        }
    }
}

async fn drain(mut body: Incoming) {
    let mut left = LINGER_BYTES;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, Bytes::len);
            let Some(rest) = left.checked_sub(len) else {
                return;
            };
            left = rest;
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, read).await;
}
