//! One agent's status, line by line, as its heartbeat Lease carries it (what its
//! kernel proved by attaching, cgroups, enforcement, readiness, the serving
//! certificate's names and expiry, the recorder, the webhook and the approval
//! notifications), and whether the
//! agents agree with each other (policy in force, version). Pure functions of the
//! statuses, for the table-driven tests.
//!
//! Not here: reading the Leases ([`super::nodes`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde_json::Value;

use super::{
    cluster::{ServiceFacts, join},
    nodes::kernel_check,
    report::Check,
};
use crate::ebpf::FEATURES;

#[cfg(test)]
mod tests;

/// Days before expiry from which the serving certificate is a warning.
const CERT_WARN_DAYS: i64 = 30;

/// What one fresh agent status says, line by line.
pub(super) fn agent_checks(
    status: &Value,
    release: Option<&str>,
    cluster_domain: &str,
    service: &ServiceFacts,
    now: i64,
) -> Vec<Check> {
    let enforcing = status["enforcing"] == true;
    let mut checks = Vec::new();
    let mut kernel = release.map_or_else(
        || {
            Check::warn(
                "node.kernel",
                "the agent reports no kernel release",
                "an older agent? upgrade the DaemonSet's image",
            )
        },
        kernel_check,
    );
    let proven = strings(&status["bpfFeatures"]);
    let unproven: Vec<&str> = FEATURES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !proven.iter().any(|p| p == name))
        .collect();
    if enforcing && !unproven.is_empty() {
        kernel = Check::fail(
            "node.kernel",
            format!("the agent attached without {}", unproven.join(", ")),
            "an agent older than this kgate? upgrade the DaemonSet's image",
        );
    } else if enforcing && kernel.hint.is_none() {
        kernel.message = format!("{}; attached at {}", kernel.message, proven.join(", "));
    }
    checks.push(kernel);
    checks.push(cgroup_check(status, enforcing));
    checks.push(enforcing_check(status, enforcing, service));
    checks.push(ready_check(status));
    checks.push(cert_names_check(
        &strings(&status["certSans"]),
        cluster_domain,
        &service.cluster_ips,
    ));
    checks.push(cert_expiry_check(status["certNotAfter"].as_i64(), now));
    checks.push(if status["recorderWritable"] == false {
        Check::fail(
            "node.recorder",
            "the record log cannot be written",
            "check the volume of record.dir (full, read-only?): in strict durability the \
             agent refuses requests it cannot record",
        )
    } else {
        Check::ok("node.recorder", "the record log is writable")
    });
    if let Some(webhook) = status["webhook"].as_object() {
        let lag = webhook["lagRecords"].as_u64().unwrap_or_default();
        checks.push(if webhook["failing"] == true {
            Check::warn(
                "node.webhook",
                format!("the record webhook is {lag} record(s) behind and its last POST failed"),
                "check record.webhook.url and the receiver (the agent's log says why); \
                 records wait in the node's log until retention deletes them",
            )
        } else {
            Check::ok(
                "node.webhook",
                format!("the record webhook is {lag} record(s) behind"),
            )
        });
    }
    if let Some(check) = notifications_check(&status["notifications"]) {
        checks.push(check);
    }
    checks
}

