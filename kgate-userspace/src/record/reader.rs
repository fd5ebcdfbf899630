//! A reader that follows the writer through the log's segments, for the webhook sink.
//!
//! It reads only up to the durable end the writer published (see
//! [`super::writer::Sinks::committed`]), so it never hands out a record that a crash
//! or a failed write could still undo, and never meets a record in flight.
//!
//! What it cannot read it skips, and says how many records that was: a segment that
//! retention deleted before the reader got to it, or a damaged sealed segment's tail
//! (the skipped count is then exact, since segments are named by their first
//! sequence number).
//!
//! Not here: what the records mean, or remembering how far a consumer got (see
//! [`super::cursor`]).

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::Path,
};

use super::log::{self, HEADER, MAX_RECORD, Position};

/// Records read from one position on.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub records: Vec<Vec<u8>>,
    /// Where the next read starts: just after the last record (or skip).
    pub next: Position,
    /// Records that could not be read and were passed over.
    pub skipped: u64,
    /// Why, for the log.
    pub skip_reason: Option<String>,
}

/// Reads up to `max` records (and about `max_bytes` of payload, at least one record)
/// from `from` on, stopping at `end`, the writer's durable end.
pub(crate) fn read(
    dir: &Path,
    from: Position,
    end: Position,
    max: usize,
    max_bytes: usize,
) -> io::Result<Batch> {
    let mut batch = Batch {
        next: from,
        ..Batch::default()
    };
    let mut bytes = 0;
    while batch.records.len() < max && bytes < max_bytes && batch.next.seq < end.seq {
        let at = batch.next;
        let segments = log::list_segments(dir)?;
        let Some(path) = segments
            .iter()
            .find(|(first, _)| *first == at.segment)
            .map(|(_, p)| p.clone())
        else {
            // Deleted under us (retention): go on with the next segment that exists.
            let Some(&(first, _)) = segments.iter().find(|(first, _)| *first > at.segment) else {
                return Ok(batch);
            };
            skip_to(&mut batch, first, "deleted by retention before it was read");
            continue;
        };
        let limit = if at.segment == end.segment {
            end.offset
        } else {
            u64::MAX
        };
        let sealed = at.segment != end.segment;
        match read_segment(
            &path,
            at,
            limit,
            max - batch.records.len(),
            max_bytes - bytes,
        )? {
            Segment::Records(records, next) => {
                bytes += records.iter().map(Vec::len).sum::<usize>();
                batch.records.extend(records);
                batch.next = next;
                if next.offset < limit && !sealed {
                    // Up to the durable end: caught up.
                    break;
                }
            }
            Segment::End(next) => {
                batch.next = next;
                if !sealed {
                    break;
                }
                let Some(&(first, _)) = segments.iter().find(|(first, _)| *first > at.segment)
                else {
                    return Ok(batch);
                };
                if first == next.seq {
                    batch.next = Position {
                        segment: first,
                        offset: 0,
                        seq: first,
                    };
                } else {
                    skip_to(&mut batch, first, "a damaged segment");
                }
            }
            Segment::Damaged(next, reason) => {
                batch.next = next;
                if !sealed {
                    // Below the durable end nothing may be damaged; a reader cannot
                    // repair it, and waiting will not help either: say so, keep the
                    // position (the next recovery scan truncates it).
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {reason} before the durable end", path.display()),
                    ));
                }
                let Some(&(first, _)) = segments.iter().find(|(first, _)| *first > at.segment)
                else {
                    return Ok(batch);
                };
                skip_to(&mut batch, first, reason);
            }
        }
    }
    Ok(batch)
}

fn skip_to(batch: &mut Batch, first: u64, reason: &str) {
    let skipped = first.saturating_sub(batch.next.seq);
    batch.skipped += skipped;
    batch.skip_reason = Some(format!(
        "segment {}: {reason}",
        log::segment_path(Path::new(""), batch.next.segment).display()
    ));
    batch.next = Position {
        segment: first,
        offset: 0,
        seq: first,
    };
}

enum Segment {
    /// Records read; the position after them.
    Records(Vec<Vec<u8>>, Position),
    /// Nothing more in this segment (its end, or `limit`).
    End(Position),
    /// A record that fails its check, at the position given.
    Damaged(Position, &'static str),
}

fn read_segment(
    path: &Path,
    at: Position,
    limit: u64,
    max: usize,
    max_bytes: usize,
) -> io::Result<Segment> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len().min(limit);
    if at.offset >= len {
        return Ok(Segment::End(at));
    }
    file.seek(SeekFrom::Start(at.offset))?;
    let mut reader = BufReader::with_capacity(256 << 10, file.take(len - at.offset));
    let mut records = Vec::new();
    let mut next = at;
    let mut bytes = 0;
    while records.len() < max && bytes < max_bytes && next.offset < len {
        let mut header = [0u8; HEADER];
        if len - next.offset < HEADER as u64 {
            return Ok(damaged(records, next, "torn record header"));
        }
        reader.read_exact(&mut header)?;
        let size = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if size == 0 || size > MAX_RECORD {
            return Ok(damaged(records, next, "invalid record length"));
        }
        if len - next.offset - (HEADER as u64) < size as u64 {
            return Ok(damaged(records, next, "torn record"));
        }
        let mut payload = vec![0; size];
        reader.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Ok(damaged(records, next, "checksum mismatch"));
        }
        bytes += size;
        records.push(payload);
        next.offset += (HEADER + size) as u64;
        next.seq += 1;
    }
    Ok(if records.is_empty() {
        Segment::End(next)
    } else {
        Segment::Records(records, next)
    })
}

/// Records read before damage are handed out first; the damage is met again (with
/// nothing before it) on the next read.
fn damaged(records: Vec<Vec<u8>>, at: Position, reason: &'static str) -> Segment {
    if records.is_empty() {
        Segment::Damaged(at, reason)
    } else {
        Segment::Records(records, at)
    }
}

#[cfg(test)]
mod tests;
