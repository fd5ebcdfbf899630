//! SPDY/3 frames (draft 3, which SPDY/3.1 only extends with session flow control) as
//! moby/spdystream reads and writes them: control frames with version 3, data frames,
//! and name/value header blocks compressed with zlib and the SPDY/3 preset dictionary,
//! one compression context per direction for the life of the connection (so a block
//! can only be decoded after every earlier one).
//!
//! Like spdystream's framer, the reader refuses header names that are not lower-case
//! and duplicate names; SETTINGS, WINDOW_UPDATE and unknown frame types are parsed and
//! dropped. Not here: CREDENTIAL frames, frame priorities.
//!
//! Deliberately independent of kgate's SPDY framing (its stream recorder): an
//! independent implementation is what makes the recording tests a cross-check of both.

use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::dictionary::dictionary;

pub(super) const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status CANCEL, what spdystream's `Reset` sends.
pub(super) const CANCEL: u32 = 5;
/// A frame's length field has 24 bits.
pub(super) const MAX_DATA: usize = (1 << 24) - 1;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;

pub(super) type Headers = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE, or a type this framer does not know.
    Ignored(u16),
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// === impl Reader ===

/// Reads frames, inflating header blocks with the connection's one inflate context.
pub(super) struct Reader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) fn new(io: R) -> Self {
        Self {
            io,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; `None` at a clean end of stream between frames.
    pub(super) async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        self.io.read_exact(&mut head[1..]).await?;
        let flags = head[4];
        let len = usize::try_from(be32(&[0, head[5], head[6], head[7]])).unwrap_or(MAX_DATA);
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = be32(&head[..4]);
            return Ok(Some(Frame::Data {
                id,
                fin,
                data: payload.into(),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(invalid(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = match kind {
            SYN_STREAM => 10,
            SYN_REPLY | HEADERS | PING => 4,
            RST_STREAM | GOAWAY => 8,
            _ => 0,
        };
        if payload.len() < need {
            return Err(invalid(format!("frame type {kind} too short")));
        }
        let id = if need >= 4 {
            be32(&payload) & 0x7fff_ffff
        } else {
            0
        };
        Ok(Some(match kind {
            SYN_STREAM => Frame::SynStream {
                id,
                fin,
                headers: self.headers(&payload[10..])?,
            },
            SYN_REPLY => Frame::SynReply {
                id,
                fin,
                headers: self.headers(&payload[4..])?,
            },
            HEADERS => Frame::Headers {
                id,
                fin,
                headers: self.headers(&payload[4..])?,
            },
            RST_STREAM => Frame::RstStream {
                id,
                status: be32(&payload[4..]),
            },
            PING => Frame::Ping(be32(&payload)),
            GOAWAY => Frame::GoAway {
                last: id,
                status: be32(&payload[4..]),
            },
            other => Frame::Ignored(other),
        }))
    }

    fn headers(&mut self, block: &[u8]) -> io::Result<Headers> {
        let raw = self.inflate_block(block)?;
        let mut at = 0usize;
        let count = be32(take(&raw, &mut at, 4)?);
        let mut headers: Headers = Vec::new();
        for _ in 0..count {
            let n = be32(take(&raw, &mut at, 4)?) as usize;
            let name = String::from_utf8_lossy(take(&raw, &mut at, n)?).into_owned();
            let n = be32(take(&raw, &mut at, 4)?) as usize;
            let value = String::from_utf8_lossy(take(&raw, &mut at, n)?).into_owned();
            if name.to_lowercase() != name {
                return Err(invalid(format!("header was not lowercased: {name}")));
            }
            if headers.iter().any(|(k, _)| *k == name) {
                return Err(invalid(format!("multiple headers with same name: {name}")));
            }
            headers.push((name, value));
        }
        Ok(headers)
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                // The first block names the preset dictionary (zlib FDICT).
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(invalid_zlib)?;
                }
                Err(e) => return Err(invalid_zlib(e)),
            }
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
            input = &input[used..];
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                return Ok(out);
            }
            if full {
                out.reserve(out.capacity());
            } else if used == 0 && self.inflate.total_out() == before_out {
                return Err(invalid("header block does not inflate"));
            }
        }
    }
}

/// The next `n` bytes of a header block.
fn take<'a>(raw: &'a [u8], at: &mut usize, n: usize) -> io::Result<&'a [u8]> {
    let end = at.checked_add(n).filter(|&e| e <= raw.len());
    let end = end.ok_or_else(|| invalid("truncated header block"))?;
    let slice = &raw[*at..end];
    *at = end;
    Ok(slice)
}

fn invalid_zlib(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// === impl Encoder ===

/// Serialises frames, deflating header blocks with the connection's one deflate
/// context (best compression and a sync flush per block, as Go's framer does).
pub(super) struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        Self { deflate }
    }
}

impl Encoder {
    pub(super) fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let (kind, flags, body) = match frame {
            Frame::Data { id, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                out.push(u8::from(*fin));
                out.extend_from_slice(&len24(data.len()));
                out.extend_from_slice(data);
                return out;
            }
            Frame::SynStream { id, fin, headers } => {
                let mut body = Vec::new();
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&[0; 6]);
                body.extend(self.deflate_block(headers));
                (SYN_STREAM, u8::from(*fin), body)
            }
            Frame::SynReply { id, fin, headers } | Frame::Headers { id, fin, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut body = id.to_be_bytes().to_vec();
                body.extend(self.deflate_block(headers));
                (kind, u8::from(*fin), body)
            }
            Frame::RstStream { id, status } => (
                RST_STREAM,
                0,
                [id.to_be_bytes(), status.to_be_bytes()].concat(),
            ),
            Frame::Ping(id) => (PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last, status } => (
                GOAWAY,
                0,
                [last.to_be_bytes(), status.to_be_bytes()].concat(),
            ),
            Frame::Ignored(kind) => (*kind, 0, Vec::new()),
        };
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&len24(body.len()));
        out.extend(body);
        out
    }

    fn deflate_block(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
        raw.extend_from_slice(&count.to_be_bytes());
        for (name, value) in headers {
            for part in [name.to_lowercase().as_str(), value.as_str()] {
                raw.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_be_bytes());
                raw.extend_from_slice(part.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflating into a growing buffer");
            input = &input[usize::try_from(self.deflate.total_in() - before).unwrap_or(0)..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

fn len24(len: usize) -> [u8; 3] {
    let len = u32::try_from(len.min(MAX_DATA)).unwrap_or(0).to_be_bytes();
    [len[1], len[2], len[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_shared_contexts() {
        let mut enc = Encoder::default();
        let frames = [
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                id: 3,
                fin: true,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "80".into()),
                ],
            },
            Frame::SynReply {
                id: 3,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                id: 1,
                status: CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway { last: 3, status: 0 },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| enc.encode(f)).collect();
        // The first header block announces the preset dictionary (FDICT) by its Adler-32.
        assert_eq!(wire[19] & 0x20, 0x20);
        let mut reader = Reader::new(&wire[..]);
        for frame in &frames {
            assert_eq!(reader.next().await.unwrap().as_ref(), Some(frame));
        }
        assert_eq!(reader.next().await.unwrap(), None);
    }
}
