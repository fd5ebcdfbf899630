//! `cargo xtask bench`: kgate side by side with direct access to the same API server
//! (the project's double) and with nginx as a plain TLS reverse proxy, in one run on
//! loopback. See docs/bench.md for what each row means and how to read it. The
//! harness (load generator, rows, report, kgate and nginx as children) is the
//! `kgate-bench` crate, which `kgate bench` uses too; with `--upstream` this runs its
//! upstream mode against a real API server instead of the double.
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

mod masking;
mod scale;
mod servers;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use kgate_bench::{
    Part, Setup,
    agent::{self, Caller, Durability},
    client::{Get, Target},
    conns, latency, nginx,
    pki::Serving,
    report, targets,
};
use serde_json::json;

use servers::release_bin;

use crate::{run_cmd, step};

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
    /// Measure in front of this API server (`https://HOST[:PORT]`) instead of the
    /// double, with `--ca-file` and `--token-file` (docs/bench.md, "On your own
    /// cluster").
    #[arg(long, requires_all = ["ca_file", "token_file"])]
    pub upstream: Option<String>,
    /// With `--upstream`: the CA bundle of the API server's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// With `--upstream`: a file holding the bot's token (`kubectl create token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// With `--upstream`: the GET every row sends.
    #[arg(long, default_value = kgate_bench::upstream::DEFAULT_PATH)]
    pub path: String,
    /// With `--upstream`: run the rows that load the API server as fast as it answers
    /// (saturation, connections).
    #[arg(long)]
    pub yes: bool,
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
    ensure_nginx()?;
    if let Some(server) = &args.upstream {
        let options = kgate_bench::upstream::Options {
            server: server.clone(),
            ca_file: args.ca_file.clone().unwrap_or_default(),
            token_file: args.token_file.clone().unwrap_or_default(),
            path: args.path.clone(),
            seconds: args.seconds,
            quick: args.quick,
            only: args.only.clone(),
            nginx: nginx::DEFAULT_PATH.into(),
            yes: args.yes,
            kgate: release_bin("kgate"),
            out: report_dir(),
            build: "release build of this checkout".into(),
        };
        return kgate_bench::upstream::run(&options).map(drop);
    }
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
    let serving = Serving::issue(dir)?;
    let upstream = agent::Upstream {
        server: format!("https://{}", double.addr),
        ca_file: dir.join("api/ca.crt"),
        token_file: dir.join("api/token"),
    };
    // The bot's projected token, verified locally against the double's JWKS.
    let bot = Caller {
        user: "system:serviceaccount:demo:bot".into(),
        audiences: Vec::new(),
        writable: Some(("demo".into(), servers::WRITE_CONFIGMAP.into())),
    };
    let kgate_bin = release_bin("kgate");
    let (kgate, kgate_addr) = agent::start(
        &kgate_bin,
        dir,
        &serving,
        &upstream,
        &bot,
        Durability::Strict,
    )?;
    let (kgate_batch, kgate_batch_addr) = agent::start(
        &kgate_bin,
        dir,
        &serving,
        &upstream,
        &bot,
        Durability::Batch,
    )?;
    let (nginx, nginx_addr) = nginx::start(
        Path::new(nginx::DEFAULT_PATH),
        dir,
        &nginx::Upstream {
            addr: &double.addr.to_string(),
            server_name: "localhost",
            ca_file: &upstream.ca_file,
        },
        &serving,
    )?;
    let bot_token = servers::bot_token(&double, dir)?;
    let setup = Setup {
        direct: Target::new("direct", double.addr, &double.ca_pem)?,
        nginx: Some(Target::new("nginx", nginx_addr, &serving.ca_pem)?),
        kgate: Target::new("kgate", kgate_addr, &serving.ca_pem)?,
        kgate_batch: Target::new("kgate-batch", kgate_batch_addr, &serving.ca_pem)?,
        nginx_pid: Some(nginx.pid()),
        kgate_pid: kgate.pid(),
        kgate_batch_pid: kgate_batch.pid(),
        get: Get::new(
            "/api/v1/namespaces/demo/configmaps/bench-1k",
            bot_token.clone(),
        ),
        write: Some(Get {
            write: Some("n"),
            ..Get::new(
                format!(
                    "/api/v1/namespaces/demo/configmaps/{}",
                    servers::WRITE_CONFIGMAP
                ),
                bot_token.clone(),
            )
        }),
        bot_token,
        admin_token: double.admin_token.clone(),
        seconds,
        quick: args.quick,
        bulk,
        idle,
        busy: 100,
        rates: if args.quick {
            vec![1000]
        } else {
            vec![1000, 5000]
        },
        // Enough to saturate two cores.
        saturation_concurrency: 32,
    };
    let machine = report::machine(&nginx::version(Path::new(nginx::DEFAULT_PATH)));
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
    if wants(Part::Record) {
        sections.push(record(&dir.join("record-path"), &mut findings)?);
    }
    if wants(Part::Latency) {
        sections.push(latency::fixed_rate(&setup, &mut findings).await?);
        sections.extend(latency::writes(&setup, &mut findings).await?);
    }
    if wants(Part::Saturation) {
        sections.push(latency::saturation(&setup, &mut findings).await?);
    }
    // Before the connection rows: an agent's memory after 10,000 idle connections is
    // not what 1,000 watches need (the allocator keeps freed memory).
    if wants(Part::Scale) {
        sections.extend(scale::rows(&setup, &mut findings).await?);
    }
    if wants(Part::Connections) {
        sections.push(conns::handshakes(&setup).await);
        sections.push(conns::memory(&setup, &mut findings).await?);
    }
    if wants(Part::Masking) {
        sections.push(masking::rows(&setup, &mut findings).await?);
    }
    if wants(Part::Identity) {
        sections.push(identity()?);
    }
    sections.push(targets::section(&findings));
    let (md, json) = report::write(&report_dir(), &machine, &settings, "", &sections)?;
    step(&format!("wrote {} and {}", md.display(), json.display()));
    drop((nginx, kgate, kgate_batch, double));
    Ok(())
}

