//! Level `RequestResponse`: the response's body in its event, as the client got it.
//!
//! The event cannot be written when the response head goes out, as at the other
//! levels: the body has not been sent yet. So the response body is wrapped; the record
//! stage hands the wrapper the finished event, and the wrapper writes it once the body
//! has ended (with the copy as `responseObject`), or when the client goes away first
//! (with the reason it has none). Nothing waits for the record: the copy is taken as
//! the bytes pass, up to `record.responseObjectMaxBytes`.
//!
//! Only what the client was sent is copied, and only where that is masked data: a
//! response the masker rewrote, or one of a resource that no mask rule covers. A
//! response served unmasked to a subject granted unmasked reads keeps its body out of
//! the record. Watches and upgraded streams are never copied.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use jiff::Timestamp;

use crate::{
    body::{Body, BoxError},
    record::{
        Recorder,
        event::{self, Event},
        request_object::{self, Captured},
        writer::Writer,
    },
};

/// Where the event waits for its body.
#[derive(Default)]
struct Slot {
    event: Option<Event>,
    /// The body ended, or was dropped unfinished.
    done: Option<Done>,
    writer: Option<Writer>,
}

#[derive(Clone, Copy)]
enum Done {
    Ended,
    Dropped,
}

/// The record stage's end of a response whose event waits for its body.
#[derive(Clone)]
pub(super) struct Held {
    slot: Arc<Mutex<Slot>>,
    captured: Captured,
}

/// Wraps `response`'s body so that its event is written when the body ends.
pub(super) fn hold(
    recorder: &Recorder,
    limit: usize,
    response: http::Response<Body>,
) -> (http::Response<Body>, Held) {
    let syntax = request_object::syntax(response.headers());
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (parts, body) = response.into_parts();
    // The body is already masked (or covered by no rule): no second masking.
    let (body, captured) = request_object::tee(body, limit, length, syntax, None);
    let slot = Arc::new(Mutex::new(Slot {
        writer: recorder.writer(),
        ..Slot::default()
    }));
    let held = Held {
        slot: slot.clone(),
        captured: captured.for_response(),
    };
    let body = Body::new(Watched {
        inner: body,
        held: held.clone(),
        finished: false,
    });
    (http::Response::from_parts(parts, body), held)
}

// === impl Held ===

impl Held {
    /// The event, finished but for its body: written now if the body is done, else
    /// when it is.
    pub(super) fn event(&self, event: Event) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.done {
            Some(done) => self.write(&mut slot, event, done),
            None => slot.event = Some(event),
        }
    }

    fn body_done(&self, done: Done) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.done.is_some() {
            return;
        }
        slot.done = Some(done);
        if let Some(event) = slot.event.take() {
            self.write(&mut slot, event, done);
        }
    }

    fn write(&self, slot: &mut Slot, mut event: Event, done: Done) {
        let object = match done {
            Done::Ended => self.captured.object(),
            Done::Dropped if self.captured.whole() => self.captured.object(),
            Done::Dropped => {
                Err("omitted: the client went away before the body was sent".to_owned())
            }
        };
        match object {
            Ok(object) => event.response_object = object,
            Err(why) => {
                event
                    .annotations
                    .insert(event::RESPONSE_OBJECT.to_owned(), why);
            }
        }
        event.stage_timestamp = event::micro_time(Timestamp::now());
        if let Some(writer) = slot.writer.take() {
            // A lost record is counted by the writer.
            let _ = writer.submit(event.to_json(), false);
        }
    }
}

/// The response body, telling [`Held`] when it is done.
struct Watched {
    inner: Body,
    held: Held,
    finished: bool,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) && !self.finished {
            self.finished = true;
            let done = if matches!(polled, Poll::Ready(None)) {
                Done::Ended
            } else {
                Done::Dropped
            };
            self.held.body_done(done);
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

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.finished {
            // hyper may drop a body it has sent whole without polling its end.
            let done = if self.inner.is_end_stream() {
                self.held.captured.mark_ended();
                Done::Ended
            } else {
                Done::Dropped
            };
            self.held.body_done(done);
        }
    }
}
