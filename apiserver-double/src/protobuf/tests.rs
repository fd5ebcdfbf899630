//! Bodies captured from kubectl 1.32 (`-v=9` hex dumps, in `../testdata`) decode to
//! the JSON that kubectl would have sent for the same command with `-o json`.

use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/testdata/kubectl-{name}.pb.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let hex = std::fs::read_to_string(&path).unwrap();
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn kubectl_bodies_decode() {
    let cases: [(&str, Value); 8] = [
        // kubectl create token bot --audience=kgate --bound-object-kind=Pod
        //   --bound-object-name=web-0 --duration=2h
        (
            "token",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
            "spec": {"audiences": ["kgate"], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0"}, "expirationSeconds": 7200}}),
        ),
        // kubectl create configmap cfg --from-literal=color=blue --from-literal=size=xl
        (
            "configmap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
            "data": {"color": "blue", "size": "xl"}}),
        ),
        // kubectl create secret generic sec --from-literal=password=s3cr3t --type=Opaque
        (
            "secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
            "data": {"password": "czNjcjN0"}, "type": "Opaque"}),
        ),
        // kubectl create deployment dep --image=nginx:1.27 --replicas=0 --port=8080
        (
            "deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"labels": {"app": "dep"}, "name": "dep"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "dep"}}, "strategy": {},
                "template": {"metadata": {"labels": {"app": "dep"}}, "spec": {"containers": [
                    {"image": "nginx:1.27", "name": "nginx", "ports": [{"containerPort": 8080}], "resources": {}}]}}},
            "status": {}}),
        ),
        (
            "namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}, "spec": {}}),
        ),
        (
            "serviceaccount",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa1"}}),
        ),
        // kubectl auth can-i delete pods -n demo
        (
            "canI",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {},
            "spec": {"resourceAttributes": {"namespace": "demo", "resource": "pods", "verb": "delete"}}}),
        ),
        // kubectl auth whoami
        (
            "whoami",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}}),
        ),
    ];
    for (name, want) in cases {
        assert_eq!(super::decode(&fixture(name)).unwrap(), want, "{name}");
    }
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    let good = fixture("configmap");
    assert!(
        super::decode(b"{\"kind\": \"ConfigMap\"}").is_err(),
        "no magic"
    );
    for cut in [5, 20, good.len() - 3] {
        assert!(super::decode(&good[..cut]).is_err(), "truncated at {cut}");
    }
    // An envelope for a kind the tables do not know.
    let mut unknown = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Widget\x12\x00".to_vec();
    assert!(super::decode(&unknown).unwrap_err().contains("Widget"));
    unknown.truncate(4);
    assert!(super::decode(&unknown).is_err());
}
