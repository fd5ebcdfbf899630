//! `kgate cert issue`: the agent's serving certificate, signed by the cluster CA,
//! written as files or printed as a `kubernetes.io/tls` Secret manifest.
//!
//! Not here: the certificate's contents ([`crate::cert`]).

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum CertCommand {
    /// Issue the agent's serving certificate from the cluster CA: files, or a Secret.
    Issue {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        /// The `kubernetes` Service's ClusterIP (repeat for IPv4 and IPv6).
        #[arg(long = "cluster-ip", required = true)]
        cluster_ips: Vec<IpAddr>,
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
        /// Extra DNS names (node names, a load balancer).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Extra IP addresses (node IPs).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Write tls.crt and tls.key here.
        #[arg(long, conflicts_with = "secret")]
        out_dir: Option<PathBuf>,
        /// Print a kubernetes.io/tls Secret manifest with this name instead.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, default_value = "kgate-system")]
        namespace: String,
    },
}

pub(super) fn run(command: CertCommand) -> anyhow::Result<()> {
    let CertCommand::Issue {
        ca_cert,
        ca_key,
        cluster_ips,
        cluster_domain,
        dns,
        ips,
        days,
        out_dir,
        secret,
        namespace,
    } = command;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let names = crate::cert::Names {
        cluster_domain,
        cluster_ips,
        dns,
        ips,
        days,
    };
    let (cert, key) = crate::cert::issue(&read(&ca_cert)?, &read(&ca_key)?, &names)?;
    match (out_dir, secret) {
        (Some(dir), _) => {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("tls.crt"), cert)?;
            std::fs::write(dir.join("tls.key"), key)?;
            println!("wrote {0}/tls.crt and {0}/tls.key", dir.display());
        }
        (None, Some(name)) => {
            print!(
                "{}",
                crate::cert::secret_manifest(&name, &namespace, &cert, &key)
            );
        }
        (None, None) => {
            anyhow::bail!("say where the certificate goes: --out-dir DIR or --secret NAME")
        }
    }
    Ok(())
}
