//! `kgate check` against the API-server double with agents the harness starts: a
//! healthy cluster passes every check (exit 0, before and after install), and each
//! fault, injected alone, fails (or warns about) its own check with its own hint: the
//! CRDs missing, a node with no agent, a serving certificate whose SANs miss the
//! ClusterIP, an expired one, the JWKS unreachable, the agent's RBAC short of a
//! permission, an agent running without its kernel programs, a kernel too old.
//!
//! Enforcing agents need root and bpffs (ebpf.rs and cluster.rs run them). Here each
//! node's agent is a standalone one whose heartbeat goes to a namespace of its own;
//! the test copies its Lease into kgate-system with what only a kernel-attached agent
//! adds (`enforcing`, the BPF features its attach proved, the pod cgroup, the targets
//! discovery programmed), so everything else `kgate check` reads (kernel release,
//! certificate names and expiry, policy digest, recorder) is what the agent itself
//! computed.

#[path = "check/nodes.rs"]
mod nodes;
#[path = "check/support.rs"]
mod support;

use kgate_tests::{
    apiserver::{ApiServer, Config},
    fault_proxy::{Fault, FaultProxy},
    harness::{kubeconfig, scratch_dir},
};
use serde_json::{Value, json};

use self::support::{AGENT_SA, Cluster, check, not_ok, only};

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_cluster_passes_every_check() {
    let cluster = Cluster::start().await;
    let (code, out, err) = check(cluster.kubeconfig(), &[]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!out.contains('×') && !out.contains('‼'), "{out}");
    for line in [
        "API server\n----------\n√ https://127.0.0.1:",
        "√ version 1.32 is supported (1.28 or later)",
        "√ default/kubernetes: ClusterIP 10.96.0.1, port 443",
        "√ EndpointSlices list 1 ready endpoint(s): 127.0.0.1:",
        "√ /.well-known/openid-configuration: issuer https://kubernetes.default.svc.cluster.local, jwks_uri https://127.0.0.1:",
        "√ /openid/v1/jwks: 1 signing key(s) agents can verify with",
        "√ CustomResourceDefinition kgatepolicies.kgate.io: serves v1alpha1, stores v1alpha1",
        "√ kgate-system/kgate-agent may do all 19 things an agent does",
        "√ 2 agent(s) enforce the same policies (digest ",
        "√ every agent runs kgate 0.1.0",
        "node node-2\n-----------\n√ kgate 0.1.0 agent, heartbeat ",
        "; attached at cgroup/connect4, cgroup/connect6, cgroup/getpeername4, cgroup/getpeername6, sockops, bpf_link",
        "√ cgroup v2; pods under /host/cgroup/kubepods.slice (kubelet cgroup driver systemd)",
        "√ enforcing: intercepting 10.96.0.1:443, 127.0.0.1:",
        "√ the serving certificate covers kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, 10.96.0.1",
        "√ the serving certificate is valid until ",
        "√ the record log is writable",
        "Status: 27 ok, 0 warnings, 0 failures",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }

    let (code, out, _) = check(cluster.kubeconfig(), &["-o", "json"]).await;
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["success"], true, "{report:#}");
    assert_eq!(report["summary"], json!({"ok": 27, "warn": 0, "fail": 0}));
    let node_checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["node"] == "node-1")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        node_checks,
        [
            "node.agent",
            "node.kernel",
            "node.cgroup",
            "node.enforcing",
            "node.ready",
            "node.cert-names",
            "node.cert-expiry",
            "node.recorder"
        ]
    );

    // Before installing, only what the cluster offers: the kubelets' kernels, and
    // their cgroup drivers, unknown here (the double has no kubelet behind its node
    // proxy): warnings, exit 0.
    let (code, out, err) = check(cluster.kubeconfig(), &["--pre"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        !out.contains("kgate install") && !out.contains("node node-1"),
        "{out}"
    );
    for line in [
        "nodes\n-----\n√ node-1: Linux 6.1.0-28-amd64 has every hook kgate's programs need",
        "‼ node-2: kubelet cgroup driver unknown: ",
        "    read `cgroupDriver` in the kubelet's config (/var/lib/kubelet/config.yaml)",
        "Status: 8 ok, 2 warnings, 0 failures",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_missing() {
    let cluster = Cluster::start_with(false, |_| String::new()).await;
    let (code, out, err) = check(cluster.kubeconfig(), &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("kgate: 2 check(s) failed"), "{err}");
    for (name, line) in [
        ("kgatepolicies.kgate.io", 0),
        ("kgateapprovals.kgate.io", 1),
    ] {
        let want = format!(
            "× CustomResourceDefinition {name} is not installed\n    install kgate's CRDs: \
             `kgate crds | kubectl apply -f -` (or `kubectl apply -k deploy/`); without \
             them agents load no policy and refuse every request\n"
        );
        assert!(out.contains(&want), "{line}: no {want:?} in\n{out}");
    }
}

/// A proxy in front of the API server that passes everything but /openid/v1/jwks:
/// the one warning says what agents lose and where to look; nothing fails.
#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_unreachable() {
    let cluster = Cluster::start().await;
    let proxy = FaultProxy::start(&cluster.server.url(), cluster.server.ca_pem())
        .await
        .unwrap();
    proxy.set(Fault::Respond {
        prefix: "/openid/v1/jwks".into(),
        status: 503,
        content_type: "text/plain".into(),
        body: "upstream connect error".into(),
    });
    let dir = scratch_dir("check-proxy");
    let config = kubeconfig(
        &dir,
        &proxy.url(),
        proxy.ca_pem(),
        cluster.server.admin_token(),
    );
    let (code, bad) = not_ok(config).await;
    assert_eq!(code, Some(0), "a warning is no failure: {bad:#?}");
    let (what, message, hint) = only(&bad);
    assert_eq!(what, "issuer.jwks warn");
    assert!(
        message.starts_with("the JWKS at /openid/v1/jwks is unreachable: "),
        "{message}"
    );
    assert!(
        hint.starts_with(
            "agents fetch the service-account signing keys from the API server at \
             /openid/v1/jwks to verify tokens locally; without them every new token costs \
             a TokenReview"
        ) && hint.contains("a proxy or load balancer in front may pass only /api and /apis"),
        "{hint}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_rbac_short_of_a_permission() {
    let cluster = Cluster::start().await;
    cluster
        .server
        .refuse_access(AGENT_SA, "create", "tokenreviews");
    cluster
        .server
        .refuse_access(AGENT_SA, "patch", "kgatepolicies/status");
    let (code, bad) = not_ok(cluster.kubeconfig()).await;
    assert_eq!(code, Some(1));
    let (what, message, hint) = only(&bad);
    assert_eq!(what, "rbac.agent fail");
    assert_eq!(
        message,
        "kgate-system/kgate-agent may not: create tokenreviews.authentication.k8s.io; \
         patch kgatepolicies/status.kgate.io"
    );
    assert!(hint.contains("deploy/rbac.yaml"), "{hint}");
}

/// Before installing, a node whose kernel lacks the getpeername hooks fails, and one
/// that has them but is unmaintained warns.
#[tokio::test(flavor = "multi_thread")]
async fn pre_install_kernels() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    for (node, kernel) in [
        ("node-1", "5.4.0-150-generic"),
        ("node-2", "5.8.18-100.fc31.x86_64"),
    ] {
        let mut obj = server.get("nodes", "", node).unwrap();
        obj["status"]["nodeInfo"]["kernelVersion"] = json!(kernel);
        server.update("nodes", "", obj).unwrap();
    }
    let dir = scratch_dir("check-pre");
    let config = kubeconfig(&dir, &server.url(), server.ca_pem(), server.admin_token());
    let (code, out, _) = check(config, &["--pre"]).await;
    assert_eq!(code, Some(1), "{out}");
    for line in [
        "× node-1: Linux 5.4.0-150-generic lacks cgroup/getpeername4 (5.8), cgroup/getpeername6 (5.8), bpf_link (5.7)\n    kgate's kernel programs need Linux 5.8 or later",
        "‼ node-2: Linux 5.8.18-100.fc31.x86_64 has every hook kgate needs but is no longer maintained\n    5.10 is the oldest long-term kernel still maintained",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
}
