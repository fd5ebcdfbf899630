//! cgroup v2 paths: where the unified hierarchy is mounted, the kubelet's pod cgroup
//! under it, a process's cgroup, cgroup ids, and the pod UID and container ID that a
//! kubelet cgroup path encodes (systemd and cgroupfs drivers, containerd, CRI-O and
//! Docker naming).
//!
//! What this module does not do: decide that a pod exists (the node's pod list does
//! that) or trust a path it could not parse. A path with no pod cgroup it recognises is
//! `None`, never a guess; a cgroup inside a pod's that is no container it recognises is
//! the pod's, with no container named.

use std::{
    ffi::OsString,
    fs, io,
    os::unix::{ffi::OsStringExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountinfoUnreadable(#[source] io::Error),
    #[error(
        "no cgroup2 filesystem is mounted: kgate needs the unified cgroup hierarchy (cgroup v2)"
    )]
    NoCgroup2,
    #[error(
        "no kubelet pod cgroup under {}: tried {}; set `cgroup` in the config",
        mount.display(),
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    KubepodsNotFound { mount: PathBuf, tried: Vec<PathBuf> },
}

/// What a kubelet cgroup path says about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodCgroup {
    /// The pod UID, canonical: lowercase, dashed.
    pub pod_uid: String,
    /// The container's runtime ID, when the path goes down to a container.
    pub container_id: Option<String>,
    /// The runtime, when the path's naming says which (cgroupfs paths of containerd
    /// and Docker are bare IDs).
    pub runtime: Option<ContainerRuntime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
}

/// Where the kubelet puts pods, relative to the cgroup2 mount: the systemd driver,
/// the cgroupfs driver, and both under the `kubelet` root that kind and others use.
const KUBEPODS_CANDIDATES: [&str; 4] = [
    "kubepods.slice",
    "kubepods",
    "kubelet.slice/kubelet-kubepods.slice",
    "kubelet/kubepods",
];

/// Deepest cgroup level [`find_cgroup_by_id`] looks at below its root; kubelet paths
/// are at most 5 deep, nested runtimes (kind, systemd in a pod) add a few.
const MAX_SEARCH_DEPTH: u32 = 12;

/// The kubelet's cgroup driver, as the name of its pod cgroup shows it: the systemd
/// driver makes slices (`kubepods.slice`, `kubelet-kubepods.slice`), the cgroupfs
/// driver plain directories (`kubepods`). `None` for a path that is neither.
pub(crate) fn driver_of(kubepods: &Path) -> Option<&'static str> {
    kubepods
        .components()
        .rev()
        .find_map(|c| match c.as_os_str().to_str()? {
            s if s.ends_with("kubepods.slice") => Some("systemd"),
            "kubepods" => Some("cgroupfs"),
            _ => None,
        })
}

/// A cgroup2 mount of this process's mount namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cgroup2Mount {
    /// The cgroup the mount shows, as this process's cgroup namespace names it: `/`
    /// for the namespace's root, `/kubepods` for a cgroup below it, `/../..` for one
    /// above it (the host's tree bind-mounted into a container that has a cgroup
    /// namespace of its own).
    pub root: String,
    pub point: PathBuf,
}

impl Cgroup2Mount {
    /// How far above this process's cgroup namespace root the mount's root lies: the
    /// number of `..`, or `None` for a cgroup inside the namespace other than its root.
    fn height(&self) -> Option<usize> {
        let parts: Vec<&str> = self.root.split('/').filter(|s| !s.is_empty()).collect();
        parts.iter().all(|p| *p == "..").then_some(parts.len())
    }
}

/// The cgroup2 mount that shows the whole hierarchy, as far as this process can see
/// it: on a host `/sys/fs/cgroup` (or `/sys/fs/cgroup/unified` on a hybrid one); in a
/// container, the host's tree that the DaemonSet mounts, rather than the container's
/// own cgroup that the runtime mounts at `/sys/fs/cgroup`.
pub(crate) fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountinfoUnreadable)?;
    parse_cgroup2_mount(&info).ok_or(CgroupError::NoCgroup2)
}

/// The mount point of the cgroup2 filesystem in a mountinfo text that shows the most
/// of the hierarchy: the one whose root lies highest (`/../..` above `/`), else the
/// first.
pub(crate) fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mounts = parse_cgroup2_mounts(mountinfo);
    let highest = mounts.iter().filter_map(|m| Some((m.height()?, m))).fold(
        None::<(usize, &Cgroup2Mount)>,
        |best, (h, m)| match best {
            Some((top, _)) if top >= h => best,
            _ => Some((h, m)),
        },
    );
    highest
        .map(|(_, m)| m)
        .or(mounts.first())
        .map(|m| m.point.clone())
}

/// Every cgroup2 mount in a mountinfo text, in its order.
pub(crate) fn parse_cgroup2_mounts(mountinfo: &str) -> Vec<Cgroup2Mount> {
    // "36 35 98:0 / /mnt/a rw,noatime master:1 - cgroup2 cgroup2 rw": the fields after
    // " - " start with the filesystem type; field 4 is the mounted root, 5 the point.
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = pre.split_whitespace().skip(3);
            let root = unescape_mountinfo(fields.next()?);
            Some(Cgroup2Mount {
                root: root.to_string_lossy().into_owned(),
                point: unescape_mountinfo(fields.next()?),
            })
        })
        .collect()
}

