//! kgate on a node in front of the API-server double, with real kubectl in a pod:
//! requests reach the API server only through kgate, tokens work only from their own
//! pod, and endpoint changes reach the kernel and the agent's upstream.
//!
//! These need root. `cargo xtask test` runs them (CI is root).

use std::{fs, path::Path, time::Duration};

use kgate_tests::kernel::{
    Cluster, ENDPOINT, WAIT, accepted_lines, cluster, parse_probe, probe_bin,
};
use serde_json::{Value, json};

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn kubectl_in_a_pod_reaches_the_api_server_only_through_kgate() {
    let cluster = cluster("kubectl");
    let (topo, agent, token, dir) = (
        &cluster.topo,
        &cluster.agent,
        &cluster.token,
        &cluster.topo.dir,
    );
    let endpoint = ENDPOINT;
    let kubeconfig = cluster.kubeconfig("pod", token);
    let kubectl =
        |args: &[&str]| Cluster::kubectl(|| topo.pod_command("kubectl"), &kubeconfig, args);
    let (ok, pods, err) = kubectl(&["get", "pods"]);
    assert!(ok && pods.contains("web-0"), "{pods} {err}");
    let (ok, out, err) = kubectl(&["exec", "web-0", "--", "echo", "from the pod"]);
    assert!(ok && out == "from the pod\n", "{out} {err}");

    // Every connection came from kubectl in the pod; none from the agent's own
    // upstream connections, although the endpoint it dials is a target.
    let accepted = accepted_lines(agent);
    assert!(!accepted.is_empty());
    assert!(
        accepted.iter().all(|l| l["comm"] == "kubectl"),
        "{accepted:?}"
    );

    // Dialling the API server's endpoint directly, with the API server's own CA, still
    // lands in kgate: the certificate presented is kgate's, which that CA did not sign.
    let direct = kgate_tests::harness::kubeconfig(
        &dir.join("direct"),
        &format!("https://{endpoint}"),
        &fs::read_to_string(dir.join("apiserver/ca.crt")).unwrap(),
        token,
    );
    let out = topo
        .pod_command("kubectl")
        .arg("--kubeconfig")
        .arg(&direct)
        .args(["--request-timeout", "10s", "get", "pods"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate"),
        "the pod reached the API server directly: {err}"
    );

    // `kgate status`, as an admin with a kubeconfig: the node is enforcing, and its
    // kernel programs counted the pod's redirected connects. The double's second node
    // runs no agent; remove it so that the answer is all-healthy.
    cluster.admin(&["delete", "node", "node-2"]);
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir.join("status"),
        &format!("https://{ENDPOINT}"),
        &fs::read_to_string(dir.join("apiserver/ca.crt")).unwrap(),
        token,
    );
    let deadline = std::time::Instant::now() + WAIT;
    let (code, json) = loop {
        let out = topo
            .node_command(kgate_tests::harness::kgate_bin())
            .env("KUBECONFIG", &kubeconfig)
            .args(["status", "-o", "json"])
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() || std::time::Instant::now() > deadline {
            break (out.status.code(), json);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(0), "{json}");
    let rows: Value = serde_json::from_str(&json).unwrap();
    let status = &rows[0]["status"];
    assert_eq!(status["node"], "node-1", "{json}");
    assert_eq!(status["enforcing"], true, "{json}");
    assert!(
        status["kernelConnects"]["redirected"].as_u64() >= Some(3),
        "{json}"
    );
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn a_pod_token_works_only_from_its_own_pod() {
    let cluster = cluster("stolen");
    let topo = &cluster.topo;
    // Two pods on this node, each with a container cgroup laid out as the kubelet's.
    let ids = ["a", "b"].map(|name| {
        let container_id = format!("{:0>64}", format!("c0ffee{name}"));
        topo.kubelet_pod("demo", &format!("bot-{name}"), &container_id, |args| {
            Ok(cluster.admin(args))
        })
        .unwrap()
    });
    // A projected token bound to pod bot-a, as the kubelet would mount it there.
    let token_a = cluster.admin(&[
        "create",
        "token",
        "bot",
        "-n",
        "demo",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "bot-a",
    ]);
    let kubeconfig = cluster.kubeconfig("bot-a", token_a.trim());
    let from = |cgroup: &Path, args: &[&str]| {
        Cluster::kubectl(|| topo.pod_command_in(cgroup, "kubectl"), &kubeconfig, args)
    };

    // From its own pod: allowed, and recorded with the pod and container.
    let (ok, out, err) = from(&ids[0].1, &["get", "pods", "-n", "demo"]);
    assert!(ok && out.contains("bot-a"), "{out} {err}");
    let record = cluster
        .agent
        .output
        .wait_for("system:serviceaccount:demo:bot", WAIT)
        .unwrap();
    assert!(record.contains("pod demo/bot-a/main"), "{record}");

    // Copied into pod bot-b: a stolen token.
    let (ok, _, err) = from(&ids[1].1, &["get", "pods", "-n", "demo"]);
    assert!(!ok, "a stolen token was accepted");
    assert!(
        err.contains(&format!(
            "kgate: token bound to pod demo/bot-a ({}) used from pod demo/bot-b ({})",
            ids[0].0, ids[1].0
        )),
        "{err}"
    );
    // From a cgroup that is no pod's: stolen too.
    let (ok, _, err) = from(&topo.pod_cgroup, &["get", "pods", "-n", "demo"]);
    assert!(
        !ok && err.contains("used from a process outside any pod"),
        "{err}"
    );

    // Once the pod is gone, its token is worth nothing, even from its old cgroup.
    // (Forced: a graceful delete leaves a terminating pod whose token still works
    // until the kubelet has stopped it.)
    cluster.admin(&[
        "delete",
        "pod",
        "bot-a",
        "-n",
        "demo",
        "--force",
        "--grace-period=0",
    ]);
    let (ok, _, err) = from(&ids[0].1, &["get", "pods", "-n", "demo"]);
    assert!(!ok, "a deleted pod's token was accepted");
    assert!(
        err.contains("not on this node's pod list") || err.contains("Unauthorized"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn api_endpoint_changes_reach_the_kernel_and_the_upstream() {
    let cluster = cluster("discovery");
    let (topo, agent) = (&cluster.topo, &cluster.agent);
    // A second API server endpoint, announced ready, where nothing listens yet: a pod
    // that reaches it directly is refused, one that is redirected meets kgate's TLS.
    const SECOND: &str = "10.213.0.1:16446";
    let connect = || {
        let out = topo
            .pod_command(probe_bin())
            .args(["connect", SECOND, "hello"])
            .output()
            .unwrap();
        parse_probe(&out)
    };
    let redirected = |probe: &Value| {
        probe["ok"] == true
            && probe["reply"]
                .as_str()
                .is_some_and(|r| r.starts_with("\u{15}\u{3}"))
    };
    agent
        .output
        .wait_for("\"synced\":true", WAIT)
        .expect("discovery lists the kubernetes Service and its slice");
    let before = connect();
    assert_eq!(
        before["kind"], "ConnectionRefused",
        "not a target yet: {before}"
    );

    let slice = topo.dir.join("slice.json");
    fs::write(
        &slice,
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes-b", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.213.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": 16446, "protocol": "TCP"}],
        })
        .to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    cluster.admin(&["apply", "-f", &slice.to_string_lossy()]);
    let deadline = started + WAIT;
    let probe = loop {
        let probe = connect();
        if redirected(&probe) || std::time::Instant::now() > deadline {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        redirected(&probe),
        "the new endpoint is never intercepted: {probe}"
    );
    eprintln!(
        "a new endpoint was intercepted {} ms after kubectl apply returned",
        started.elapsed().as_millis()
    );

    // The agent's own upstream dials the ready endpoints in turn: the new one refuses,
    // and the request moves on to the next. exec takes a fresh upstream connection each
    // time, so two of them start at both endpoints.
    let kubeconfig = cluster.kubeconfig("pod", &cluster.token);
    for _ in 0..2 {
        let (ok, out, err) = Cluster::kubectl(
            || topo.pod_command("kubectl"),
            &kubeconfig,
            &["exec", "web-0", "--", "echo", "still here"],
        );
        assert!(ok && out == "still here\n", "{out} {err}");
    }
    agent
        .output
        .wait_for("API server endpoint unreachable; trying the next", WAIT)
        .expect("the upstream dials the discovered endpoints");

    // Gone from the slices, gone from the kernel.
    cluster.admin(&["delete", "endpointslice", "-n", "default", "kubernetes-b"]);
    let deadline = std::time::Instant::now() + WAIT;
    let probe = loop {
        let probe = connect();
        if probe["kind"] == "ConnectionRefused" || std::time::Instant::now() > deadline {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        probe["kind"], "ConnectionRefused",
        "still intercepted: {probe}"
    );
}
