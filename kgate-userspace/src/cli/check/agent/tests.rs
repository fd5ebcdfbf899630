use serde_json::{Value, json};

use super::{agent_checks, agreement, cert_expiry_check, cert_names_check};
use crate::cli::check::{
    cluster::ServiceFacts,
    report::{Check, Outcome},
};

#[test]
fn serving_certificate_names() {
    let ips = ["10.96.0.1".parse().unwrap(), "fd00:96::1".parse().unwrap()];
    let all = |extra: &[&str]| {
        let mut sans: Vec<String> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(str::to_owned)
        .to_vec();
        sans.extend(extra.iter().map(|s| (*s).to_owned()));
        sans
    };
    let cases = [
        (
            all(&["10.96.0.1", "fd00:96::1"]),
            "cluster.local",
            Outcome::Ok,
            "",
        ),
        // The same address written another way is the same address.
        (
            all(&["10.96.0.1", "fd00:96:0::1"]),
            "cluster.local",
            Outcome::Ok,
            "",
        ),
        (
            all(&["fd00:96::1"]),
            "cluster.local",
            Outcome::Fail,
            "lacks 10.96.0.1",
        ),
        (
            all(&["10.96.0.1", "fd00:96::1"]),
            "corp.example",
            Outcome::Fail,
            "lacks kubernetes.default.svc.corp.example",
        ),
        (
            Vec::new(),
            "cluster.local",
            Outcome::Warn,
            "no serving certificate names",
        ),
    ];
    for (sans, domain, want, says) in cases {
        let check = cert_names_check(&sans, domain, &ips);
        assert_eq!(check.status, want, "{sans:?}: {}", check.message);
        assert!(check.message.contains(says), "{}", check.message);
        if want == Outcome::Fail {
            let hint = check.hint.unwrap();
            assert!(
                hint.contains("--cluster-ip 10.96.0.1 --cluster-ip fd00:96::1"),
                "{hint}"
            );
        }
    }
}

#[test]
fn serving_certificate_expiry() {
    let now = 1_800_000_000;
    let day = 86_400;
    let cases = [
        (
            Some(now + 365 * day),
            Outcome::Ok,
            "valid until 2028-01-15 (365 days)",
        ),
        (Some(now + 29 * day), Outcome::Warn, "expires in 29 day(s)"),
        (Some(now - 1), Outcome::Fail, "expired on 2027-01-15"),
        (Some(now), Outcome::Fail, "expired"),
        (None, Outcome::Warn, "no serving certificate expiry"),
    ];
    for (not_after, want, says) in cases {
        let check = cert_expiry_check(not_after, now);
        assert_eq!(check.status, want, "{not_after:?}: {}", check.message);
        assert!(check.message.contains(says), "{}", check.message);
    }
}

#[test]
fn agents_agree_or_not() {
    let status = |digest: &str, version: &str| json!({"policyDigest": digest, "version": version});
    let cases = [
        (
            vec![
                ("node-1", status("aa", "0.1.0")),
                ("node-2", status("aa", "0.1.0")),
            ],
            [Outcome::Ok, Outcome::Ok],
            "",
        ),
        (
            vec![
                ("node-1", status("aa", "0.1.0")),
                ("node-2", status("bb", "0.1.0")),
            ],
            [Outcome::Warn, Outcome::Ok],
            "agents enforce different policies: aa on node-1; bb on node-2",
        ),
        (
            vec![
                ("node-1", status("aa", "0.1.0")),
                ("node-2", status("aa", "0.2.0")),
            ],
            [Outcome::Ok, Outcome::Warn],
            "0.1.0 on node-1; 0.2.0 on node-2",
        ),
    ];
    for (statuses, want, says) in cases {
        let statuses: Vec<(String, Value)> = statuses
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        let checks = agreement(&statuses);
        assert_eq!([checks[0].status, checks[1].status], want, "{statuses:?}");
        assert!(
            checks.iter().any(|c| c.message.contains(says)),
            "{checks:?}"
        );
    }
    assert!(agreement(&[]).is_empty());
}

