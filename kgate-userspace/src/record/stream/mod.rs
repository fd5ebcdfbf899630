//! Frame capture of upgraded streams: what an exec or attach session carried (stdin,
//! stdout, stderr, the error channel, terminal resizes) with its timing, and for
//! port-forward which streams opened and closed and how many bytes each moved (never
//! the payload). The `proxy::upgrade::StreamTap` feeds every relayed byte to a
//! [`Capture`]; the captured frames go to the record log as [`StreamChunk`] records of
//! their own, linked to the request's audit event by its `auditID`.
//!
//! - Decoding never changes or delays what is relayed: the tap copies first and hands
//!   the decoder the same bytes afterwards. The decoders ([`websocket`], [`spdy`]) hold
//!   at most a frame header, a SPDY header frame and the per-direction zlib state.
//! - Memory per stream is bounded by the chunk being filled plus [`MAX_UNWRITTEN`]
//!   bytes of chunks the writer has not written yet; past that the relay waits for the
//!   writer, so a stream faster than the disk goes at the disk's pace instead of
//!   queueing without bound or going unrecorded.
//! - Frames are written in chunks: when [`CHUNK_BYTES`] of payload have gathered or the
//!   oldest pending frame is [`CHUNK_AGE`] old, so a long session holds little memory
//!   and an agent killed with SIGKILL loses at most the last chunk.
//! - A stream that cannot be decoded is still relayed unchanged: capture stops, the
//!   reason goes into the next chunk (`captureError`), a warning is logged and
//!   `kgate_stream_capture_failures` counts it.
//!
//! Not here: reading the chunks back ([`super::replay`]), or the agent's decision
//! about whether a stream may start (authorize).

mod capture;
mod mapper;
pub(crate) mod spdy;
pub(crate) mod websocket;

use serde::{Deserialize, Serialize};

pub use self::capture::{Capture, MAX_UNWRITTEN, Sink};

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to API server.
    Up = 0,
    /// API server to client.
    Down = 1,
}

/// The `kind` of a stream record.
pub const KIND: &str = "StreamChunk";
/// Its `apiVersion`.
pub const API_VERSION: &str = "kgate.io/v1alpha1";
/// Annotations of a stream's `ResponseComplete` audit event: the bytes relayed client
/// to API server, and back.
pub const BYTES_IN: &str = "kgate.io/stream-bytes-in";
pub const BYTES_OUT: &str = "kgate.io/stream-bytes-out";
/// A chunk is written once this much payload has gathered.
pub const CHUNK_BYTES: usize = 64 << 10;
/// ... or once its oldest frame is this old.
pub const CHUNK_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether upgrades of this pod subresource are captured: exec, attach and
/// port-forward. Other upgrades (a WebSocket through `pods/proxy`, say) carry an
/// application's own protocol and are only counted.
pub fn is_captured(subresource: &str) -> bool {
    matches!(subresource, "exec" | "attach" | "portforward")
}

/// Why a stream could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

/// The remote-command channels, as numbered by the WebSocket channel protocols and
/// named by SPDY's `streamtype` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
    Error,
    Resize,
}

// === impl Channel ===

impl Channel {
    pub fn from_index(index: u8) -> Option<Self> {
        Some(match index {
            0 => Self::Stdin,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Error,
            4 => Self::Resize,
            _ => return None,
        })
    }

    pub fn from_streamtype(name: &str) -> Option<Self> {
        Some(match name {
            "stdin" => Self::Stdin,
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            "error" => Self::Error,
            "resize" => Self::Resize,
            _ => return None,
        })
    }

    /// The client writes this channel (the rest the server writes).
    pub fn from_client(self) -> bool {
        matches!(self, Self::Stdin | Self::Resize)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Error => "error",
            Self::Resize => "resize",
        }
    }
}

/// One captured event; `t` is microseconds since the stream started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Frame {
    /// Bytes on a channel (exec, attach).
    #[serde(rename_all = "camelCase")]
    Data {
        t: u64,
        ch: Channel,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// The writer of a channel closed it (stdin's EOF).
    #[serde(rename_all = "camelCase")]
    Close { t: u64, ch: Channel },
    /// A port-forward stream opened (`type` data or error).
    #[serde(rename_all = "camelCase")]
    Open {
        t: u64,
        stream: u32,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        port: String,
    },
    /// A port-forward stream closed, with the bytes it carried each way.
    #[serde(rename_all = "camelCase")]
    Closed {
        t: u64,
        stream: u32,
        bytes_in: u64,
        bytes_out: u64,
    },
}

impl Frame {
    pub fn t(&self) -> u64 {
        match self {
            Self::Data { t, .. }
            | Self::Close { t, .. }
            | Self::Open { t, .. }
            | Self::Closed { t, .. } => *t,
        }
    }
}

/// A record of captured frames, one of a stream's chunks (numbered by `seq`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamChunk {
    pub kind: String,
    pub api_version: String,
    /// The audit ID of the request that opened the stream.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub seq: u64,
    /// `exec`, `attach` or `portforward`.
    pub subresource: String,
    /// `websocket`, `spdy` or `spdy-over-websocket`.
    pub transport: String,
    /// The negotiated subprotocol (`v5.channel.k8s.io`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// When the stream started (MicroTime); every `t` counts from it.
    pub started: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// Capture stopped here, and why (the stream itself went on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_error: Option<String>,
    /// Only on the last chunk: the stream has closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<StreamEnd>,
}

/// How a stream ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEnd {
    pub t: u64,
    /// Bytes relayed client → API server and back, framing included.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The relay ended with an I/O error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Serde for payload bytes: base64 (the record is JSON).
mod base64_bytes {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'_, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)
    }
}
