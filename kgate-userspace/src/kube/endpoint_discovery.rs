//! API server endpoint discovery: the `kubernetes` Service (by name) and its
//! EndpointSlices (by the `kubernetes.io/service-name` label), two watches whose
//! snapshots combine into one [`Discovered`]. A watch that fails keeps the last known
//! addresses: a discovery outage never removes a target.
//!
//! Not here: reading addresses out of the objects and what they are for
//! ([`crate::api_endpoints`]).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, runtime::watcher};
use tokio::sync::watch;
use tracing::info;

use super::reflector::{self, Reflector, Snapshot};
use crate::api_endpoints::{Discovered, Endpoint, service_addresses, slice_endpoints};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Both watches' last snapshots, and where their combination goes.
struct Combiner {
    seen: Mutex<Seen>,
    tx: watch::Sender<Discovered>,
    /// `namespace/name`, for the log.
    service: String,
}

/// Watches `namespace/name` and its slices; the receiver sees every new result.
pub fn spawn(client: kube::Client, namespace: &str, name: &str) -> watch::Receiver<Discovered> {
    let (tx, rx) = watch::channel(Discovered::default());
    let combiner = Arc::new(Combiner {
        seen: Mutex::default(),
        tx,
        service: format!("{namespace}/{name}"),
    });
    let for_service = combiner.clone();
    reflector::spawn(
        "API server Service",
        Api::namespaced(client.clone(), namespace),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
        services(),
        move |snapshot| for_service.update(|seen| seen.service = snapshot.clone()),
    );
    reflector::spawn(
        "API server EndpointSlice",
        Api::namespaced(client, namespace),
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")),
        slices(),
        move |snapshot| combiner.update(|seen| seen.slices = snapshot.clone()),
    );
    rx
}

#[derive(Default)]
struct Seen {
    service: Snapshot<Vec<SocketAddr>>,
    slices: Snapshot<Vec<Endpoint>>,
}

// === impl Combiner ===

impl Combiner {
    fn update(&self, update: impl FnOnce(&mut Seen)) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        update(&mut seen);
        let found = discovered(&seen.service, &seen.slices);
        self.tx.send_if_modified(|current| {
            if *current == found {
                return false;
            }
            info!(
                service = self.service,
                cluster_ips = ?found.service,
                endpoints = ?found.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
                synced = found.synced,
                "API endpoints discovered"
            );
            *current = found;
            true
        });
    }
}

fn services() -> Reflector<Service, Vec<SocketAddr>> {
    Reflector::new(
        |svc| svc.metadata.name.clone(),
        |svc, _| Some(service_addresses(svc)),
    )
}

fn slices() -> Reflector<EndpointSlice, Vec<Endpoint>> {
    Reflector::new(
        |slice| slice.metadata.name.clone(),
        |slice, _| Some(slice_endpoints(slice)),
    )
}

/// Both watches' views as one: synced once both have listed.
fn discovered(service: &Snapshot<Vec<SocketAddr>>, slices: &Snapshot<Vec<Endpoint>>) -> Discovered {
    let endpoints: BTreeSet<Endpoint> = slices.objects.values().flatten().copied().collect();
    Discovered {
        service: service.objects.values().flatten().copied().collect(),
        endpoints: endpoints.into_iter().collect(),
        synced: service.ready && slices.ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_relist_replaces_what_the_watch_knew() {
        let mut services = services();
        let mut slices = slices();
        let ep = |ip: &str| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"name": ip}, "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}], "ports": [{"port": 6443}]}))
            .unwrap()
        };
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(ep("10.0.0.1")),
            watcher::Event::InitDone,
            watcher::Event::Apply(ep("10.0.0.2")),
        ] {
            slices.apply(event);
        }
        let found = discovered(services.snapshot(), slices.snapshot());
        assert!(!found.synced, "the service has not listed yet");
        assert_eq!(found.endpoints.len(), 2);
        // A re-list after a watch gap: the slice deleted meanwhile disappears.
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(ep("10.0.0.2")),
            watcher::Event::InitDone,
        ] {
            slices.apply(event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            services.apply(event);
        }
        let found = discovered(services.snapshot(), slices.snapshot());
        assert!(found.synced);
        assert_eq!(
            found
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect::<Vec<_>>(),
            vec!["10.0.0.2:6443"]
        );
    }

    #[test]
    fn the_service_and_its_slices_combine() {
        let mut services = services();
        let mut slices = slices();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}}))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "kubernetes"},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.1"]}],
            "ports": [{"port": 6443}]}))
        .unwrap();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(svc.clone()),
            watcher::Event::InitDone,
        ] {
            services.apply(event);
        }
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(slice),
            watcher::Event::InitDone,
        ] {
            slices.apply(event);
        }
        let found = discovered(services.snapshot(), slices.snapshot());
        assert_eq!(found.service, vec!["10.96.0.1:443".parse().unwrap()]);
        assert_eq!(found.endpoints.len(), 1, "an address twice is one endpoint");
        assert!(found.synced);
        // The Service deleted: no ClusterIP to intercept, the endpoints stay.
        services.apply(watcher::Event::Delete(svc));
        let found = discovered(services.snapshot(), slices.snapshot());
        assert!(found.service.is_empty());
        assert_eq!(found.endpoints.len(), 1);
        assert!(found.synced, "a deletion is not an outage");
    }
}
