//! This node's pods (a watch with `spec.nodeName=<node>`) into the identity stage's
//! pod index, by UID. Not here: what identity knows of a pod ([`PodInfo::of`]) and how
//! it looks one up ([`PodIndex`]).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, runtime::watcher};

use super::reflector::{self, Reflector};
use crate::identity::pods::{PodIndex, PodInfo};

/// Starts watching the pods of `node`; the index is synced once they are listed.
pub fn spawn(client: kube::Client, node: &str) -> PodIndex {
    let index = PodIndex::default();
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let published = index.clone();
    reflector::spawn("pod", api, config, reflector(), move |snapshot| {
        published.publish(snapshot.objects.clone(), snapshot.ready);
    });
    index
}

fn reflector() -> Reflector<Pod, Arc<PodInfo>> {
    Reflector::new(
        |pod| pod.metadata.uid.clone(),
        |pod, _| PodInfo::of(pod).map(Arc::new),
    )
}
