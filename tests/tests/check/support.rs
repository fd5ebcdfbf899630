//! What the `kgate check` tests share: a double with kgate installed and an agent
//! per node (see check.rs for why their Leases are copies), and `kgate check` run
//! with a kubeconfig.

use std::{path::PathBuf, process::Command, time::Duration};

use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, Kubectl, ScratchDir, kgate_bin, kubeconfig, scratch_dir},
    pki::Ca,
    recorder::eventually,
};
use serde_json::{Value, json};

pub(crate) const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
/// Where the standalone agents' own heartbeats go.
pub(crate) const RAW: &str = "agents-raw";
pub(crate) const AGENT_SA: &str = "system:serviceaccount:kgate-system:kgate-agent";

/// A double with kgate installed: the CRDs applied with kubectl, and an agent per
/// node whose Lease says it enforces.
pub(crate) struct Cluster {
    pub(crate) server: Handle,
    pub(crate) agents: Vec<(String, Agent)>,
    pub(crate) dir: ScratchDir,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        Self::start_with(true, |_| String::new()).await
    }

    /// With the CRDs or not, each node's agent with `extra(node)` in its config.
    pub(crate) async fn start_with(crds: bool, extra: impl Fn(&str) -> String) -> Self {
        let server = ApiServer::start(Config::default()).await.unwrap();
        server
            .create(
                "namespaces",
                "",
                json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": RAW}}),
            )
            .unwrap();
        let dir = scratch_dir("check");
        if crds {
            let k = Kubectl::new(
                scratch_dir("check-crds"),
                &server.url(),
                server.ca_pem(),
                server.admin_token(),
            );
            tokio::task::spawn_blocking(move || k.ok(&["apply", "-f", CRDS]))
                .await
                .unwrap();
        }
        let mut cluster = Self {
            server,
            agents: Vec::new(),
            dir,
        };
        for node in ["node-1", "node-2"] {
            let agent = cluster.agent(node, RAW, &extra(node));
            cluster.agents.push((node.to_owned(), agent));
            cluster.publish(node, |_| true).await;
        }
        cluster
    }

    /// A standalone agent for `node`, its heartbeat every second into `namespace`,
    /// with `extra` config lines.
    pub(crate) fn agent(&self, node: &str, namespace: &str, extra: &str) -> Agent {
        Agent::standalone_with(
            &self.server.url(),
            self.server.ca_pem(),
            self.server.admin_token(),
            &format!(
                "identity: {{nodeName: {node}, unboundSubjects: ['*']}}\n\
                 policy: {{defaultAction: allow}}\n\
                 heartbeat: {{namespace: {namespace}, intervalSeconds: 1}}\n{extra}"
            ),
        )
        .unwrap()
    }

    /// Once `node`'s agent reports a status that `ready` accepts, its Lease in
    /// kgate-system, as a kernel-attached agent's would be.
    pub(crate) async fn publish(&self, node: &str, ready: impl Fn(&Value) -> bool) {
        let name = format!("kgate-{node}");
        let what = format!("a status of {node}'s agent");
        let lease = eventually(&what, Duration::from_secs(20), async || {
            let lease = self.server.get("leases", RAW, &name)?;
            let status: Value =
                serde_json::from_str(lease["metadata"]["annotations"]["kgate.io/status"].as_str()?)
                    .ok()?;
            ready(&status).then_some((lease, status))
        })
        .await;
        let (lease, mut status) = lease;
        status["enforcing"] = json!(true);
        status["bpfFeatures"] = json!([
            "cgroup/connect4",
            "cgroup/connect6",
            "cgroup/getpeername4",
            "cgroup/getpeername6",
            "sockops",
            "bpf_link"
        ]);
        status["cgroupV2"] = json!(true);
        status["cgroup"] = json!("/host/cgroup/kubepods.slice");
        status["cgroupDriver"] = json!("systemd");
        status["targets"] = json!(["10.96.0.1:443", self.server.addr().to_string()]);
        status["targetsSynced"] = json!(true);
        let copy = json!({
            "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": name, "namespace": "kgate-system",
                "labels": lease["metadata"]["labels"],
                "annotations": {"kgate.io/status": status.to_string()},
            },
            // The DaemonSet's interval (10 s), so the copy stays fresh for the test.
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 30,
                     "renewTime": lease["spec"]["renewTime"]},
        });
        if self.server.get("leases", "kgate-system", &name).is_some() {
            self.server.update("leases", "kgate-system", copy).unwrap();
        } else {
            self.server.create("leases", "kgate-system", copy).unwrap();
        }
    }

    /// The directory of `node`'s agent (its tls.crt and tls.key, reloaded every second).
    pub(crate) fn agent_dir(&self, node: &str) -> PathBuf {
        self.agents
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, a)| a.dir.to_path_buf())
            .unwrap()
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        kubeconfig(
            &self.dir,
            &self.server.url(),
            self.server.ca_pem(),
            self.server.admin_token(),
        )
    }
}

/// `kgate check ARGS` with `kubeconfig`: (exit code, stdout, stderr).
pub(crate) async fn check(kubeconfig: PathBuf, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(kgate_bin())
            .arg("check")
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `kgate check -o json`'s checks that are not ok, as (id, node, status, message, hint).
pub(crate) async fn not_ok(kubeconfig: PathBuf) -> (Option<i32>, Vec<Value>) {
    let (code, out, err) = check(kubeconfig, &["-o", "json"]).await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let bad = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "ok")
        .cloned()
        .collect();
    (code, bad)
}

/// The one check that is not ok: its (id, status), message and hint.
pub(crate) fn only(bad: &[Value]) -> (String, String, String) {
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let check = &bad[0];
    (
        format!(
            "{} {}",
            check["id"].as_str().unwrap(),
            check["status"].as_str().unwrap()
        ),
        check["message"].as_str().unwrap().to_owned(),
        check["hint"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Writes into `dir` a certificate for the agent's names and `ips`: signed by a CA of
/// its own, or self-signed and expired on 2025-01-01.
pub(crate) fn certificate(dir: &std::path::Path, ips: &[&str], expired: bool) {
    let ca = Ca::new("another CA").unwrap();
    let ips: Vec<std::net::IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
    let names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    let pair = if expired {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.map(str::to_owned).to_vec()).unwrap();
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2025, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        kgate_tests::pki::Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    } else {
        ca.issue(&names, &ips).unwrap()
    };
    // The key first: a reload that sees the new certificate with the old key keeps
    // the old pair and tries again.
    std::fs::write(dir.join("tls.key.new"), &pair.key_pem).unwrap();
    std::fs::write(dir.join("tls.crt.new"), &pair.cert_pem).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}
