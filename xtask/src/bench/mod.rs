//! `cargo xtask bench`: kgate side by side with direct access to the same API server
//! (the project's double) and with nginx as a plain TLS reverse proxy, in one run on
//! loopback. See docs/bench.md for what each row means and how to read it.
//!
//! The debug xtask that cargo runs only builds: the release binaries (kgate, the
//! double and this xtask) and then the release xtask measures, so that the load
//! generator is optimised too. kgate runs standalone (no kernel programs; their cost
//! is one map lookup per new connection) with identity, policy, masking and recording
//! on. Client, proxies and API server share the machine's cores, so absolute figures
//! are pessimistic and noisy on a busy machine; compare rows of the same run.
//!
//! Not here: timed assertions (the targets are reported, never enforced), kubectl's
//! own cost, anything off loopback.

mod client;
mod conns;
mod latency;
mod load;
mod masking;
mod nginx;
mod procstat;
mod report;
mod scale;
mod servers;
mod targets;

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::Context as _;
use serde_json::json;

use client::{Get, Target};
use servers::{Durability, release_bin};

use crate::{run_cmd, step};

/// The parts of a run, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    Latency,
    Saturation,
    Connections,
    Masking,
    Identity,
    /// 1,000 watches through one agent; 20 concurrent 20 MB LISTs.
    Scale,
}

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A smoke run of seconds: 1 s per load point, a 16 MiB list, 500 idle
    /// connections.
    #[arg(long)]
    pub quick: bool,
    /// Seconds per load point. Default 10 (1 with --quick).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Size of the masking rows' Secret list and watch, in MiB. Default 1024 (16
    /// with --quick).
    #[arg(long)]
    pub list_mib: Option<usize>,
    /// Idle TLS connections for the memory row. Default 10000 (500 with --quick).
    #[arg(long)]
    pub idle: Option<usize>,
    /// Only these parts, comma-separated. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// What every scenario needs: the ways to the API server and the request.
pub(crate) struct Setup {
    pub direct: Target,
    pub nginx: Target,
    /// kgate as deployed by default: strict recording.
    pub kgate: Target,
    /// kgate with batch recording: the difference is what fsync-before-forward costs.
    pub kgate_batch: Target,
    pub nginx_pid: u32,
    pub kgate_pid: u32,
    pub kgate_batch_pid: u32,
    /// GET of a ConfigMap of about 1 KiB, as the bot.
    pub get: Get,
    pub bot_token: String,
    /// The API server's admin token (the scale rows write with it, directly).
    pub admin_token: String,
    pub seconds: u64,
    pub quick: bool,
    /// (count, bytes each) of the bulk Secrets.
    pub bulk: (usize, usize),
    pub idle: usize,
}

impl Setup {
    /// Every way to the API server, direct first (the baseline of each comparison).
    pub(crate) fn targets(&self) -> [&Target; 4] {
        [&self.direct, &self.nginx, &self.kgate, &self.kgate_batch]
    }

