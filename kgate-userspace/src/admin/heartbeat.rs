//! The agent's heartbeat: a `coordination.k8s.io/v1` Lease per node, `kgate-<node>`,
//! renewed every interval with the agent's [`AgentStatus`] in an annotation.
//!
//! Why a Lease rather than asking each agent: `kgate status` then works with whatever
//! credential an admin's kubeconfig holds (client certificates and exec plugins
//! included), through the API server's own RBAC, and a node whose agent died shows up
//! as a Lease that stopped being renewed, as kubelets' node Leases do. The API server's
//! pod proxy would not do: it drops the caller's credentials, and the agent's
//! `/status` answers only callers it can authenticate.
//!
//! The status names the agent's pod, admin port and serving certificate's SHA-256:
//! cluster-wide `kgate sessions` ([`crate::cluster_sessions`]) port-forwards to that
//! pod and pins that certificate, trusting it because only the agents' ServiceAccount
//! may write these Leases.
//!
//! Not here: reading the Leases (that is `kgate status`, in [`crate::cli`]).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{debug, warn};

use super::{Admin, AgentStatus};

/// The annotation that carries the agent's status as JSON.
pub(crate) const STATUS_ANNOTATION: &str = "kgate.io/status";
/// The label naming the node a Lease speaks for.
pub(crate) const NODE_LABEL: &str = "kgate.io/node";
/// The label every kgate Lease carries.
pub(crate) const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kgate");

/// A Lease lasts this many intervals.
const INTERVALS_PER_LEASE: u64 = 3;

pub(crate) fn lease_name(node: &str) -> String {
    format!("kgate-{node}")
}

/// Renews the node's Lease every `interval` until the agent stops.
pub(crate) fn spawn(admin: Arc<Admin>, client: kube::Client, namespace: &str, interval: Duration) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let status = admin.status();
            match renew(&api, &status, interval).await {
                Ok(()) => {
                    if failing {
                        warn!(node = status.node, "heartbeat Lease renewed again");
                    }
                    failing = false;
                    debug!(node = status.node, "heartbeat Lease renewed");
                }
                Err(error) => {
                    // Once per outage: `kgate status` will show the node as stale.
                    if !failing {
                        warn!(node = status.node, %error, "cannot renew the heartbeat Lease");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(interval).await;
        }
    });
}

async fn renew(api: &Api<Lease>, status: &AgentStatus, interval: Duration) -> kube::Result<()> {
    let name = lease_name(&status.node);
    let now = crate::record::event::micro_time(jiff::Timestamp::now());
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {APP_LABEL.0: APP_LABEL.1, NODE_LABEL: status.node},
            "annotations": {STATUS_ANNOTATION: serde_json::to_string(status).unwrap_or_default()},
        },
        "spec": {
            "holderIdentity": status.node,
            "leaseDurationSeconds": interval.as_secs() * INTERVALS_PER_LEASE,
            "renewTime": now,
        },
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