/// The cgroup2 mount point that holds `path` (the longest that is a prefix of it).
pub(crate) fn mount_holding(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    parse_cgroup2_mounts(mountinfo)
        .into_iter()
        .map(|m| m.point)
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.components().count())
}

/// This process's cgroup directory, from /proc/self/mountinfo and /proc/self/cgroup.
pub(crate) fn own_cgroup() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup = fs::read_to_string("/proc/self/cgroup")?;
    locate_cgroup(&mountinfo, &cgroup, std::process::id()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no cgroup2 mount shows this process's cgroup ({})",
                cgroup.trim()
            ),
        )
    })
}

/// Where the cgroup of process `pid` (its /proc/PID/cgroup `text`, which names it
/// relative to its cgroup namespace) is, among a mountinfo text's cgroup2 mounts.
///
/// Through a mount of a cgroup at or above it inside the namespace, the path says
/// where. In a container with a cgroup namespace of its own and only the host's tree
/// mounted (`/../../..`: the namespace root is three levels down, but which three the
/// namespace hides), it is the directory that far down whose `cgroup.procs`, read from
/// this PID namespace, lists `pid`.
pub(crate) fn locate_cgroup(mountinfo: &str, text: &str, pid: u32) -> Option<PathBuf> {
    let rel = parse_unified_cgroup(text)?.trim();
    let mounts = parse_cgroup2_mounts(mountinfo);
    let inside = mounts
        .iter()
        .filter(|m| m.height().is_none_or(|h| h == 0))
        .filter_map(|m| {
            let below = Path::new(rel).strip_prefix(&m.root).ok()?;
            Some((m.root.len(), m.point.join(below)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dir)| dir)
        .filter(|dir| dir.is_dir());
    if inside.is_some() {
        return inside;
    }
    let rel = rel.trim_start_matches('/');
    mounts
        .iter()
        .filter_map(|m| Some((m.height()?, m)))
        .filter(|(h, _)| *h > 0)
        .find_map(|(height, m)| {
            dirs_at_depth(&m.point, height)
                .into_iter()
                .map(|ns_root| ns_root.join(rel))
                .find(|dir| lists_pid(dir, pid))
        })
}

fn dirs_at_depth(root: &Path, depth: usize) -> Vec<PathBuf> {
    let mut level = vec![root.to_owned()];
    for _ in 0..depth {
        level = level
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(std::iter::Iterator::flatten)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
    }
    level
}

fn lists_pid(dir: &Path, pid: u32) -> bool {
    let pid = pid.to_string();
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|procs| procs.lines().any(|l| l == pid))
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
    PathBuf::from(OsString::from_vec(out))
}

/// The kubelet's pod cgroup under a cgroup2 mount, for either cgroup driver.
pub(crate) fn kubepods_cgroup(mount: &Path) -> Result<PathBuf, CgroupError> {
    let tried: Vec<PathBuf> = KUBEPODS_CANDIDATES.iter().map(|c| mount.join(c)).collect();
    match tried.iter().find(|p| p.is_dir()) {
        Some(found) => Ok(found.clone()),
        None => Err(CgroupError::KubepodsNotFound {
            mount: mount.to_owned(),
            tried,
        }),
    }
}

/// The `0::` line of a /proc/PID/cgroup text.
pub(crate) fn parse_unified_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id` returns.
pub(crate) fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// Finds the cgroup directory with `id` at or under `root`, at most
/// `MAX_SEARCH_DEPTH` (12) levels down. Unreadable directories are skipped: a cgroup can
/// vanish while the walk runs.
pub(crate) fn find_cgroup_by_id(root: &Path, id: u64) -> Option<PathBuf> {
    fn walk(dir: &Path, id: u64, depth: u32) -> Option<PathBuf> {
        if depth >= MAX_SEARCH_DEPTH {
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
///
/// Takes a path relative to the cgroup2 mount, a `0::/…` line of /proc/PID/cgroup, or
/// a whole /proc/PID/cgroup text. The first pod segment below a kubepods segment names
/// the pod. The segment after it, when there is one, names the container when it is
/// one of the runtimes' container cgroups (a process in a cgroup nested below a
/// container belongs to that container). Any other cgroup inside the pod's is still
/// the pod's, with no container: only the kubelet and the runtime create cgroups
/// there (CRI-O's `crio-conmon-<id>` monitor, a runtime's naming kgate does not know),
/// so a process in one is no host process.
pub(crate) fn pod_uid_from_cgroup_path(path: &str) -> Option<PodCgroup> {
    let path = path.trim();
    let path = parse_unified_cgroup(path).unwrap_or(path);
    if path.contains('\n') {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kubepods_at = segments.iter().position(|s| is_kubepods_segment(s))?;
    for (i, segment) in segments.iter().enumerate().skip(kubepods_at) {
        // containerd with the systemd driver, as /proc/PID/cgroup can show it:
        // "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>".
        if let Some((slice, rest)) = segment.split_once(':') {
            let pod_uid = pod_from_systemd_slice(slice)?;
            let container = rest
                .split_once(':')
                .and_then(|(prefix, id)| Some((runtime_for_prefix(prefix)?, id)))
                .filter(|(_, id)| is_container_id(id));
            return Some(PodCgroup {
                pod_uid,
                container_id: container.map(|(_, id)| id.to_owned()),
                runtime: container.map(|(runtime, _)| runtime),
            });
        }
        let pod_uid =
            pod_from_systemd_slice(segment).or_else(|| pod_from_cgroupfs_dir(&segments[..=i]));
        if let Some(pod_uid) = pod_uid {
            let (container_id, runtime) = match segments.get(i + 1).map(|s| in_pod(s)) {
                None | Some(InPod::Other) => (None, None),
                Some(InPod::Container(runtime, id)) => (Some(id.to_owned()), runtime),
                Some(InPod::Monitor(runtime)) => (None, Some(runtime)),
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

/// What a cgroup directly inside a pod's cgroup is.
enum InPod<'a> {
    /// A container: its runtime, when the name says which, and its ID.
    Container(Option<ContainerRuntime>, &'a str),
    /// The runtime's per-container monitor (CRI-O's conmon with `conmon_cgroup =
    /// "pod"`), not a container.
    Monitor(ContainerRuntime),
    /// Anything else the runtime made there.
    Other,
}

