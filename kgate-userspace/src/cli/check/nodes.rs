//! Nodes. Before installing: each node's kernel, as its kubelet reports it
//! (`status.nodeInfo.kernelVersion`), and its kubelet's cgroup driver, from the
//! kubelet's own configuration (`/configz`, through the API server's node proxy).
//! After: each node's agent from its heartbeat Lease (judged by [`super::agent`]),
//! and the nodes that have no agent at all.
//!
//! Not here: asking each agent's admin endpoint (`kgate status --agent` does that);
//! the Lease is what an admin's kubeconfig can read.

use std::collections::BTreeMap;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{Api, api::ListParams};
use serde_json::Value;

use super::{
    agent::{agent_checks, agreement},
    cluster::{ServiceFacts, brief},
    report::{Check, Report},
};
use crate::{
    admin::heartbeat::{APP_LABEL, NODE_LABEL},
    ebpf::FEATURES,
};

const NODES: &str = "nodes";
const AGENTS: &str = "kgate agents";

/// The oldest long-term-support kernel: older ones with every hook work, unmaintained.
const OLDEST_LTS: (u32, u32) = (5, 10);

/// `--pre`: every node's kernel and kubelet cgroup driver.
pub(super) async fn pre(client: &kube::Client, report: &mut Report) {
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            report.add(
                NODES,
                Check::warn(
                    "node.list",
                    format!("cannot list nodes: {}", brief(&error)),
                    "kgate check needs `list` on nodes to check their kernels",
                ),
            );
            return;
        }
    };
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        let check = match info {
            Some(info) => kernel_check(&info.kernel_version),
            None => Check::warn(
                "node.kernel",
                "the kubelet reports no nodeInfo",
                "is the kubelet running and registered? (`kubectl describe node`)",
            ),
        };
        report.add(NODES, prefixed(check, &name));
        let path = format!("/api/v1/nodes/{name}/proxy/configz");
        let driver = match http::Request::get(&path).body(Vec::new()) {
            Ok(request) => client
                .request::<Value>(request)
                .await
                .map_err(|e| brief(&e))
                .and_then(|c| {
                    c["kubeletconfig"]["cgroupDriver"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "configz names no cgroupDriver".to_owned())
                }),
            Err(error) => Err(error.to_string()),
        };
        report.add(
            NODES,
            prefixed(
                driver_check(driver.as_deref().map_err(String::as_str)),
                &name,
            ),
        );
    }
}

/// `node-1: ...`, for lines of the shared `nodes` group.
fn prefixed(mut check: Check, node: &str) -> Check {
    check.message = format!("{node}: {}", check.message);
    check.on(node)
}

/// A kernel release against [`FEATURES`] and [`OLDEST_LTS`].
pub(super) fn kernel_check(release: &str) -> Check {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Check::warn(
            "node.kernel",
            format!("cannot read the kernel release {release:?}"),
            "kgate's kernel programs need Linux 5.8 or later",
        );
    };
    let missing: Vec<String> = FEATURES
        .iter()
        .filter(|(_, since)| *since > (major, minor))
        .map(|(name, (a, b))| format!("{name} ({a}.{b})"))
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            "node.kernel",
            format!("Linux {release} lacks {}", missing.join(", ")),
            "kgate's kernel programs need Linux 5.8 or later: upgrade the node's kernel \
             (every maintained distribution ships one)",
        );
    }
    if (major, minor) < OLDEST_LTS {
        return Check::warn(
            "node.kernel",
            format!("Linux {release} has every hook kgate needs but is no longer maintained"),
            "5.10 is the oldest long-term kernel still maintained: upgrade the node's kernel",
        );
    }
    Check::ok(
        "node.kernel",
        format!("Linux {release} has every hook kgate's programs need"),
    )
}

/// The kubelet's cgroup driver, or why it is unknown: it decides the pod cgroup the
/// agent's `cgroup` setting must name.
pub(super) fn driver_check(driver: Result<&str, &str>) -> Check {
    let config = "make `cgroup` in the agent's config (deploy/configmap.yaml) the \
                  kubelet's pod cgroup: kubepods.slice under the systemd driver, kubepods \
                  under cgroupfs (below the host's cgroup mount, /host/cgroup in the \
                  DaemonSet)";
    match driver {
        Ok("systemd") => Check::ok(
            "node.cgroup-driver",
            "kubelet cgroup driver systemd: pods under kubepods.slice",
        ),
        Ok("cgroupfs") => Check::ok(
            "node.cgroup-driver",
            "kubelet cgroup driver cgroupfs: pods under kubepods (not kubepods.slice)",
        ),
        Ok(other) => Check::warn(
            "node.cgroup-driver",
            format!("kubelet cgroup driver {other:?} is not one kgate knows"),
            config,
        ),
        Err(error) => Check::warn(
            "node.cgroup-driver",
            format!("kubelet cgroup driver unknown: {error}"),
            format!(
                "read `cgroupDriver` in the kubelet's config (/var/lib/kubelet/config.yaml) \
                 and {config}"
            ),
        ),
    }
}

