//! The GET rows (loopback: a ConfigMap of about 1 KiB; upstream: `--path`): latency at fixed arrival rates (open loop, below saturation)
//! and requests/s at saturation (closed loop), each direct, via nginx and via kgate,
//! with the proxy's CPU and peak memory over the same run.

use serde_json::json;

use crate::{
    Setup,
    client::{Get, Proto},
    load::{self, Outcome},
    procstat::{Meter, Usage},
    report::Section,
    targets::Findings,
};

fn mib(kib: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = kib as f64 / 1024.0;
    format!("{mib:.1}")
}

/// CPU as % of one core per 1,000 requests/s (CPU seconds per request × 10⁵).
pub fn cpu_per_krps(usage: &Usage, requests: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let requests = requests.max(1) as f64;
    usage.cpu_seconds / requests * 1e5
}

fn proxy_cells(usage: Option<&Usage>, outcome: &Outcome) -> (String, String) {
    usage.map_or_else(
        || ("-".to_owned(), "-".to_owned()),
        |u| {
            (
                format!("{:.1}", cpu_per_krps(u, outcome.ok)),
                mib(u.peak_rss_kib),
            )
        },
    )
}

fn check(outcome: &Outcome, what: &str) {
    if let Some(e) = &outcome.first_error {
        crate::step(&format!(
            "{what}: {} errors, the first: {e}",
            outcome.errors
        ));
    }
}

pub async fn fixed_rate(setup: &Setup, findings: &mut Findings) -> anyhow::Result<Section> {
    let mut section = open_loop_section(
        "open_loop",
        "Latency at fixed rates (open loop)",
        &format!(
            "GETs of `{}` over warm connections at a fixed arrival rate; latency from each request's scheduled send time (no coordinated omission). \"+\" columns: added over direct at the same percentile. Proxy CPU: % of one core per 1k req/s.",
            setup.get.path
        ),
    );
    for point in open_loop_rows(setup, &setup.get, &setup.rates, &mut section).await? {
        if point.via.starts_with("kgate") && point.rate == 1000 {
            findings
                .added_1k
                .push((point.proto, point.via, point.added[0], point.added[1]));
            findings.rss_at_1k_kib = findings.rss_at_1k_kib.max(point.peak_rss_kib);
        }
    }
    Ok(section)
}

/// The write rows: PATCHes at 1k req/s, where strict recording syncs before
/// forwarding (reads overlap the sync with the upstream).
pub async fn writes(setup: &Setup, findings: &mut Findings) -> anyhow::Result<Option<Section>> {
    let Some(write) = &setup.write else {
        return Ok(None);
    };
    let mut section = open_loop_section(
        "writes",
        "Writes at a fixed rate (open loop)",
        &format!(
            "JSON merge PATCHes of `{}` (one data key, a new value each time) at 1k req/s, as the open-loop GETs. kgate (strict) makes each request's record durable before forwarding it; kgate-batch does not wait.",
            write.path
        ),
    );
    for point in open_loop_rows(setup, write, &[1000], &mut section).await? {
        if point.via.starts_with("kgate") {
            findings
                .writes_1k
                .push((point.proto, point.via, point.added[0], point.added[1]));
        }
    }
    Ok(Some(section))
}

fn open_loop_section(key: &'static str, title: &'static str, about: &str) -> Section {
    Section::new(
        key,
        title,
        about,
        &[
            "protocol",
            "rate",
            "via",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "+p50",
            "+p99",
            "+p99.9",
            "req/s",
            "errors",
            "proxy CPU",
            "proxy peak RSS MiB",
        ],
    )
}

/// One way at one rate, for the findings.
struct Point {
    proto: &'static str,
    via: &'static str,
    rate: u32,
    /// Over direct at p50, p99, p99.9, µs.
    added: [f64; 3],
    peak_rss_kib: u64,
}

