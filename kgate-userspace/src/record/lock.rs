//! One agent per record directory: an exclusive `flock` on `LOCK` in `record.dir`,
//! taken before the log is scanned or written and held for as long as the log is open.
//!
//! Two agents on one directory destroy records: each one's recovery scan cuts the
//! other's active segment back (a record in flight reads as a torn tail, the zeros
//! written ahead as unwritten space), and both write at their own offsets into the
//! same segment. So the second agent refuses to start, naming the directory and the
//! holder's PID (written into the file for that message, and only for it).
//!
//! The kernel drops a `flock` when the last descriptor of its open file goes, so a
//! holder that dies in any way (`kill -9` included) leaves no stale lock. The file
//! itself stays: removing it would let one agent lock an unlinked file while the
//! next locks a new one.
//!
//! Not here: readers. `kgate sessions` and the webhook's reader never change a
//! segment, so they take no lock and read a directory a live agent holds.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{self, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// The lock file's name in the record directory.
pub(crate) const FILE: &str = "LOCK";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "record.dir {} is in use by another kgate agent ({}); two agents must not share a record directory",
        .dir.display(),
        .pid.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("record.dir {}: cannot lock {FILE}: {source}", .dir.display())]
    LockFailed {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

// === impl DirLock ===

impl DirLock {
    /// Takes the lock of `dir` (which exists), without waiting: a directory another
    /// process (or another open log in this one) holds is [`LockError::InUse`].
    pub(crate) fn acquire(dir: &Path) -> Result<Self, LockError> {
        let failed = |source| LockError::LockFailed {
            dir: dir.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(FILE))
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder may be writing it right now: then the PID is unknown.
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(failed(e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(failed)?;
        Ok(Self { _file: file })
    }
}
