//! The goals of issues 9 and 21, set against what this run measured. They are reported, never
//! asserted: on a shared two-core machine a miss can be noise, and a figure is only
//! comparable with figures of the same run.

use serde_json::json;

use crate::report::Section;

/// What the scenarios found that a goal speaks about (absent: the part did not run).
#[derive(Default)]
pub struct Findings {
    /// (protocol, kgate instance, added p50 µs, added p99 µs) at 1k req/s.
    pub added_1k: Vec<(&'static str, &'static str, f64, f64)>,
    /// The kgate instances' peak RSS over the 1k req/s rows, KiB.
    pub rss_at_1k_kib: u64,
    /// (protocol, kgate instance, added p50 µs, added p99 µs) of the 1k PATCHes/s.
    pub writes_1k: Vec<(&'static str, &'static str, f64, f64)>,
    /// The disk's own 600-byte write and `fdatasync`, p50 µs (the record path row).
    pub disk_sync_p50_us: Option<f64>,
    /// (protocol, kgate instance, its req/s ÷ nginx req/s) at saturation.
    pub rps_vs_nginx: Vec<(&'static str, &'static str, f64)>,
    /// (list|watch, upstream MB per kgate CPU-second, peak extra RSS MiB).
    pub masking: Vec<(&'static str, f64, f64)>,
    pub idle_kib_per_conn: Option<f64>,
    /// kgate with 1,000 watches: (RSS MiB, idle CPU %).
    pub watches: Option<(f64, f64)>,
    /// kgate's peak extra RSS over 20 concurrent 20 MB LISTs, MiB.
    pub lists_extra_mib: Option<f64>,
}

pub fn section(f: &Findings) -> Section {
    let mut s = Section::new(
        "targets",
        "Targets",
        "Goals from issues 9 and 21, as ratios and figures of this run (not test assertions).",
        &["goal", "measured", "met"],
    );
    let mut goal = |name: String, measured: String, met: bool| {
        s.row(
            vec![
                name.clone(),
                measured.clone(),
                if met { "yes" } else { "no" }.into(),
            ],
            json!({"goal": name, "measured": measured, "met": met}),
        );
    };
    for (proto, via, p50, p99) in &f.added_1k {
        goal(
            format!("{proto} {via} added p50 ≤ 100 µs at 1k req/s"),
            format!("{p50:.0} µs"),
            *p50 <= 100.0,
        );
        goal(
            format!("{proto} {via} added p99 ≤ 500 µs at 1k req/s"),
            format!("{p99:.0} µs"),
            *p99 <= 500.0,
        );
    }
    let added = |rows: &[(&'static str, &'static str, f64, f64)], proto: &str, via: &str| {
        rows.iter()
            .find(|r| r.0 == proto && r.1 == via)
            .map(|r| r.2)
    };
    for proto in ["HTTP/2", "HTTP/1.1"] {
        if let (Some(strict), Some(batch)) = (
            added(&f.added_1k, proto, "kgate"),
            added(&f.added_1k, proto, "kgate-batch"),
        ) {
            goal(
                format!("{proto} strict read added p50 within 30 µs of batch's at 1k req/s"),
                format!("{strict:.0} vs {batch:.0} µs: {:+.0} µs", strict - batch),
                strict - batch <= 30.0,
            );
        }
        if let (Some(strict), Some(batch), Some(sync)) = (
            added(&f.writes_1k, proto, "kgate"),
            added(&f.writes_1k, proto, "kgate-batch"),
            f.disk_sync_p50_us,
        ) {
            goal(
                format!(
                    "{proto} strict write added p50 ≤ the disk's fdatasync p50 + batch's + 30 µs"
                ),
                format!(
                    "{strict:.0} µs vs {sync:.0} + {batch:.0} + 30 = {:.0} µs",
                    sync + batch + 30.0
                ),
                strict <= sync + batch + 30.0,
            );
        }
    }
    if f.rss_at_1k_kib > 0 {
        #[allow(clippy::cast_precision_loss)]
        let mib = f.rss_at_1k_kib as f64 / 1024.0;
        goal(
            "kgate RSS ≤ 48 MiB at 1k req/s (either instance)".into(),
            format!("{mib:.1} MiB"),
            mib <= 48.0,
        );
    }
    for (proto, via, ratio) in &f.rps_vs_nginx {
        // Strict reads wait for a sync per request (shared by concurrent ones).
        let goal_ratio = if *via == "kgate" { 0.9 } else { 1.0 };
        goal(
            format!("{proto} {via} req/s ≥ {goal_ratio:.1}× nginx"),
            format!("{ratio:.2}×"),
            *ratio >= goal_ratio,
        );
    }
    for (kind, per_core, extra) in &f.masking {
        goal(
            format!("masking {kind}: ≥ 200 MB/s per core"),
            format!("{per_core:.0} MB/s"),
            *per_core >= 200.0,
        );
        goal(
            format!("masking {kind}: extra RSS ≤ 16 MiB"),
            format!("{extra:.1} MiB"),
            *extra <= 16.0,
        );
    }
    if let Some(kib) = f.idle_kib_per_conn {
        goal(
            "≤ 24 KiB per idle TLS connection".into(),
            format!("{kib:.1} KiB"),
            kib <= 24.0,
        );
    }
    if let Some((rss, idle_cpu)) = f.watches {
        goal(
            "1,000 watches: kgate RSS ≤ 64 MiB".into(),
            format!("{rss:.1} MiB"),
            rss <= 64.0,
        );
        goal(
            "1,000 watches: kgate idle CPU ≤ 1 % of a core".into(),
            format!("{idle_cpu:.2} %"),
            idle_cpu <= 1.0,
        );
    }
    if let Some(extra) = f.lists_extra_mib {
        goal(
            "20 concurrent 20 MB LISTs: kgate peak extra RSS ≤ 64 MiB".into(),
            format!("{extra:.1} MiB"),
            extra <= 64.0,
        );
    }
    s
}
