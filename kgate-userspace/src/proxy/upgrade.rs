//! Upgraded streams (exec, attach, port-forward): which requests ask for one, and
//! [`StreamTap`], the one place their bytes are relayed, a copy going to the
//! recording's capture ([`crate::record::stream`]) as they pass.
//!
//! Shared by the stages that meet upgrades (authorize refuses protocols the API server
//! does not speak, forward relays, record captures), so none imports another for it.
//! Not here: decoding the frames (`record::stream`), or the HTTP exchange that
//! switches protocols (forward).

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use http::{
    HeaderMap,
    header::{CONNECTION, UPGRADE},
};
use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

use crate::record::{
    event::{self, Event},
    stream::{self, Capture, Dir, Sink},
};

/// The upgrade protocol a request asks for, if any (HTTP/1.1 only; h2 has no Upgrade).
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<&str> {
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    headers.get(UPGRADE).and_then(|v| v.to_str().ok())
}

/// Upgrade protocols that the API server speaks for exec, attach and port-forward.
pub(crate) fn is_supported_upgrade(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("SPDY/3.1") || protocol.eq_ignore_ascii_case("websocket")
}

/// The relay of one upgraded stream (exec, attach, port-forward), and its capture.
pub(crate) struct StreamTap {
    what: String,
    plan: Option<CapturePlan>,
    capture: Option<Capture>,
    completion: Option<Completion>,
}

/// The `ResponseComplete` event a stream's end records, as the API server's audit
/// log has one for every long-running request: the request's `ResponseStarted` event
/// (handed over by the record stage once the 101 is recorded) with the time the
/// stream closed and its byte counts.
#[derive(Clone)]
pub(crate) struct Completion {
    started: Arc<Mutex<Option<Event>>>,
    sink: Sink,
}

// === impl Completion ===

impl Completion {
    /// The stream's request was recorded as started with `event`.
    pub(crate) fn started(&self, event: Event) {
        *self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(event);
    }

    fn complete(&self, bytes_in: u64, bytes_out: u64) {
        let started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut event) = started else {
            return;
        };
        event.stage = event::STAGE_COMPLETE.to_owned();
        event.stage_timestamp = event::micro_time(Timestamp::now());
        event
            .annotations
            .insert(stream::BYTES_IN.to_owned(), bytes_in.to_string());
        event
            .annotations
            .insert(stream::BYTES_OUT.to_owned(), bytes_out.to_string());
        self.sink.submit_event(&event);
    }
}

/// What a capture needs before the protocol is known.
struct CapturePlan {
    sink: Sink,
    audit_id: String,
    subresource: String,
}

impl StreamTap {
    /// A tap that only counts bytes.
    pub(crate) fn new(what: String) -> Self {
        Self {
            what,
            plan: None,
            capture: None,
            completion: None,
        }
    }

    /// Records the stream's end in `sink` as its request's `ResponseComplete` event,
    /// once [`Completion::started`] has said what the request's event is.
    pub(crate) fn completing(&mut self, sink: Sink) -> Completion {
        let completion = Completion {
            started: Arc::default(),
            sink,
        };
        self.completion = Some(completion.clone());
        completion
    }

    /// Also captures the stream's frames into `sink`, once [`StreamTap::negotiated`]
    /// says how to read them.
    pub(crate) fn capture(&mut self, sink: Sink, audit_id: &str, subresource: &str) {
        self.plan = Some(CapturePlan {
            sink,
            audit_id: audit_id.to_owned(),
            subresource: subresource.to_owned(),
        });
    }

    /// The API server switched protocols with these response headers: the stream
    /// starts now.
    #[must_use]
    pub(crate) fn negotiated(mut self, headers: &HeaderMap) -> Self {
        if let Some(plan) = self.plan.take() {
            self.capture = Some(Capture::start(
                plan.sink,
                &plan.audit_id,
                &plan.subresource,
                headers,
            ));
        }
        self
    }

    /// Copies both ways until each side has closed its half; returns the byte counts
    /// (client → upstream, upstream → client). Captured frames are written every
    /// [`stream::CHUNK_AGE`] even while the stream is quiet.
    pub(crate) async fn relay<C, U>(self, client: C, upstream: U) -> io::Result<(u64, u64)>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
        let capture = self.capture.map(Mutex::new);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let results = {
            let copies = async {
                tokio::join!(
                    copy_half(
                        &mut client_read,
                        &mut upstream_write,
                        &up,
                        (capture.as_ref(), Dir::Up)
                    ),
                    copy_half(
                        &mut upstream_read,
                        &mut client_write,
                        &down,
                        (capture.as_ref(), Dir::Down)
                    ),
                )
            };
            tokio::pin!(copies);
            let mut tick = tokio::time::interval(stream::CHUNK_AGE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    done = &mut copies => break done,
                    _ = tick.tick(), if capture.is_some() => {
                        if let Some(capture) = &capture {
                            lock(capture).tick();
                        }
                    }
                }
            }
        };
        let (up, down) = (up.into_inner(), down.into_inner());
        let error = match &results {
            (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(capture) = capture {
            capture
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .finish(up, down, error);
        }
        if let Some(completion) = &self.completion {
            completion.complete(up, down);
        }
        let (read, written) = results;
        read?;
        written?;
        info!(stream = %self.what, bytes_in = up, bytes_out = down, "stream closed");
        Ok((up, down))
    }
}

fn lock(capture: &Mutex<Capture>) -> std::sync::MutexGuard<'_, Capture> {
    capture
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies until EOF, then half-closes the writer so the far side sees the EOF too
/// (kubectl exec's stdin EOF must reach the process); a read error half-closes it
/// too. Each piece goes to the capture after it was written, so decoding never delays
/// the stream; only a record writer that falls [`stream::MAX_UNWRITTEN`] bytes behind
/// does.
/// `total` counts what was copied, errors or not.
async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    total: &AtomicU64,
    (capture, dir): (Option<&Mutex<Capture>>, Dir),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(n) => n,
            Err(error) => {
                // A reset side is a closed side: without the shutdown the far end
                // would wait for an EOF, and the other half of the relay with it.
                let _ = writer.shutdown().await;
                return Err(error);
            }
        };
        if n == 0 {
            return writer.shutdown().await;
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        total.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(capture) = capture {
            lock(capture).feed(dir, &buf[..n]);
            // The lock is not held across the wait: the other half goes on.
            loop {
                let backlog = lock(capture).backlog();
                match backlog {
                    Some(ack) => {
                        let _ = ack.await;
                    }
                    None => break,
                }
            }
        }
    }
}
