//! Connection rows: what a new connection costs (full TLS handshakes per second, a
//! GET on each) and what connections cost in memory (busy, many idle).

use std::time::Duration;

use serde_json::json;

use crate::{
    Setup,
    client::{Proto, Target},
    latency::cpu_per_krps,
    load,
    procstat::{self, Meter},
    report::Section,
    targets::Findings,
};

/// Handshaking workers: a few, so the row measures handshake cost, not queueing.
const HANDSHAKE_CONCURRENCY: usize = 8;

/// How many idle connections this process can hold: `wanted`, or fewer when the
/// open-files limit (`ulimit -n`, inherited by kgate and nginx) is lower, leaving
/// room for everything else.
pub fn idle_limit(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    let limit = soft.saturating_sub(512);
    if wanted > limit {
        crate::step(&format!(
            "open-files limit {soft}: {limit} idle connections instead of {wanted} (raise ulimit -n for more)"
        ));
    }
    wanted.min(limit)
}

pub async fn handshakes(setup: &Setup) -> Section {
    crate::step("new connections (TLS handshakes)");
    let mut section = Section::new(
        "handshakes",
        "New connections",
        &format!(
            "{HANDSHAKE_CONCURRENCY} workers, each opening a new TLS connection (full handshake, no resumption, as client-go) for every GET over HTTP/1.1. Proxy CPU: % of one core per 1k connections/s."
        ),
        &[
            "via",
            "connections/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "proxy CPU",
        ],
    );
    for target in setup.targets() {
        let meter = setup.pid(target).map(Meter::start);
        let outcome =
            load::handshake_loop(target, &setup.get, HANDSHAKE_CONCURRENCY, setup.duration()).await;
        let usage = meter.map(Meter::stop);
        let cpu = usage.map(|u| cpu_per_krps(&u, outcome.ok));
        section.row(
            vec![
                target.via.into(),
                format!("{:.0}", outcome.rps()),
                format!("{:.2}", outcome.us(50.0) / 1000.0),
                format!("{:.2}", outcome.us(99.0) / 1000.0),
                outcome.errors.to_string(),
                cpu.map_or("-".to_owned(), |c| format!("{c:.1}")),
            ],
            json!({
                "via": target.via, "connections_per_s": outcome.rps(), "ok": outcome.ok,
                "errors": outcome.errors, "first_error": outcome.first_error,
                "p50_us": outcome.us(50.0), "p99_us": outcome.us(99.0),
                "proxy_cpu_pct_core_per_kcps": cpu,
            }),
        );
    }
    section
}

fn kib_to_mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
}

pub async fn memory(setup: &Setup, findings: &mut Findings) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "connection_memory",
        "Connection memory",
        &format!(
            "Proxy resident memory (nginx: master and workers summed): at rest; peak with {} busy HTTP/1.1 connections (closed loop); with {} idle HTTP/2 TLS connections (each after one GET).",
            setup.busy, setup.idle
        ),
        &[
            "via",
            "at rest MiB",
            "busy peak MiB",
            "idle conns",
            "idle RSS MiB",
            "KiB per idle conn",
        ],
    );
    let proxies: Vec<&Target> = setup.nginx.iter().chain([&setup.kgate]).collect();
    for target in proxies {
        let Some(pid) = setup.pid(target) else {
            continue;
        };
        crate::step(&format!("connection memory via {}", target.via));
        let rest = procstat::rss_kib(pid);
        let meter = Meter::start(pid);
        let busy = load::closed_loop(
            target,
            Proto::H1,
            &setup.get,
            setup.busy,
            setup.duration().min(Duration::from_secs(5)),
        )
        .await?;
        let busy_peak = meter.stop().peak_rss_kib;
        drop(busy);
        // Let the busy connections close before the idle baseline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = procstat::rss_kib(pid);
        let idle = load::idle_connections(target, &setup.get, setup.idle).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let with_idle = procstat::rss_kib(pid);
        #[allow(clippy::cast_precision_loss)]
        let per_conn = with_idle.saturating_sub(before) as f64 / idle.len().max(1) as f64;
        if target.via == "kgate" {
            findings.idle_kib_per_conn = Some(per_conn);
        }
        section.row(
            vec![
                target.via.into(),
                format!("{:.1}", kib_to_mib(rest)),
                format!("{:.1}", kib_to_mib(busy_peak)),
                idle.len().to_string(),
                format!("{:.1}", kib_to_mib(with_idle)),
                format!("{per_conn:.1}"),
            ],
            json!({
                "via": target.via, "rest_rss_kib": rest, "busy": setup.busy, "busy_peak_rss_kib": busy_peak,
                "idle": idle.len(), "before_idle_rss_kib": before, "idle_rss_kib": with_idle,
                "kib_per_idle_connection": per_conn,
            }),
        );
        drop(idle);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(section)
}
