//! The kernel redirect, end to end: real cgroup programs, a pod in its own netns with no
//! route out, the real `kgate agent` on the node side.
//!
//! These need root. `cargo xtask test` runs them (CI is root); plain `cargo test` skips
//! them through the ignore reason.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use kgate_tests::{
    harness::kgate_bin,
    pki::Ca,
    topology::{NODE_IP4, POD_IP4, Process, Topology},
};
use serde_json::{Value, json};

const AGENT_PORT: u16 = 7443;
const UPSTREAM: &str = "10.213.0.1:16443";
const OTHER: &str = "10.213.0.1:16444";
const CLUSTER_IP: &str = "10.96.0.1:443";
const CLUSTER_IP6: &str = "[fd00:96::1]:443";
const WAIT: Duration = Duration::from_secs(20);

fn probe_bin() -> PathBuf {
    env!("CARGO_BIN_EXE_kgate-probe").into()
}

/// A topology with the upstream echo servers running on the node side.
struct Rig {
    topo: Topology,
    config: PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Self {
        let topo = Topology::create(tag).expect("topology");
        fs::create_dir_all(&topo.dir).unwrap();
        let config = topo.dir.join("agent.yaml");
        let ca = Ca::new("test cluster CA").unwrap();
        fs::write(topo.dir.join("ca.crt"), ca.cert_pem()).unwrap();
        ca.issue_kgate(&[NODE_IP4.into()])
            .unwrap()
            .write(&topo.dir, "tls")
            .unwrap();
        fs::write(
            &config,
            format!(
                "listen: '[::]:{AGENT_PORT}'\n\
                 redirect: {{ipv4: {NODE_IP4}, ipv6: 'fd00:6b67::1'}}\n\
                 targets: ['{CLUSTER_IP}', '{UPSTREAM}', '{CLUSTER_IP6}']\n\
                 cgroup: {}\n\
                 bpffs: {}\n\
                 tls: {{certFile: {dir}/tls.crt, keyFile: {dir}/tls.key}}\n\
                 upstream: {{server: 'https://{UPSTREAM}', caFile: {dir}/ca.crt}}\n\
                 identity: {{nodeName: node-1}}\npolicy: {{defaultAction: allow}}\n",
                topo.cgroup_root.display(),
                topo.bpffs.display(),
                dir = topo.dir.display(),
            ),
        )
        .unwrap();
        for addr in [UPSTREAM, OTHER] {
            let mut cmd = topo.node_command(probe_bin());
            cmd.args(["serve", addr]);
            let server = topo.spawn(cmd).unwrap();
            server.output.wait_for("listening", WAIT).unwrap();
        }
        Self { topo, config }
    }

    fn start_agent(&self) -> Process {
        let mut cmd = self.topo.agent_command(kgate_bin());
        cmd.args(["--log-format", "json", "agent", "--config"])
            .arg(&self.config);
        let agent = self.topo.spawn(cmd).unwrap();
        agent.output.wait_for("agent listening", WAIT).unwrap();
        agent
    }

    fn pod_connect(&self, addr: &str) -> Value {
        let mut cmd = self.topo.pod_command(probe_bin());
        let out = cmd.args(["connect", addr, "hello"]).output().unwrap();
        parse_probe(&out)
    }

    fn pin_dir(&self) -> PathBuf {
        self.topo.bpffs.join("kgate/v1")
    }
}

