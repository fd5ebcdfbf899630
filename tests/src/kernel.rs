//! What the kernel tests share: a [`Rig`] (a topology with echo servers standing in
//! for the API server) and a [`Cluster`] (a topology with the API-server double and
//! kgate in front of it, as on a node), the `kgate-probe` tool's answers, and the
//! addresses both use. Everything here needs root.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use serde_json::Value;

use crate::{
    harness::kgate_bin,
    pki::Ca,
    topology::{NODE_IP4, Process, Topology},
};

/// The agent's listen port on the node.
pub const AGENT_PORT: u16 = 7443;
/// Upstream echo servers on the node side (a [`Rig`]).
pub const UPSTREAM: &str = "10.213.0.1:16443";
pub const OTHER: &str = "10.213.0.1:16444";
/// The Service IPs pods dial.
pub const CLUSTER_IP: &str = "10.96.0.1:443";
pub const CLUSTER_IP6: &str = "[fd00:96::1]:443";
/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `kgate-probe` test tool, next to the `kgate` binary.
pub fn probe_bin() -> PathBuf {
    kgate_bin().with_file_name("kgate-probe")
}

/// The API-server double's binary, next to the `kgate` binary.
pub fn double_bin() -> PathBuf {
    kgate_bin().with_file_name("apiserver-double")
}

/// A topology with the upstream echo servers running on the node side.
pub struct Rig {
    pub topo: Topology,
    /// The agent's config file.
    pub config: PathBuf,
}

impl Rig {
    pub fn new(tag: &str) -> Self {
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

    pub fn start_agent(&self) -> Process {
        let mut cmd = self.topo.agent_command(kgate_bin());
        cmd.args(["--log-format", "json", "agent", "--config"])
            .arg(&self.config);
        let agent = self.topo.spawn(cmd).unwrap();
        agent.output.wait_for("agent listening", WAIT).unwrap();
        agent
    }

    pub fn pod_connect(&self, addr: &str) -> Value {
        let mut cmd = self.topo.pod_command(probe_bin());
        let out = cmd.args(["connect", addr, "hello"]).output().unwrap();
        parse_probe(&out)
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.topo.bpffs.join("kgate/v1")
    }
}

pub fn parse_probe(out: &Output) -> Value {
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
pub fn assert_redirected(rig: &Rig, agent: &Process, dialled: &str) -> Value {
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

pub fn accepted_lines(agent: &Process) -> Vec<Value> {
    agent
        .output
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "accepted redirected connection")
        .collect()
}

/// A node with the API-server double (on [`ENDPOINT`]) and a serving certificate for
/// kgate from the cluster CA, but no agent yet: what [`cluster`] and the container test
/// share.
pub struct Node {
    pub topo: Topology,
    pub ca: Ca,
    /// The double's admin token.
    pub token: String,
}

/// A node with the API-server double (on [`ENDPOINT`]) and kgate in front of it, as in
/// a cluster: what the kubectl tests share.
pub struct Cluster {
    pub node: Node,
    pub agent: Process,
}

/// Where the double listens (its EndpointSlice names this address).
pub const ENDPOINT: &str = "10.213.0.1:16445";

/// The node: the topology, the double on its node side (certificates and its admin
/// token under `<dir>/apiserver/`), kgate's serving certificate in `<dir>/tls.{crt,key}`.
pub fn node(tag: &str) -> Node {
    let topo = Topology::create(tag).unwrap();
    let dir = topo.dir.clone();
    // The API server (double) on the node side.
    let mut double = topo.node_command(double_bin());
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
    Node { topo, ca, token }
}

pub fn cluster(tag: &str) -> Cluster {
    let node = node(tag);
    let (topo, dir) = (&node.topo, &node.topo.dir);
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "listen: '{NODE_IP4}:{AGENT_PORT}'\ntargets: ['{CLUSTER_IP}', '{ENDPOINT}']\n\
             cgroup: {}\nbpffs: {}\n\
             tls: {{certFile: {d}/tls.crt, keyFile: {d}/tls.key}}\n\
             upstream: {{server: 'https://{ENDPOINT}', caFile: {d}/apiserver/ca.crt, tokenFile: {d}/apiserver/token}}\n\
             identity: {{nodeName: node-1, unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow}}\nheartbeat: {{intervalSeconds: 1}}\n",
            topo.cgroup_root.display(),
            topo.bpffs.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let agent = node.start_agent(&config);
    Cluster { node, agent }
}

impl std::ops::Deref for Cluster {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Node {
    /// The `kgate` binary as an agent with `config`, in the agent's cgroup on the node
    /// side; returns once it listens.
    pub fn start_agent(&self, config: &Path) -> Process {
        let mut cmd = self.topo.agent_command(kgate_bin());
        cmd.args(["--log-format", "json", "agent", "--config"])
            .arg(config);
        let agent = self.topo.spawn(cmd).unwrap();
        agent.output.wait_for("agent listening", WAIT).unwrap();
        agent
    }

    /// An in-cluster-style kubeconfig: the Service IP, the cluster CA, `token`.
    pub fn kubeconfig(&self, name: &str, token: &str) -> std::path::PathBuf {
        crate::harness::kubeconfig(
            &self.topo.dir.join(name),
            &format!("https://{CLUSTER_IP}"),
            &self.ca.cert_pem(),
            token,
        )
    }

    /// kubectl on the node, outside the intercepted cgroups, straight to the double
    /// as its admin (setting up what a test needs).
    pub fn admin(&self, args: &[&str]) -> String {
        let kubeconfig = crate::harness::kubeconfig(
            &self.topo.dir.join("admin"),
            &format!("https://{ENDPOINT}"),
            &fs::read_to_string(self.topo.dir.join("apiserver/ca.crt")).unwrap(),
            &self.token,
        );
        let (ok, out, err) =
            Cluster::kubectl(|| self.topo.node_command("kubectl"), &kubeconfig, args);
        assert!(ok, "admin kubectl {args:?}: {err}");
        out
    }
}

impl Cluster {
    /// Runs the command `cmd` makes (kubectl in some cgroup of the pod netns) with
    /// `kubeconfig`; again if kubectl lost part of an exec stream to its own race
    /// ([`crate::apiserver::client::KUBECTL_EXEC_RACE`]).
    pub fn kubectl(
        cmd: impl Fn() -> std::process::Command,
        kubeconfig: &Path,
        args: &[&str],
    ) -> (bool, String, String) {
        let out = crate::apiserver::client::rerun_on_exec_race(|| {
            cmd()
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--request-timeout", "20s"])
                .args(args)
                .output()
                .unwrap()
        });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
