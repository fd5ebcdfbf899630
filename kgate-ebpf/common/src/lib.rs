//! The `#[repr(C)]` types and names that kgate's kernel programs and its agent share.
//!
//! Every address is stored as sixteen bytes in network order: IPv4 addresses are
//! IPv4-mapped (`::ffff:a.b.c.d`), so one map serves both families and a connect6 of a
//! mapped address finds the same entry as a connect4. Addresses are held as `[u32; 4]`
//! because that is how `bpf_sock_addr.user_ip6` presents them: the bytes in memory are
//! the address bytes, whatever the host's endianness. Ports are in host order.
//!
//! This crate holds no logic beyond conversions; what a field means for policy is the
//! agent's business.
#![no_std]

/// Version of the map layouts below. It is part of every pin path and map name, because
/// pinned maps are reopened without any layout check: a layout change must get new names.
pub const LAYOUT_VERSION: u32 = 1;

/// Directory under the bpffs mount that holds kgate's pins, versioned with the layout.
pub const PIN_DIR: &str = "kgate/v1";

/// API server addresses to intercept: [`TargetKey`] → [`TargetKind`] as `u32`.
pub const MAP_TARGETS: &str = "TARGETS_V1";
/// Where intercepted connections go: a one-entry array of [`AgentAddr`].
pub const MAP_AGENT: &str = "AGENT_V1";
/// cgroup ids whose connections are never redirected (the agent's own): `u64` → `u8`.
pub const MAP_EXEMPT: &str = "EXEMPT_V1";
/// Origin of each redirected socket, by the client socket's cookie: `u64` → [`Origin`].
pub const MAP_ORIGINS: &str = "ORIGINS_V1";
/// Origin of each established redirected connection, by the client's address as the
/// agent sees it after accept(): [`ConnKey`] → [`Origin`].
pub const MAP_CONNS: &str = "CONNS_V1";

/// Per-CPU counters of what the connect programs did: `u32` slot → `u64`.
pub const MAP_COUNTERS: &str = "COUNTERS_V1";
/// A target connect rewritten to the agent.
pub const COUNTER_REDIRECTED: u32 = 0;
/// A target connect refused: no agent address for its family (fail closed).
pub const COUNTER_REFUSED: u32 = 1;
/// A target connect from an exempt cgroup, left alone.
pub const COUNTER_EXEMPT: u32 = 2;
/// Slots in [`MAP_COUNTERS`].
pub const COUNTER_SLOTS: u32 = 3;

/// Capacity of the per-connection LRU maps. An evicted entry only means the agent refuses
/// that connection (fail closed), so the bound trades memory against burst size.
pub const MAX_CONNS: u32 = 65_536;
/// Capacity of the targets map: ClusterIPs, every apiserver endpoint, extra addresses.
pub const MAX_TARGETS: u32 = 1024;
/// Capacity of the exempt-cgroup map.
pub const MAX_EXEMPT: u32 = 256;

/// `AgentAddr::flags`: the IPv4 redirect address is set.
pub const AGENT_HAS_V4: u16 = 1;
/// `AgentAddr::flags`: the IPv6 redirect address is set.
pub const AGENT_HAS_V6: u16 = 2;

/// An API server address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: u16,
}

/// Why an address is a target; recorded so the agent can say what the client dialled.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    ServiceIp = 1,
    Endpoint = 2,
    Extra = 3,
}

/// The agent's listen address, as the kernel rewrites destinations to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentAddr {
    pub addr4: [u32; 4],
    pub addr6: [u32; 4],
    pub port: u16,
    pub flags: u16,
    pub _pad: u32,
}

/// Where a redirected connection really came from and where it meant to go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// cgroup v2 id (the cgroup directory's inode) of the connecting task.
    pub cgroup_id: u64,
    /// Network namespace cookie of the client socket.
    pub netns_cookie: u64,
    /// Socket cookie of the client socket.
    pub socket_cookie: u64,
    /// `tgid << 32 | pid` of the connecting task.
    pub pid_tgid: u64,
    /// The destination the client asked for.
    pub dst_addr: [u32; 4],
    pub dst_port: u16,
    /// Address family of the client socket (`AF_INET` or `AF_INET6`).
    pub family: u16,
    pub _pad: u32,
    /// `comm` of the connecting task, NUL-padded.
    pub comm: [u8; 16],
}

/// A client endpoint as the agent sees it from accept(): peer address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: u16,
}

/// The IPv4-mapped form of an IPv4 address given as its `u32` in memory (network order).
#[inline(always)]
pub const fn mapped_v4(addr: u32) -> [u32; 4] {
    // ::ffff:0:0/96 — the third word is 00 00 ff ff in memory.
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr]
}

/// Whether sixteen address bytes are an IPv4-mapped IPv6 address.
#[inline(always)]
pub const fn is_mapped_v4(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[cfg(feature = "user")]
mod user {
    use super::{AgentAddr, ConnKey, Origin, TargetKey};
    use core::net::{IpAddr, Ipv6Addr, SocketAddr};

    // SAFETY: every type is #[repr(C)], Copy, made only of integers and arrays, with the
    // padding spelled out as fields, so any bit pattern is valid and none is uninitialised.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for TargetKey {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for AgentAddr {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for Origin {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for ConnKey {}

    /// Sixteen bytes in network order, IPv4 mapped into IPv6.
    pub fn addr_words(ip: IpAddr) -> [u32; 4] {
        let octets = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut words = [0u32; 4];
        for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
            *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        words
    }

    /// The address back from its words; IPv4-mapped addresses come back as IPv4.
    pub fn words_addr(words: [u32; 4]) -> IpAddr {
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Ipv6Addr::from(octets).to_canonical()
    }

    impl TargetKey {
        pub fn new(addr: SocketAddr) -> Self {
            Self {
                addr: addr_words(addr.ip()),
                port: addr.port(),
                _pad: 0,
            }
        }
    }

    impl ConnKey {
        pub fn new(peer: SocketAddr) -> Self {
            Self {
                addr: addr_words(peer.ip()),
                port: peer.port(),
                _pad: 0,
            }
        }
    }

    impl Origin {
        pub fn destination(&self) -> SocketAddr {
            SocketAddr::new(words_addr(self.dst_addr), self.dst_port)
        }

        pub fn pid(&self) -> u32 {
            (self.pid_tgid >> 32) as u32
        }

        pub fn comm(&self) -> &str {
            let end = self
                .comm
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.comm.len());
            core::str::from_utf8(&self.comm[..end]).unwrap_or("?")
        }
    }
}

#[cfg(feature = "user")]
pub use user::{addr_words, words_addr};
