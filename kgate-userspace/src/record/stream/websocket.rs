//! RFC 6455 framing, read incrementally as the bytes pass through the tap, and the
//! Kubernetes channel framing on top of it (`channel.k8s.io`, `v4.`, `v5.` and their
//! `base64.` variants): a binary message's first byte names the channel, a text
//! message's first character is `'0' + channel` followed by base64; v5's `[255, N]`
//! closes channel N.
//!
//! The decoder never holds a frame: it keeps at most a frame header (14 bytes), the
//! current mask key and, for base64, three characters of carry. Payload pieces come out
//! as they arrive, unmasked, so a frame split across reads costs nothing.
//!
//! Not here: permessage-deflate (RSV1) or any extension, which the Kubernetes clients
//! do not negotiate: such a frame is a decode error, and the tap stops capturing.

use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::DecodeError;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;

/// What the frame layer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsEvent<'a> {
    /// A data message begins (`text` for opcode 1).
    Start { text: bool },
    /// Unmasked payload of the current data message.
    Payload(&'a [u8]),
    /// The current data message is complete.
    End,
}

/// One direction of a WebSocket.
#[derive(Default)]
pub(crate) struct Frames {
    head: [u8; MAX_HEADER],
    head_len: usize,
    payload: Option<Payload>,
    /// A data message has started and not yet finished (fragmented).
    in_message: bool,
    scratch: Vec<u8>,
}

struct Payload {
    left: u64,
    mask: Option<[u8; 4]>,
    pos: usize,
    control: bool,
    fin: bool,
}

// === impl Frames ===

