//! Turns what the decoders see (channel data, SPDY streams opening, carrying data and
//! finishing) into [`Frame`]s: payload for exec and attach, streams and byte counts
//! for port-forward.

use std::collections::HashMap;

use super::{Channel, DecodeError, Dir, Frame, spdy::SpdyEvent, websocket::ChannelEvent};

/// The most port-forward streams tracked at once; past it capture stops.
const MAX_STREAMS: usize = 4096;

/// Turns decoded events into frames.
pub(super) struct Mapper {
    /// Port-forward: count bytes per stream, keep no payload.
    pub ports: bool,
    pub streams: HashMap<u32, Stream>,
    /// WebSocket port-forward: the port bytes seen so far of channels not yet open.
    port_prefix: HashMap<u8, Vec<u8>>,
}

#[derive(Default)]
pub(super) struct Stream {
    channel: Option<Channel>,
    pub bytes: [u64; 2],
    fin: [bool; 2],
}

/// Where decoded frames go, and the time they get.
pub(super) struct Out<'a> {
    pub frames: &'a mut Vec<Frame>,
    pub bytes: &'a mut usize,
    pub t: u64,
}

// === impl Mapper ===

impl Mapper {
    /// `ports` for port-forward.
    pub(super) fn new(ports: bool) -> Self {
        Self {
            ports,
            streams: HashMap::new(),
            port_prefix: HashMap::new(),
        }
    }

    pub(super) fn channel(
        &mut self,
        event: ChannelEvent<'_>,
        dir: Dir,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        match event {
            ChannelEvent::Data(index, mut data) if self.ports => {
                let id = u32::from(index);
                // The kubelet's channel pairs: even data, odd error.
                let kind = || (if index % 2 == 0 { "data" } else { "error" }).to_owned();
                if dir == Dir::Down && !self.streams.contains_key(&id) {
                    // ... each opened by the kubelet with its port (2 bytes, LE).
                    let prefix = self.port_prefix.entry(index).or_default();
                    let n = (2 - prefix.len()).min(data.len());
                    prefix.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if prefix.len() < 2 {
                        return Ok(());
                    }
                    let port = u16::from_le_bytes([prefix[0], prefix[1]]);
                    self.port_prefix.remove(&index);
                    self.port_stream(id, out, kind, port.to_string())?;
                }
                let stream = self.port_stream(id, out, kind, String::new())?;
                stream.bytes[dir as usize] += data.len() as u64;
                Ok(())
            }
            ChannelEvent::Data(index, data) => {
                let ch = Channel::from_index(index)
                    .ok_or_else(|| DecodeError(format!("data on unknown channel {index}")))?;
                out.data(ch, data);
                Ok(())
            }
            ChannelEvent::Close(index) => {
                if let Some(ch) = Channel::from_index(index)
                    && !self.ports
                {
                    out.frames.push(Frame::Close { t: out.t, ch });
                }
                Ok(())
            }
        }
    }

    pub(super) fn spdy(
        &mut self,
        event: SpdyEvent<'_>,
        dir: Dir,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let header = |headers: &[(String, String)], name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match event {
            SpdyEvent::Open { id, headers } => {
                let kind = header(&headers, "streamtype");
                if self.ports {
                    let port = header(&headers, "port");
                    self.port_stream(id, out, || kind, port)?;
                } else {
                    let channel = Channel::from_streamtype(&kind).ok_or_else(|| {
                        DecodeError(format!("SPDY stream {id} of unknown streamtype {kind:?}"))
                    })?;
                    if self.streams.len() >= MAX_STREAMS {
                        return Err(DecodeError::new("too many SPDY streams"));
                    }
                    self.streams.insert(
                        id,
                        Stream {
                            channel: Some(channel),
                            ..Stream::default()
                        },
                    );
                }
                Ok(())
            }
            SpdyEvent::Data { id, data } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    // The reply to a reset, or a stream opened before capture knew it.
                    return Ok(());
                };
                stream.bytes[dir as usize] += data.len() as u64;
                if let Some(ch) = stream.channel {
                    out.data(ch, data);
                }
                Ok(())
            }
            SpdyEvent::Fin { id } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                stream.fin[dir as usize] = true;
                match stream.channel {
                    // Only the writer's FIN means something: a client also finishes
                    // the output streams it never writes.
                    Some(ch) => {
                        if ch.from_client() == (dir == Dir::Up) {
                            out.frames.push(Frame::Close { t: out.t, ch });
                        }
                    }
                    None => {
                        if stream.fin == [true, true] {
                            self.close_port(id, out);
                        }
                    }
                }
                Ok(())
            }
            SpdyEvent::Reset { id } => {
                if self.ports {
                    self.close_port(id, out);
                }
                Ok(())
            }
        }
    }

    fn port_stream(
        &mut self,
        id: u32,
        out: &mut Out<'_>,
        kind: impl FnOnce() -> String,
        port: String,
    ) -> Result<&mut Stream, DecodeError> {
        if !self.streams.contains_key(&id) {
            if self.streams.len() >= MAX_STREAMS {
                return Err(DecodeError(format!(
                    "more than {MAX_STREAMS} port-forward streams open at once"
                )));
            }
            out.frames.push(Frame::Open {
                t: out.t,
                stream: id,
                kind: kind(),
                port,
            });
        }
        Ok(self.streams.entry(id).or_default())
    }

    fn close_port(&mut self, id: u32, out: &mut Out<'_>) {
        if let Some(s) = self.streams.remove(&id) {
            out.frames.push(Frame::Closed {
                t: out.t,
                stream: id,
                bytes_in: s.bytes[0],
                bytes_out: s.bytes[1],
            });
        }
    }
}

// === impl Out ===

impl Out<'_> {
    /// Appends payload, joining a piece of the same channel from the same read.
    fn data(&mut self, ch: Channel, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        *self.bytes += data.len();
        if let Some(Frame::Data {
            t,
            ch: last,
            data: d,
        }) = self.frames.last_mut()
            && *t == self.t
            && *last == ch
        {
            d.extend_from_slice(data);
            return;
        }
        self.frames.push(Frame::Data {
            t: self.t,
            ch,
            data: data.to_vec(),
        });
    }
}
