//! The `kgate` command line: the subcommands' clap types and the dispatch to the code
//! that serves each, one file per command group (`agent` and `detach`, `status`,
//! `check`, `approvals`, `cert`, `kubeconfig`, `policy`, `sessions`, `console`,
//! `bench`). A command here parses its arguments, calls into the module that does the
//! work, and prints what it returns; its errors are `anyhow` chains that `main` prints
//! after `kgate: ` and turns into exit code 1.
//!
//! Not here: what the commands do. The agent is [`crate::agent`], policy evaluation
//! [`crate::policy`], the record log [`crate::record`], approvals [`crate::approval`].

mod agent;
mod approvals;
mod bench;
mod cert;
mod check;
mod console;
mod kubeconfig;
mod policy;
// The record log's tests check the tables it prints.
pub(crate) mod sessions;
// The console serves the status rows.
mod status;
mod table;
mod version;

// Cluster-wide `kgate sessions` finds the agents by their Leases as `kgate status` does.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// `kgate`'s arguments: the global options and one subcommand.
#[derive(Parser)]
#[command(
    name = "kgate",
    version,
    about = "Policy gateway between Kubernetes workloads and the API server"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// The variants' doc comments are the subcommands' help texts.
#[derive(Subcommand)]
enum Command {
    /// Run the node agent: attach the kernel programs and serve redirected connections.
    Agent(agent::Args),
    /// Every node's agent, one row per node; exits 1 if any is down or not enforcing.
    /// By default from the agents' heartbeat Leases, with the admin's kubeconfig
    /// (KUBECONFIG or ~/.kube/config); with `--agent`, asking admin endpoints directly.
    Status(status::Args),
    /// Every requirement, item by item (ok / warn / fail, with a hint); exits 1 on any
    /// fail. With `--pre`, what the cluster must offer before kgate is installed.
    /// With the admin's kubeconfig (KUBECONFIG or ~/.kube/config).
    Check(check::Args),
    /// List held requests.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Approve a held request (kubeconfig: KUBECONFIG or ~/.kube/config).
    Approve(approvals::ApproveArgs),
    /// Deny a held request.
    Deny(approvals::DenyArgs),
    /// Serving certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Check and explain policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Print a kubeconfig for a user or CI job that points at the kgate gateway, with
    /// an OIDC token from kubelogin (`kubectl oidc-login`), a token file, or another
    /// exec credential plugin.
    Kubeconfig(kubeconfig::Args),
    /// Recorded sessions (one client connection's requests by one user).
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// A local web console: nodes, approvals (live; approve and deny as you), and
    /// recorded sessions with their exec/attach streams. Loopback only unless given
    /// TLS; with the admin's kubeconfig (KUBECONFIG or ~/.kube/config).
    Console(console::Args),
    /// Print the CustomResourceDefinitions (KgatePolicy, KgateApproval) as YAML.
    Crds,
    /// Benchmark kgate in front of your API server: direct vs nginx vs kgate.
    ///
    /// The same GET direct, through nginx (when installed) and through kgate (this
    /// binary as a standalone agent on loopback, strict and batch recording), at
    /// fixed rates: latency percentiles, what each proxy adds, and the proxies' CPU
    /// and memory, as markdown on stdout and JSON (docs/bench.md).
    ///
    /// What it does to the cluster: with the token of `--token-file` (a bot's
    /// service-account token), one SelfSubjectReview (who the token is), reads of the
    /// OIDC discovery document and JWKS (by the agents), and GETs of `--path` only,
    /// direct and through the proxies: by default 20 (and 100) per second for 10 s a
    /// point, per protocol and way. Nothing is written. With `--yes` also saturation
    /// (8 workers as fast as the API server answers) and new connections (8 workers,
    /// a TLS handshake per GET): that loads the API server; run it where that is fine.
    #[command(verbatim_doc_comment)]
    Bench(bench::Args),
    /// Measure the identity check (cache hit and miss), for `cargo xtask bench`.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchIdentity,
    /// Measure making a record durable (disk, inline, writer thread), for `cargo xtask bench`.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchRecord {
        /// A directory on the disk the record log uses.
        dir: std::path::PathBuf,
    },
    /// Remove kgate's kernel programs and pins (uninstall). Stop the agent first.
    Detach(agent::DetachArgs),
    /// Print the version, the commit it was built from and the kernel programs' hash.
    Version,
}

// === impl Cli ===

impl Cli {
    /// `--log-format json` (or `KGATE_LOG_FORMAT=json`): JSON log lines.
    pub fn json_logs(&self) -> bool {
        matches!(self.log_format, LogFormat::Json)
    }

    /// Runs the subcommand.
    ///
    /// # Errors
    ///
    /// Whatever stopped the command, as a chain of contexts for the operator.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Agent(args) => agent::run(args),
            Command::Status(args) => status::run(args),
            Command::Check(args) => check::run(&args),
            Command::Approvals(command) => approvals::list(command),
            Command::Approve(args) => approvals::approve(args),
            Command::Deny(args) => approvals::deny(args),
            Command::Cert(command) => cert::run(command),
            Command::Policy(command) => policy::run(command),
            Command::Kubeconfig(args) => kubeconfig::run(&args),
            Command::Sessions(command) => sessions::run(command),
            Command::Console(args) => console::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Crds => {
                print!("{}", crate::crds::yaml()?);
                Ok(())
            }
            #[cfg(feature = "bench")]
            Command::BenchIdentity => bench::identity(),
            #[cfg(feature = "bench")]
            Command::BenchRecord { dir } => bench::record(&dir),
            Command::Detach(args) => agent::detach(&args),
            Command::Version => {
                print!("{}", version::text());
                Ok(())
            }
        }
    }
}

/// An error that exits with its own code rather than 1 (`main` looks for it): a
/// cluster-wide `kgate sessions list` that lacks a node's sessions exits 3.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

/// The runtime an admin command runs its requests on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the tokio runtime")
}

/// A client with the admin's kubeconfig, as kubectl finds it.
async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("no usable kubeconfig (KUBECONFIG or ~/.kube/config)")
}