/// Whether the node's approval notifications go through: a warning naming each target
/// whose last attempt failed (held requests still wait; approvers just are not told).
fn notifications_check(targets: &Value) -> Option<Check> {
    let targets = targets.as_array().filter(|t| !t.is_empty())?;
    let failing: Vec<String> = targets
        .iter()
        .filter(|t| t["failing"] == true)
        .map(|t| {
            format!(
                "{} ({})",
                t["target"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("failed")
            )
        })
        .collect();
    Some(if failing.is_empty() {
        Check::ok(
            "node.notifications",
            format!("{} approval notification target(s) deliver", targets.len()),
        )
    } else {
        Check::warn(
            "node.notifications",
            format!("approval notifications are failing: {}", failing.join(", ")),
            "check the target's URL (urlFile or secretRef), caFile and the receiver; \
             approvers are not told of held requests (kgate approvals list still shows them)",
        )
    })
}

fn cgroup_check(status: &Value, enforcing: bool) -> Check {
    if status["cgroupV2"] != true {
        return Check::fail(
            "node.cgroup",
            "no cgroup v2 (unified hierarchy) on this node",
            "kgate's programs attach to a cgroup v2 directory: boot the node with \
             systemd.unified_cgroup_hierarchy=1 (the default of current distributions)",
        );
    }
    let cgroup = status["cgroup"].as_str();
    match (enforcing, cgroup, status["cgroupDriver"].as_str()) {
        (true, Some(cgroup), Some(driver)) => Check::ok(
            "node.cgroup",
            format!("cgroup v2; pods under {cgroup} (kubelet cgroup driver {driver})"),
        ),
        (true, cgroup, None) => Check::warn(
            "node.cgroup",
            format!(
                "cgroup v2; pods under {}, whose name shows no kubelet cgroup driver",
                cgroup.unwrap_or("?")
            ),
            "the agent attaches to the `cgroup` of its config: make it the kubelet's pod \
             cgroup (kubepods.slice for the systemd driver, kubepods for cgroupfs)",
        ),
        _ => Check::ok("node.cgroup", "cgroup v2"),
    }
}

fn enforcing_check(status: &Value, enforcing: bool, service: &ServiceFacts) -> Check {
    if !enforcing {
        return Check::fail(
            "node.enforcing",
            "kernel programs not attached: the agent runs with `kernel: false`, so pods \
             reach the API server without going through it",
            "remove `kernel: false` from the agent's config (ConfigMap kgate-agent) and \
             give the DaemonSet the capabilities deploy/daemonset.yaml grants",
        );
    }
    let targets: Vec<SocketAddr> = strings(&status["targets"])
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    let missing: Vec<String> = service
        .cluster_ips
        .iter()
        .filter_map(|ip| Some(SocketAddr::new(*ip, service.port?)))
        .filter(|addr| !targets.contains(addr))
        .map(|addr| addr.to_string())
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            "node.enforcing",
            format!(
                "enforcing, but not intercepting the kubernetes Service at {}",
                missing.join(", ")
            ),
            "keep endpoint discovery on (`discovery`), or list the Service's address in \
             `targets` in the agent's config",
        );
    }
    if status["targetsSynced"] != true {
        return Check::fail(
            "node.enforcing",
            "enforcing, but the API server's endpoints are not programmed yet",
            "the agent cannot list the kubernetes Service and its EndpointSlices: see \
             rbac.agent above and the agent's log",
        );
    }
    Check::ok(
        "node.enforcing",
        format!("enforcing: intercepting {}", join(&targets)),
    )
}

fn ready_check(status: &Value) -> Check {
    let mut waiting = Vec::new();
    if status["policiesLoaded"] != true {
        waiting.push("policies not loaded (KgatePolicy CRD, RBAC?)");
    }
    if status["podIndexSynced"] != true {
        waiting.push("the node's pod list not loaded (RBAC for pods?)");
    }
    if waiting.is_empty() {
        Check::ok("node.ready", "policies and the node's pods loaded")
    } else {
        Check::fail(
            "node.ready",
            format!("not ready: {}", waiting.join("; ")),
            "until then the agent answers 503; its log says what it waits for",
        )
    }
}