/// An enforcing agent's status, as its Lease carries it.
fn enforcing() -> Value {
    json!({
        "enforcing": true, "targets": ["10.96.0.1:443", "10.0.0.1:6443"], "targetsSynced": true,
        "policiesLoaded": true, "podIndexSynced": true, "recorderWritable": true,
        "bpfFeatures": crate::ebpf::FEATURES.map(|(name, _)| name),
        "cgroupV2": true, "cgroup": "/host/cgroup/kubepods.slice", "cgroupDriver": "systemd",
        "certSans": ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local", "10.96.0.1"],
        "certNotAfter": 1_900_000_000,
    })
}

#[test]
fn one_agents_status() {
    let service = ServiceFacts {
        cluster_ips: vec!["10.96.0.1".parse().unwrap()],
        port: Some(443),
    };
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut status = enforcing();
        f(&mut status);
        status
    };
    let cases = [
        ("healthy", enforcing(), "", Outcome::Ok, ""),
        (
            "standalone",
            edit(&|s| {
                s["enforcing"] = json!(false);
                s["bpfFeatures"] = json!([]);
            }),
            "node.enforcing",
            Outcome::Fail,
            "`kernel: false`",
        ),
        (
            "Service not intercepted",
            edit(&|s| s["targets"] = json!(["10.0.0.1:6443"])),
            "node.enforcing",
            Outcome::Fail,
            "not intercepting the kubernetes Service at 10.96.0.1:443",
        ),
        (
            "a hook missing",
            edit(&|s| s["bpfFeatures"] = json!(["cgroup/connect4"])),
            "node.kernel",
            Outcome::Fail,
            "attached without cgroup/connect6",
        ),
        (
            "cgroup v1",
            edit(&|s| s["cgroupV2"] = json!(false)),
            "node.cgroup",
            Outcome::Fail,
            "no cgroup v2",
        ),
        (
            "pod cgroup of no known driver",
            edit(&|s| s["cgroupDriver"] = Value::Null),
            "node.cgroup",
            Outcome::Warn,
            "shows no kubelet cgroup driver",
        ),
        (
            "policies not loaded",
            edit(&|s| s["policiesLoaded"] = json!(false)),
            "node.ready",
            Outcome::Fail,
            "policies not loaded",
        ),
        (
            "recorder failing",
            edit(&|s| s["recorderWritable"] = json!(false)),
            "node.recorder",
            Outcome::Fail,
            "cannot be written",
        ),
        (
            "webhook failing",
            edit(&|s| s["webhook"] = json!({"lagRecords": 12, "failing": true})),
            "node.webhook",
            Outcome::Warn,
            "12 record(s) behind and its last POST failed",
        ),
        (
            "notifications delivering",
            edit(&|s| s["notifications"] = json!([{"target": "sre", "failing": false}])),
            "",
            Outcome::Ok,
            "",
        ),
        (
            "a notification target failing",
            edit(&|s| {
                s["notifications"] = json!([
                    {"target": "sre", "failing": false},
                    {"target": "events", "failing": true, "lastError": "HTTP 503"},
                ]);
            }),
            "node.notifications",
            Outcome::Warn,
            "approval notifications are failing: events (HTTP 503)",
        ),
    ];
    for (name, status, id, want, says) in cases {
        let checks = agent_checks(
            &status,
            Some("6.1.0"),
            "cluster.local",
            &service,
            1_800_000_000,
        );
        let not_ok: Vec<&Check> = checks.iter().filter(|c| c.status != Outcome::Ok).collect();
        if id.is_empty() {
            assert!(not_ok.is_empty(), "{name}: {not_ok:?}");
            continue;
        }
        assert_eq!(not_ok.len(), 1, "{name}: {not_ok:?}");
        assert_eq!((not_ok[0].id, not_ok[0].status), (id, want), "{name}");
        assert!(
            not_ok[0].message.contains(says),
            "{name}: {}",
            not_ok[0].message
        );
    }
}
