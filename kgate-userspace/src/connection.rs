//! The connection a request came over, as the kernel and the agent saw it: the peer
//! address, the kernel's origin record (pod cgroup, process, original destination),
//! the cgroup's path and the process's executable.
//!
//! Plain data, below every module that reads it (identity binds tokens to it, policy
//! matches its process, records name it). Not here: finding the origin (the accept
//! stage, `proxy::accept`, through `ebpf::OriginTable`).

use std::net::SocketAddr;

use kgate_common::Origin;

/// What the kernel says about a connection.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// The client's address as the agent sees it.
    pub peer: SocketAddr,
    /// `None` for a direct client (no redirect), accepted only with
    /// `directClients: allow`.
    pub origin: Option<Origin>,
    /// The client's cgroup, relative to the cgroup2 mount (as /proc/PID/cgroup shows
    /// it), when it still exists.
    pub cgroup: Option<String>,
    /// The connecting process's executable, when it can still be read.
    pub exe: Option<String>,
}
