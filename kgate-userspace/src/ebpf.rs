//! The only module that talks to aya: loads kgate's kernel programs, attaches them to
//! the pod cgroup, pins programs, links and maps under `<bpffs>/kgate/v1`, and exposes
//! the maps as plain operations (set the agent address, sync the targets, exempt a
//! cgroup, take a connection's origin).
//!
//! Enforcement outlives the agent: the links are pinned, so an agent restart finds them
//! and keeps them instead of attaching again, and while no agent listens a redirected
//! connect is refused. A starting agent loads its own programs against the pinned maps
//! and swaps them into the pinned links (`BPF_LINK_UPDATE`, atomic per link), so an
//! upgrade changes the kernel programs without a moment unenforced. Only `detach`
//! removes them.
//!
//! Not here: deciding which addresses are targets (endpoint discovery) or which cgroup
//! to attach to (`cgroup`); this module takes both as plain data.

use std::{
    collections::HashSet,
    fs, io,
    net::SocketAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use aya_log::EbpfLogger;
use kgate_common::{
    AGENT_HAS_V4, AGENT_HAS_V6, AgentAddr, COUNTER_EXEMPT, COUNTER_REDIRECTED, COUNTER_REFUSED,
    ConnKey, MAP_AGENT, MAP_CONNS, MAP_COUNTERS, MAP_EXEMPT, MAP_ORIGINS, MAP_TARGETS, Origin,
    PIN_DIR, TargetKey, TargetKind, addr_words,
};
use tracing::{debug, info, warn};

use crate::config::RedirectTo;

/// The kernel object, built by build.rs from kgate-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("KGATE_EBPF_OBJ"));

/// The programs, by ELF name, each pinned as `prog_<name>` and `link_<name>`.
const PROGRAMS: [&str; 5] = [
    "kgate_connect4",
    "kgate_connect6",
    "kgate_getpeername4",
    "kgate_getpeername6",
    "kgate_sockops",
];
const MAPS: [&str; 6] = [
    MAP_TARGETS,
    MAP_AGENT,
    MAP_EXEMPT,
    MAP_ORIGINS,
    MAP_CONNS,
    MAP_COUNTERS,
];

/// The kernel features kgate's programs need, each with the Linux release that brought
/// it. An [`Enforcement`] proves the node has them all (each program is attached to
/// its hook through a pinned BPF link); `kgate check` reads a node's kernel release
/// against them before there is an agent to prove it.
pub(crate) const FEATURES: [(&str, (u32, u32)); 6] = [
    ("cgroup/connect4", (4, 17)),
    ("cgroup/connect6", (4, 17)),
    // The release also gave the sock_addr programs the socket and netns cookies.
    ("cgroup/getpeername4", (5, 8)),
    ("cgroup/getpeername6", (5, 8)),
    ("sockops", (4, 13)),
    // Cgroup programs through BPF links, pinned and updated in place (BPF_LINK_UPDATE).
    ("bpf_link", (5, 7)),
];

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EbpfError {
    #[error(
        "kgate needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (or root) to load and attach its \
         kernel programs; missing: {0}"
    )]
    MissingPrivileges(String),
    #[error("{0} is not a cgroup v2 directory: kgate needs the unified cgroup hierarchy")]
    NotCgroup2(PathBuf),
    #[error("{0} is not a bpffs mount: mount one there (`mount -t bpf bpf {0}`)")]
    NotBpffs(PathBuf),
    #[error("cannot create the pin directory {0}: {1}")]
    PinDirFailed(PathBuf, #[source] io::Error),
    #[error("loading the kernel object failed: {0}")]
    LoadFailed(#[source] aya::EbpfError),
    #[error("program {0} is missing from the kernel object")]
    ProgramMissing(&'static str),
    #[error("program {0} failed to load or attach: {1}")]
    ProgramFailed(&'static str, #[source] ProgramError),
    #[error("program {0}: its link cannot be pinned: {1}")]
    LinkFailed(&'static str, #[source] aya::programs::links::LinkError),
    #[error("pinning {0} failed: {1}")]
    PinFailed(PathBuf, String),
    #[error("opening pinned {0} failed: {1}")]
    ReuseFailed(PathBuf, String),
    #[error("map {0}: {1}")]
    MapFailed(&'static str, #[source] MapError),
    #[error("removing pins under {0} failed: {1}")]
    DetachFailed(PathBuf, #[source] io::Error),
}

/// aya-log's reader, forwarding to the `log` facade (and so to tracing).
type Logger = EbpfLogger<&'static dyn log::Log>;

/// Where to attach and pin.
#[derive(Clone, Debug)]
pub(crate) struct AttachOptions {
    /// The cgroup v2 directory whose subtree is intercepted.
    pub cgroup: PathBuf,
    /// A bpffs mount.
    pub bpffs: PathBuf,
    /// Forward the kernel programs' debug logs (one per redirect) instead of warnings only.
    pub debug_logs: bool,
}

/// Attached, pinned kernel programs and their maps.
pub(crate) struct Enforcement {
    reused: bool,
    targets: HashMap<MapData, TargetKey, u32>,
    agent: Array<MapData, AgentAddr>,
    exempt: HashMap<MapData, u64, u8>,
    origins: OriginTable,
    counters: KernelCounters,
    logger: Option<Logger>,
    // Holds the program fds of a fresh load; the pins keep them alive without it.
    _ebpf: Option<Ebpf>,
}

/// The per-connection origins that the kernel publishes; cheap to clone and share.
#[derive(Clone)]
pub(crate) struct OriginTable {
    conns: Arc<Mutex<HashMap<MapData, ConnKey, Origin>>>,
}

/// What the connect programs did, summed over CPUs since they were attached.
#[derive(Clone)]
pub(crate) struct KernelCounters {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Counts {
    pub redirected: u64,
    pub refused: u64,
    pub exempt: u64,
}

/// What the kernel intercepts now, for `/status` and `/readyz`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Programmed {
    pub targets: Vec<SocketAddr>,
    /// Discovery has listed the Service and its slices and the map holds the result.
    pub synced: bool,
}

/// The SHA-256 of the kernel object this binary carries, in hex: what `kgate version`
/// prints, so that the programs two binaries (or images) would load can be compared.
pub(crate) fn object_sha256() -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, OBJECT);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// === attach ===

/// Attaches kgate to `opts.cgroup`, or re-uses the pinned attachment of a previous run.
pub(crate) fn attach(opts: &AttachOptions) -> Result<Enforcement, EbpfError> {
    check_privileges()?;
    check_fs(&opts.cgroup, CGROUP2_SUPER_MAGIC)
        .map_err(|()| EbpfError::NotCgroup2(opts.cgroup.clone()))?;
    check_fs(&opts.bpffs, BPF_FS_MAGIC).map_err(|()| EbpfError::NotBpffs(opts.bpffs.clone()))?;
    let pin_dir = opts.bpffs.join(PIN_DIR);

    if all_pins_exist(&pin_dir) {
        // This binary's programs take over the pinned links, so an upgrade needs no
        // detach: the attachment never goes away, and the maps carry over.
        match replace_in_place(opts, &pin_dir) {
            Ok(enforcement) => {
                info!(pins = %pin_dir.display(), "re-using pinned kernel programs (links kept, programs replaced in place): enforcement never lapsed");
                return Ok(enforcement);
            }
            Err(error) => {
                warn!(%error, "cannot replace the pinned programs in place; keeping them as they are");
            }
        }
        match reuse(&pin_dir) {
            Ok(enforcement) => {
                info!(pins = %pin_dir.display(), "re-using pinned kernel programs: enforcement never lapsed");
                return Ok(enforcement);
            }
            Err(error) => warn!(%error, "pinned state is unusable; attaching afresh"),
        }
    }
    // A partial set of pins (an interrupted attach, a manual rm) is not trusted: start over.
    if pin_dir.exists() {
        detach_pins(&pin_dir)?;
    }
    fs::create_dir_all(&pin_dir).map_err(|e| EbpfError::PinDirFailed(pin_dir.clone(), e))?;
    // Nothing may stay half-attached: on any error, remove whatever was pinned.
    load_and_attach(opts, &pin_dir).inspect_err(|_| {
        let _ = detach_pins(&pin_dir);
    })
}

/// Loads the object with its maps at their pins under `pin_dir` (created and pinned
/// there on a first load, opened on later ones).
fn load_object(opts: &AttachOptions, pin_dir: &Path) -> Result<(Ebpf, Option<Logger>), EbpfError> {
    // aya-log levels: 2 = warn, 4 = debug. The program skips formatting above this.
    let level: u8 = if opts.debug_logs { 4 } else { 2 };
    let mut loader = EbpfLoader::new();
    loader.override_global("AYA_LOG_LEVEL", &level, false);
    for name in MAPS {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    let mut ebpf = loader.load(OBJECT).map_err(EbpfError::LoadFailed)?;
    let logger = match EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(error) => {
            warn!(%error, "kernel program logs unavailable");
            None
        }
    };
    Ok((ebpf, logger))
}

/// Loads `name` into the kernel.
fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EbpfError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(EbpfError::ProgramMissing(name))?;
    let failed = |e| EbpfError::ProgramFailed(name, e);
    if name == "kgate_sockops" {
        let prog: &mut SockOps = program.try_into().map_err(failed)?;
        prog.load().map_err(failed)
    } else {
        let prog: &mut CgroupSockAddr = program.try_into().map_err(failed)?;
        prog.load().map_err(failed)
    }
}

/// Points every pinned link at this binary's program (`BPF_LINK_UPDATE`, atomic per
/// link) and re-pins the programs; the maps are the pinned ones.
fn replace_in_place(opts: &AttachOptions, pin_dir: &Path) -> Result<Enforcement, EbpfError> {
    let (mut ebpf, logger) = load_object(opts, pin_dir)?;
    for name in PROGRAMS {
        load_program(&mut ebpf, name)?;
        let program = ebpf
            .program_mut(name)
            .ok_or(EbpfError::ProgramMissing(name))?;
        let fd = program
            .fd()
            .map_err(|e| EbpfError::ProgramFailed(name, e))?;
        let link = pin_dir.join(format!("link_{name}"));
        raw::link_update(&link, fd.as_fd())
            .map_err(|e| EbpfError::ReuseFailed(link.clone(), format!("BPF_LINK_UPDATE: {e}")))?;
        let path = pin_dir.join(format!("prog_{name}"));
        // The old program's pin goes; the link already runs the new one.
        let _ = fs::remove_file(&path);
        program
            .pin(&path)
            .map_err(|e| EbpfError::PinFailed(path, e.to_string()))?;
    }
    let mut enforcement = open_maps(pin_dir)?;
    enforcement.reused = true;
    enforcement.logger = logger;
    enforcement._ebpf = Some(ebpf);
    Ok(enforcement)
}

fn load_and_attach(opts: &AttachOptions, pin_dir: &Path) -> Result<Enforcement, EbpfError> {
    let (mut ebpf, logger) = load_object(opts, pin_dir)?;

    let cgroup =
        fs::File::open(&opts.cgroup).map_err(|_| EbpfError::NotCgroup2(opts.cgroup.clone()))?;
    for name in PROGRAMS {
        let program = ebpf
            .program_mut(name)
            .ok_or(EbpfError::ProgramMissing(name))?;
        let failed = |e| EbpfError::ProgramFailed(name, e);
        let link: FdLink = if name == "kgate_sockops" {
            let prog: &mut SockOps = program.try_into().map_err(failed)?;
            prog.load().map_err(failed)?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(failed)?;
            prog.take_link(id)
                .map_err(failed)?
                .try_into()
                .map_err(|e| EbpfError::LinkFailed(name, e))?
        } else {
            let prog: &mut CgroupSockAddr = program.try_into().map_err(failed)?;
            prog.load().map_err(failed)?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(failed)?;
            prog.take_link(id)
                .map_err(failed)?
                .try_into()
                .map_err(|e| EbpfError::LinkFailed(name, e))?
        };
        let path = pin_dir.join(format!("link_{name}"));
        link.pin(&path)
            .map_err(|e| EbpfError::PinFailed(path, e.to_string()))?;
        let path = pin_dir.join(format!("prog_{name}"));
        program
            .pin(&path)
            .map_err(|e| EbpfError::PinFailed(path, e.to_string()))?;
    }
    // The maps were pinned as they were created (`load_object`).
    info!(cgroup = %opts.cgroup.display(), pins = %pin_dir.display(), "kernel programs attached and pinned");

    let mut enforcement = open_maps(pin_dir)?;
    enforcement.logger = logger;
    enforcement._ebpf = Some(ebpf);
    Ok(enforcement)
}

fn reuse(pin_dir: &Path) -> Result<Enforcement, EbpfError> {
    for name in PROGRAMS {
        let path = pin_dir.join(format!("link_{name}"));
        PinnedLink::from_pin(&path).map_err(|e| EbpfError::ReuseFailed(path, e.to_string()))?;
    }
    let mut enforcement = open_maps(pin_dir)?;
    enforcement.reused = true;
    // The log ring buffer belongs to the pinned programs; find it through one of them.
    let prog = pin_dir.join(format!("prog_{}", PROGRAMS[0]));
    enforcement.logger = aya::programs::ProgramInfo::from_pin(&prog)
        .ok()
        .and_then(|p| EbpfLogger::init_from_id(p.id()).ok());
    debug!(prog = %prog.display(), logs = enforcement.logger.is_some(), "re-attached to pinned programs");
    Ok(enforcement)
}

fn open_maps(pin_dir: &Path) -> Result<Enforcement, EbpfError> {
    let open = |name: &'static str| {
        let path = pin_dir.join(name);
        MapData::from_pin(&path).map_err(|e| EbpfError::ReuseFailed(path, e.to_string()))
    };
    let map_err = |name| move |e| EbpfError::MapFailed(name, e);
    Ok(Enforcement {
        reused: false,
        targets: HashMap::try_from(Map::HashMap(open(MAP_TARGETS)?))
            .map_err(map_err(MAP_TARGETS))?,
        agent: Array::try_from(Map::Array(open(MAP_AGENT)?)).map_err(map_err(MAP_AGENT))?,
        exempt: HashMap::try_from(Map::HashMap(open(MAP_EXEMPT)?)).map_err(map_err(MAP_EXEMPT))?,
        origins: OriginTable {
            conns: Arc::new(Mutex::new(
                HashMap::try_from(Map::LruHashMap(open(MAP_CONNS)?)).map_err(map_err(MAP_CONNS))?,
            )),
        },
        counters: KernelCounters {
            map: Arc::new(Mutex::new(
                PerCpuArray::try_from(Map::PerCpuArray(open(MAP_COUNTERS)?))
                    .map_err(map_err(MAP_COUNTERS))?,
            )),
        },
        logger: None,
        _ebpf: None,
    })
}

fn all_pins_exist(pin_dir: &Path) -> bool {
    PROGRAMS
        .iter()
        .all(|p| pin_dir.join(format!("link_{p}")).exists())
        && MAPS.iter().all(|m| pin_dir.join(m).exists())
}

// === detach ===

/// Removes kgate's pins under `bpffs`, which detaches the programs once no process holds
/// them (stop the agent first). Returns whether anything was attached.
pub(crate) fn detach(bpffs: &Path) -> Result<bool, EbpfError> {
    let pin_dir = bpffs.join(PIN_DIR);
    if !pin_dir.exists() {
        return Ok(false);
    }
    detach_pins(&pin_dir)?;
    Ok(true)
}

fn detach_pins(pin_dir: &Path) -> Result<(), EbpfError> {
    // Links first, so that no program runs against a half-removed set of maps.
    let entries = fs::read_dir(pin_dir).map_err(|e| EbpfError::DetachFailed(pin_dir.into(), e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for path in paths {
        // Removing the pin file drops the pin's reference; the link detaches when the
        // last reference (a running agent's fd) goes.
        fs::remove_file(&path).map_err(|e| EbpfError::DetachFailed(path.clone(), e))?;
    }
    fs::remove_dir(pin_dir).map_err(|e| EbpfError::DetachFailed(pin_dir.into(), e))?;
    if let Some(parent) = pin_dir.parent() {
        // The unversioned `kgate` directory goes too when no other layout version is left.
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

// === impl Enforcement ===

impl Enforcement {
    /// Whether this run found the programs already attached and pinned.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Sets the address the kernel rewrites intercepted connects to.
    pub(crate) fn set_redirect(&mut self, to: RedirectTo) -> Result<(), EbpfError> {
        let mut agent = AgentAddr {
            port: to.port,
            ..AgentAddr::default()
        };
        if let Some(v4) = to.ipv4 {
            agent.addr4 = addr_words(v4.into());
            agent.flags |= AGENT_HAS_V4;
        }
        if let Some(v6) = to.ipv6 {
            agent.addr6 = addr_words(v6.into());
            agent.flags |= AGENT_HAS_V6;
        }
        self.agent
            .set(0, agent, 0)
            .map_err(|e| EbpfError::MapFailed(MAP_AGENT, e))
    }

    /// Makes the targets map equal to `targets`: adds the new, removes the stale.
    pub(crate) fn sync_targets(
        &mut self,
        targets: &[(SocketAddr, TargetKind)],
    ) -> Result<(), EbpfError> {
        let wanted: HashSet<TargetKey> = targets.iter().map(|(a, _)| TargetKey::new(*a)).collect();
        for (addr, kind) in targets {
            self.targets
                .insert(TargetKey::new(*addr), *kind as u32, 0)
                .map_err(|e| EbpfError::MapFailed(MAP_TARGETS, e))?;
        }
        let stale: Vec<TargetKey> = self
            .targets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in &stale {
            self.targets
                .remove(key)
                .map_err(|e| EbpfError::MapFailed(MAP_TARGETS, e))?;
        }
        Ok(())
    }

    /// Exempts a cgroup (by id) from redirection.
    pub(crate) fn exempt(&mut self, cgroup_id: u64) -> Result<(), EbpfError> {
        self.exempt
            .insert(cgroup_id, 1, 0)
            .map_err(|e| EbpfError::MapFailed(MAP_EXEMPT, e))
    }

    pub(crate) fn origins(&self) -> OriginTable {
        self.origins.clone()
    }

    pub(crate) fn counters(&self) -> KernelCounters {
        self.counters.clone()
    }

    /// Forwards the kernel programs' log records to the agent's log until the runtime ends.
    pub(crate) fn spawn_log_forwarder(&mut self) {
        let Some(logger) = self.logger.take() else {
            return;
        };
        // Deprecated because an inner value might close its fd while registered; the logger
        // owns its ring buffer fd for as long as it lives, inside the AsyncFd.
        #[allow(deprecated)]
        let registered =
            tokio::io::unix::AsyncFd::with_interest(logger, tokio::io::Interest::READABLE);
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(error) => {
                warn!(%error, "cannot poll kernel program logs");
                return;
            }
        };
        tokio::spawn(async move {
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }
}

// === impl KernelCounters ===

impl KernelCounters {
    /// The counters now; a slot that cannot be read counts as zero (and is logged).
    pub(crate) fn read(&self) -> Counts {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = |index: u32| match map.get(&index, 0) {
            Ok(values) => values.iter().sum(),
            Err(error) => {
                debug!(%error, index, "kernel counter unreadable");
                0
            }
        };
        Counts {
            redirected: slot(COUNTER_REDIRECTED),
            refused: slot(COUNTER_REFUSED),
            exempt: slot(COUNTER_EXEMPT),
        }
    }
}

// === impl OriginTable ===

impl OriginTable {
    /// Takes the origin the kernel recorded for a connection accepted from `peer`.
    /// `None` means the connection was not redirected by kgate's programs.
    pub(crate) fn take(&self, peer: SocketAddr) -> Result<Option<Origin>, EbpfError> {
        let key = ConnKey::new(peer);
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match conns.get(&key, 0) {
            Ok(origin) => {
                // The entry is single-use; a failed removal is left to the LRU.
                let _ = conns.remove(&key);
                Ok(Some(origin))
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(EbpfError::MapFailed(MAP_CONNS, e)),
        }
    }
}

// === checks ===

fn check_fs(path: &Path, magic: i64) -> Result<(), ()> {
    match nix::sys::statfs::statfs(path) {
        Ok(stat) if stat.filesystem_type().0 == magic => Ok(()),
        _ => Err(()),
    }
}

/// Reads the effective capabilities from /proc/self/status.
fn check_privileges() -> Result<(), EbpfError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    match missing_capabilities(&status) {
        missing if missing.is_empty() => Ok(()),
        missing => Err(EbpfError::MissingPrivileges(missing.join(", "))),
    }
}

/// The capabilities kgate needs that a /proc/PID/status text lacks.
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 3] = [
        (39, "CAP_BPF"),
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
    ];
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

// The raw syscalls: what aya 0.14 does not expose for cgroup links.
#[allow(unsafe_code)]
mod raw;

#[cfg(test)]
mod tests {
    use super::missing_capabilities;

    #[test]
    fn capabilities_from_proc_status() {
        let root = "Name:\tkgate\nCapEff:\t000001ffffffffff\n";
        assert!(missing_capabilities(root).is_empty());
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing_capabilities(none),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        let no_bpf = "CapEff:\t0000000000201000\n"; // NET_ADMIN (12) and SYS_ADMIN (21)
        assert_eq!(missing_capabilities(no_bpf), ["CAP_BPF"]);
        assert_eq!(
            missing_capabilities("garbage"),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
    }
}
