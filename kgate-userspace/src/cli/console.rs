//! `kgate console [--listen 127.0.0.1:8080] [--dir PATH] [--tls-cert F --tls-key F]`:
//! starts the web console ([`crate::console`]) and prints its URL. Its sessions are
//! every node's (through the API server) or, with `--dir`, one record log's.
//!
//! Not here: the console itself.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use crate::{
    cluster_sessions::Options,
    console::{
        self, Settings,
        source::{LocalDir, SessionSource, cluster::ClusterSessions},
    },
};

#[derive(clap::Args)]
pub(super) struct Args {
    /// Where to listen. A non-loopback address needs --tls-cert and --tls-key, and
    /// each viewer then signs in with their own bearer token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A record log directory whose sessions to show (`record.dir`, an offline copy);
    /// without it, every node's agent is asked through the API server, as `kgate
    /// sessions list` does.
    #[arg(long, env = "KGATE_RECORD_DIR")]
    dir: Option<PathBuf>,
    /// A bearer token file the agents are asked with, instead of the kubeconfig's
    /// (for a kubeconfig with client certificates; not with --sign-in, where each
    /// viewer's own token is used).
    #[arg(long, conflicts_with = "dir")]
    token_file: Option<PathBuf>,
    /// Trust agents whose certificate chains to this CA, instead of the fingerprint
    /// their heartbeat Lease names.
    #[arg(long, conflicts_with = "dir")]
    ca_file: Option<PathBuf>,
    /// The serving certificate (PEM chain), for a non-loopback --listen.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Each viewer signs in with their own bearer token, even on loopback (a shared
    /// machine); implied by a non-loopback --listen.
    #[arg(long)]
    sign_in: bool,
    /// Namespace of the agents' heartbeat Leases (the DaemonSet's).
    #[arg(long, short = 'n', default_value = "kgate-system")]
    namespace: String,
    /// The node name the sessions of --dir are shown under.
    #[arg(long, default_value = "local", requires = "dir")]
    node: String,
}

pub(super) fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        listen,
        dir,
        tls_cert,
        tls_key,
        namespace,
        node,
        sign_in,
        token_file,
        ca_file,
    } = args;
    let sessions: Arc<dyn SessionSource> = match dir {
        Some(dir) => {
            let dir = Arc::new(LocalDir::new(dir, node));
            let warming = dir.clone();
            std::thread::spawn(move || warming.warm());
            dir
        }
        None => Arc::new(ClusterSessions::new(Options {
            namespace: namespace.clone(),
            token_file,
            ca_file,
            node: None,
        })),
    };
    let settings = Settings {
        listen,
        tls: tls_cert.zip(tls_key),
        sign_in,
        namespace,
        sessions,
    };
    super::runtime()?.block_on(console::serve(settings, |_, url| {
        // On stdout, for whoever started it (a script, a test) to open.
        println!("kgate console: {url}");
    }))?;
    Ok(())
}
