//! `cargo xtask bench`: kgate's added latency and throughput, measured side by side
//! with direct access to the same API server (the project's double) in one run.
//!
//! 1 KiB GETs of one ConfigMap over warm connections, HTTP/2 and HTTP/1.1: latency at
//! concurrency 1, throughput at concurrency 32; then kgate's peak RSS. Everything runs
//! on loopback on this machine (kgate standalone: the kernel redirect costs once per
//! connection, not per request, and warm connections exclude it). Client, kgate and
//! API server share the machine's cores, so absolute figures are pessimistic; the
//! direct column is the baseline of the same run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kgate_tests::{
    harness::{free_port, peak_rss_kib},
    pki::Ca,
};
use serde_json::Value;

use crate::{cmd_output, run_cmd, step};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("release").join(name)
}

pub fn run() -> anyhow::Result<()> {
    step("building release binaries (kgate, the API-server double, the load client)");
    run_cmd(crate::cargo().args([
        "build",
        "--release",
        "--package",
        "kgate",
        "--package",
        "kgate-tests",
        "--bins",
    ]))?;
    let dir = std::env::temp_dir().join(format!("kgate-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let result = measure(&dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path) -> anyhow::Result<()> {
    step("starting the API-server double and kgate (standalone) on loopback");
    let api_addr = format!("127.0.0.1:{}", free_port());
    let double = spawn(
        Command::new(release_bin("apiserver-double"))
            // 2,560 Secrets of 100 KiB: a 256 MiB list for the masking rows.
            .args([
                "--listen",
                &api_addr,
                "--bulk-secrets",
                "2560:102400",
                "--cert-dir",
            ])
            .arg(dir.join("api")),
    )?;
    wait_for_file(&dir.join("api/token"))?;
    let token = fs::read_to_string(dir.join("api/token"))?;
    let ca = Ca::new("bench CA")?;
    ca.issue_kgate(&[])?.write(dir, "tls")?;
    fs::write(dir.join("kgate-ca.crt"), ca.cert_pem())?;
    let kgate_addr = format!("127.0.0.1:{}", free_port());
    // Policy on: the benchmark's reads are allowed by a rule, everything else denied.
    fs::write(
        dir.join("policy.yaml"),
        "apiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {name: bench}\n\
         spec:\n  subjects: {serviceAccounts: [demo/bot]}\n  defaultAction: deny\n  rules:\n\
         \x20   - {name: read, match: {verbs: [get, list, watch]}, action: allow}\n\
         \x20   - {name: setup, match: {verbs: [create], resources: [configmaps]}, action: allow}\n",
    )?;
    fs::write(
        dir.join("agent.yaml"),
        format!(
            "listen: '{kgate_addr}'\nkernel: false\ndirectClients: allow\n\
             tls: {{certFile: {d}/tls.crt, keyFile: {d}/tls.key}}\n\
             upstream: {{server: 'https://{api_addr}', caFile: {d}/api/ca.crt, tokenFile: {d}/api/token}}\n\
             identity: {{unboundSubjects: ['system:serviceaccount:demo:bot']}}\n\
             policy: {{files: ['{d}/policy.yaml']}}\n",
            d = dir.display()
        ),
    )?;
    let agent = spawn(
        Command::new(release_bin("kgate"))
            .args(["agent", "--config"])
            .arg(dir.join("agent.yaml"))
            .env("RUST_LOG", "warn"),
    )?;
    std::thread::sleep(Duration::from_millis(500));

    // The object: a ConfigMap of about 1 KiB, created through the API.
    let manifest = dir.join("cm.json");
    fs::write(
        &manifest,
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"bench-1k"}},"data":{{"blob":"{}"}}}}"#,
            "x".repeat(900)
        ),
    )?;
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir.join("kube"),
        &format!("https://{api_addr}"),
        &fs::read_to_string(dir.join("api/ca.crt"))?,
        &token,
    );
    run_cmd(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["create", "--validate=false", "-n", "demo", "-f"])
            .arg(&manifest)
            .stdout(Stdio::null()),
    )?;
    let path = "/api/v1/namespaces/demo/configmaps/bench-1k";
    // The load runs as a bot with a projected service-account token, as in a cluster:
    // kgate verifies it locally (no TokenReview per request) and policy allows reads.
    let bot_token = cmd_output(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["create", "token", "bot", "-n", "demo"]),
    )?;
    let token = bot_token.trim().to_owned();

    println!(
        "\n{:<10} {:<6} {:>12} {:>12} {:>12} {:>10}",
        "protocol", "path", "p50 µs", "p99 µs", "req/s (c=32)", ""
    );
    let mut summary = Vec::new();
    for (label, flag) in [("HTTP/2", "--h2"), ("HTTP/1.1", "--h1")] {
        let mut rows = Vec::new();
        for (via, base, ca_file) in [
            ("direct", &api_addr, dir.join("api/ca.crt")),
            ("kgate", &kgate_addr, dir.join("kgate-ca.crt")),
        ] {
            let url = format!("https://{base}{path}");
            let latency = load(&url, &ca_file, &token, flag, 3000, 1)?;
            let throughput = load(&url, &ca_file, &token, flag, 20_000, 32)?;
            let row = (
                latency["p50_us"].as_u64().unwrap_or(0),
                latency["p99_us"].as_u64().unwrap_or(0),
                throughput["rps"].as_f64().unwrap_or(0.0),
            );
            println!(
                "{label:<10} {via:<6} {:>12} {:>12} {:>12.0}",
                row.0, row.1, row.2
            );
            rows.push(row);
        }
        let (direct, kgate) = (rows[0], rows[1]);
        summary.push(format!(
            "{label}: kgate adds {} µs at p50 and {} µs at p99; throughput {:.0}% of direct",
            kgate.0.saturating_sub(direct.0),
            kgate.1.saturating_sub(direct.1),
            100.0 * kgate.2 / direct.2.max(1.0)
        ));
    }
    let rss = peak_rss_kib(agent.0.id());

    // Masking: the same 256 MiB Secret list, direct (unmasked) and through kgate
    // (every value masked, streamed item by item), and what it cost kgate in memory.
    let list_mb = 2560.0 * 102_400.0 / 1e6;
    let mut rates = Vec::new();
    for (via, base, ca_file) in [
        ("direct", &api_addr, dir.join("api/ca.crt")),
        ("kgate", &kgate_addr, dir.join("kgate-ca.crt")),
    ] {
        let url = format!("https://{base}/api/v1/namespaces/demo/secrets");
        let r = load(&url, &ca_file, &token, "--h2", 3, 1)?;
        let secs = r["p50_us"].as_f64().unwrap_or(0.0) / 1e6;
        rates.push((via, list_mb / secs.max(1e-9)));
    }
    let masked_rss = peak_rss_kib(agent.0.id());
    println!();
    for line in summary {
        println!("{line}");
    }
    println!(
        "masking, {list_mb:.0} MB Secret list (p50 of 3): direct {:.0} MB/s, kgate {:.0} MB/s masked; kgate peak RSS {:.1} -> {:.1} MiB",
        rates[0].1,
        rates[1].1,
        f64::from(u32::try_from(rss).unwrap_or(u32::MAX)) / 1024.0,
        f64::from(u32::try_from(masked_rss).unwrap_or(u32::MAX)) / 1024.0
    );
    println!(
        "kgate peak RSS: {:.1} MiB",
        f64::from(u32::try_from(rss).unwrap_or(u32::MAX)) / 1024.0
    );
    drop(agent);
    drop(double);

    // The identity check alone, in-process: a cached token, and an ES256 token whose
    // signature must be verified (each one new).
    let out = cmd_output(Command::new(release_bin("kgate")).arg("bench-identity"))?;
    let cost: serde_json::Value = serde_json::from_str(out.trim())?;
    let us = |key: &str| cost[key].as_f64().unwrap_or(0.0) / 1000.0;
    println!(
        "identity check: {:.2} µs on a cache hit, {:.1} µs on a miss (ES256 verify)",
        us("hit_ns"),
        us("miss_ns")
    );
    Ok(())
}

fn load(
    url: &str,
    ca: &Path,
    token: &str,
    flag: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let out = Command::new(release_bin("kgate-bench"))
        .args(["--url", url, "--ca"])
        .arg(ca)
        .args([
            "--token",
            token,
            flag,
            "--requests",
            &requests.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "load client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("load client output")
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Killed> {
    Ok(Killed(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
