//! `GET /api/approvals/events`: the approvals as Server-Sent Events, from a watch with
//! the viewer's client ([`crate::kube::approvals`]). Each change sends the whole list
//! (`event: approvals`, oldest first: a page never has to merge), a failed watch an
//! `event: failure` with its message; a comment every few seconds finds a viewer that
//! went away, and the watch ends with the stream.
//!
//! Not here: deciding ([`super::api`]).

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http::{Response, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    body::Body,
    kube::approvals::{self, Update},
};

/// How often an idle stream sends a comment: a closed connection is found by writing.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Aborts the watch when the stream (and so the viewer) is gone.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn approvals(client: kube::Client) -> Response<Body> {
    let (tx, rx) = watch::channel(None::<Bytes>);
    let task = tokio::spawn(approvals::watch(client, move |update| {
        let frame = match update {
            Update::Snapshot(objects) => {
                let mut items: Vec<_> = objects.values().cloned().collect();
                crate::decisions::sort_oldest_first(&mut items);
                event(
                    "approvals",
                    &serde_json::to_string(&items).unwrap_or_default(),
                )
            }
            Update::Failed(message) => event("failure", &json!({ "message": message }).to_string()),
        };
        // The latest state is what matters: a slow reader skips to it.
        tx.send(Some(frame)).is_ok()
    }));
    let state = (rx, AbortOnDrop(task));
    let frames = stream::unfold(state, |(mut rx, guard)| async move {
        let bytes = match tokio::time::timeout(KEEPALIVE, rx.changed()).await {
            Ok(Ok(())) => rx.borrow_and_update().clone().unwrap_or_default(),
            Ok(Err(_)) => return None,
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, guard)))
    });
    let body = StreamBody::new(frames)
        .map_err(|never| match never {})
        .boxed_unsync();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(crate::body::empty()))
}

/// One event in the `text/event-stream` format (`data` is one line of JSON).
fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}