impl Frames {
    /// Decodes `input`, calling `on` for every event it completes.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        on: &mut dyn FnMut(WsEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        while !input.is_empty() {
            let Some(p) = &mut self.payload else {
                let need = if self.head_len < 2 {
                    2
                } else {
                    header_len(&self.head)
                };
                let n = (need - self.head_len).min(input.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                self.head_len += n;
                input = &input[n..];
                if self.head_len == need && (need > 2 || header_len(&self.head) == 2) {
                    self.start_frame(on)?;
                }
                continue;
            };
            let n = usize::try_from(p.left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (piece, rest) = input.split_at(n);
            input = rest;
            if !p.control {
                match p.mask {
                    Some(key) => {
                        self.scratch.clear();
                        self.scratch.extend(
                            piece
                                .iter()
                                .enumerate()
                                .map(|(i, b)| b ^ key[(p.pos + i) % 4]),
                        );
                        on(WsEvent::Payload(&self.scratch))?;
                    }
                    None => on(WsEvent::Payload(piece))?,
                }
            }
            p.pos = (p.pos + n) % 4;
            p.left -= n as u64;
            if p.left == 0 {
                self.end_frame(on)?;
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        on: &mut dyn FnMut(WsEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let h = &self.head[..self.head_len];
        self.head_len = 0;
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err(DecodeError::new(
                "WebSocket frame with RSV bits set (a compression extension?)",
            ));
        }
        let opcode = h[0] & 0x0f;
        let len7 = h[1] & 0x7f;
        let (left, key_at) = match len7 {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let mask = (h[1] & 0x80 != 0).then(|| {
            h[key_at..key_at + 4]
                .try_into()
                .expect("the header holds a mask key")
        });
        let control = opcode & 0x08 != 0;
        if control {
            if left > 125 || !fin {
                return Err(DecodeError::new(
                    "WebSocket control frame longer than 125 bytes or fragmented",
                ));
            }
        } else {
            match opcode {
                0 if !self.in_message => {
                    return Err(DecodeError::new(
                        "WebSocket continuation frame outside a message",
                    ));
                }
                0 => {}
                1 | 2 if self.in_message => {
                    return Err(DecodeError::new(
                        "WebSocket data frame inside a fragmented message",
                    ));
                }
                1 | 2 => {
                    self.in_message = true;
                    on(WsEvent::Start { text: opcode == 1 })?;
                }
                _ => return Err(DecodeError::new("WebSocket frame with a reserved opcode")),
            }
        }
        self.payload = Some(Payload {
            left,
            mask,
            pos: 0,
            control,
            fin,
        });
        if left == 0 {
            self.end_frame(on)?;
        }
        Ok(())
    }

    fn end_frame(
        &mut self,
        on: &mut dyn FnMut(WsEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let p = self.payload.take().expect("a frame is open");
        if !p.control && p.fin {
            self.in_message = false;
            on(WsEvent::End)?;
        }
        Ok(())
    }
}

/// The header's full length, from its first two bytes.
fn header_len(head: &[u8]) -> usize {
    let ext = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let key = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + key
}

/// What the channel layer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelEvent<'a> {
    Data(u8, &'a [u8]),
    /// v5: the peer closed its side of this channel.
    Close(u8),
}

/// The Kubernetes channel framing of one direction.
pub(crate) struct Channels {
    base64: bool,
    state: Message,
    carry: [u8; 4],
    carry_len: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    /// No message, or one whose channel byte has not come yet.
    Start {
        text: bool,
    },
    Data(u8),
    /// After v5's 255: the next byte is the channel that closes.
    Close,
    /// Past the channel a v5 close names: nothing more is expected.
    Done,
}

// === impl Channels ===

impl Channels {
    /// `base64` for the `base64.` protocols (text messages).
    pub(crate) fn new(base64: bool) -> Self {
        Self {
            base64,
            state: Message::Done,
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Turns one frame event into channel events.
    pub(crate) fn on(
        &mut self,
        event: WsEvent<'_>,
        out: &mut dyn FnMut(ChannelEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        match event {
            WsEvent::Start { text } => {
                if text != self.base64 {
                    return Err(DecodeError::new(if text {
                        "text message on a binary channel protocol"
                    } else {
                        "binary message on a base64 channel protocol"
                    }));
                }
                self.state = Message::Start { text };
                self.carry_len = 0;
                Ok(())
            }
            WsEvent::Payload(mut data) => {
                while !data.is_empty() {
                    match self.state {
                        Message::Start { text } => {
                            let b = data[0];
                            data = &data[1..];
                            self.state = match (text, b) {
                                (false, 255) => Message::Close,
                                (false, n) => Message::Data(n),
                                (true, b'0'..=b'9') => Message::Data(b - b'0'),
                                (true, _) => {
                                    return Err(DecodeError::new(
                                        "base64 message without a channel digit",
                                    ));
                                }
                            };
                        }
                        Message::Close => {
                            out(ChannelEvent::Close(data[0]))?;
                            data = &data[1..];
                            self.state = Message::Done;
                        }
                        Message::Done => return Ok(()),
                        Message::Data(ch) if self.base64 => {
                            return self.base64_piece(ch, data, false, out);
                        }
                        Message::Data(ch) => {
                            return out(ChannelEvent::Data(ch, data));
                        }
                    }
                }
                Ok(())
            }
            WsEvent::End => {
                let state = std::mem::replace(&mut self.state, Message::Done);
                if let Message::Data(ch) = state
                    && self.base64
                {
                    return self.base64_piece(ch, &[], true, out);
                }
                Ok(())
            }
        }
    }

    /// Decodes whole 4-character groups, carrying the rest to the next piece.
    fn base64_piece(
        &mut self,
        ch: u8,
        data: &[u8],
        last: bool,
        out: &mut dyn FnMut(ChannelEvent<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut text = Vec::with_capacity(self.carry_len + data.len());
        text.extend_from_slice(&self.carry[..self.carry_len]);
        text.extend_from_slice(data);
        let whole = if last {
            text.len()
        } else {
            text.len() - text.len() % 4
        };
        self.carry_len = text.len() - whole;
        self.carry[..self.carry_len].copy_from_slice(&text[whole..]);
        if whole > 0 {
            let bytes = STANDARD
                .decode(&text[..whole])
                .map_err(|e| DecodeError(format!("bad base64 on channel {ch}: {e}")))?;
            out(ChannelEvent::Data(ch, &bytes))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
