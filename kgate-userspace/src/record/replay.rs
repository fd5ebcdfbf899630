//! Captured streams read back: the [`StreamChunk`]s of each stream joined in order
//! ([`assemble`]), played in a terminal at recorded speed ([`play`]) or written as an
//! asciicast v2 file ([`asciicast`]).
//!
//! Replay is byte-exact for the terminal: what the client's stdout and stderr
//! received is written out unchanged. Asciicast is text: its events are JSON strings,
//! so bytes that are not UTF-8 become U+FFFD there (a multi-byte character split
//! across frames is joined first); `-o json` keeps every byte (base64).
//!
//! Not here: port-forward payloads, which are never captured (only their streams'
//! byte counts, shown by `kgate sessions show`).

use std::{
    collections::HashMap,
    io::{self, Write},
    time::Duration,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::stream::{Channel, Frame, StreamChunk, StreamEnd};

/// One stream's chunks, joined.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub subresource: String,
    pub transport: String,
    pub protocol: String,
    pub started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_error: Option<String>,
    /// `None` while the stream is open, or when its last chunk was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<StreamEnd>,
    /// Chunk numbers that are not in the log (lost to a full queue or a damaged
    /// segment): the frames there are missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_chunks: Vec<u64>,
    pub frames: Vec<Frame>,
    /// Payload bytes per channel whose data was dropped as it was read (a listing
    /// needs only the counts).
    #[serde(skip)]
    pub dropped_payload: HashMap<String, u64>,
}

/// What `sessions show` and `list -o json` say about a stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSummary {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub subresource: String,
    pub transport: String,
    pub protocol: String,
    pub started: String,
    /// Seconds from start to close (to the last frame while open).
    pub seconds: f64,
    /// Payload bytes per channel (exec, attach).
    pub bytes: HashMap<String, u64>,
    /// Port-forward streams opened.
    pub port_streams: usize,
    pub closed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_chunks: Vec<u64>,
}

/// Joins chunks into recordings, in order of each stream's first chunk.
pub fn assemble(chunks: Vec<StreamChunk>) -> Vec<Recording> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<StreamChunk>> = Vec::new();
    for chunk in chunks {
        let i = *index.entry(chunk.audit_id.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(chunk);
    }
    groups
        .into_iter()
        .map(|mut chunks| {
            chunks.sort_by_key(|c| c.seq);
            chunks.dedup_by_key(|c| c.seq);
            let first = &chunks[0];
            let mut rec = Recording {
                audit_id: first.audit_id.clone(),
                subresource: first.subresource.clone(),
                transport: first.transport.clone(),
                protocol: first.protocol.clone(),
                started: first.started.clone(),
                ..Recording::default()
            };
            let mut expected = 0;
            for chunk in chunks {
                rec.missing_chunks.extend(expected..chunk.seq);
                expected = chunk.seq + 1;
                rec.frames.extend(chunk.frames);
                if rec.capture_error.is_none() {
                    rec.capture_error = chunk.capture_error;
                }
                if chunk.end.is_some() {
                    rec.end = chunk.end;
                }
            }
            rec
        })
        .collect()
}

// === impl Recording ===

impl Recording {
    /// exec or attach: something a terminal can replay.
    pub fn is_terminal(&self) -> bool {
        matches!(self.subresource.as_str(), "exec" | "attach")
    }

    pub fn summary(&self) -> StreamSummary {
        let mut bytes = self.dropped_payload.clone();
        let mut port_streams = 0;
        for frame in &self.frames {
            match frame {
                Frame::Data { ch, data, .. } => {
                    *bytes.entry(ch.name().to_owned()).or_default() += data.len() as u64;
                }
                Frame::Open { .. } => port_streams += 1,
                Frame::Close { .. } | Frame::Closed { .. } => {}
            }
        }
        let last = self
            .end
            .as_ref()
            .map(|e| e.t)
            .or_else(|| self.frames.last().map(Frame::t))
            .unwrap_or(0);
        StreamSummary {
            audit_id: self.audit_id.clone(),
            subresource: self.subresource.clone(),
            transport: self.transport.clone(),
            protocol: self.protocol.clone(),
            started: self.started.clone(),
            seconds: secs(last),
            bytes,
            port_streams,
            closed: self.end.is_some(),
            capture_error: self.capture_error.clone(),
            missing_chunks: self.missing_chunks.clone(),
        }
    }