/// Every protocol, rate and way of the open loop, as rows of `section`.
async fn open_loop_rows(
    setup: &Setup,
    get: &Get,
    rates: &[u32],
    section: &mut Section,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for proto in [Proto::H2, Proto::H1] {
        for &rate in rates {
            crate::step(&format!(
                "{} {} at {rate} req/s",
                proto.label(),
                if get.write.is_some() {
                    "PATCHes"
                } else {
                    "GETs"
                }
            ));
            let mut direct = None;
            for target in setup.targets() {
                let meter = setup.pid(target).map(Meter::start);
                let outcome = load::open_loop(target, proto, get, rate, setup.duration()).await?;
                let usage = meter.map(Meter::stop);
                check(
                    &outcome,
                    &format!("{} {} at {rate}", proto.label(), target.via),
                );
                let p = [outcome.us(50.0), outcome.us(99.0), outcome.us(99.9)];
                let base = *direct.get_or_insert(p);
                let added = [p[0] - base[0], p[1] - base[1], p[2] - base[2]];
                let (cpu, rss) = proxy_cells(usage.as_ref(), &outcome);
                points.push(Point {
                    proto: proto.label(),
                    via: target.via,
                    rate,
                    added,
                    peak_rss_kib: usage.map_or(0, |u| u.peak_rss_kib),
                });
                let plus = |v: f64| {
                    if target.via == "direct" {
                        "-".to_owned()
                    } else {
                        format!("{v:+.0}")
                    }
                };
                section.row(
                    vec![
                        proto.label().into(),
                        rate.to_string(),
                        target.via.into(),
                        format!("{:.0}", p[0]),
                        format!("{:.0}", p[1]),
                        format!("{:.0}", p[2]),
                        plus(added[0]),
                        plus(added[1]),
                        plus(added[2]),
                        format!("{:.0}", outcome.rps()),
                        outcome.errors.to_string(),
                        cpu,
                        rss,
                    ],
                    json!({
                        "protocol": proto.label(), "rate": rate, "via": target.via,
                        "p50_us": p[0], "p99_us": p[1], "p999_us": p[2],
                        "added_p50_us": added[0], "added_p99_us": added[1], "added_p999_us": added[2],
                        "achieved_rps": outcome.rps(), "ok": outcome.ok, "errors": outcome.errors,
                        "proxy_cpu_seconds": usage.map(|u| u.cpu_seconds),
                        "proxy_cpu_pct_core_per_krps": usage.map(|u| cpu_per_krps(&u, outcome.ok)),
                        "proxy_peak_rss_kib": usage.map(|u| u.peak_rss_kib),
                    }),
                );
            }
        }
    }
    Ok(points)
}

pub async fn saturation(setup: &Setup, findings: &mut Findings) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "saturation",
        "Saturation (closed loop)",
        &format!(
            "{} workers each sending the next GET of `{}` when the last is answered (HTTP/1.1: a connection each; HTTP/2: 8 streams per connection). Client and proxies share the cores. Proxy CPU: cores used, and % of one core per 1k req/s.",
            setup.saturation_concurrency, setup.get.path
        ),
        &[
            "protocol",
            "via",
            "req/s",
            "vs nginx",
            "p50 µs",
            "p99 µs",
            "errors",
            "proxy cores",
            "proxy CPU per 1k req/s",
            "proxy peak RSS MiB",
        ],
    );
    for proto in [Proto::H2, Proto::H1] {
        let mut runs = Vec::new();
        for target in setup.targets() {
            crate::step(&format!(
                "{} at saturation via {}",
                proto.label(),
                target.via
            ));
            let meter = setup.pid(target).map(Meter::start);
            let outcome = load::closed_loop(
                target,
                proto,
                &setup.get,
                setup.saturation_concurrency,
                setup.duration(),
            )
            .await?;
            let usage = meter.map(Meter::stop);
            check(
                &outcome,
                &format!("{} {} at saturation", proto.label(), target.via),
            );
            runs.push((target.via, outcome, usage));
        }
        // Without nginx (upstream mode, not installed) there is no ratio.
        let nginx_rps = runs.iter().find(|r| r.0 == "nginx").map(|r| r.1.rps());
        for (via, outcome, usage) in &runs {
            let ratio = nginx_rps.map(|n| outcome.rps() / n.max(1.0));
            if via.starts_with("kgate")
                && let Some(ratio) = ratio
            {
                findings.rps_vs_nginx.push((proto.label(), via, ratio));
            }
            let (cpu, rss) = proxy_cells(usage.as_ref(), outcome);
            let cores = usage.map_or("-".to_owned(), |u| {
                format!("{:.2}", u.cpu_seconds / u.seconds.max(1e-9))
            });
            section.row(
                vec![
                    proto.label().into(),
                    (*via).into(),
                    format!("{:.0}", outcome.rps()),
                    ratio.map_or("-".to_owned(), |r| format!("{r:.2}×")),
                    format!("{:.0}", outcome.us(50.0)),
                    format!("{:.0}", outcome.us(99.0)),
                    outcome.errors.to_string(),
                    cores,
                    cpu,
                    rss,
                ],
                json!({
                    "protocol": proto.label(), "via": via, "concurrency": setup.saturation_concurrency,
                    "rps": outcome.rps(), "vs_nginx": ratio, "ok": outcome.ok, "errors": outcome.errors,
                    "p50_us": outcome.us(50.0), "p99_us": outcome.us(99.0),
                    "proxy_cpu_seconds": usage.map(|u| u.cpu_seconds),
                    "proxy_cpu_pct_core_per_krps": usage.map(|u| cpu_per_krps(&u, outcome.ok)),
                    "proxy_peak_rss_kib": usage.map(|u| u.peak_rss_kib),
                }),
            );
        }
    }
    Ok(section)
}
