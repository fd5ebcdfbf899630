//! `kgate agent`: reads and checks the config, then runs the node agent on a
//! current-thread runtime (the control plane; client connections are served by the
//! worker threads' own runtimes). `kgate detach`: removes the kernel programs' pins.
//!
//! Not here: the agent itself ([`crate::agent`]) or the pins ([`crate::ebpf`]).

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Context as _;

use crate::{agent, config::Config, ebpf};

// No doc comments on these types: clap would read them as help text.
#[derive(clap::Args)]
pub(super) struct Args {
    /// The agent's config file (YAML).
    #[arg(long, short, env = "KGATE_CONFIG")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Overrides `redirect.ipv4`: the node address pods reach the agent on (a
    /// DaemonSet passes its `status.hostIP`).
    #[arg(long, env = "KGATE_REDIRECT_IPV4")]
    redirect_ipv4: Option<Ipv4Addr>,
    /// Overrides `identity.nodeName`: this node's name (a DaemonSet passes
    /// `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
}

#[derive(clap::Args)]
pub(super) struct DetachArgs {
    /// The bpffs mount holding kgate's pins.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
}

/// `kgate agent`: runs until the agent stops; with `--check`, only validates.
pub(super) fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        check,
        redirect_ipv4,
        node_name,
    } = args;
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let parsed = Config::parse_with(&text, |c| {
        if let Some(ip) = redirect_ipv4 {
            c.redirect.ipv4 = Some(ip);
        }
        if let Some(node) = node_name {
            c.identity.node_name = Some(node);
        }
    })
    .with_context(|| format!("in {}", config.display()))?;
    if check {
        // The authenticators' file too: what the agent would read at start.
        parsed
            .identity
            .authenticators()
            .with_context(|| format!("in {}", config.display()))?;
        println!("{}: ok", config.display());
        return Ok(());
    }
    let debug_logs = tracing::enabled!(tracing::Level::DEBUG);
    // The control plane (watches, admin, heartbeats); client connections are
    // served by the worker threads' own runtimes (`proxy::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(agent::run(parsed, debug_logs))?;
    Ok(())
}

/// `kgate detach`: says whether there was anything to remove.
pub(super) fn detach(args: &DetachArgs) -> anyhow::Result<()> {
    let bpffs = &args.bpffs;
    if ebpf::detach(bpffs)? {
        println!("kgate detached: pins under {} removed", bpffs.display());
    } else {
        println!("kgate was not attached (no pins under {})", bpffs.display());
    }
    Ok(())
}
