//! The on-disk record log: append-only segment files in one directory, each record
//! framed as `length (u32 LE) | CRC32 of the payload (u32 LE) | payload`.
//!
//! - Segments are named by the sequence number of their first record
//!   (`00000000000000000042.log`) and rotate when the next record would pass
//!   `segment_bytes`. Retention deletes whole sealed segments, oldest first, by total
//!   size and by age; the active segment is never deleted.
//! - [`Log::open`] first takes the directory's lock ([`super::lock`]: one writer per
//!   directory, held while the log is open), then runs the recovery scan: it reads
//!   every segment, keeps every complete
//!   record, and truncates a torn or corrupt tail of the active segment back to the
//!   last good record. Each such repair is reported (a warning, and in
//!   [`Recovery::damaged`]), never silent. A damaged sealed segment is reported and
//!   left as it is (its records after the damage are unreadable, but not destroyed).
//! - [`read_dir`] is the read-only scan for the CLI: it never truncates, since the
//!   agent may be appending while it reads.
//! - With a reserve ([`Log::reserve`], strict mode), the active segment is filled
//!   with zeros ahead of its last record and records are written over them. Syncing
//!   an overwrite commits only data, no file size or block allocation, which takes
//!   about a third off an `fdatasync` on ext4. A zero tail is therefore unwritten
//!   space, not damage: every scan ends the segment there, the recovery scan and a
//!   rotation cut it off.
//!
//! Not here: what the payload means (JSON events, [`super::event`]), or when to sync
//! (the writer thread decides; [`Log::sync`] is `fdatasync`).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tracing::{debug, warn};

use super::lock::{DirLock, LockError};

/// Bytes before each payload: length and CRC32.
pub const HEADER: usize = 8;
/// The largest payload accepted: anything longer in a header is corruption.
pub const MAX_RECORD: usize = 16 << 20;
const SUFFIX: &str = ".log";
/// The zeros a reserve is written with, a block at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Segment and retention limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// A place in the log: the segment (by its first sequence number), a byte offset in
/// it, and the sequence number of the record that starts there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
}

/// Why [`Log::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another log holds the directory; nothing was read or written.
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    ScanFailed(#[from] io::Error),
}

/// One damaged segment found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// Where the last good record ends.
    pub good_bytes: u64,
    /// What followed it and was dropped (or, for a sealed segment, left unread).
    pub bad_bytes: u64,
    pub reason: &'static str,
    /// The file was truncated to `good_bytes`.
    pub truncated: bool,
}

/// What the recovery scan found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub damaged: Vec<Damage>,
}

/// An open log, appending to its last segment.
pub struct Log {
    dir: PathBuf,
    limits: Limits,
    /// Sealed segments, oldest first: (first sequence number, path).
    sealed: Vec<(u64, PathBuf)>,
    /// Written at `active_bytes` (`pwrite`), not in append mode: see `reserve`.
    active: File,
    active_path: PathBuf,
    /// Where the last record ends.
    active_bytes: u64,
    /// The active segment's length: past `active_bytes` it is zeros written ahead.
    active_len: u64,
    /// How far ahead of the last record the active segment is kept zero-filled;
    /// 0 for none.
    reserve: u64,
    next_seq: u64,
    /// The sequence number up to which a reader (the webhook) has had the records:
    /// retention says so when it deletes records past it.
    consumed: Option<Arc<AtomicU64>>,
    /// The directory's lock, released when the log is dropped.
    _lock: DirLock,
}

// === framing ===

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("records are under MAX_RECORD");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `data` into complete, checksummed records; the second value is where the
/// good prefix ends and, if something other than zeros (unwritten reserved space)
/// follows it, why it is not a record.
pub fn unframe(data: &[u8]) -> (Vec<&[u8]>, usize, Option<&'static str>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at] == 0 && is_unwritten(&data[at..]) {
            break;
        }
        let Some(header) = data.get(at..at + HEADER) else {
            return (records, at, Some("torn record header"));
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        // A zero length followed by data is never a record.
        if len == 0 || len > MAX_RECORD {
            return (records, at, Some("invalid record length"));
        }
        let Some(payload) = data.get(at + HEADER..at + HEADER + len) else {
            return (records, at, Some("torn record"));
        };
        if crc32fast::hash(payload) != crc {
            return (records, at, Some("checksum mismatch"));
        }
        records.push(payload);
        at += HEADER + len;
    }
    (records, at, None)
}