/// After installing: every node's agent from its Lease in `namespace`, and the nodes
/// without one.
pub(super) async fn post(
    client: &kube::Client,
    namespace: &str,
    cluster_domain: &str,
    service: &ServiceFacts,
    report: &mut Report,
) {
    let leases = Api::<Lease>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{}={}", APP_LABEL.0, APP_LABEL.1)))
        .await;
    let leases = match leases {
        Ok(list) => list.items,
        Err(error) => {
            report.add(
                AGENTS,
                Check::fail(
                    "agents.heartbeats",
                    format!(
                        "cannot list the agents' Leases in {namespace}: {}",
                        brief(&error)
                    ),
                    "kgate check needs `list` on leases.coordination.k8s.io there (the \
                     kgate-status-reader ClusterRole grants it)",
                ),
            );
            return;
        }
    };
    let mut by_node: BTreeMap<String, (Option<Lease>, Option<Node>)> = BTreeMap::new();
    for lease in leases {
        let node = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_LABEL))
            .cloned();
        if let Some(node) = node {
            by_node.entry(node).or_default().0 = Some(lease);
        }
    }
    match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(nodes) => {
            for node in nodes.items {
                let name = node.metadata.name.clone().unwrap_or_default();
                by_node.entry(name).or_default().1 = Some(node);
            }
        }
        Err(error) => report.add(
            AGENTS,
            Check::warn(
                "agents.nodes",
                format!(
                    "cannot list nodes ({}): only nodes with a Lease are checked",
                    brief(&error)
                ),
                "kgate check needs `list` on nodes to find nodes without an agent",
            ),
        ),
    }
    let now = jiff::Timestamp::now();
    let mut fresh = Vec::new();
    let mut per_node = Vec::new();
    for (name, (lease, node)) in &by_node {
        let kubelet_kernel = node
            .as_ref()
            .and_then(|n| n.status.as_ref()?.node_info.as_ref())
            .map(|i| i.kernel_version.clone());
        let Some(lease) = lease else {
            per_node.push((name, vec![no_agent(name, namespace)]));
            continue;
        };
        match crate::nodes::lease_status(lease, now) {
            (Ok(status), seen) => {
                let mut checks = vec![Check::ok(
                    "node.agent",
                    format!(
                        "kgate {} agent, heartbeat {}s ago",
                        status["version"].as_str().unwrap_or("?"),
                        seen.unwrap_or_default()
                    ),
                )];
                let release = status["kernelRelease"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| kubelet_kernel.clone());
                checks.extend(agent_checks(
                    &status,
                    release.as_deref(),
                    cluster_domain,
                    service,
                    now.as_second(),
                ));
                per_node.push((name, checks));
                fresh.push((name.clone(), status));
            }
            (Err(why), _) => per_node.push((
                name,
                vec![Check::fail(
                    "node.agent",
                    why,
                    format!(
                        "look at the agent pod on this node and its log: \
                         `kubectl -n {namespace} get pods -o wide --field-selector \
                         spec.nodeName={name}`; meanwhile its pinned programs keep \
                         refusing the node's pods (fail closed)"
                    ),
                )],
            )),
        }
    }
    if by_node.values().all(|(lease, _)| lease.is_none()) {
        report.add(
            AGENTS,
            Check::fail(
                "agents.heartbeats",
                format!("no kgate agent has a heartbeat Lease in {namespace}"),
                "install kgate (`kubectl apply -k deploy/`), or name its namespace with -n",
            ),
        );
    }
    for check in agreement(&fresh) {
        report.add(AGENTS, check);
    }
    for (name, checks) in per_node {
        for check in checks {
            report.add(&format!("node {name}"), check.on(name));
        }
    }
}

fn no_agent(node: &str, namespace: &str) -> Check {
    Check::fail(
        "node.agent",
        format!("no kgate agent (no heartbeat Lease kgate-{node} in {namespace})"),
        format!(
            "the DaemonSet runs no agent here, so nothing stops this node's pods from \
             reaching the API server directly: `kubectl -n {namespace} get pods -o wide \
             --field-selector spec.nodeName={node}`; look for a taint the DaemonSet does \
             not tolerate, a nodeSelector, or a pod that does not start"
        ),
    )
}
