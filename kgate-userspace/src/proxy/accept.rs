//! The **accept** stage: binds a TCP connection to the kernel's record of where it came
//! from. A connection with no record did not come through kgate's redirect (a host
//! process, or a pod dialling the agent directly) and is refused before any byte is
//! read from it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use kgate_common::Origin;

use crate::{cgroup, ebpf::OriginTable};

/// What the kernel says about a connection.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address as the agent sees it.
    pub peer: SocketAddr,
    pub origin: Origin,
    /// The client's cgroup, relative to the cgroup2 mount (as /proc/PID/cgroup shows
    /// it), when it still exists.
    pub cgroup: Option<String>,
}

/// Names cgroups by id, walking the cgroup tree once per new id.
pub struct CgroupNames {
    root: PathBuf,
    names: Mutex<HashMap<u64, Option<String>>>,
}

impl CgroupNames {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            names: Mutex::default(),
        }
    }

    fn name(&self, id: u64) -> Option<String> {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names
            .entry(id)
            .or_insert_with(|| {
                cgroup::find_cgroup_by_id(&self.root, id).map(|p| relative(&self.root, &p))
            })
            .clone()
    }
}

/// The origin of the connection from `peer`, or why it is refused.
pub fn accept(
    origins: &OriginTable,
    names: &CgroupNames,
    peer: SocketAddr,
) -> Result<Connection, &'static str> {
    let origin = match origins.take(peer) {
        Ok(Some(origin)) => origin,
        Ok(None) => {
            return Err("no origin record: the connection did not come through kgate's redirect");
        }
        Err(error) => {
            tracing::warn!(%error, "origin lookup failed");
            return Err("origin lookup failed");
        }
    };
    Ok(Connection {
        peer,
        origin,
        cgroup: names.name(origin.cgroup_id),
    })
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).map_or_else(
        |_| path.display().to_string(),
        |rel| format!("/{}", rel.display()),
    )
}