/// The names pods verify when they dial the `kubernetes` Service, against `sans`.
pub(super) fn cert_names_check(sans: &[String], cluster_domain: &str, ips: &[IpAddr]) -> Check {
    let names = [
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{cluster_domain}"),
    ];
    let have_ip = |ip: &IpAddr| sans.iter().any(|s| s.parse::<IpAddr>().ok() == Some(*ip));
    let have_name = |n: &String| sans.iter().any(|s| s.eq_ignore_ascii_case(n));
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !have_name(n))
        .cloned()
        .chain(
            ips.iter()
                .filter(|ip| !have_ip(ip))
                .map(ToString::to_string),
        )
        .collect();
    if sans.is_empty() {
        return Check::warn(
            "node.cert-names",
            "the agent reports no serving certificate names",
            "an older agent? upgrade the DaemonSet's image",
        );
    }
    if !missing.is_empty() {
        let ip_flags: String = ips.iter().map(|ip| format!(" --cluster-ip {ip}")).collect();
        return Check::fail(
            "node.cert-names",
            format!("the serving certificate lacks {}", missing.join(", ")),
            format!(
                "pods verify these names when they dial the kubernetes Service and refuse \
                 kgate without them: issue one that covers them, `kgate cert issue \
                 --ca-cert ca.crt --ca-key ca.key{ip_flags} --cluster-domain \
                 {cluster_domain} --secret kgate-serving-cert | kubectl apply -f -`"
            ),
        );
    }
    let mut covered: Vec<String> = names.to_vec();
    covered.extend(ips.iter().map(ToString::to_string));
    Check::ok(
        "node.cert-names",
        format!("the serving certificate covers {}", covered.join(", ")),
    )
}

/// Expired: fail; within [`CERT_WARN_DAYS`]: warn.
pub(super) fn cert_expiry_check(not_after: Option<i64>, now: i64) -> Check {
    let renew = "issue a new one (`kgate cert issue ... --secret kgate-serving-cert | \
                 kubectl apply -f -`); agents load it without a restart";
    let Some(not_after) = not_after else {
        return Check::warn(
            "node.cert-expiry",
            "the agent reports no serving certificate expiry",
            "an older agent? upgrade the DaemonSet's image",
        );
    };
    let date = jiff::Timestamp::from_second(not_after).map_or_else(
        |_| not_after.to_string(),
        |t| t.strftime("%Y-%m-%d").to_string(),
    );
    let days = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        Check::fail(
            "node.cert-expiry",
            format!("the serving certificate expired on {date}"),
            format!("pods refuse an expired certificate: {renew}"),
        )
    } else if days < CERT_WARN_DAYS {
        Check::warn(
            "node.cert-expiry",
            format!("the serving certificate expires in {days} day(s), on {date}"),
            renew,
        )
    } else {
        Check::ok(
            "node.cert-expiry",
            format!("the serving certificate is valid until {date} ({days} days)"),
        )
    }
}

/// Whether the fresh agents enforce the same policies and run the same version.
pub(super) fn agreement(statuses: &[(String, Value)]) -> Vec<Check> {
    if statuses.is_empty() {
        return Vec::new();
    }
    let groups = |field: &str| {
        let mut by: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (node, status) in statuses {
            let value = status[field].as_str().unwrap_or("unknown").to_owned();
            by.entry(value).or_default().push(node);
        }
        by
    };
    let describe = |by: &BTreeMap<String, Vec<&str>>| {
        by.iter()
            .map(|(value, nodes)| format!("{value} on {}", nodes.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let policies = groups("policyDigest");
    let policy = if policies.len() == 1 {
        Check::ok(
            "agents.policy",
            format!(
                "{} agent(s) enforce the same policies (digest {})",
                statuses.len(),
                policies.keys().next().map_or("", String::as_str)
            ),
        )
    } else {
        Check::warn(
            "agents.policy",
            format!("agents enforce different policies: {}", describe(&policies)),
            "agents take a KgatePolicy change within seconds and report it at their next \
             heartbeat; if this lasts, the odd agents are not seeing changes (their log \
             says why) or run with other policy settings",
        )
    };
    let versions = groups("version");
    let version = if versions.len() == 1 {
        Check::ok(
            "agents.version",
            format!(
                "every agent runs kgate {}",
                versions.keys().next().map_or("", String::as_str)
            ),
        )
    } else {
        Check::warn(
            "agents.version",
            format!("agents run different versions: {}", describe(&versions)),
            "a rolling update in progress? `kubectl -n <kgate namespace> rollout status \
             daemonset/kgate-agent`",
        )
    };
    vec![policy, version]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}
