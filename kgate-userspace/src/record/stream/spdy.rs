//! SPDY/3.1 framing, read incrementally as the bytes pass through the tap: which
//! stream is which (the `streamtype` and `port` headers of each SYN_STREAM), the DATA
//! of every stream, and when a side finishes or resets a stream.
//!
//! Header blocks are zlib with the SPDY/3 preset dictionary and one compression
//! context per direction for the whole connection, so every header block of a
//! direction (SYN_STREAM, SYN_REPLY, HEADERS) is inflated in order, even those whose
//! headers nothing needs. Memory is bounded: a header frame is held until complete
//! (at most [`MAX_HEADER_FRAME`] bytes, inflating to at most [`MAX_HEADER_BLOCK`]);
//! DATA payloads pass through in pieces and are never held.
//!
//! Not here: flow control, priorities, SETTINGS or PING contents (skipped), and
//! validation beyond what decoding needs: the endpoints do that.

mod dictionary;
#[cfg(test)]
pub(crate) mod tests;

use flate2::{Decompress, FlushDecompress};

use super::DecodeError;

/// The largest SYN_STREAM, SYN_REPLY, HEADERS or RST_STREAM frame held for decoding.
pub(crate) const MAX_HEADER_FRAME: usize = 64 << 10;
/// The most a header block may inflate to.
pub(crate) const MAX_HEADER_BLOCK: usize = 256 << 10;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;

/// What one direction's frames say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpdyEvent<'a> {
    /// A SYN_STREAM, with its headers.
    Open {
        id: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        data: &'a [u8],
    },
    /// This side is done writing the stream (FLAG_FIN).
    Fin {
        id: u32,
    },
    Reset {
        id: u32,
    },
}

/// One direction of a SPDY/3.1 connection.
pub(crate) struct Frames {
    head: [u8; 8],
    head_len: usize,
    state: State,
    inflate: Decompress,
}

enum State {
    Head,
    Data {
        id: u32,
        fin: bool,
        left: usize,
    },
    /// A control frame whose body is kept (`kind` is one of the header frames).
    Keep {
        kind: u16,
        flags: u8,
        left: usize,
        body: Vec<u8>,
    },
    Skip {
        left: usize,
    },
}

// === impl Frames ===

impl Default for Frames {
    fn default() -> Self {
        Self {
            head: [0; 8],
            head_len: 0,
            state: State::Head,
            inflate: Decompress::new(true),
        }
    }
}

impl Frames {
    /// Decodes `input`, calling `on` for every event it completes.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        on: &mut dyn FnMut(SpdyEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Head => {
                    let n = (8 - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == 8 {
                        self.head_len = 0;
                        self.start_frame(on)?;
                    }
                }
                State::Data { id, fin, left } => {
                    let n = (*left).min(input.len());
                    let (piece, rest) = input.split_at(n);
                    input = rest;
                    *left -= n;
                    let (id, fin, done) = (*id, *fin, *left == 0);
                    on(SpdyEvent::Data { id, data: piece })?;
                    if done {
                        self.state = State::Head;
                        if fin {
                            on(SpdyEvent::Fin { id })?;
                        }
                    }
                }
                State::Keep { left, body, .. } => {
                    let n = (*left).min(input.len());
                    body.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        let State::Keep {
                            kind, flags, body, ..
                        } = std::mem::replace(&mut self.state, State::Head)
                        else {
                            unreachable!("matched above")
                        };
                        self.control(kind, flags, &body, on)?;
                    }
                }
                State::Skip { left } => {
                    let n = (*left).min(input.len());
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        on: &mut dyn FnMut(SpdyEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let h = self.head;
        let flags = h[4];
        let len = usize::from(h[5]) << 16 | usize::from(h[6]) << 8 | usize::from(h[7]);
        if h[0] & 0x80 == 0 {
            let id = be31(&h[..4]);
            if len == 0 {
                if flags & FLAG_FIN != 0 {
                    on(SpdyEvent::Fin { id })?;
                }
                return Ok(());
            }
            self.state = State::Data {
                id,
                fin: flags & FLAG_FIN != 0,
                left: len,
            };
            return Ok(());
        }
        let version = u16::from_be_bytes([h[0], h[1]]) & 0x7fff;
        if version != 3 {
            return Err(DecodeError(format!(
                "SPDY control frame of version {version}, not 3"
            )));
        }
        let kind = u16::from_be_bytes([h[2], h[3]]);
        self.state = match kind {
            SYN_STREAM | SYN_REPLY | HEADERS | RST_STREAM => {
                if len > MAX_HEADER_FRAME {
                    return Err(DecodeError(format!(
                        "SPDY control frame of {len} bytes (more than {MAX_HEADER_FRAME})"
                    )));
                }
                State::Keep {
                    kind,
                    flags,
                    left: len,
                    body: Vec::with_capacity(len),
                }
            }
            _ => State::Skip { left: len },
        };
        if len == 0 {
            let State::Keep { kind, flags, .. } = std::mem::replace(&mut self.state, State::Head)
            else {
                self.state = State::Head;
                return Ok(());
            };
            self.control(kind, flags, &[], on)?;
        }
        Ok(())
    }

    fn control(
        &mut self,
        kind: u16,
        flags: u8,
        body: &[u8],
        on: &mut dyn FnMut(SpdyEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let short = || DecodeError(format!("SPDY control frame {kind} too short"));
        let id = be31(body.get(..4).ok_or_else(short)?);
        match kind {
            RST_STREAM => on(SpdyEvent::Reset { id }),
            SYN_STREAM => {
                let block = body.get(10..).ok_or_else(short)?;
                let headers = parse_headers(&self.inflate_block(block)?)?;
                on(SpdyEvent::Open { id, headers })?;
                if flags & FLAG_FIN != 0 {
                    on(SpdyEvent::Fin { id })?;
                }
                Ok(())
            }
            _ => {
                // SYN_REPLY and HEADERS: inflated only to keep the zlib context in step.
                self.inflate_block(&body[4..])?;
                if flags & FLAG_FIN != 0 {
                    on(SpdyEvent::Fin { id })?;
                }
                Ok(())
            }
        }
    }

    /// Inflates one header block (each ends with a sync flush).
    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let bad = |e: &dyn std::fmt::Display| DecodeError(format!("SPDY header block: {e}"));
        let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        let mut stalled = 0;
        loop {
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(DecodeError(format!(
                        "SPDY header block inflates past {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve(out.capacity().min(MAX_HEADER_BLOCK - out.len()));
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                // The first block names the preset dictionary (zlib FDICT).
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary::dictionary())
                        .map_err(|e| bad(&e))?;
                }
                Err(e) => return Err(bad(&e)),
            }
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
            input = &input[used..];
            if used == 0 && self.inflate.total_out() == before_out {
                if input.is_empty() {
                    return Ok(out);
                }
                // Setting the dictionary is the one step that moves nothing.
                stalled += 1;
                if stalled > 2 {
                    return Err(bad(&"the block does not inflate"));
                }
            } else {
                stalled = 0;
            }
        }
    }
}

/// A SPDY/3 name/value block: a count, then length-prefixed names and values.
fn parse_headers(raw: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut at = 0;
    let mut take = |n: usize| {
        let end = at + n;
        let slice = raw
            .get(at..end)
            .ok_or_else(|| DecodeError::new("SPDY header block truncated"))?;
        at = end;
        Ok::<_, DecodeError>(slice)
    };
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be31(b: &[u8]) -> u32 {
    be32(b) & 0x7fff_ffff
}
