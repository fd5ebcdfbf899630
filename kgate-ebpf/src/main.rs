//! kgate's kernel programs, attached to the pod cgroup subtree.
//!
//! - `connect4`/`connect6` rewrite a TCP connect to an API server address (the
//!   `TARGETS` map) into the node agent's listen address (`AGENT`) and record the
//!   connection's origin by socket cookie (`ORIGINS`).
//! - `getpeername4`/`getpeername6` give the client back the address it dialled.
//! - `sock_ops` publishes the origin, once the connection is established, under the
//!   client's address and port (`CONNS`): what the agent sees from accept().
//! - `COUNTERS` (per CPU) counts target connects redirected, refused and exempt, for
//!   the agent's metrics.
//!
//! What these programs do not do: decide policy, look at payloads, or exempt anyone by
//! UID or socket mark (a pod could claim either). Only cgroups in `EXEMPT`, written by
//! the agent for its own cgroup, bypass the redirect.
//!
//! Fail closed: a target connect with no agent address configured is refused (EPERM);
//! with an address but no agent listening, the client gets ECONNREFUSED.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        bpf_sock_addr,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::{debug, warn};
use kgate_common::{
    AGENT_HAS_V4, AGENT_HAS_V6, AgentAddr, COUNTER_EXEMPT, COUNTER_REDIRECTED, COUNTER_REFUSED,
    COUNTER_SLOTS, ConnKey, MAX_CONNS, MAX_EXEMPT, MAX_TARGETS, Origin, TargetKey, is_mapped_v4,
    mapped_v4,
};

/// Return values of cgroup sock_addr programs.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u32 = 6;
const TCP_CLOSE: u32 = 7;

#[map(name = "TARGETS_V1")]
static TARGETS: HashMap<TargetKey, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map(name = "AGENT_V1")]
static AGENT: Array<AgentAddr> = Array::with_max_entries(1, 0);

#[map(name = "EXEMPT_V1")]
static EXEMPT: HashMap<u64, u8> = HashMap::with_max_entries(MAX_EXEMPT, 0);

#[map(name = "ORIGINS_V1")]
static ORIGINS: LruHashMap<u64, Origin> = LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "CONNS_V1")]
static CONNS: LruHashMap<ConnKey, Origin> = LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "COUNTERS_V1")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
fn count(slot: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, touched only by this CPU with preemption off.
        unsafe { *counter += 1 };
    }
}

// === connect ===

#[cgroup_sock_addr(connect4)]
pub fn kgate_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let dst = mapped_v4(sa.user_ip4);
    let port = port_from_ctx(sa.user_port);
    let Some(agent) = intercepted(&dst, port) else {
        return ALLOW;
    };
    if agent.flags & AGENT_HAS_V4 == 0 {
        warn!(&ctx, "kgate: no IPv4 agent address; refusing connect to port {}", port);
        count(COUNTER_REFUSED);
        return REFUSE;
    }
    count(COUNTER_REDIRECTED);
    record(&ctx, dst, port, AF_INET);
    sa.user_ip4 = agent.addr4[3];
    sa.user_port = port_to_ctx(agent.port);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn kgate_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in connect4.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let dst = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let port = port_from_ctx(sa.user_port);
    let Some(agent) = intercepted(&dst, port) else {
        return ALLOW;
    };
    // An IPv4-mapped destination on an AF_INET6 socket becomes an IPv4 connection,
    // and only this hook sees it: it must go to the agent's IPv4 address, mapped.
    let to = if is_mapped_v4(&dst) {
        if agent.flags & AGENT_HAS_V4 == 0 {
            warn!(&ctx, "kgate: no IPv4 agent address; refusing connect to port {}", port);
            count(COUNTER_REFUSED);
            return REFUSE;
        }
        agent.addr4
    } else {
        if agent.flags & AGENT_HAS_V6 == 0 {
            warn!(&ctx, "kgate: no IPv6 agent address; refusing connect to port {}", port);
            count(COUNTER_REFUSED);
            return REFUSE;
        }
        agent.addr6
    };
    count(COUNTER_REDIRECTED);
    record(&ctx, dst, port, AF_INET6);
    set_ip6(sa, &to);
    sa.user_port = port_to_ctx(agent.port);
    ALLOW
}