fn parse_probe(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "probe output {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A connection that the kernel redirected to the agent: the client still sees the
/// address it dialled, and the agent recorded the origin. The probe speaks plain text,
/// so what answers is the agent's TLS stage: a TLS alert record (0x15, version 3.x).
fn assert_redirected(rig: &Rig, agent: &Process, dialled: &str) -> Value {
    let before = accepted_lines(agent).len();
    let result = rig.pod_connect(dialled);
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        result["peer"], dialled,
        "getpeername must show the original destination: {result}"
    );
    let reply = result["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("\u{15}\u{3}"),
        "expected kgate's TLS alert, got {result}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let accepted = accepted_lines(agent);
        if accepted.len() > before {
            let line = accepted[before].clone();
            // The agent names an IPv4-mapped destination by its IPv4 address.
            let canonical = |a: &str| {
                let a: std::net::SocketAddr = a.parse().unwrap();
                std::net::SocketAddr::new(a.ip().to_canonical(), a.port())
            };
            assert_eq!(
                canonical(line["dst"].as_str().unwrap()),
                canonical(dialled),
                "{line}"
            );
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not record {dialled}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accepted_lines(agent: &Process) -> Vec<Value> {
    agent
        .output
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "accepted redirected connection")
        .collect()
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn cluster_ip_and_endpoint_are_redirected_with_their_origin() {
    let rig = Rig::new("redirect");
    let agent = rig.start_agent();

    let via_service = assert_redirected(&rig, &agent, CLUSTER_IP);
    // An endpoint address is a target too: the pod cannot skip the Service IP to escape.
    let via_endpoint = assert_redirected(&rig, &agent, UPSTREAM);

    let mount = kgate_tests::topology::cgroup2_mount().unwrap();
    let pod_cgroup = format!(
        "/{}",
        rig.topo.pod_cgroup.strip_prefix(mount).unwrap().display()
    );
    for line in [via_service, via_endpoint] {
        assert_eq!(line["cgroup"], pod_cgroup.as_str(), "{line}");
        assert_eq!(line["comm"], "kgate-probe", "{line}");
        assert!(line["pid"].as_u64().unwrap() > 1, "{line}");
        assert!(line["netns_cookie"].as_u64().unwrap() > 0, "{line}");
    }
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn ipv6_and_v4_mapped_connects_are_redirected() {
    let rig = Rig::new("v6");
    let agent = rig.start_agent();
    assert_redirected(&rig, &agent, "[::ffff:10.96.0.1]:443");
    assert_redirected(&rig, &agent, CLUSTER_IP6);
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn unlisted_destinations_are_untouched() {
    let rig = Rig::new("untouched");
    let agent = rig.start_agent();
    // A node address that is not a target: reached directly, the server sees the pod.
    let direct = rig.pod_connect(OTHER);
    assert_eq!(direct["ok"], true, "{direct}");
    assert_eq!(direct["peer"], OTHER);
    assert!(
        direct["reply"]
            .as_str()
            .unwrap()
            .starts_with(&format!("from {POD_IP4}:")),
        "{direct}"
    );
    // Another ClusterIP: not redirected, and the pod has no route for it.
    let other_ip = rig.pod_connect("10.96.0.2:443");
    assert_eq!(other_ip["ok"], false, "{other_ip}");
    assert_eq!(other_ip["kind"], "NetworkUnreachable", "{other_ip}");
    assert!(accepted_lines(&agent).is_empty());
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn connections_without_an_origin_are_refused() {
    let rig = Rig::new("noorigin");
    let agent = rig.start_agent();
    // A node process outside the pod cgroup connects to the agent directly.
    let out = rig
        .topo
        .node_command(probe_bin())
        .args(["connect", &format!("{NODE_IP4}:{AGENT_PORT}")])
        .output()
        .unwrap();
    let result = parse_probe(&out);
    // The agent closes without relaying: no reply line.
    assert!(result["reply"] == "" || result["ok"] == false, "{result}");
    agent.output.wait_for("no origin record", WAIT).unwrap();
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn enforcement_survives_the_agent_and_detach_removes_it() {
    let rig = Rig::new("restart");
    let agent = rig.start_agent();
    assert_redirected(&rig, &agent, CLUSTER_IP);
    assert_eq!(rig.topo.stop(&agent).unwrap(), Some(0));

    // No agent: the redirect stays, so the connect is refused, never passed through.
    let refused = rig.pod_connect(CLUSTER_IP);
    assert_eq!(refused["kind"], "ConnectionRefused", "{refused}");
    let refused = rig.pod_connect(UPSTREAM);
    assert_eq!(
        refused["kind"], "ConnectionRefused",
        "endpoint must not be reachable directly: {refused}"
    );

    // A new agent re-uses the same pins.
    let agent = rig.start_agent();
    agent
        .output
        .wait_for("re-using pinned kernel programs", WAIT)
        .unwrap();
    assert_redirected(&rig, &agent, CLUSTER_IP);
    assert_eq!(rig.topo.stop(&agent).unwrap(), Some(0));

    // Uninstall: direct connections work again and no pin is left.
    let out = std::process::Command::new(kgate_bin())
        .args(["detach", "--bpffs"])
        .arg(&rig.topo.bpffs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!rig.pin_dir().exists());
    let direct = rig.pod_connect(UPSTREAM);
    assert_eq!(direct["ok"], true, "{direct}");
    assert!(
        direct["reply"]
            .as_str()
            .unwrap()
            .starts_with(&format!("from {POD_IP4}:")),
        "{direct}"
    );
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn a_bad_cgroup_fails_clearly_and_leaves_nothing_attached() {
    let rig = Rig::new("badcg");
    let config = fs::read_to_string(&rig.config).unwrap();
    let missing = rig.topo.cgroup_root.join("does-not-exist");
    fs::write(
        &rig.config,
        config.replace(
            &format!("cgroup: {}", rig.topo.cgroup_root.display()),
            &format!("cgroup: {}", missing.display()),
        ),
    )
    .unwrap();
    let mut cmd = rig.topo.agent_command(kgate_bin());
    cmd.args(["agent", "--config"]).arg(&rig.config);
    let agent = rig.topo.spawn(cmd).unwrap();
    assert_eq!(rig.topo.wait(&agent, WAIT).unwrap(), Some(1));
    agent
        .output
        .wait_for("is not a cgroup v2 directory", WAIT)
        .unwrap();
    assert!(!rig.pin_dir().exists(), "pins left behind");
}

#[test]
fn a_config_error_names_the_field() {
    let dir = std::env::temp_dir().join(format!("kgate-badcfg-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        "upstream: {server: 'https://a:1'}\ntls: {certFile: /c, keyFile: /k}\nredirect: {ipv4: 10.0.0.1}\ntargetz: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(kgate_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `targetz`"), "{stderr}");
}

/// A node with the API-server double (on `endpoint`) and kgate in front of it, as in a
/// cluster: what the kubectl tests share.
struct Cluster {
    topo: Topology,
    ca: Ca,
    agent: Process,
    /// The double's admin token.
    token: String,
}

const ENDPOINT: &str = "10.213.0.1:16445";

fn cluster(tag: &str) -> Cluster {
    let topo = Topology::create(tag).unwrap();
    let dir = topo.dir.clone();
    // The API server (double) on the node side.
    let mut double = topo.node_command(env!("CARGO_BIN_EXE_apiserver-double"));
    double
        .args(["--listen", ENDPOINT, "--cert-dir"])
        .arg(dir.join("apiserver"));
    topo.spawn(double)
        .unwrap()
        .output
        .wait_for("listening on", WAIT)
        .unwrap();
    let token = fs::read_to_string(dir.join("apiserver/token")).unwrap();

    // kgate, with a serving certificate from the "cluster CA" that pods trust.
    let ca = Ca::new("cluster CA").unwrap();
    ca.issue_kgate(&[NODE_IP4.into()])
        .unwrap()
        .write(&dir, "tls")
        .unwrap();
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "listen: '{NODE_IP4}:{AGENT_PORT}'\ntargets: ['{CLUSTER_IP}', '{ENDPOINT}']\n\
             cgroup: {}\nbpffs: {}\n\
             tls: {{certFile: {d}/tls.crt, keyFile: {d}/tls.key}}\n\
             upstream: {{server: 'https://{ENDPOINT}', caFile: {d}/apiserver/ca.crt, tokenFile: {d}/apiserver/token}}\n\
             identity: {{nodeName: node-1, unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow}}\n",
            topo.cgroup_root.display(),
            topo.bpffs.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut cmd = topo.agent_command(kgate_bin());
    cmd.args(["--log-format", "json", "agent", "--config"])
        .arg(&config);
    let agent = topo.spawn(cmd).unwrap();
    agent.output.wait_for("agent listening", WAIT).unwrap();
    Cluster {
        topo,
        ca,
        agent,
        token,
    }
}

impl Cluster {
    /// An in-cluster-style kubeconfig: the Service IP, the cluster CA, `token`.
    fn kubeconfig(&self, name: &str, token: &str) -> std::path::PathBuf {
        kgate_tests::harness::kubeconfig(
            &self.topo.dir.join(name),
            &format!("https://{CLUSTER_IP}"),
            &self.ca.cert_pem(),
            token,
        )
    }

    /// Runs `cmd` (kubectl in some cgroup of the pod netns) with `kubeconfig`.
    fn kubectl(
        mut cmd: std::process::Command,
        kubeconfig: &Path,
        args: &[&str],
    ) -> (bool, String, String) {
        let out = cmd
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--request-timeout", "20s"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// kubectl on the node, outside the intercepted cgroups, straight to the double
    /// as its admin (setting up what a test needs).
    fn admin(&self, args: &[&str]) -> String {
        let kubeconfig = kgate_tests::harness::kubeconfig(
            &self.topo.dir.join("admin"),
            &format!("https://{ENDPOINT}"),
            &fs::read_to_string(self.topo.dir.join("apiserver/ca.crt")).unwrap(),
            &self.token,
        );
        let (ok, out, err) = Self::kubectl(self.topo.node_command("kubectl"), &kubeconfig, args);
        assert!(ok, "admin kubectl {args:?}: {err}");
        out
    }
}

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
    let kubectl = |args: &[&str]| Cluster::kubectl(topo.pod_command("kubectl"), &kubeconfig, args);
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
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn a_pod_token_works_only_from_its_own_pod() {
    let cluster = cluster("stolen");
    let topo = &cluster.topo;
    // Two pods on this node, each with a container cgroup laid out as the kubelet's.
    let ids = ["a", "b"].map(|name| {
        let container_id = format!("{:0>64}", format!("c0ffee{name}"));
        let manifest = topo.dir.join(format!("{name}.json"));
        fs::write(
            &manifest,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("bot-{name}"), "namespace": "demo"},
                "spec": {"nodeName": "node-1", "serviceAccountName": "bot",
                         "containers": [{"name": "main", "image": "bot:1"}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "main", "ready": true,
                    "restartCount": 0, "image": "bot:1", "imageID": "",
                    "containerID": format!("containerd://{container_id}")}]},
            })
            .to_string(),
        )
        .unwrap();
        let created = cluster.admin(&[
            "create",
            "--validate=false",
            "-o",
            "jsonpath={.metadata.uid}",
            "-f",
            manifest.to_str().unwrap(),
        ]);
        let cgroup = topo.kubelet_pod_cgroup(&created, &container_id).unwrap();
        (created, cgroup)
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
        Cluster::kubectl(topo.pod_command_in(cgroup, "kubectl"), &kubeconfig, args)
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
            topo.pod_command("kubectl"),
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
