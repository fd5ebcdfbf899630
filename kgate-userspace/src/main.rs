//! The `kgate` binary: `kgate agent` runs the node agent; the other subcommands are the
//! admin CLI.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kgate::{agent, config::Config, ebpf};

#[derive(Parser)]
#[command(
    name = "kgate",
    version,
    about = "Policy gateway between Kubernetes workloads and the API server"
)]
struct Cli {
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

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: attach the kernel programs and serve redirected connections.
    Agent {
        /// The agent's config file (YAML).
        #[arg(long, short, env = "KGATE_CONFIG")]
        config: PathBuf,
        /// Validate the config and exit.
        #[arg(long)]
        check: bool,
        /// Overrides `redirect.ipv4`: the node address pods reach the agent on (a
        /// DaemonSet passes its `status.hostIP`).
        #[arg(long, env = "KGATE_REDIRECT_IPV4")]
        redirect_ipv4: Option<std::net::Ipv4Addr>,
        /// Overrides `identity.nodeName`: this node's name (a DaemonSet passes
        /// `spec.nodeName`).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
    },
    /// Every node's agent, one row per node; exits 1 if any is down or not enforcing.
    /// By default from the agents' heartbeat Leases, with the admin's kubeconfig
    /// (KUBECONFIG or ~/.kube/config); with `--agent`, asking admin endpoints directly.
    Status {
        /// Namespace of the agents' Leases (the DaemonSet's).
        #[arg(long, short = 'n', default_value = "kgate-system")]
        namespace: String,
        /// An agent's admin endpoint, `https://NODE:9443` (repeat for every node).
        #[arg(long = "agent", requires_all = ["ca_file", "token_file"])]
        agents: Vec<String>,
        /// With `--agent`: the CA that signed the agents' serving certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// With `--agent`: a bearer token the API server vouches for (TokenReview +
        /// SubjectAccessReview).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// `json` or `yaml` for the raw statuses.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// List held requests.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Approve a held request (kubeconfig: KUBECONFIG or ~/.kube/config).
    Approve {
        name: String,
        /// Let repeats of the same user, verb and resource pass for this long (10m).
        #[arg(long = "for")]
        grant_for: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a held request.
    Deny {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Serving certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Check and explain policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Recorded sessions (one client connection's requests by one user).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Print the CustomResourceDefinitions (KgatePolicy, KgateApproval) as YAML.
    Crds,
    /// Measure the identity check (cache hit and miss), for `cargo xtask bench`.
    #[command(hide = true)]
    BenchIdentity,
    /// Remove kgate's kernel programs and pins (uninstall). Stop the agent first.
    Detach {
        /// The bpffs mount holding kgate's pins.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue the agent's serving certificate from the cluster CA: files, or a Secret.
    Issue {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        /// The `kubernetes` Service's ClusterIP (repeat for IPv4 and IPv6).
        #[arg(long = "cluster-ip", required = true)]
        cluster_ips: Vec<std::net::IpAddr>,
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
        /// Extra DNS names (node names, a load balancer).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Extra IP addresses (node IPs).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
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

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Every approval, oldest first.
    List {
        /// `json` for the objects.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Every session, oldest first.
    List {
        /// The record log directory (`record.dir`).
        #[arg(long, env = "KGATE_RECORD_DIR", default_value = DEFAULT_RECORD_DIR)]
        dir: PathBuf,
        /// Only sessions of users matching this glob.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions from pods (`NAMESPACE/NAME`) matching this glob, or refused
        /// for using a token bound to such a pod (a stolen token).
        #[arg(long)]
        pod: Option<String>,
        /// Only sessions active within this long (90s, 10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// `json` for the sessions as JSON.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// A session's requests as a timeline, and the streams they opened.
    Show {
        /// The session ID (or a unique prefix).
        id: String,
        #[arg(long, env = "KGATE_RECORD_DIR", default_value = DEFAULT_RECORD_DIR)]
        dir: PathBuf,
        /// `json` for the session's audit events, one per line.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// Plays a session's exec or attach stream (stdout and stderr) at recorded speed,
    /// or writes it as asciicast v2 or JSON.
    Replay {
        /// The session ID (or a unique prefix).
        id: String,
        #[arg(long, env = "KGATE_RECORD_DIR", default_value = DEFAULT_RECORD_DIR)]
        dir: PathBuf,
        /// The stream's audit ID (or a unique prefix); needed when the session has
        /// several exec/attach streams (`kgate sessions show` lists them).
        #[arg(long)]
        stream: Option<String>,
        /// Playback speed: 2 is twice as fast, 0 plays without waiting.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Waits longer than this many seconds are cut short.
        #[arg(long)]
        max_idle: Option<f64>,
        /// Write the stream as an asciicast v2 file (`-` for stdout) instead.
        #[arg(long, conflicts_with = "output")]
        asciicast: Option<PathBuf>,
        /// `json` for the stream's captured frames (payloads in base64).
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

const DEFAULT_RECORD_DIR: &str = "/var/lib/kgate/records";

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files (YAML streams of KgatePolicy); errors name their location.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Say which rule decides a request, and why.
    Explain(Box<ExplainArgs>),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Policy files to evaluate.
    #[arg(long = "file", short = 'f', required = true)]
    files: Vec<PathBuf>,
    /// The caller's username, e.g. system:serviceaccount:ci:deployer.
    #[arg(long = "as")]
    user: String,
    /// Extra groups of the caller (service-account groups are added).
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long)]
    verb: String,
    /// RESOURCE or RESOURCE/SUBRESOURCE (pods, pods/exec).
    #[arg(long, default_value = "")]
    resource: String,
    #[arg(long, default_value = "")]
    api_group: String,
    #[arg(long, short = 'n', default_value = "")]
    namespace: String,
    #[arg(long, default_value = "")]
    name: String,
    /// A non-resource path instead of a resource (/healthz).
    #[arg(long)]
    non_resource_url: Option<String>,
    /// Labels of the calling pod, KEY=VALUE.
    #[arg(long = "pod-label")]
    pod_labels: Vec<String>,
    #[arg(long)]
    container: Option<String>,
    /// The calling process's comm.
    #[arg(long)]
    process: Option<String>,
    /// The global default when no policy decides.
    #[arg(long, default_value = "deny")]
    default_action: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Agent {
            config,
            check,
            redirect_ipv4,
            node_name,
        } => {
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
        Command::Policy(command) => policy(command),
        Command::Cert(CertCommand::Issue {
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
        }) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let names = kgate::cert::Names {
                cluster_domain,
                cluster_ips,
                dns,
                ips,
                days,
            };
            let (cert, key) = kgate::cert::issue(&read(&ca_cert)?, &read(&ca_key)?, &names)?;
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
                        kgate::cert::secret_manifest(&name, &namespace, &cert, &key)
                    );
                }
                (None, None) => {
                    anyhow::bail!("say where the certificate goes: --out-dir DIR or --secret NAME")
                }
            }
            Ok(())
        }
        Command::Status {
            namespace,
            agents,
            ca_file,
            token_file,
            output,
        } => status(&namespace, &agents, ca_file, token_file, output.as_deref()),
        Command::Sessions(command) => sessions(command),
        Command::Crds => {
            print!("{}", kgate::crds::yaml()?);
            Ok(())
        }
        Command::Approvals(ApprovalsCommand::List { output }) => admin(|client| async move {
            kgate::approval::cli::list(client, output.as_deref() == Some("json")).await
        }),
        Command::Approve {
            name,
            grant_for,
            reason,
        } => admin(|client| async move {
            kgate::approval::cli::decide(
                client,
                &name,
                true,
                grant_for.as_deref(),
                reason.as_deref(),
            )
            .await
        }),
        Command::Deny { name, reason } => admin(|client| async move {
            kgate::approval::cli::decide(client, &name, false, None, reason.as_deref()).await
        }),
        Command::BenchIdentity => {
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            let (hit, miss) = runtime.block_on(kgate::identity::bench::measure(2000, 200_000))?;
            println!(
                "{}",
                serde_json::json!({"hit_ns": hit.as_nanos(), "miss_ns": miss.as_nanos()})
            );
            Ok(())
        }
        Command::Detach { bpffs } => {
            if ebpf::detach(&bpffs)? {
                println!("kgate detached: pins under {} removed", bpffs.display());
            } else {
                println!("kgate was not attached (no pins under {})", bpffs.display());
            }
            Ok(())
        }
    }
}

/// Runs an admin command with the admin's kubeconfig and prints what it returns.
fn status(
    namespace: &str,
    agents: &[String],
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    output: Option<&str>,
) -> anyhow::Result<()> {
    use kgate::admin::cli;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let (healthy, json, table) = if let (Some(ca_file), Some(token_file)) = (ca_file, token_file)
        && !agents.is_empty()
    {
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let rows = runtime.block_on(cli::query(agents, &ca_file, &token))?;
        (
            rows.iter().all(cli::Row::healthy),
            cli::json(&rows),
            cli::table(&rows),
        )
    } else {
        let rows = runtime.block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("no usable kubeconfig (KUBECONFIG or ~/.kube/config)")?;
            cli::from_leases(client, namespace).await
        })?;
        if rows.is_empty() {
            anyhow::bail!("no nodes and no kgate heartbeats in namespace {namespace}");
        }
        (
            rows.iter().all(cli::NodeRow::healthy),
            cli::node_json(&rows),
            cli::node_table(&rows),
        )
    };
    match output {
        Some("json") => println!("{json:#}"),
        Some("yaml") => print!("{}", serde_yaml::to_string(&json)?),
        None => print!("{table}"),
        Some(other) => anyhow::bail!("-o {other:?}: json or yaml"),
    }
    if healthy {
        Ok(())
    } else {
        anyhow::bail!("not every agent is enforcing")
    }
}

fn admin<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<String, kgate::approval::cli::CliError>>,
{
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let out = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("no usable kubeconfig (KUBECONFIG or ~/.kube/config)")?;
        f(client).await.map_err(anyhow::Error::from)
    })?;
    println!("{}", out.trim_end());
    Ok(())
}

fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    use kgate::policy::{PolicySet, explain, file, types::DefaultAction};
    match command {
        PolicyCommand::Check { files } => {
            for path in &files {
                let policies = file::load(path)?;
                println!("{}: ok ({} policies)", path.display(), policies.len());
            }
            Ok(())
        }
        PolicyCommand::Explain(args) => {
            let ExplainArgs {
                files,
                user,
                groups,
                verb,
                resource,
                api_group,
                namespace,
                name,
                non_resource_url,
                pod_labels,
                container,
                process,
                default_action,
            } = *args;
            let mut policies = Vec::new();
            for path in &files {
                policies.extend(file::load(path)?.into_iter().map(std::sync::Arc::new));
            }
            let default_action = match default_action.as_str() {
                "deny" => DefaultAction::Deny,
                "allow" => DefaultAction::Allow,
                other => anyhow::bail!("--default-action {other:?}: deny or allow"),
            };
            let pod_labels = pod_labels
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--pod-label {kv:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            let set = PolicySet::new(policies, default_action, false, 0);
            print!(
                "{}",
                explain::explain(
                    &set,
                    &explain::Question {
                        user,
                        groups,
                        verb,
                        resource,
                        api_group,
                        namespace,
                        name,
                        non_resource_url,
                        pod_labels,
                        container,
                        process,
                    }
                )
            );
            Ok(())
        }
    }
}

