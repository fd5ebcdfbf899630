//! cgroup v2 paths: where the unified hierarchy is mounted, the kubelet's pod cgroup
//! under it, a process's cgroup, cgroup ids, and the pod UID and container ID that a
//! kubelet cgroup path encodes (systemd and cgroupfs drivers, containerd, CRI-O and
//! Docker naming).
//!
//! What this module does not do: decide that a pod exists (the node's pod list does
//! that) or trust a path it could not parse. Anything it does not recognise is `None`,
//! never a guess.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountinfoUnreadable(#[source] io::Error),
    #[error(
        "no cgroup2 filesystem is mounted: kgate needs the unified cgroup hierarchy (cgroup v2)"
    )]
    NoCgroup2,
    #[error("no kubelet pod cgroup under {mount}: tried {tried}; set `cgroup` in the config")]
    KubepodsNotFound { mount: PathBuf, tried: String },
}

/// What a kubelet cgroup path says about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod UID, canonical: lowercase, dashed.
    pub pod_uid: String,
    /// The container's runtime ID, when the path goes down to a container.
    pub container_id: Option<String>,
    /// `containerd`, `cri-o` or `docker`, when the path names it.
    pub runtime: Option<&'static str>,
}

/// Where the kubelet puts pods, relative to the cgroup2 mount, by cgroup driver.
const KUBEPODS_CANDIDATES: [&str; 4] = [
    "kubepods.slice",
    "kubepods",
    "kubelet.slice/kubelet-kubepods.slice",
    "kubelet/kubepods",
];

/// The cgroup2 mount point of this process's mount namespace.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountinfoUnreadable)?;
    parse_cgroup2_mount(&info).ok_or(CgroupError::NoCgroup2)
}

/// The mount point of the first cgroup2 filesystem in a mountinfo text.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 35 98:0 / /mnt/a rw,noatime master:1 - cgroup2 cgroup2 rw": the fields
        // after " - " start with the filesystem type; the mount point is field 5.
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(unescape_mountinfo))?
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The kubelet's pod cgroup under a cgroup2 mount, for either cgroup driver.
pub fn kubepods_cgroup(mount: &Path) -> Result<PathBuf, CgroupError> {
    KUBEPODS_CANDIDATES
        .iter()
        .map(|c| mount.join(c))
        .find(|p| p.is_dir())
        .ok_or_else(|| CgroupError::KubepodsNotFound {
            mount: mount.to_owned(),
            tried: KUBEPODS_CANDIDATES.join(", "),
        })
}

/// A process's cgroup v2 path (relative to the mount, starting with `/`).
pub fn cgroup_path_for_pid(pid: u32) -> io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    parse_unified_cgroup(&text)
        .map(str::to_owned)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {pid} has no cgroup v2 path"),
            )
        })
}

/// The `0::` line of a /proc/PID/cgroup text.
pub fn parse_unified_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id` returns.
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// Finds the cgroup directory with `id` under `root`, at most 12 levels down (kubelet
/// paths are at most 5 deep).
pub fn find_cgroup_by_id(root: &Path, id: u64) -> Option<PathBuf> {
    fn walk(dir: &Path, id: u64, depth: u32) -> Option<PathBuf> {
        if depth > 12 {
            return None;
        }
        for entry in fs::read_dir(dir).ok()?.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if entry.metadata().is_ok_and(|m| m.ino() == id) {
                return Some(path);
            }
            if let Some(found) = walk(&path, id, depth + 1) {
                return Some(found);
            }
        }
        None
    }
    if cgroup_id(root).is_ok_and(|root_id| root_id == id) {
        return Some(root.to_owned());
    }
    walk(root, id, 0)
}

/// The pod (and container) that a kubelet cgroup path names, or `None`.
pub fn pod_uid_from_cgroup_path(path: &str) -> Option<PodCgroup> {
    let path = path.trim();
    let path = path.strip_prefix("0::").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kubepods_at = segments.iter().position(|s| s.contains("kubepods"))?;
    for (i, segment) in segments.iter().enumerate().skip(kubepods_at) {
        // containerd with the systemd driver, as /proc/PID/cgroup can show it:
        // "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>".
        if let Some((slice, rest)) = segment.split_once(':') {
            let pod_uid = pod_from_segment(slice)?;
            let (prefix, id) = rest.split_once(':')?;
            let runtime = runtime_for_prefix(prefix)?;
            return valid_container_id(id).then(|| PodCgroup {
                pod_uid,
                container_id: Some(id.to_owned()),
                runtime: Some(runtime),
            });
        }
        if let Some(pod_uid) = pod_from_segment(segment) {
            let (container_id, runtime) = match segments.get(i + 1) {
                None => (None, None),
                Some(next) => {
                    let (runtime, id) = container_from_segment(next)?;
                    (Some(id.to_owned()), runtime)
                }
            };
            return Some(PodCgroup {
                pod_uid,
                container_id,
                runtime,
            });
        }
    }
    None
}

/// `kubepods-burstable-pod<uid_underscored>.slice` (systemd) or `pod<uid>` (cgroupfs).
fn pod_from_segment(segment: &str) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_owned()
    };
    canonical_uid(&raw)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a bare id.
fn container_from_segment(segment: &str) -> Option<(Option<&'static str>, &str)> {
    if let Some(scope) = segment.strip_suffix(".scope") {
        let (prefix, id) = scope.rsplit_once('-')?;
        let runtime = runtime_for_prefix(prefix)?;
        return valid_container_id(id).then_some((Some(runtime), id));
    }
    valid_container_id(segment).then_some((None, segment))
}

fn runtime_for_prefix(prefix: &str) -> Option<&'static str> {
    match prefix {
        "cri-containerd" => Some("containerd"),
        "crio" => Some("cri-o"),
        "docker" => Some("docker"),
        // crio-conmon-<id> is CRI-O's monitor process, not the container.
        _ => None,
    }
}

fn valid_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A UID in the 8-4-4-4-12 hex form, lowercased.
fn canonical_uid(raw: &str) -> Option<String> {
    let groups: Vec<&str> = raw.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
    shape_ok.then(|| raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
