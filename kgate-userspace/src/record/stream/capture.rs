//! One stream's capture: picks the decoder from the negotiated protocol, runs it over
//! each direction's bytes (the [`super::mapper`] makes frames of what it sees), and
//! writes the frames out in chunks.

use std::{collections::VecDeque, time::Instant};

use http::HeaderMap;
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use super::{
    API_VERSION, CHUNK_AGE, CHUNK_BYTES, DecodeError, Dir, Frame, KIND, StreamChunk, StreamEnd,
    mapper::{Mapper, Out},
    spdy,
    websocket::{self, WsEvent},
};
use crate::record::{
    event::micro_time,
    writer::{Ack, Writer},
};

/// Chunk bytes a stream may have queued for the writer but not yet written. Past it
/// the relay waits for the writer ([`Capture::backlog`]): a stream faster than the
/// disk is slowed to the disk's pace rather than held in memory or left unrecorded.
pub const MAX_UNWRITTEN: usize = 1 << 20;

/// Where chunks go: the record writer.
#[derive(Clone)]
pub struct Sink {
    writer: Writer,
    failures: Option<Counter>,
}

/// The capture of one upgraded stream.
pub struct Capture {
    sink: Sink,
    chunk: StreamChunk,
    decoder: Option<Decoder>,
    mapper: Mapper,
    started: Instant,
    pending_bytes: usize,
    oldest: Option<Instant>,
    /// Chunks handed to the writer and not yet written, oldest first, with their size.
    unwritten: VecDeque<(Ack, usize)>,
    unwritten_bytes: usize,
}

enum Decoder {
    /// The WebSocket channel protocols.
    Channels {
        frames: [websocket::Frames; 2],
        channels: [websocket::Channels; 2],
    },
    Spdy([spdy::Frames; 2]),
    /// SPDY in the payloads of binary WebSocket messages (kubectl 1.31+ port-forward).
    Tunnel {
        ws: [websocket::Frames; 2],
        spdy: [spdy::Frames; 2],
    },
}

// === impl Sink ===

impl Sink {
    pub fn new(writer: Writer) -> Self {
        Self {
            writer,
            failures: None,
        }
    }

    /// Records an audit event (a stream's `ResponseComplete`) without waiting.
    pub fn submit_event(&self, event: &crate::record::event::Event) {
        let _ = self.writer.submit(event.to_json(), false);
    }

    /// Counts capture failures in `counter`.
    #[must_use]
    pub fn counting(mut self, counter: Counter) -> Self {
        self.failures = Some(counter);
        self
    }
}

// === impl Capture ===

impl Capture {
    /// Starts capturing the stream of `subresource` whose 101 response carried
    /// `headers`. An undecodable protocol is reported in the first chunk.
    pub fn start(sink: Sink, audit_id: &str, subresource: &str, headers: &HeaderMap) -> Self {
        let (transport, protocol, decoder) = negotiate(headers);
        let ports = subresource == "portforward";
        let decoder = match decoder {
            Ok(_) if !super::is_captured(subresource) => Err(format!(
                "not an exec, attach or port-forward stream ({subresource:?})"
            )),
            other => other,
        };
        let mut capture = Self {
            sink,
            chunk: StreamChunk {
                kind: KIND.to_owned(),
                api_version: API_VERSION.to_owned(),
                audit_id: audit_id.to_owned(),
                seq: 0,
                subresource: subresource.to_owned(),
                transport: transport.to_owned(),
                protocol,
                started: micro_time(Timestamp::now()),
                ..StreamChunk::default()
            },
            decoder: None,
            mapper: Mapper::new(ports),
            started: Instant::now(),
            pending_bytes: 0,
            oldest: None,
            unwritten: VecDeque::new(),
            unwritten_bytes: 0,
        };
        match decoder {
            Ok(decoder) => capture.decoder = Some(decoder),
            Err(reason) => capture.fail(&DecodeError(reason)),
        }
        capture
    }

