//! The agents' heartbeat Leases read back: one row per node, with the status its
//! agent last published, or why there is none (no Lease, a stale one, no status).
//! What `kgate status`, `kgate check` and the console show.
//!
//! Not here: publishing the Leases ([`crate::admin::heartbeat`]) or printing them
//! ([`crate::cli`]).

use serde_json::{Value, json};

/// One node as its heartbeat Lease tells it.
#[derive(Debug)]
pub(crate) struct NodeRow {
    pub node: String,
    /// The agent's last status, if its Lease is fresh; otherwise why not.
    pub status: Result<Value, String>,
    /// Seconds since the Lease was renewed.
    pub seen_seconds: Option<i64>,
}

impl NodeRow {
    /// The agent answers, enforces and is ready.
    pub(crate) fn healthy(&self) -> bool {
        self.status
            .as_ref()
            .is_ok_and(|s| s["enforcing"] == true && s["ready"] == true)
    }
}

/// Every node, with its agent's Lease in `namespace`. Without permission to list
/// nodes, the nodes that have a Lease.
pub(crate) async fn from_leases(
    client: kube::Client,
    namespace: &str,
) -> anyhow::Result<Vec<NodeRow>> {
    use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
    use kube::{Api, api::ListParams};

    use crate::admin::heartbeat::{APP_LABEL, NODE_LABEL};

    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let leases = leases
        .list(&ListParams::default().labels(&format!("{}={}", APP_LABEL.0, APP_LABEL.1)))
        .await
        .map_err(|e| anyhow::anyhow!("listing kgate's Leases in namespace {namespace}: {e}"))?
        .items;
    let mut by_node: std::collections::BTreeMap<String, Option<&Lease>> = leases
        .iter()
        .filter_map(|l| {
            Some((
                l.metadata.labels.as_ref()?.get(NODE_LABEL)?.clone(),
                Some(l),
            ))
        })
        .collect();
    // Nodes without a Lease have an agent that never started: the DaemonSet's gap.
    match Api::<Node>::all(client).list(&ListParams::default()).await {
        Ok(nodes) => {
            for node in nodes.items {
                if let Some(name) = node.metadata.name {
                    by_node.entry(name).or_insert(None);
                }
            }
        }
        Err(error) => {
            eprintln!("kgate: cannot list nodes ({error}); showing only nodes with a kgate Lease");
        }
    }
    let now = jiff::Timestamp::now();
    Ok(by_node
        .into_iter()
        .map(|(node, lease)| {
            let Some(lease) = lease else {
                return NodeRow {
                    node,
                    status: Err("no kgate heartbeat: is the agent running on this node?".into()),
                    seen_seconds: None,
                };
            };
            let (status, seen_seconds) = lease_status(lease, now);
            NodeRow {
                node,
                status,
                seen_seconds,
            }
        })
        .collect())
}

/// The status a heartbeat Lease carries if it is fresh at `now` (else why not), and
/// the seconds since it was renewed. `kgate check` reads Leases with it too.
pub(crate) fn lease_status(
    lease: &k8s_openapi::api::coordination::v1::Lease,
    now: jiff::Timestamp,
) -> (Result<Value, String>, Option<i64>) {
    use crate::admin::heartbeat::STATUS_ANNOTATION;
    let spec = lease.spec.clone().unwrap_or_default();
    let seen = spec.renew_time.map(|t| now.as_second() - t.0.as_second());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(30));
    let status = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .ok_or_else(|| "the Lease carries no status".to_owned())
        .and_then(|s| serde_json::from_str::<Value>(s).map_err(|e| e.to_string()));
    let status = match seen {
        Some(seen) if seen <= duration => status,
        Some(seen) => Err(format!("agent down: last heartbeat {seen}s ago")),
        None => Err("the Lease was never renewed".into()),
    };
    (status, seen)
}

/// The rows of [`from_leases`] as JSON.
pub(crate) fn node_json(rows: &[NodeRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| match &r.status {
                Ok(s) => json!({"node": r.node, "seenSeconds": r.seen_seconds, "status": s}),
                Err(e) => json!({"node": r.node, "seenSeconds": r.seen_seconds, "error": e}),
            })
            .collect(),
    )
}