/// The agent address to redirect to, when `dst:port` is a target and the caller's
/// cgroup is not exempt. A missing agent entry reads as all zeroes (flags 0): refused.
#[inline(always)]
fn intercepted(dst: &[u32; 4], port: u16) -> Option<AgentAddr> {
    let key = TargetKey { addr: *dst, port, _pad: 0 };
    TARGETS.get_ptr(&key)?;
    // SAFETY: a helper call without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if EXEMPT.get_ptr(&cgroup_id).is_some() {
        count(COUNTER_EXEMPT);
        return None;
    }
    Some(AGENT.get(0).copied().unwrap_or_default())
}

#[inline(always)]
fn record(ctx: &SockAddrContext, dst: [u32; 4], port: u16, family: u16) {
    // SAFETY: helper calls on the program's own context.
    let (socket_cookie, netns_cookie, cgroup_id) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
            bpf_get_current_cgroup_id(),
        )
    };
    let origin = Origin {
        cgroup_id,
        netns_cookie,
        socket_cookie,
        pid_tgid: bpf_get_current_pid_tgid(),
        dst_addr: dst,
        dst_port: port,
        family,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if ORIGINS.insert(&socket_cookie, &origin, 0).is_err() {
        // The agent refuses a connection it finds no origin for; say why here.
        warn!(ctx, "kgate: origin map insert failed (cookie {})", socket_cookie);
    }
    debug!(ctx, "kgate: redirect pid {} port {}", origin.pid_tgid >> 32, port);
}

// === getpeername ===

#[cgroup_sock_addr(getpeername4)]
pub fn kgate_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(origin) = origin_of(&ctx) {
        // SAFETY: as in connect4.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip4 = origin.dst_addr[3];
        sa.user_port = port_to_ctx(origin.dst_port);
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn kgate_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(origin) = origin_of(&ctx) {
        // SAFETY: as in connect4.
        let sa = unsafe { &mut *ctx.sock_addr };
        set_ip6(sa, &origin.dst_addr);
        sa.user_port = port_to_ctx(origin.dst_port);
    }
    ALLOW
}

#[inline(always)]
fn origin_of(ctx: &SockAddrContext) -> Option<Origin> {
    // SAFETY: helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a
    // stale origin for a socket that is being closed.
    unsafe { ORIGINS.get(&cookie).copied() }
}

// === sock_ops ===

#[sock_ops]
pub fn kgate_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => publish(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            // SAFETY: helper call on the program's own context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            let _ = ORIGINS.remove(&cookie);
        }
        _ => {}
    }
    1
}

/// Copy a redirected socket's origin to `CONNS` under the client's own address and
/// port, which is the peer address the agent's accept() returns.
#[inline(always)]
fn publish(ctx: &SockOpsContext) {
    // SAFETY: helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once, see origin_of.
    let Some(origin) = (unsafe { ORIGINS.get(&cookie).copied() }) else {
        return;
    };
    let addr = if ctx.family() == u32::from(AF_INET) {
        mapped_v4(ctx.local_ip4())
    } else {
        local_ip6(ctx)
    };
    #[allow(clippy::cast_possible_truncation)] // local_port is a host-order port
    let key = ConnKey { addr, port: ctx.local_port() as u16, _pad: 0 };
    if CONNS.insert(&key, &origin, 0).is_err() {
        warn!(ctx, "kgate: conns map insert failed (cookie {})", cookie);
    }
    // Ask for state callbacks so the socket-cookie entry goes when the socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

// === helpers ===

/// The verifier refuses loads through a pointer derived from the context (which a copy of
/// the whole array compiles to): one volatile load per word at a constant offset.
#[inline(always)]
fn local_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    let ops = ctx.ops;
    // SAFETY: the kernel hands a valid bpf_sock_ops; each read is of a u32 field.
    unsafe {
        [
            core::ptr::read_volatile(&raw const (*ops).local_ip6[0]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[1]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[2]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[3]),
        ]
    }
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port_from_ctx(user_port: u32) -> u16 {
    #[allow(clippy::cast_possible_truncation)]
    u16::from_be(user_port as u16)
}

#[inline(always)]
fn port_to_ctx(port: u16) -> u32 {
    u32::from(port.to_be())
}

/// Constant indices only: the verifier rejects variable offsets into the context.
#[inline(always)]
fn set_ip6(sa: &mut bpf_sock_addr, addr: &[u32; 4]) {
    sa.user_ip6[0] = addr[0];
    sa.user_ip6[1] = addr[1];
    sa.user_ip6[2] = addr[2];
    sa.user_ip6[3] = addr[3];
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
