//! The agent's kube watches (`kgate::kube`) against the API-server double with the
//! real kube-runtime watcher, through a fault proxy: the node's pod index and API
//! server endpoint discovery fill from the first list, keep the last good state while
//! the API server is unreachable, and follow changes once it is back. (The policy
//! watch is exercised through the agent in `policy.rs` and `faults.rs`.)
//!
//! The pod index and endpoint discovery otherwise run only with the kernel programs
//! (`ebpf.rs`, `cluster.rs`); here they run without.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kgate::internal::{
    Discovered,
    identity::pods::{Lookup, PodIndex},
};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle, KUBERNETES_SERVICE_IP},
    fault_proxy::{Fault, FaultProxy},
    harness::kube_client,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use tokio::sync::watch;

/// A client to the double through `proxy` (what the watches use), and one straight to
/// the double (what the test changes the cluster with while the proxy is down).
async fn clients(server: &Handle, proxy: &FaultProxy) -> (Client, Client) {
    let token = server.admin_token();
    (
        kube_client(&proxy.url(), proxy.ca_pem(), token).await,
        kube_client(&server.url(), server.ca_pem(), token).await,
    )
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn uid(server: &Handle, name: &str) -> String {
    server.get("pods", "demo", name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn lookup(index: &PodIndex, uid: &str) -> Option<String> {
    match index.get(uid, Duration::ZERO).await {
        Lookup::Found(pod) => Some(pod.name.clone()),
        Lookup::Missing => None,
        Lookup::NotSynced => panic!("the index forgot it had synced"),
    }
}

/// Cuts the watches' connection and resets every later one.
fn outage(proxy: &FaultProxy) {
    proxy.set(Fault::Reset);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_index_lists_this_nodes_pods_and_keeps_them_through_an_outage() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    let (watching, direct) = clients(&server, &proxy).await;
    let elsewhere: Pod = serde_json::from_value(json!({
        "metadata": {"name": "elsewhere"},
        "spec": {"nodeName": "node-2", "containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(direct, "demo");
    pods.create(&PostParams::default(), &elsewhere)
        .await
        .unwrap();

    let index = kgate::internal::kube::pods::spawn(watching, "node-1");
    eventually(
        "the pod index synced",
        Duration::from_secs(10),
        async || index.is_synced(),
    )
    .await;
    let web = uid(&server, "web-0");
    assert_eq!(lookup(&index, &web).await.as_deref(), Some("web-0"));
    assert_eq!(
        lookup(&index, &uid(&server, "elsewhere")).await,
        None,
        "a pod of another node"
    );

    // While the API server cannot be reached, the index answers from what it had,
    // through the watcher's failures and retries.
    outage(&proxy);
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "web-0 gone from the double",
        Duration::from_secs(10),
        async || server.get("pods", "demo", "web-0").is_none(),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(lookup(&index, &web).await.as_deref(), Some("web-0"));
        assert!(index.is_synced());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back: the deletion it missed reaches the index.
    proxy.set(Fault::None);
    eventually(
        "web-0 leaves the index",
        Duration::from_secs(30),
        async || lookup(&index, &web).await.is_none(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_discovery_finds_the_api_servers_addresses_and_keeps_them_through_an_outage() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    let (watching, _) = clients(&server, &proxy).await;
    let mut found =
        kgate::internal::kube::endpoint_discovery::spawn(watching, "default", "kubernetes");
    let first = wait_until(&mut found, |d| d.synced).await;
    let service = format!("{KUBERNETES_SERVICE_IP}:443");
    assert_eq!(
        first
            .service
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![service.clone()]
    );
    assert_eq!(
        first
            .endpoints
            .iter()
            .map(|e| (e.addr, e.ready))
            .collect::<Vec<_>>(),
        vec![(server.addr(), true)]
    );

    outage(&proxy);
    // A new endpoint the watch cannot see yet.
    let mut slice = server
        .get("endpointslices", "default", "kubernetes")
        .unwrap();
    slice["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"addresses": ["127.0.0.2"], "conditions": {"ready": false}}));
    server.update("endpointslices", "default", slice).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *found.borrow(),
        first,
        "an outage changed what was discovered"
    );

    proxy.set(Fault::None);
    let back = wait_until(&mut found, |d| d.endpoints.len() == 2).await;
    assert_eq!(back.service, first.service);
    assert!(back.synced);
    let added = back
        .endpoints
        .iter()
        .find(|e| e.addr.ip().to_string() == "127.0.0.2")
        .expect("the new endpoint");
    assert!(!added.ready);
}

async fn wait_until(
    found: &mut watch::Receiver<Discovered>,
    done: impl FnMut(&Discovered) -> bool,
) -> Discovered {
    tokio::time::timeout(Duration::from_secs(30), found.wait_for(done))
        .await
        .expect("discovery never got there")
        .unwrap()
        .clone()
}