    /// The first terminal size the client sent.
    pub fn first_size(&self) -> Option<(u16, u16)> {
        self.frames.iter().find_map(|f| match f {
            Frame::Data {
                ch: Channel::Resize,
                data,
                ..
            } => sizes(data).next(),
            _ => None,
        })
    }
}

/// A resize message as client-go sends it.
#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// The sizes in a resize frame (SPDY's resize stream concatenates JSON objects).
fn sizes(data: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<Size>()
        .map_while(Result::ok)
        .map(|s| (s.width, s.height))
}

fn secs(micros: u64) -> f64 {
    // Precision: f64 holds microseconds exactly for 285 years.
    #[allow(clippy::cast_precision_loss)]
    let s = micros as f64 / 1e6;
    s
}

/// How [`play`] paces the output.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// 1.0 is recorded speed, 2.0 twice as fast; 0 plays without waiting.
    pub speed: f64,
    /// No wait is longer than this.
    pub max_idle: Option<Duration>,
}

/// Writes stdout frames to `stdout` and stderr frames to `stderr`, in recorded order,
/// waiting between them as `pace` says.
pub fn play(
    rec: &Recording,
    pace: Pace,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<()> {
    let mut at = 0u64;
    for frame in &rec.frames {
        let Frame::Data { t, ch, data } = frame else {
            continue;
        };
        let out: &mut dyn Write = match ch {
            Channel::Stdout => stdout,
            Channel::Stderr => stderr,
            _ => continue,
        };
        if pace.speed > 0.0 {
            // A tiny speed makes a wait too long for a Duration: wait "forever".
            let mut wait = Duration::try_from_secs_f64(secs(t.saturating_sub(at)) / pace.speed)
                .unwrap_or(Duration::MAX);
            if let Some(max) = pace.max_idle {
                wait = wait.min(max);
            }
            std::thread::sleep(wait);
        }
        at = *t;
        out.write_all(data)?;
        out.flush()?;
    }
    Ok(())
}

/// The recording as asciicast v2: a header (the first resize's size, else 80x24),
/// then `[seconds, "o", text]` for stdout and stderr, `"i"` for stdin and `"r"` with
/// `"COLSxROWS"` for resizes.
pub fn asciicast(rec: &Recording, out: &mut dyn Write) -> io::Result<()> {
    let (width, height) = rec.first_size().unwrap_or((80, 24));
    let mut header = serde_json::json!({"version": 2, "width": width, "height": height});
    if let Ok(started) = rec.started.parse::<Timestamp>() {
        header["timestamp"] = started.as_second().into();
    }
    writeln!(out, "{header}")?;
    // Per event code, bytes of a UTF-8 character that a frame cut in two.
    let mut carry: HashMap<&str, Vec<u8>> = HashMap::new();
    for frame in &rec.frames {
        let Frame::Data { t, ch, data } = frame else {
            continue;
        };
        let code = match ch {
            Channel::Stdout | Channel::Stderr => "o",
            Channel::Stdin => "i",
            Channel::Resize => {
                for (w, h) in sizes(data) {
                    event(out, *t, "r", &format!("{w}x{h}"))?;
                }
                continue;
            }
            Channel::Error => continue,
        };
        let pending = carry.entry(code).or_default();
        pending.extend_from_slice(data);
        let text = take_text(pending);
        if !text.is_empty() {
            event(out, *t, code, &text)?;
        }
    }
    let end = rec.end.as_ref().map_or(0, |e| e.t);
    for (code, rest) in carry {
        if !rest.is_empty() {
            event(out, end, code, &String::from_utf8_lossy(&rest))?;
        }
    }
    Ok(())
}

fn event(out: &mut dyn Write, t: u64, code: &str, text: &str) -> io::Result<()> {
    let line = serde_json::json!([secs(t), code, text]);
    writeln!(out, "{line}")
}

/// The text in `pending`, leaving behind an incomplete UTF-8 sequence at its end.
fn take_text(pending: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(pending) {
        Ok(_) => 0,
        // An incomplete character at the very end waits for the next frame.
        Err(e) if e.error_len().is_none() => pending.len() - e.valid_up_to(),
        Err(_) => incomplete_tail(pending),
    };
    let rest = pending.split_off(pending.len() - keep);
    let text = String::from_utf8_lossy(pending).into_owned();
    *pending = rest;
    text
}

/// The length of an incomplete UTF-8 sequence at the end of `bytes` (0 if none).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 != 0x80 {
            let need = match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => return 0,
            };
            return if need > back { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests;