/// Whether `rest`, what follows the last record, is all zeros: space written ahead
/// (see [`Log::reserve`]), or a crash's unwritten tail, but no record.
fn is_unwritten(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

// === impl Log ===

impl Log {
    /// Opens (creating) the log in `dir`: takes its lock, then runs the recovery scan.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Self, Recovery), OpenError> {
        fs::create_dir_all(dir)?;
        // Before anything is read: another writer's segment is no one else's to repair.
        let lock = DirLock::acquire(dir)?;
        let mut segments = list_segments(dir)?;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        let last = segments.len().checked_sub(1);
        let mut next_seq = 0;
        let mut active_bytes = 0;
        for (i, (first, path)) in segments.iter().enumerate() {
            let data = fs::read(path)?;
            let (records, good, reason) = unframe(&data);
            recovery.records += records.len() as u64;
            next_seq = first + records.len() as u64;
            active_bytes = good as u64;
            // Zeros after the last record (written ahead, or a crash's unwritten tail)
            // are cut off any segment; damage only off the active one.
            let cut = good < data.len() && (reason.is_none() || Some(i) == last);
            if cut {
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(good as u64)?;
            }
            let Some(reason) = reason else {
                if cut {
                    debug!(segment = %path.display(), bytes = data.len() - good, "unwritten tail cut off");
                }
                continue;
            };
            let damage = Damage {
                segment: path.clone(),
                good_bytes: good as u64,
                bad_bytes: (data.len() - good) as u64,
                reason,
                truncated: cut,
            };
            warn!(
                segment = %path.display(),
                good_bytes = damage.good_bytes,
                bad_bytes = damage.bad_bytes,
                reason,
                truncated = cut,
                "record log damaged: kept every complete record before the damage"
            );
            recovery.damaged.push(damage);
        }
        let (active_path, active_bytes) = match segments.pop() {
            Some((_, path)) => (path, active_bytes),
            None => (segment_path(dir, 0), 0),
        };
        let active = open_segment(&active_path)?;
        sync_dir(dir)?;
        let mut log = Self {
            dir: dir.to_owned(),
            limits,
            sealed: segments,
            active,
            active_path,
            active_bytes,
            active_len: active_bytes,
            reserve: 0,
            next_seq,
            consumed: None,
            _lock: lock,
        };
        log.retain();
        Ok((log, recovery))
    }

    /// Keeps up to `bytes` of the active segment (never past `segment_bytes`) written
    /// with zeros ahead of its last record, for [`Log::reserve_ahead`] to top up.
    /// Costs a second write of every byte; strict mode, which syncs for each
    /// forwarded request, gains from it.
    pub fn reserve(&mut self, bytes: u64) {
        self.reserve = bytes;
    }

    /// Tops the reserve up (writing zeros and syncing them) when less than half of it
    /// is left; a no-op without one. Called between groups, off any request's path.
    /// On a failure (a full disk) the segment keeps what it had: records are then
    /// appended, as without a reserve, and a failure to do that is the writer's
    /// error.
    pub fn reserve_ahead(&mut self) -> io::Result<()> {
        if self.reserve == 0 || self.active_len - self.active_bytes >= self.reserve / 2 {
            return Ok(());
        }
        let target = (self.active_bytes + self.reserve).min(self.limits.segment_bytes);
        if target <= self.active_len {
            // Zero-filled to the segment's end: the next rotation starts a new one.
            return Ok(());
        }
        while self.active_len < target {
            let zeros = usize::try_from(target - self.active_len)
                .map_or(&ZEROS[..], |n| &ZEROS[..n.min(ZEROS.len())]);
            if let Err(error) = self.active.write_all_at(zeros, self.active_len) {
                // Not a partly written block: the file ends where the zeros do.
                let _ = self.active.set_len(self.active_len);
                return Err(error);
            }
            self.active_len += zeros.len() as u64;
        }
        self.active.sync_data()
    }

    /// Writes framed records (`count` of them, as [`frame`] made `bytes`) to the active
    /// segment, rotating first when they would overflow it. Not synced: see
    /// [`Log::sync`]. On a failed write the segment is cut back to its last good
    /// record, so that a later append does not follow garbage.
    pub fn append(&mut self, bytes: &[u8], count: u64) -> io::Result<()> {
        if self.active_bytes > 0
            && self.active_bytes + bytes.len() as u64 > self.limits.segment_bytes
        {
            self.rotate()?;
        }
        if let Err(error) = self.active.write_all_at(bytes, self.active_bytes) {
            // The reserve goes too: what the write left in it is not zeros.
            let _ = self.active.set_len(self.active_bytes);
            self.active_len = self.active_bytes;
            return Err(error);
        }
        self.active_bytes += bytes.len() as u64;
        self.active_len = self.active_len.max(self.active_bytes);
        self.next_seq += count;
        Ok(())
    }

    /// `fdatasync` of the active segment: everything appended so far is durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.active.sync_data()
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// From now on retention warns when it deletes records at or past `consumed`
    /// (a sequence number a reader such as the webhook sink keeps up to date): it
    /// still deletes them, since the disk bound protects the node.
    pub fn warn_unconsumed(&mut self, consumed: Arc<AtomicU64>) {
        self.consumed = Some(consumed);
    }

    /// Where the next record will be appended (unless a rotation comes first).
    pub fn end(&self) -> Position {
        Position {
            segment: first_seq(&self.active_path).unwrap_or(0),
            offset: self.active_bytes,
            seq: self.next_seq,
        }
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        self.sealed
            .iter()
            .map(|(_, p)| p.clone())
            .chain([self.active_path.clone()])
            .collect()
    }

    fn rotate(&mut self) -> io::Result<()> {
        // A sealed segment ends at its last record.
        if self.active_len > self.active_bytes {
            self.active.set_len(self.active_bytes)?;
            self.active_len = self.active_bytes;
        }
        self.active.sync_data()?;
        let path = segment_path(&self.dir, self.next_seq);
        let active = open_segment(&path)?;
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.active_path, path);
        self.active = active;
        self.active_bytes = 0;
        self.active_len = 0;
        self.sealed.push((first_seq(&old).unwrap_or(0), old));
        self.retain();
        Ok(())
    }

    /// Deletes the oldest sealed segments while they and a full active segment would
    /// exceed `max_bytes` (so the log never outgrows it), and every sealed segment older
    /// than `max_age`.
    fn retain(&mut self) {
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let mut total: u64 = self.sealed.iter().map(|(_, p)| size(p)).sum::<u64>()
            + self.limits.segment_bytes.max(self.active_bytes);
        let now = SystemTime::now();
        while let Some((_, oldest)) = self.sealed.first() {
            let bytes = size(oldest);
            let expired = fs::metadata(oldest)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > self.limits.max_age);
            if total <= self.limits.max_bytes && !expired {
                break;
            }
            if let Err(error) = fs::remove_file(oldest) {
                warn!(segment = %oldest.display(), %error, "cannot delete an old record segment");
                break;
            }
            if let Some(consumed) = &self.consumed {
                let first = self.sealed[0].0;
                let end = self.sealed.get(1).map_or_else(
                    || first_seq(&self.active_path).unwrap_or(first),
                    |(s, _)| *s,
                );
                let consumed = consumed.load(Ordering::Relaxed);
                if end > consumed {
                    warn!(
                        segment = %oldest.display(),
                        records = end - consumed.max(first),
                        "retention deleted records the webhook has not sent yet"
                    );
                }
            }
            total -= bytes.min(total);
            self.sealed.remove(0);
        }
    }
}

