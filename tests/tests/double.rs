//! The API-server double against the real kubectl, directly (no kgate): the double
//! must be faithful before kgate is judged against it.

use std::{fs, process::Command};

use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Kubectl, kubeconfig, scratch_dir},
};

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        &scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_and_writes() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "rw");
    tokio::task::spawn_blocking(move || {
        let pods = k.ok(&["get", "pods"]);
        assert!(pods.contains("web-0") && pods.contains("Running"), "{pods}");
        let yaml = k.ok(&["get", "pod", "web-0", "-o", "yaml"]);
        assert!(yaml.contains("nodeName: node-1"), "{yaml}");
        let secret = k.ok(&[
            "get",
            "secret",
            "db-creds",
            "-o",
            "jsonpath={.data.password}",
        ]);
        assert_eq!(secret, "czNjcjN0LXBhc3N3b3Jk");
        // A manifest goes as JSON; `kubectl create configmap` would send protobuf,
        // which the double refuses (415).
        let manifest = k.config.with_file_name("cm.yaml");
        fs::write(
            &manifest,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made}\ndata: {a: '1'}\n",
        )
        .unwrap();
        let manifest = manifest.to_str().unwrap();
        // The double serves no OpenAPI schemas for client-side validation.
        k.ok(&["create", "--validate=false", "-f", manifest]);
        let (ok, _, err) = k.run(&["create", "--validate=false", "-f", manifest]);
        assert!(
            !ok && err.contains("AlreadyExists")
                && err.contains("configmaps \"made\" already exists"),
            "{err}"
        );
        k.ok(&[
            "patch",
            "configmap",
            "made",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ]);
        let data = k.ok(&["get", "configmap", "made", "-o", "jsonpath={.data}"]);
        assert!(
            data.contains("\"b\":\"2\"") && data.contains("\"a\":\"1\""),
            "{data}"
        );
        k.ok(&["scale", "deployment", "web", "--replicas=3"]);
        assert_eq!(
            k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
            "3"
        );
        k.ok(&["delete", "configmap", "made"]);
        let (ok, _, err) = k.run(&["get", "configmap", "made"]);
        assert!(
            !ok && err.contains("NotFound") && err.contains("configmaps \"made\" not found"),
            "{err}"
        );
        let (ok, out, _e) = k.run(&["exec", "web-0", "--", "echo", "hi", "there"]);
        assert!(ok && out == "hi there\n", "{out} / {_e}");
        let logs = k.ok(&["logs", "web-0"]);
        assert!(
            logs.starts_with("line 1\n") && logs.ends_with("line 10\n"),
            "{logs}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_and_bad_tokens() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("double-auth");
    let bad = kubeconfig(&dir, &server.url(), server.ca_pem(), "not-a-token");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&bad)
            .args(["get", "pods"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // kubectl's wording for a 401 Status from the API server.
    assert!(
        !out.status.success() && err.contains("provide credentials"),
        "{err}"
    );
}
