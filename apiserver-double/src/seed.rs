//! What a fresh double holds, as a new kubeadm cluster with a demo workload would: the
//! namespaces, the `kubernetes` Service and its EndpointSlice (pointing at the double
//! itself), two nodes (with the `nodeInfo` their kubelets report), and in namespace `demo` a service account, a running pod, a
//! Secret, a ConfigMap and a Deployment.
//!
//! Not here: anything a controller would add later (no ReplicaSets, no Event objects).

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use crate::{
    KUBERNETES_SERVICE_IP, ServerVersion, resources,
    store::{self, Store},
};

pub(crate) fn seed(store: &Store, addr: SocketAddr, version: ServerVersion) {
    let started = store::now();
    for ns in ["default", "kube-system", "kgate-system", "demo"] {
        let _ = store.create("namespaces", "", json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}, "status": {"phase": "Active"}}));
    }
    seed_kubernetes_service(store, addr);
    for (i, node) in ["node-1", "node-2"].into_iter().enumerate() {
        let _ = store.create("nodes", "", self::node(node, i + 1, version));
    }
    let objects = [
        (
            "serviceaccounts",
            json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "bot"}}),
        ),
        (
            "pods",
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "bot", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.213.0.2", "hostIP": "10.213.0.1", "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"running": {"startedAt": started}}}]}}),
        ),
        (
            "secrets",
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db-creds"}, "type": "Opaque",
            "data": {"username": "YWRtaW4=", "password": "czNjcjN0LXBhc3N3b3Jk"}}),
        ),
        (
            "configmaps",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app-config"}, "data": {"mode": "demo"}}),
        ),
        (
            "deployments",
            json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
        ),
    ];
    for (resource, obj) in objects {
        let resource = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .expect("served")
            .name;
        let _ = store.create(resource, "demo", obj);
    }
}

/// A Ready node of a kubeadm cluster on Debian 12, as its kubelet registers it: the
/// `status.nodeInfo` the kubelet reports (`kubectl get nodes -o wide` shows the
/// kernel, OS image and runtime from it), its InternalIP and hostname, a pod CIDR.
pub(crate) fn node(name: &str, index: usize, version: ServerVersion) -> Value {
    let kubelet = format!("v1.{}.{}", version.minor, version.patch);
    json!({"kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "podCIDRs": [format!("10.244.{index}.0/24")]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": format!("10.213.0.{index}")},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": format!("{index:032x}"), "systemUUID": format!("{index:08x}-0000-0000-0000-000000000000"),
                "bootID": format!("{index:08x}-b007-0000-0000-000000000000"),
                "kernelVersion": "6.1.0-28-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet, "operatingSystem": "linux", "architecture": "amd64"}}})
}

/// The `kubernetes` Service and its EndpointSlice, as the API server maintains them: the
/// ClusterIP (the first address of the service range) on port 443, and the API server's
/// own advertised address and secure port as the one endpoint.
fn seed_kubernetes_service(store: &Store, addr: SocketAddr) {
    let (ip, family) = match addr.ip() {
        ip if ip.is_unspecified() => (IpAddr::from([127, 0, 0, 1]), "IPv4"),
        ip if ip.is_ipv4() => (ip, "IPv4"),
        ip => (ip, "IPv6"),
    };
    let service = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE_IP, "clusterIPs": [KUBERNETES_SERVICE_IP],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]
        },
        "status": {"loadBalancer": {}}
    });
    let slice = json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "kubernetes", "labels": {
    "kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]
    });
    let _ = store.create("services", "default", service);
    let _ = store.create("endpointslices", "default", slice);
}