#[cfg(test)]
impl Log {
    /// Stops as a killed agent would: the zeros written ahead stay, the lock goes.
    pub(super) fn crash(mut self) {
        self.active_len = self.active_bytes;
    }
}

impl Drop for Log {
    /// A stopped agent's segment ends at its last record (the next recovery scan
    /// would cut the zeros off, but `ls` and `du` should not have to wait for it).
    fn drop(&mut self) {
        if self.active_len > self.active_bytes {
            let _ = self.active.set_len(self.active_bytes);
        }
    }
}

/// Every record in `dir`, oldest first, and the damage found, without changing any
/// file (the agent may be writing: a torn tail there is a record in flight).
pub fn read_dir(dir: &Path) -> io::Result<(Vec<Vec<u8>>, Vec<Damage>)> {
    let mut out = Vec::new();
    let damaged = each_record(dir, |record| out.push(record.to_vec()))?;
    Ok((out, damaged))
}

/// Hands every record in `dir` to `f`, oldest first, holding one segment in memory
/// at a time, and returns the damage found. Like [`read_dir`], it changes no file.
pub fn each_record(dir: &Path, mut f: impl FnMut(&[u8])) -> io::Result<Vec<Damage>> {
    let mut damaged = Vec::new();
    for (_, path) in list_segments(dir)? {
        let data = match fs::read(&path) {
            Ok(data) => data,
            // Retention deleted it since the listing: its records are gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (records, good, reason) = unframe(&data);
        records.into_iter().for_each(&mut f);
        if let Some(reason) = reason {
            damaged.push(Damage {
                segment: path,
                good_bytes: good as u64,
                bad_bytes: (data.len() - good) as u64,
                reason,
                truncated: false,
            });
        }
    }
    Ok(damaged)
}

/// The segment files in `dir`, oldest first: (first sequence number, path).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments: Vec<_> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| first_seq(&p).map(|seq| (seq, p)))
        .collect();
    segments.sort();
    Ok(segments)
}

fn first_seq(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The file of the segment whose first record is `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

/// Opens (creating) a segment for writing at chosen offsets.
fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Makes a new segment's directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