fn in_pod(segment: &str) -> InPod<'_> {
    if let Some((runtime, id)) = container_from_segment(segment) {
        return InPod::Container(runtime, id);
    }
    // CRI-O's cgmgr: `crio-conmon-<id>.scope` (systemd) or `crio-conmon-<id>` (cgroupfs).
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    match name.strip_prefix("crio-conmon-") {
        Some(id) if is_container_id(id) => InPod::Monitor(ContainerRuntime::CriO),
        _ => InPod::Other,
    }
}

/// A segment that starts the kubelet's tree: `kubepods` (cgroupfs), `kubepods.slice`,
/// a nested root's `kubelet-kubepods.slice`, or a pod slice in containerd's
/// `slice:prefix:id` form.
fn is_kubepods_segment(segment: &str) -> bool {
    let name = segment.split(':').next().unwrap_or(segment);
    let name = name.strip_suffix(".slice").unwrap_or(name);
    name.split('-').any(|word| word == "kubepods")
}

/// `<parent>-pod<uid with underscores>.slice`, where the parent slice is a kubepods or
/// QoS slice (`kubepods`, `kubepods-burstable`, `kubelet-kubepods-besteffort`, …).
fn pod_from_systemd_slice(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice")?;
    let (parent, uid) = name.rsplit_once("-pod")?;
    let parent_ok = parent.split('-').any(|word| word == "kubepods")
        && matches!(
            parent.rsplit('-').next(),
            Some("kubepods" | "burstable" | "besteffort")
        );
    // systemd reserves '-' for nesting: the kubelet writes the UID's dashes as '_'.
    (parent_ok && !uid.contains('-'))
        .then(|| canonical_uid(&uid.replace('_', "-")))
        .flatten()
}

/// `pod<uid>` directly under `kubepods`, or under its `burstable`/`besteffort` QoS
/// directory; `path` ends with the candidate segment.
fn pod_from_cgroupfs_dir(path: &[&str]) -> Option<String> {
    let uid = match path {
        [.., "kubepods", pod] | [.., "kubepods", "burstable" | "besteffort", pod] => {
            pod.strip_prefix("pod")?
        }
        _ => return None,
    };
    canonical_uid(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` (systemd);
/// `crio-<id>` (CRI-O's cgroupfs form, and its pod sandbox under either driver) or a
/// bare id (containerd and Docker with cgroupfs).
fn container_from_segment(segment: &str) -> Option<(Option<ContainerRuntime>, &str)> {
    if is_container_id(segment) {
        return Some((None, segment));
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let (prefix, id) = name.rsplit_once('-')?;
    let runtime = runtime_for_prefix(prefix)?;
    is_container_id(id).then_some((Some(runtime), id))
}

fn runtime_for_prefix(prefix: &str) -> Option<ContainerRuntime> {
    match prefix {
        "cri-containerd" => Some(ContainerRuntime::Containerd),
        "crio" => Some(ContainerRuntime::CriO),
        "docker" => Some(ContainerRuntime::Docker),
        // crio-conmon-<id> is CRI-O's monitor process, not the container: see `in_pod`.
        _ => None,
    }
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A UID in the 8-4-4-4-12 hex form, lowercased.
fn canonical_uid(raw: &str) -> Option<String> {
    let mut groups = raw.split('-');
    let shape_ok = [8, 4, 4, 4, 12].iter().all(|&len| {
        groups
            .next()
            .is_some_and(|g| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
    }) && groups.next().is_none();
    shape_ok.then(|| raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
