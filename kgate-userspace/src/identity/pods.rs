//! The node-local pod index: every pod scheduled on this node, by UID, with what
//! identity needs: namespace, name, service account, labels, and container names by
//! runtime container ID. Plain data: the pod watch ([`crate::kube::pods`]) publishes
//! each snapshot into it.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;

/// What the index knows of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// (container name, runtime container ID without the `containerd://` prefix).
    pub containers: Vec<(String, Option<String>)>,
}

/// The answer of a lookup.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<PodInfo>),
    /// The index is complete and has no such pod.
    Missing,
    /// The index has not finished its first list: it cannot say.
    NotSynced,
}

/// Starts empty and not synced; see [`PodIndex::publish`].
#[derive(Clone, Default)]
pub struct PodIndex {
    state: Arc<RwLock<Pods>>,
}

#[derive(Default)]
struct Pods {
    by_uid: Arc<BTreeMap<String, Arc<PodInfo>>>,
    synced: bool,
}

// === impl PodIndex ===

impl PodIndex {
    /// An index over fixed pods, already synced (tests).
    pub fn fixed(pods: impl IntoIterator<Item = PodInfo>) -> Self {
        let index = Self::default();
        let by_uid = pods
            .into_iter()
            .map(|p| (p.uid.clone(), Arc::new(p)))
            .collect();
        index.publish(Arc::new(by_uid), true);
        index
    }

    /// Replaces what the index knows with a complete view: every pod by UID, and
    /// whether the pods have been listed once (never cleared: a stale index still
    /// answers, an unlisted one cannot).
    pub fn publish(&self, by_uid: Arc<BTreeMap<String, Arc<PodInfo>>>, synced: bool) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Pods { by_uid, synced };
    }

    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// The pod with `uid`. A pod that is not (yet) in the index is waited for up to
    /// `wait`: its first API call can race the watch event that announces it.
    pub async fn get(&self, uid: &str, wait: Duration) -> Lookup {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pod) = self.read().by_uid.get(uid) {
                return Lookup::Found(pod.clone());
            }
            if Instant::now() >= deadline {
                return if self.is_synced() {
                    Lookup::Missing
                } else {
                    Lookup::NotSynced
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pods> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// === impl PodInfo ===

impl PodInfo {
    /// What identity knows of `pod`; `None` without a namespace, name or UID.
    pub fn of(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let statuses = pod.status.as_ref().into_iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .chain(s.ephemeral_container_statuses.iter().flatten())
        });
        let containers = statuses
            .map(|c| {
                let id = c
                    .container_id
                    .as_deref()
                    .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_owned());
                (c.name.clone(), id)
            })
            .collect();
        Some(Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
            labels: meta.labels.clone().unwrap_or_default(),
            containers,
        })
    }

    /// The name of the container with runtime ID `id`.
    pub fn container_named_by_id(&self, id: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|(_, cid)| cid.as_deref() == Some(id))
            .map(|(name, _)| name.as_str())
    }
}