    /// Decodes bytes that were just relayed in direction `dir`.
    pub fn feed(&mut self, dir: Dir, bytes: &[u8]) {
        let Some(decoder) = &mut self.decoder else {
            return;
        };
        let t = micros(self.started);
        let before = self.chunk.frames.len();
        let out = Out {
            frames: &mut self.chunk.frames,
            bytes: &mut self.pending_bytes,
            t,
        };
        let result = decode(decoder, &mut self.mapper, dir, bytes, out);
        if self.chunk.frames.len() > before && self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        if let Err(error) = result {
            self.fail(&error);
            return;
        }
        if self.pending_bytes >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// The oldest unwritten chunk's acknowledgement to wait for when more than
    /// [`MAX_UNWRITTEN`] bytes of this stream wait for the writer; `None` otherwise.
    pub fn backlog(&mut self) -> Option<Ack> {
        while let Some((ack, bytes)) = self.unwritten.front_mut() {
            let bytes = *bytes;
            let written = !matches!(
                ack.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            );
            if !written && self.unwritten_bytes <= MAX_UNWRITTEN {
                return None;
            }
            let (ack, _) = self.unwritten.pop_front().expect("a front element");
            self.unwritten_bytes -= bytes;
            if !written {
                return Some(ack);
            }
        }
        None
    }

    /// Writes the pending frames if the oldest has waited [`CHUNK_AGE`].
    pub fn tick(&mut self) {
        if self.oldest.is_some_and(|t| t.elapsed() >= CHUNK_AGE) {
            self.flush();
        }
    }

    /// The stream has closed: the last chunk, with the byte counts.
    pub fn finish(mut self, bytes_in: u64, bytes_out: u64, error: Option<String>) {
        let t = micros(self.started);
        let mut open: Vec<_> = self.mapper.streams.drain().collect();
        open.sort_by_key(|(id, _)| *id);
        if self.mapper.ports {
            for (stream, s) in open {
                self.chunk.frames.push(Frame::Closed {
                    t,
                    stream,
                    bytes_in: s.bytes[0],
                    bytes_out: s.bytes[1],
                });
            }
        }
        self.chunk.end = Some(StreamEnd {
            t,
            bytes_in,
            bytes_out,
            error,
        });
        self.flush();
    }

    fn fail(&mut self, error: &DecodeError) {
        warn!(
            audit_id = self.chunk.audit_id,
            subresource = self.chunk.subresource,
            transport = self.chunk.transport,
            protocol = self.chunk.protocol,
            %error,
            "stream capture stopped; the stream is still relayed"
        );
        if let Some(failures) = &self.sink.failures {
            failures.inc();
        }
        self.decoder = None;
        self.chunk.capture_error = Some(error.0.clone());
        self.flush();
    }

    fn flush(&mut self) {
        let next = StreamChunk {
            seq: self.chunk.seq + 1,
            frames: Vec::new(),
            capture_error: None,
            end: None,
            ..self.chunk.clone_head()
        };
        let chunk = std::mem::replace(&mut self.chunk, next);
        self.pending_bytes = 0;
        self.oldest = None;
        let payload = serde_json::to_vec(&chunk).expect("a stream chunk always serializes");
        let bytes = payload.len();
        // A full queue is counted and logged by the writer; the stream goes on, and
        // the reader sees the chunk's number missing.
        if let Ok(Some(ack)) = self.sink.writer.submit(payload, true) {
            self.unwritten.push_back((ack, bytes));
            self.unwritten_bytes += bytes;
        }
    }
}

impl StreamChunk {
    /// The chunk's identifying fields, without frames.
    fn clone_head(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            api_version: self.api_version.clone(),
            audit_id: self.audit_id.clone(),
            seq: self.seq,
            subresource: self.subresource.clone(),
            transport: self.transport.clone(),
            protocol: self.protocol.clone(),
            started: self.started.clone(),
            ..Self::default()
        }
    }
}

/// The decoder for a stream whose 101 response carried `headers`: the transport's
/// name, the subprotocol, and the decoder or why there is none.
fn negotiate(headers: &HeaderMap) -> (&'static str, String, Result<Decoder, String>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let upgrade = header("upgrade").to_ascii_lowercase();
    if upgrade == "websocket" {
        let protocol = header("sec-websocket-protocol");
        let decoder = if protocol.starts_with("SPDY/3.1+") {
            Ok((
                "spdy-over-websocket",
                Decoder::Tunnel {
                    ws: Default::default(),
                    spdy: Default::default(),
                },
            ))
        } else if is_channel_protocol(&protocol) {
            let base64 = protocol.contains("base64.");
            Ok((
                "websocket",
                Decoder::Channels {
                    frames: Default::default(),
                    channels: [
                        websocket::Channels::new(base64),
                        websocket::Channels::new(base64),
                    ],
                },
            ))
        } else {
            Err(format!("unknown WebSocket subprotocol {protocol:?}"))
        };
        (
            decoder.as_ref().map_or("websocket", |d| d.0),
            protocol,
            decoder.map(|d| d.1),
        )
    } else if upgrade.eq_ignore_ascii_case("spdy/3.1") {
        (
            "spdy",
            header("x-stream-protocol-version"),
            Ok(Decoder::Spdy(Default::default())),
        )
    } else {
        (
            "unknown",
            String::new(),
            Err(format!("unknown upgrade {upgrade:?}")),
        )
    }
}

/// `""` (no subprotocol: the oldest channel framing), `channel.k8s.io`,
/// `base64.channel.k8s.io`, `vN.channel.k8s.io`, `vN.base64.channel.k8s.io`, and the
/// kubelet's WebSocket port-forward (`portforward.k8s.io`, `v4.channel.k8s.io`).
fn is_channel_protocol(protocol: &str) -> bool {
    let rest = protocol
        .strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .filter(|(n, _)| n.parse::<u8>().is_ok())
        .map_or(protocol, |(_, r)| r);
    matches!(
        rest,
        "" | "channel.k8s.io" | "base64.channel.k8s.io" | "portforward.k8s.io"
    )
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn decode(
    decoder: &mut Decoder,
    mapper: &mut Mapper,
    dir: Dir,
    bytes: &[u8],
    mut out: Out<'_>,
) -> Result<(), DecodeError> {
    let d = dir as usize;
    match decoder {
        Decoder::Channels { frames, channels } => {
            let channels = &mut channels[d];
            frames[d].feed(bytes, &mut |event| {
                channels.on(event, &mut |event| mapper.channel(event, dir, &mut out))
            })
        }
        Decoder::Spdy(frames) => {
            frames[d].feed(bytes, &mut |event| mapper.spdy(event, dir, &mut out))
        }
        Decoder::Tunnel { ws, spdy } => {
            let spdy = &mut spdy[d];
            ws[d].feed(bytes, &mut |event| match event {
                WsEvent::Start { text: true } => Err(DecodeError::new(
                    "text message in a SPDY-over-WebSocket tunnel",
                )),
                WsEvent::Payload(data) => {
                    spdy.feed(data, &mut |event| mapper.spdy(event, dir, &mut out))
                }
                WsEvent::Start { .. } | WsEvent::End => Ok(()),
            })
        }
    }
}

#[cfg(test)]
mod tests;
