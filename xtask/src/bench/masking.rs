//! Masking rows: the double's bulk Secrets as one list and as one watch stream (the
//! watch's initial ADDED events), read over HTTP/2 direct, via nginx (passed through)
//! and via kgate (every value masked as it streams).
//!
//! Throughput is counted in upstream bytes (what the API server sent, measured on
//! the direct read), so that masked and unmasked rows compare the same work; kgate's
//! masked answer is smaller. Peak extra RSS: the proxy's peak during the read minus
//! its resident memory before it.

use std::time::Instant;

use http_body_util::BodyExt as _;
use serde_json::json;

use kgate_bench::{
    Setup,
    client::{Get, Proto, Target, connect},
    procstat::Meter,
    report::Section,
    targets::Findings,
};

/// Reads the body; for a watch, until `events` lines have arrived (it never ends).
async fn read(target: &Target, get: &Get, events: Option<usize>) -> anyhow::Result<u64> {
    let mut conn = connect(target, Proto::H2).await?;
    let mut body = conn.send(target, get).await?;
    let (mut bytes, mut lines) = (0u64, 0usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
            lines += data.iter().filter(|b| **b == b'\n').count();
            if events.is_some_and(|n| lines >= n) {
                break;
            }
        }
    }
    if let Some(n) = events {
        anyhow::ensure!(
            lines >= n,
            "{}: the watch ended after {lines} of {n} events",
            target.via
        );
    }
    Ok(bytes)
}

pub(super) async fn rows(setup: &Setup, findings: &mut Findings) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "masking",
        "Masking",
        &format!(
            "{} Secrets of {} KiB in one namespace, read over HTTP/2 as one list and as one watch (its initial events). MB/s of upstream bytes; per proxy core: upstream MB per CPU-second of the proxy. Extra RSS: the proxy's peak during the read over its memory before.",
            setup.bulk.0,
            setup.bulk.1 / 1024
        ),
        &[
            "stream",
            "via",
            "MB upstream",
            "MB to client",
            "seconds",
            "MB/s",
            "MB/s per proxy core",
            "peak extra RSS MiB",
        ],
    );
    for (kind, query, events) in [
        ("list", "", None),
        ("watch", "?watch=true", Some(setup.bulk.0)),
    ] {
        let get = Get::new(
            format!("/api/v1/namespaces/demo/secrets{query}"),
            setup.bot_token.clone(),
        );
        let mut upstream = None;
        // Recording writes one record per list or watch: kgate-batch would repeat kgate.
        for target in setup.ways() {
            crate::step(&format!("masking: {kind} via {}", target.via));
            let meter = setup.pid(target).map(Meter::start);
            let started = Instant::now();
            let bytes = read(target, &get, events).await?;
            let seconds = started.elapsed().as_secs_f64();
            let usage = meter.map(Meter::stop);
            #[allow(clippy::cast_precision_loss)]
            let mb = |b: u64| b as f64 / 1e6;
            let up = *upstream.get_or_insert(bytes);
            let rate = mb(up) / seconds.max(1e-9);
            let per_core = usage.map(|u| mb(up) / u.cpu_seconds.max(1e-9));
            let extra_kib = usage.map(|u| u.peak_rss_kib.saturating_sub(u.start_rss_kib));
            #[allow(clippy::cast_precision_loss)]
            let extra_mib = extra_kib.map(|k| k as f64 / 1024.0);
            if target.via == "kgate" {
                findings
                    .masking
                    .push((kind, per_core.unwrap_or(0.0), extra_mib.unwrap_or(0.0)));
            }
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            section.row(
                vec![
                    kind.into(),
                    target.via.into(),
                    format!("{:.0}", mb(up)),
                    format!("{:.1}", mb(bytes)),
                    format!("{seconds:.2}"),
                    format!("{rate:.0}"),
                    opt(per_core, 0),
                    opt(extra_mib, 1),
                ],
                json!({
                    "stream": kind, "via": target.via, "upstream_bytes": up, "client_bytes": bytes,
                    "seconds": seconds, "mb_per_s": rate, "mb_per_proxy_cpu_second": per_core,
                    "proxy_cpu_seconds": usage.map(|u| u.cpu_seconds),
                    "proxy_peak_extra_rss_kib": extra_kib,
                }),
            );
        }
    }
    Ok(section)
}
