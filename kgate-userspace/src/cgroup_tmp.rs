//! TEMPORARY shim until cgroup.rs lands.
use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2")]
    NoCgroup2,
    #[error("no kubepods")]
    NoKubepods,
}
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|_| CgroupError::NoCgroup2)?;
    info.lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or(CgroupError::NoCgroup2)
}
pub fn kubepods_cgroup(_m: &Path) -> Result<PathBuf, CgroupError> {
    Err(CgroupError::NoKubepods)
}
pub fn cgroup_path_for_pid(pid: u32) -> io::Result<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("no 0::"))
}
pub fn cgroup_id(p: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(p)?.ino())
}
pub fn find_cgroup_by_id(root: &Path, id: u64) -> Option<PathBuf> {
    fn walk(d: &Path, id: u64, depth: u32) -> Option<PathBuf> {
        if depth > 12 {
            return None;
        }
        for e in std::fs::read_dir(d).ok()?.flatten() {
            let p = e.path();
            if e.file_type().ok()?.is_dir() {
                if std::fs::metadata(&p).ok()?.ino() == id {
                    return Some(p);
                }
                if let Some(f) = walk(&p, id, depth + 1) {
                    return Some(f);
                }
            }
        }
        None
    }
    walk(root, id, 0)
}