    /// The proxy process behind a target (none for direct).
    pub(crate) fn pid(&self, target: &Target) -> Option<u32> {
        match target.via {
            "nginx" => Some(self.nginx_pid),
            "kgate" => Some(self.kgate_pid),
            "kgate-batch" => Some(self.kgate_batch_pid),
            _ => None,
        }
    }

    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        step("building release binaries (kgate, the API-server double, the bench itself)");
        // Two builds: one cargo invocation would unify features across all the
        // packages, so kgate would be built unlike `cargo build --release -p kgate`.
        // Its one difference: the `bench` feature, for `kgate bench-identity` (a hidden
        // subcommand; the request path is the same code).
        run_cmd(crate::cargo().args([
            "build",
            "--release",
            "--package",
            "kgate",
            "--package",
            "kgate-tests",
            "--package",
            "kgate-apiserver-double",
            "--bins",
            "--features",
            "kgate/bench",
        ]))?;
        run_cmd(crate::cargo().args(["build", "--release", "--package", "xtask"]))?;
        // The measuring is done by the release build of this same command.
        return run_cmd(Command::new(release_bin("xtask")).args(std::env::args_os().skip(1)));
    }
    nginx::ensure_installed()?;
    let dir = std::env::temp_dir().join(format!("kgate-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(args, &dir));
    let _ = fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let seconds = args.seconds.unwrap_or(if args.quick { 1 } else { 10 });
    let list_bytes = args.list_mib.unwrap_or(if args.quick { 16 } else { 1024 }) << 20;
    // 100 KiB Secrets: big enough that masking, not per-item overhead, dominates.
    let bulk = (list_bytes / 102_400, 102_400);
    let wanted_idle = args.idle.unwrap_or(if args.quick { 500 } else { 10_000 });
    let idle = conns::idle_limit(wanted_idle);

    step(&format!(
        "starting the API-server double ({} MiB of Secrets), kgate and nginx on loopback",
        list_bytes >> 20
    ));
    let double = servers::Double::start(dir, bulk)?;
    let serving = servers::Serving::issue(dir)?;
    let (kgate, kgate_addr) = servers::start_kgate(dir, &double, &serving, Durability::Strict)?;
    let (kgate_batch, kgate_batch_addr) =
        servers::start_kgate(dir, &double, &serving, Durability::Batch)?;
    let (nginx, nginx_addr) = nginx::start(dir, &double, &serving)?;
    let bot_token = servers::bot_token(&double, dir)?;
    let setup = Setup {
        direct: Target::new("direct", double.addr, &double.ca_pem)?,
        nginx: Target::new("nginx", nginx_addr, &serving.ca_pem)?,
        kgate: Target::new("kgate", kgate_addr, &serving.ca_pem)?,
        kgate_batch: Target::new("kgate-batch", kgate_batch_addr, &serving.ca_pem)?,
        nginx_pid: nginx.pid(),
        kgate_pid: kgate.pid(),
        kgate_batch_pid: kgate_batch.pid(),
        get: Get {
            path: "/api/v1/namespaces/demo/configmaps/bench-1k".to_owned(),
            token: bot_token.clone(),
        },
        bot_token,
        admin_token: double.admin_token.clone(),
        seconds,
        quick: args.quick,
        bulk,
        idle,
    };
    let machine = report::machine(&nginx::version());
    let settings = json!({
        "quick": args.quick,
        "seconds_per_point": seconds,
        "list_bytes": bulk.0 * bulk.1,
        "idle_connections": idle,
        "kgate": "standalone; identity (projected token, local JWKS verify), policy file, masking defaults, record log (kgate: strict durability, the default; kgate-batch: batch)",
    });
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let mut findings = targets::Findings::default();
    let mut sections = Vec::new();
    if wants(Part::Latency) {
        sections.push(latency::fixed_rate(&setup, &mut findings).await?);
    }
    if wants(Part::Saturation) {
        sections.push(latency::saturation(&setup, &mut findings).await?);
    }
    if wants(Part::Connections) {
        sections.push(conns::handshakes(&setup).await);
        sections.push(conns::memory(&setup, &mut findings).await?);
    }
    if wants(Part::Masking) {
        sections.push(masking::rows(&setup, &mut findings).await?);
    }
    if wants(Part::Scale) {
        sections.extend(scale::rows(&setup, &mut findings).await?);
    }
    if wants(Part::Identity) {
        sections.push(identity()?);
    }
    sections.push(targets::section(&findings));
    let (md, json) = report::write(&machine, &settings, &sections)?;
    step(&format!("wrote {} and {}", md.display(), json.display()));
    drop((nginx, kgate, kgate_batch, double));
    Ok(())
}

/// The identity check alone, in-process (`kgate bench-identity`, built with the `bench`
/// feature): a cached token, and an ES256 token whose signature must be verified (each
/// one new), for service-account tokens and for a gateway's OIDC ID tokens.
fn identity() -> anyhow::Result<report::Section> {
    let out = crate::cmd_output(Command::new(release_bin("kgate")).arg("bench-identity"))?;
    let cost: serde_json::Value = serde_json::from_str(out.trim()).context("bench-identity")?;
    let us = |key: &str| cost[key].as_f64().unwrap_or(0.0) / 1000.0;
    let mut section = report::Section::new(
        "token_check",
        "Token check",
        "The identity stage alone, in-process: a token already in the cache (hit), and a new ES256 token whose signature is verified against the JWKS (miss); for a service-account token and for a gateway's OIDC ID token (claims mapped to the prefixed user and groups).",
        &["case", "µs per check"],
    );
    section.row(
        vec!["hit".into(), format!("{:.2}", us("hit_ns"))],
        json!({"case": "hit", "us": us("hit_ns")}),
    );
    section.row(
        vec!["miss".into(), format!("{:.1}", us("miss_ns"))],
        json!({"case": "miss", "us": us("miss_ns")}),
    );
    section.row(
        vec!["oidc hit".into(), format!("{:.2}", us("oidc_hit_ns"))],
        json!({"case": "oidc hit", "us": us("oidc_hit_ns")}),
    );
    section.row(
        vec!["oidc miss".into(), format!("{:.1}", us("oidc_miss_ns"))],
        json!({"case": "oidc miss", "us": us("oidc_miss_ns")}),
    );
    Ok(section)
}
