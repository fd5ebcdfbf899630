//! The faults of one node: no agent, a serving certificate without the ClusterIP or
//! expired, an agent without its kernel programs, a record webhook that cannot
//! deliver.

use std::time::Duration;

use kgate_tests::{
    apiserver::{ApiServer, Config},
    harness::{Kubectl, scratch_dir},
    pki::Ca,
    recorder::eventually,
};
use serde_json::json;

use super::support::{CRDS, Cluster, certificate, check, not_ok, only};

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_an_agent() {
    let cluster = Cluster::start().await;
    let mut node = cluster.server.get("nodes", "", "node-2").unwrap();
    node["metadata"] = json!({"name": "node-3", "labels": {"kubernetes.io/hostname": "node-3"}});
    cluster.server.create("nodes", "", node).unwrap();
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(1));
    let (what, message, hint) = only(&bad);
    assert_eq!(bad[0]["node"], "node-3");
    assert_eq!(what, "node.agent fail");
    assert_eq!(
        message,
        "no kgate agent (no heartbeat Lease kgate-node-3 in kgate-system)"
    );
    assert!(
        hint.starts_with("the DaemonSet runs no agent here, so nothing stops this node's pods")
            && hint.contains("--field-selector spec.nodeName=node-3"),
        "{hint}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_without_the_cluster_ip() {
    let cluster = Cluster::start().await;
    certificate(&cluster.agent_dir("node-1"), &["127.0.0.1"], false);
    cluster
        .publish("node-1", |s| {
            s["certSans"]
                .as_array()
                .is_some_and(|sans| !sans.contains(&json!("10.96.0.1")))
        })
        .await;
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(1));
    let (what, message, hint) = only(&bad);
    assert_eq!(bad[0]["node"], "node-1");
    assert_eq!(what, "node.cert-names fail");
    assert_eq!(message, "the serving certificate lacks 10.96.0.1");
    assert!(
        hint.contains("pods verify these names when they dial the kubernetes Service")
            && hint.contains(
                "`kgate cert issue --ca-cert ca.crt --ca-key ca.key --cluster-ip 10.96.0.1 \
                 --cluster-domain cluster.local --secret kgate-serving-cert | kubectl apply -f -`"
            ),
        "{hint}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate() {
    let cluster = Cluster::start().await;
    certificate(
        &cluster.agent_dir("node-2"),
        &["10.96.0.1", "127.0.0.1"],
        true,
    );
    cluster
        .publish("node-2", |s| {
            s["certNotAfter"]
                .as_i64()
                .is_some_and(|t| t < 1_750_000_000)
        })
        .await;
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(1));
    let (what, message, hint) = only(&bad);
    assert_eq!(bad[0]["node"], "node-2");
    assert_eq!(what, "node.cert-expiry fail");
    assert_eq!(message, "the serving certificate expired on 2025-01-01");
    assert!(
        hint.starts_with("pods refuse an expired certificate: issue a new one")
            && hint.contains("agents load it without a restart"),
        "{hint}"
    );
}

/// Agents whose audit webhook receiver is not there: the one that recorded requests
/// is behind and says its last POST failed; records wait on the node, so it warns.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_webhook_that_cannot_deliver() {
    let records = scratch_dir("check-records");
    let nowhere = kgate_tests::harness::free_port();
    let cluster = Cluster::start_with(true, |node| {
        let ca = Ca::new("audit receiver CA").unwrap().cert_pem();
        std::fs::write(records.join(format!("{node}-ca.crt")), ca).unwrap();
        format!(
            "record:\n  dir: '{}/{node}'\n  webhook:\n    url: 'https://127.0.0.1:{nowhere}/audit'\n    \
             caFile: '{}/{node}-ca.crt'\n    initialBackoffMillis: 50\n    maxBackoffMillis: 200\n",
            records.display(),
            records.display(),
        )
    })
    .await;
    let (_, agent) = &cluster.agents[0];
    let client = kgate_tests::harness::https_client(&agent.ca_pem, false);
    let request = http::Request::get(format!("{}/api/v1/namespaces/demo/pods", agent.url()))
        .header(
            "authorization",
            format!("Bearer {}", cluster.server.admin_token()),
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 200);
    cluster
        .publish("node-1", |s| s["webhook"]["failing"] == true)
        .await;
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(0), "a warning is no failure");
    let (what, message, hint) = only(&bad);
    assert_eq!(bad[0]["node"], "node-1");
    assert_eq!(what, "node.webhook warn");
    assert!(
        message.starts_with("the record webhook is ")
            && message.ends_with(" record(s) behind and its last POST failed")
            && !message.starts_with("the record webhook is 0 "),
        "{message}"
    );
    assert!(hint.contains("records wait in the node's log"), "{hint}");
}

/// Agents beating for themselves into kgate-system: every field `kgate check` reads
/// comes from the agent, and a standalone agent is no enforcement.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_its_kernel_programs() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = Kubectl::new(
        scratch_dir("check-standalone"),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    tokio::task::spawn_blocking(move || k.ok(&["apply", "-f", CRDS]))
        .await
        .unwrap();
    let cluster = Cluster {
        server,
        agents: Vec::new(),
        dir: scratch_dir("check-standalone"),
    };
    let _agents = [
        cluster.agent("node-1", "kgate-system", ""),
        cluster.agent("node-2", "kgate-system", ""),
    ];
    eventually("both heartbeats", Duration::from_secs(20), async || {
        let both = ["node-1", "node-2"].iter().all(|n| {
            cluster
                .server
                .get("leases", "kgate-system", &format!("kgate-{n}"))
                .is_some()
        });
        both.then_some(())
    })
    .await;
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(1));
    let failed: Vec<(&str, &str)> = bad
        .iter()
        .map(|c| (c["node"].as_str().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [("node-1", "node.enforcing"), ("node-2", "node.enforcing")],
        "{bad:#?}"
    );
    assert!(
        bad[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("kernel programs not attached: the agent runs with `kernel: false`"),
        "{bad:#?}"
    );
    assert!(
        bad[0]["hint"]
            .as_str()
            .unwrap()
            .contains("remove `kernel: false` from the agent's config"),
        "{bad:#?}"
    );
    // What the agents computed themselves reached the check.
    let (_, out, _) = check(cluster.kubeconfig(), &[]).await;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    for line in [
        format!("√ Linux {} has every hook", release.trim()),
        "√ the serving certificate covers kubernetes, kubernetes.default, kubernetes.default.svc, \
         kubernetes.default.svc.cluster.local, 10.96.0.1"
            .to_owned(),
        "√ 2 agent(s) enforce the same policies (digest ".to_owned(),
    ] {
        assert!(out.contains(&line), "no {line:?} in\n{out}");
    }
}
