//! `kgate agent`: attaches the kernel programs, then serves the connections they redirect.
//!
//! Start-up order matters for fail-closed enforcement: the agent exempts its own cgroup
//! before anything else, so its upstream connections never loop back to itself, and it
//! sets the redirect address before the targets, so no target is ever live without
//! somewhere to go.
//!
//! Per connection: **accept** (look up the kernel's origin record; a connection without
//! one did not come through kgate's redirect and is refused) → relay to the upstream.
//! The L7 stages (tls, identify, authorize, approve, forward, mask, record) replace the
//! relay in the proxy module.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use kgate_common::{Origin, TargetKind};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    cgroup::{self, CgroupError},
    config::{CgroupSetting, Config},
    ebpf::{self, AttachOptions, EbpfError, OriginTable},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("cannot find the agent's own cgroup: {0}")]
    OwnCgroupFailed(#[source] io::Error),
    #[error("exempt cgroup {0}: {1}")]
    ExemptCgroupFailed(PathBuf, #[source] io::Error),
    #[error("cannot listen on {0}: {1}")]
    ListenFailed(SocketAddr, #[source] io::Error),
}

/// Runs the agent until SIGINT or SIGTERM. The kernel programs stay attached on exit.
pub async fn run(config: Config, debug_logs: bool) -> Result<(), AgentError> {
    let mount = cgroup::cgroup2_mount()?;
    let attach_to = match &config.cgroup {
        CgroupSetting::Auto => cgroup::kubepods_cgroup(&mount)?,
        CgroupSetting::Path(path) => path.clone(),
    };
    let mut enforcement = ebpf::attach(&AttachOptions {
        cgroup: attach_to.clone(),
        bpffs: config.bpffs.clone(),
        debug_logs,
    })?;
    enforcement.spawn_log_forwarder();

    let own = cgroup::cgroup_path_for_pid(std::process::id())
        .map(|rel| join_cgroup(&mount, rel.as_ref()))
        .map_err(AgentError::OwnCgroupFailed)?;
    for dir in std::iter::once(&own).chain(&config.exempt_cgroups) {
        let id =
            cgroup::cgroup_id(dir).map_err(|e| AgentError::ExemptCgroupFailed(dir.clone(), e))?;
        enforcement.exempt(id)?;
        info!(cgroup = %dir.display(), id, "exempt from redirection");
    }
    let redirect = config.redirect_to();
    enforcement.set_redirect(redirect)?;
    let targets: Vec<_> = config
        .targets
        .iter()
        .map(|t| (*t, TargetKind::Extra))
        .collect();
    enforcement.sync_targets(&targets)?;
    info!(
        cgroup = %attach_to.display(),
        reused = enforcement.reused(),
        ipv4 = ?redirect.ipv4, ipv6 = ?redirect.ipv6, port = redirect.port,
        targets = ?config.targets,
        "enforcing"
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::ListenFailed(config.listen, e))?;
    info!(listen = %config.listen, upstream = %config.upstream.address, "agent listening");

    let ctx = Arc::new(ConnContext {
        origins: enforcement.origins(),
        upstream: config.upstream.address.clone(),
        cgroup_root: mount,
        cgroup_names: Mutex::default(),
    });
    let serve = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(
                        serve_connection(ctx, stream, peer).instrument(info_span!("conn", %peer)),
                    );
                }
                // Running out of fds must not kill the agent: log and keep accepting.
                Err(error) => warn!(%error, "accept failed"),
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown_signal() => info!("shutting down; kernel programs stay attached (fail closed)"),
    }
    drop(enforcement);
    Ok(())
}

/// What every connection task shares.
struct ConnContext {
    origins: OriginTable,
    upstream: String,
    cgroup_root: PathBuf,
    /// cgroup id → path, so the tree is walked once per cgroup, not per connection.
    cgroup_names: Mutex<HashMap<u64, Option<PathBuf>>>,
}

impl ConnContext {
    fn cgroup_name(&self, id: u64) -> Option<PathBuf> {
        let mut names = self
            .cgroup_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names
            .entry(id)
            .or_insert_with(|| cgroup::find_cgroup_by_id(&self.cgroup_root, id))
            .clone()
    }
}

async fn serve_connection(ctx: Arc<ConnContext>, client: TcpStream, peer: SocketAddr) {
    let origin = match accept(&ctx, peer) {
        Ok(origin) => origin,
        Err(reason) => {
            warn!(reason, "connection refused");
            return;
        }
    };
    let mut upstream = match TcpStream::connect(&ctx.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            warn!(%error, upstream = %ctx.upstream, "upstream connect failed");
            return;
        }
    };
    let mut client = client;
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(up, down, pid = origin.pid(), "connection closed"),
        Err(error) => debug!(%error, "connection ended with an error"),
    }
}

/// The **accept** stage: the kernel's origin record for this connection, or a refusal.
fn accept(ctx: &ConnContext, peer: SocketAddr) -> Result<Origin, &'static str> {
    let origin = match ctx.origins.take(peer) {
        Ok(Some(origin)) => origin,
        Ok(None) => {
            return Err("no origin record: the connection did not come through kgate's redirect");
        }
        Err(error) => {
            warn!(%error, "origin lookup failed");
            return Err("origin lookup failed");
        }
    };
    let cgroup = ctx.cgroup_name(origin.cgroup_id);
    info!(
        dst = %origin.destination(),
        pid = origin.pid(),
        comm = origin.comm(),
        cgroup_id = origin.cgroup_id,
        cgroup = %cgroup.as_deref().map_or_else(|| "?".into(), |p| display_cgroup(&ctx.cgroup_root, p)),
        netns_cookie = origin.netns_cookie,
        "accepted redirected connection"
    );
    Ok(origin)
}

/// A cgroup path relative to the cgroup2 mount, as /proc/PID/cgroup shows it.
fn display_cgroup(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).map_or_else(
        |_| path.display().to_string(),
        |rel| format!("/{}", rel.display()),
    )
}

fn join_cgroup(mount: &Path, rel: &str) -> PathBuf {
    mount.join(rel.trim_start_matches('/'))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