/// `target/bench` (or under `CARGO_TARGET_DIR`).
fn report_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench")
}

/// Installs nginx from Debian when it is missing (`apt-get install nginx`).
fn ensure_nginx() -> anyhow::Result<()> {
    if Path::new(nginx::DEFAULT_PATH).exists() {
        return Ok(());
    }
    step("installing nginx from Debian");
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Making one record durable, in-process (`kgate bench-record`, built with the `bench`
/// feature), in `dir` on the disk the agents' logs use: the disk's own write and
/// sync, the log's append and sync on the caller's thread, and strict mode's path
/// through the writer thread.
fn record(dir: &Path, findings: &mut targets::Findings) -> anyhow::Result<report::Section> {
    step("measuring the record path (3,000 records per way, 1k per second)");
    let out = crate::cmd_output(
        Command::new(release_bin("kgate"))
            .arg("bench-record")
            .arg(dir),
    )?;
    // Typed, so that a field the binary did not print is an error, not a 0 µs row.
    let cost: RecordCosts = serde_json::from_str(out.trim()).context("bench-record's output")?;
    let mut section = report::Section::new(
        "record_path",
        "Record path",
        "One record made durable at a time, 1k per second, in-process on the disk the agents' logs use: the disk's own 600-byte write over zeros and fdatasync; the log's append and sync on the calling thread; strict mode's path (the request's task hands the record to the writer thread, which writes and syncs it and wakes the task). The last two differ by the two thread hand-offs. Saturated: 2 threads of 4 tasks each, every task waiting for its record before the next; on the same thread a task syncs under the log's lock (blocking its thread), unless another's sync covered its record.",
        &["way", "p50 µs", "p90 µs", "p99 µs"],
    );
    let ways = [
        ("disk", "disk: write + fdatasync", &cost.disk),
        ("inline", "log append + sync, same thread", &cost.inline),
        ("writer", "writer thread, acknowledged", &cost.writer),
    ];
    for (key, label, way) in ways {
        section.row(
            vec![
                label.into(),
                format!("{:.0}", way.p50_us),
                format!("{:.0}", way.p90_us),
                format!("{:.0}", way.p99_us),
            ],
            json!({"way": key, "p50_us": way.p50_us, "p90_us": way.p90_us, "p99_us": way.p99_us}),
        );
    }
    let handoffs = cost.writer.p50_us - cost.inline.p50_us;
    section.row(
        vec![
            "hand-offs (writer − same thread)".into(),
            format!("{handoffs:+.0}"),
            "-".into(),
            "-".into(),
        ],
        json!({"way": "handoffs", "p50_us": handoffs}),
    );
    for (key, label, rate) in [
        (
            "inline",
            "saturated, same thread: records/s",
            cost.busy_records_per_s.inline,
        ),
        (
            "writer",
            "saturated, writer thread: records/s",
            cost.busy_records_per_s.writer,
        ),
    ] {
        section.row(
            vec![label.into(), format!("{rate:.0}"), "-".into(), "-".into()],
            json!({"way": format!("busy_{key}"), "records_per_s": rate}),
        );
    }
    findings.disk_sync_p50_us = Some(cost.disk.p50_us);
    Ok(section)
}

/// What `kgate bench-record` prints.
#[derive(serde::Deserialize)]
struct RecordCosts {
    disk: RecordWay,
    inline: RecordWay,
    writer: RecordWay,
    busy_records_per_s: RecordBusy,
}

#[derive(serde::Deserialize)]
struct RecordWay {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
}

#[derive(serde::Deserialize)]
struct RecordBusy {
    inline: f64,
    writer: f64,
}

/// What `kgate bench-identity` prints: nanoseconds per check.
#[derive(serde::Deserialize)]
struct IdentityCosts {
    hit_ns: f64,
    miss_ns: f64,
    oidc_hit_ns: f64,
    oidc_miss_ns: f64,
}

/// The identity check alone, in-process (`kgate bench-identity`, built with the `bench`
/// feature): a cached token, and an ES256 token whose signature must be verified (each
/// one new), for service-account tokens and for a gateway's OIDC ID tokens.
fn identity() -> anyhow::Result<report::Section> {
    let out = crate::cmd_output(Command::new(release_bin("kgate")).arg("bench-identity"))?;
    let cost: IdentityCosts =
        serde_json::from_str(out.trim()).context("bench-identity's output")?;
    let us = |ns: f64| ns / 1000.0;
    let mut section = report::Section::new(
        "token_check",
        "Token check",
        "The identity stage alone, in-process: a token already in the cache (hit), and a new ES256 token whose signature is verified against the JWKS (miss); for a service-account token and for a gateway's OIDC ID token (claims mapped to the prefixed user and groups).",
        &["case", "µs per check"],
    );
    section.row(
        vec!["hit".into(), format!("{:.2}", us(cost.hit_ns))],
        json!({"case": "hit", "us": us(cost.hit_ns)}),
    );
    section.row(
        vec!["miss".into(), format!("{:.1}", us(cost.miss_ns))],
        json!({"case": "miss", "us": us(cost.miss_ns)}),
    );
    section.row(
        vec!["oidc hit".into(), format!("{:.2}", us(cost.oidc_hit_ns))],
        json!({"case": "oidc hit", "us": us(cost.oidc_hit_ns)}),
    );
    section.row(
        vec!["oidc miss".into(), format!("{:.1}", us(cost.oidc_miss_ns))],
        json!({"case": "oidc miss", "us": us(cost.oidc_miss_ns)}),
    );
    Ok(section)
}
