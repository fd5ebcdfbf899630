//! The **accept** stage: binds a TCP connection to the kernel's record of where it came
//! from. A connection with no record did not come through kgate's redirect (a host
//! process, or a pod dialling the agent directly) and is refused before any byte is
//! read from it, unless the config allows direct clients.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{cgroup, config::DirectClients, connection::Connection, ebpf::OriginTable};

/// Names cgroups by id, walking the cgroup tree once per new id.
pub(crate) struct CgroupNames {
    root: Option<PathBuf>,
    names: Mutex<HashMap<u64, Option<String>>>,
}

impl CgroupNames {
    /// `root` is the cgroup2 mount; without one, no cgroup is named.
    pub(crate) fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            names: Mutex::default(),
        }
    }

    fn name(&self, id: u64) -> Option<String> {
        let root = self.root.as_deref()?;
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names
            .entry(id)
            .or_insert_with(|| cgroup::find_cgroup_by_id(root, id).map(|p| relative(root, &p)))
            .clone()
    }
}

/// The origin of the connection from `peer`, or why it is refused. `origins` is `None`
/// when the kernel programs are not attached (standalone mode).
pub(crate) fn accept(
    origins: Option<&OriginTable>,
    direct: DirectClients,
    names: &CgroupNames,
    peer: SocketAddr,
) -> Result<Connection, &'static str> {
    let origin = match origins.map(|o| o.take(peer)).transpose() {
        Ok(origin) => origin.flatten(),
        Err(error) => {
            // Fail closed: without the lookup there is no telling who this is.
            tracing::warn!(%error, "origin lookup failed");
            return Err("origin lookup failed");
        }
    };
    match (origin, direct) {
        (Some(origin), _) => Ok(Connection {
            peer,
            origin: Some(origin),
            cgroup: names.name(origin.cgroup_id),
            exe: executable(origin.pid()),
        }),
        (None, DirectClients::Allow) => Ok(Connection {
            peer,
            origin: None,
            cgroup: None,
            exe: None,
        }),
        (None, DirectClients::Refuse) => {
            Err("no origin record: the connection did not come through kgate's redirect")
        }
    }
}

/// The executable of the process the kernel names by `pid`, a PID of the node's
/// (initial) PID namespace. Read only where /proc shows that namespace: in a container
/// of its own PID namespace (a DaemonSet without `hostPID`) the same number is another
/// process, or none, and a wrong name is worse than no name.
fn executable(pid: u32) -> Option<String> {
    static NODE_PIDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let node_pids = *NODE_PIDS.get_or_init(|| {
        let ns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
        let node_pids = is_initial_pid_namespace(&ns.to_string_lossy());
        if !node_pids {
            tracing::warn!(
                "not in the node's PID namespace (run the agent with hostPID): clients' executables are not recorded"
            );
        }
        node_pids
    });
    node_pids
        .then(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .flatten()
        .map(|p| p.display().to_string())
}

/// Whether a `/proc/self/ns/pid` link names the initial PID namespace, whose inode
/// the kernel fixes (`PROC_PID_INIT_INO`, 0xEFFFFFFC).
fn is_initial_pid_namespace(link: &str) -> bool {
    link == "pid:[4026531836]"
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).map_or_else(
        |_| path.display().to_string(),
        |rel| format!("/{}", rel.display()),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_initial_pid_namespace() {
        for (link, initial) in [
            ("pid:[4026531836]", true),
            ("pid:[4026532291]", false),
            ("", false),
            ("net:[4026531836]", false),
        ] {
            assert_eq!(super::is_initial_pid_namespace(link), initial, "{link}");
        }
    }
}
