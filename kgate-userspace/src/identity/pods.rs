//! The node-local pod index: every pod scheduled on this node (a kube-rs watch with
//! `spec.nodeName=<node>`), by UID, with what identity needs: namespace, name, service
//! account, labels, and container names by runtime container ID.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tracing::{info, warn};

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

#[derive(Clone)]
pub struct PodIndex {
    pods: Arc<RwLock<HashMap<String, Arc<PodInfo>>>>,
    synced: watch::Receiver<bool>,
}

// === impl PodIndex ===

impl PodIndex {
    /// Starts watching the pods of `node`.
    pub fn spawn(client: kube::Client, node: &str) -> Self {
        let pods = Arc::new(RwLock::new(HashMap::new()));
        let (tx, synced) = watch::channel(false);
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let index = pods.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            let mut pending: Option<HashMap<String, Arc<PodInfo>>> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => pending = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let (Some(pending), Some(info)) = (pending.as_mut(), PodInfo::of(&pod)) {
                            pending.insert(info.uid.clone(), Arc::new(info));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let fresh = pending.take().unwrap_or_default();
                        let count = fresh.len();
                        *write(&index) = fresh;
                        if !*tx.borrow() {
                            info!(node, pods = count, "pod index synced");
                        }
                        let _ = tx.send(true);
                    }
                    Ok(watcher::Event::Apply(pod)) => {
                        if let Some(info) = PodInfo::of(&pod) {
                            write(&index).insert(info.uid.clone(), Arc::new(info));
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(uid) = pod.metadata.uid {
                            write(&index).remove(&uid);
                        }
                    }
                    Err(error) => warn!(%error, "pod watch failed; retrying"),
                }
            }
        });
        Self { pods, synced }
    }

    /// An index over fixed pods, already synced (tests).
    pub fn fixed(pods: impl IntoIterator<Item = PodInfo>) -> Self {
        let map = pods
            .into_iter()
            .map(|p| (p.uid.clone(), Arc::new(p)))
            .collect();
        let (_tx, synced) = watch::channel(true);
        Self {
            pods: Arc::new(RwLock::new(map)),
            synced,
        }
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The pod with `uid`. A pod that is not (yet) in the index is waited for up to
    /// `wait`: its first API call can race the watch event that announces it.
    pub async fn get(&self, uid: &str, wait: Duration) -> Lookup {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pod) = self
                .pods
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(uid)
            {
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
}

fn write(
    index: &RwLock<HashMap<String, Arc<PodInfo>>>,
) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<PodInfo>>> {
    index
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl PodInfo ===

impl PodInfo {
    pub(super) fn of(pod: &Pod) -> Option<Self> {
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