fn sessions(command: SessionsCommand) -> anyhow::Result<()> {
    use kgate::record::sessions::{self, Filter};
    let warn = |damage: &[kgate::record::log::Damage]| {
        for d in damage {
            eprintln!(
                "warning: {}: {} bytes after offset {} unreadable ({}; a write in progress if this is the newest segment)",
                d.segment.display(),
                d.bad_bytes,
                d.good_bytes,
                d.reason
            );
        }
    };
    let json = |output: Option<&str>| match output {
        None => Ok(false),
        Some("json") => Ok(true),
        Some(other) => anyhow::bail!("-o {other:?}: only json is supported"),
    };
    match command {
        SessionsCommand::List {
            dir,
            user,
            pod,
            since,
            output,
        } => {
            let json = json(output.as_deref())?;
            let since = since
                .map(|s| {
                    let d = kgate::approval::parse_duration(&s)
                        .with_context(|| format!("--since {s:?}: e.g. 90s, 10m, 2h"))?;
                    let d = jiff::SignedDuration::try_from(d)?;
                    anyhow::Ok(jiff::Timestamp::now() - d)
                })
                .transpose()?;
            let filter = Filter {
                user: user.as_deref().map(wildmatch::WildMatch::new),
                pod: pod.as_deref().map(wildmatch::WildMatch::new),
                since,
            };
            let (all, damage) = sessions::load_summaries(&dir)?;
            warn(&damage);
            let selected = sessions::select(all, &filter);
            if json {
                println!("{}", serde_json::to_string_pretty(&selected)?);
            } else {
                print!("{}", sessions::list_table(&selected));
            }
            Ok(())
        }
        SessionsCommand::Show { id, dir, output } => {
            let json = json(output.as_deref())?;
            let (session, _, damage) = sessions::load_session(&dir, &id)?;
            warn(&damage);
            if json {
                for event in &session.events {
                    println!("{}", serde_json::to_string(event)?);
                }
            } else {
                print!("{}", sessions::show_timeline(&session));
                print!("{}", sessions::show_streams(&session));
            }
            Ok(())
        }
        SessionsCommand::Replay {
            id,
            dir,
            stream,
            speed,
            max_idle,
            asciicast,
            output,
        } => {
            use kgate::record::replay;
            let json = json(output.as_deref())?;
            if !speed.is_finite() || speed < 0.0 {
                anyhow::bail!("--speed {speed}: must be 0 (no waits) or more");
            }
            let max_idle = max_idle
                .map(|s| {
                    std::time::Duration::try_from_secs_f64(s)
                        .map_err(|_| anyhow::anyhow!("--max-idle {s}: must be 0 or more seconds"))
                })
                .transpose()?;
            let (session, recordings, damage) = sessions::load_session(&dir, &id)?;
            warn(&damage);
            let rec = sessions::pick_stream(&session, &recordings, stream.as_deref())?;
            if let Some(error) = &rec.capture_error {
                eprintln!("warning: capture of this stream stopped early: {error}");
            }
            if !rec.missing_chunks.is_empty() {
                eprintln!(
                    "warning: {} chunks of this stream are missing from the log",
                    rec.missing_chunks.len()
                );
            }
            let stdout = std::io::stdout();
            if json {
                println!("{}", serde_json::to_string_pretty(rec)?);
            } else if let Some(path) = asciicast {
                if path.as_os_str() == "-" {
                    replay::asciicast(rec, &mut stdout.lock())?;
                } else {
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&path)
                            .with_context(|| format!("--asciicast {}", path.display()))?,
                    );
                    replay::asciicast(rec, &mut file)?;
                    std::io::Write::flush(&mut file)?;
                }
            } else {
                let pace = replay::Pace { speed, max_idle };
                replay::play(rec, pace, &mut stdout.lock(), &mut std::io::stderr().lock())?;
            }
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    kgate::logging::init(matches!(format, LogFormat::Json));
}
