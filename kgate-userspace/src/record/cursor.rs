//! The webhook sink's durable cursor: the log position just after the last record the
//! receiver acknowledged, in `webhook.cursor` in the record directory.
//!
//! Saved atomically (a temporary file, `fsync`, `rename`, `fsync` of the directory),
//! so a crash leaves either the old cursor or the new one, never a torn one. It is
//! saved after the receiver's acknowledgement: a crash in between sends that batch
//! again (at least once, never lost).
//!
//! Not here: reading records ([`super::reader`]).

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use tracing::warn;

use super::log::Position;

const FILE: &str = "webhook.cursor";
const TEMP: &str = "webhook.cursor.tmp";

/// The cursor file of the log in `dir`.
pub(crate) struct Cursor {
    dir: PathBuf,
}

// === impl Cursor ===

impl Cursor {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The saved position; `None` when there is none yet. A cursor that cannot be
    /// read is reported and treated as none: sending everything again (duplicates)
    /// is better than skipping anything.
    pub(crate) fn load(&self) -> Option<Position> {
        let path = self.dir.join(FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                warn!(cursor = %path.display(), %error, "cannot read the webhook cursor: sending the whole log again");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(position) => Some(position),
            Err(error) => {
                warn!(cursor = %path.display(), %error, "the webhook cursor is malformed: sending the whole log again");
                None
            }
        }
    }

    /// Replaces the saved position, durably.
    pub(crate) fn save(&self, position: Position) -> io::Result<()> {
        let temp = self.dir.join(TEMP);
        let mut file = File::create(&temp)?;
        file.write_all(&serde_json::to_vec(&position).map_err(io::Error::other)?)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_survives_garbage() {
        let dir = std::env::temp_dir().join(format!("kgate-cursor-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let cursor = Cursor::new(&dir);
        assert_eq!(cursor.load(), None);
        let at = Position {
            segment: 42,
            offset: 4096,
            seq: 77,
        };
        cursor.save(at).unwrap();
        assert_eq!(cursor.load(), Some(at));
        assert!(!dir.join(TEMP).exists());
        fs::write(dir.join(FILE), b"{\"segment\":").unwrap();
        assert_eq!(cursor.load(), None, "a torn cursor means: start over");
        let _ = fs::remove_dir_all(&dir);
    }
}
