//! `cargo xtask demo`: the real kubectl, inside a "pod", talks to the API server's
//! ClusterIP as a bot; the kernel redirects it into kgate, which knows the pod and
//! process, verifies the bot's pod-bound token, applies policy (reads allowed, a
//! namespace delete denied, a pod delete held until an admin runs `kgate approve`, a
//! shadow-mode rule), masks Secret values, records the requests and the exec session
//! (replayed at the end), and forwards to the API server (the project's double). Then
//! the agent stops and the pod is refused, not let through.
//!
//! Runs on an embedded default: a "node" and a "pod" network namespace joined by a veth
//! pair (the pod has no route out), a cgroup for the pod, a private bpffs, the double
//! and `kgate agent` on the node side. Everything is removed at the end.

use std::{fs, path::PathBuf, process::Command, time::Duration};

use anyhow::Context;
use kgate_tests::{
    harness::kubeconfig,
    pki::Ca,
    topology::{NODE_IP4, Topology},
};

use crate::step;

const ENDPOINT: &str = "10.213.0.1:16443";
const CLUSTER_IP: &str = "10.96.0.1:443";

/// The demo's policy: what bots in namespace demo may do.
const POLICY: &str = r#"apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: demo-bots}
spec:
  subjects: {serviceAccounts: ["demo/*"]}
  defaultAction: deny
  rules:
    - {name: read, match: {verbs: [get, list, watch]}, action: allow}
    - name: discovery
      match: {verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
      action: allow
    - {name: exec, match: {verbs: [create, get], resources: [pods/exec]}, action: allow}
    - name: delete-pods-needs-a-human
      match: {verbs: [delete], resources: [pods]}
      action: approve
      approval: {approvers: [sre], timeoutSeconds: 60}
    - name: never-delete-namespaces
      match: {verbs: [delete], resources: [namespaces]}
      action: deny
      message: namespaces are deleted by humans
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: trial}
spec:
  mode: shadow
  subjects: {serviceAccounts: ["demo/*"]}
  rules:
    - {name: no-configmap-deletes, match: {verbs: [delete], resources: [configmaps]}, action: deny}
"#;

fn bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("debug").join(name)
}

pub(crate) fn run() -> anyhow::Result<()> {
    anyhow::ensure!(
        kgate_tests::topology::is_root(),
        "the demo attaches eBPF programs: run it as root"
    );
    let kgate = bin("kgate");
    step("creating a node and a pod (network namespaces, cgroup, bpffs)");
    let topo = Topology::create("demo")?;
    let dir = topo.dir.clone();
    println!(
        "  pod:  netns {} (10.213.0.2, no default route)",
        topo.pod_ns
    );
    println!("  node: netns {} (10.213.0.1)", topo.node_ns);

    step(&format!(
        "starting the API server (the project's double) on the node at {ENDPOINT}"
    ));
    let mut double = topo.node_command(bin("apiserver-double"));
    double
        .args(["--listen", ENDPOINT, "--cert-dir"])
        .arg(dir.join("apiserver"));
    topo.spawn(double)?
        .output
        .wait_for("listening on", Duration::from_secs(20))?;
    let token = fs::read_to_string(dir.join("apiserver/token"))?;

    step("starting `kgate agent`: attaches the kernel programs to the pod cgroup");
    fs::write(dir.join("policy.yaml"), POLICY)?;
    let ca = Ca::new("demo cluster CA")?;
    ca.issue_kgate(&[NODE_IP4.into()])?.write(&dir, "tls")?;
    // The kubelet's pod cgroup (cgroupfs driver layout), which the agent attaches to.
    let kubepods = topo.cgroup_root.join("kubepods");
    fs::create_dir_all(&kubepods)?;
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "# kgate agent config (demo)\n\
             listen: '{NODE_IP4}:7443'\n\
             targets: ['{CLUSTER_IP}', '{ENDPOINT}']\n\
             cgroup: {cg}\n\
             bpffs: {bpffs}\n\
             tls: {{certFile: {d}/tls.crt, keyFile: {d}/tls.key}}\n\
             upstream: {{server: 'https://{ENDPOINT}', caFile: {d}/apiserver/ca.crt, tokenFile: {d}/apiserver/token}}\n\
             identity: {{nodeName: node-1}}\n\
             policy: {{files: ['{d}/policy.yaml']}}\n\
             record: {{dir: '{d}/records'}}\n\
             heartbeat: {{intervalSeconds: 2}}\n",
            cg = kubepods.display(),
            bpffs = topo.bpffs.display(),
            d = dir.display()
        ),
    )?;
    let mut cmd = topo.agent_command(&kgate);
    cmd.args(["agent", "--config"]).arg(&config);
    let agent = topo.spawn(cmd)?;
    agent
        .output
        .wait_for("agent listening", Duration::from_secs(20))
        .context("agent did not start")?;

    // The admin, on the node, talks to the API server directly (kubectl and kgate).
    let admin_config = kubeconfig_direct(&dir, &token)?;
    let admin = |program: &std::path::Path, args: &[&str]| -> anyhow::Result<String> {
        let out = topo
            .node_command(program)
            .env("KUBECONFIG", &admin_config)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{program:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    step("the policy (deploy it as KgatePolicy objects; here a file)");
    println!(
        "{}",
        POLICY
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The bot's pod, as the kubelet would run it: a Pod object on this node, its
    // container in a cgroup laid out as the kubelet lays it out, and a token bound to it.
    let bot_cgroup = bot_pod(&topo, &admin)?;
    let bot_token = admin(
        std::path::Path::new("kubectl"),
        &[
            "create",
            "token",
            "bot",
            "-n",
            "demo",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            BOT_POD,
        ],
    )?;
    println!(
        "  the bot: pod demo/{BOT_POD}, cgroup {}",
        bot_cgroup.display()
    );

    // What a pod has: the Service address, the cluster CA, its token (a bot's).
    let kubeconfig = kubeconfig(
        &dir.join("pod"),
        &format!("https://{CLUSTER_IP}"),
        &ca.cert_pem(),
        bot_token.trim(),
    );
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let out = topo
            .pod_command_in(&bot_cgroup, "kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--request-timeout", "15s"])
            .args(args)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text
            .trim_end()
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    for args in [
        &["get", "pods", "-n", "demo"][..],
        &["get", "pods", "-n", "demo", "-w", "--request-timeout", "2s"],
        &[
            "get",
            "secret",
            "db-creds",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data}",
        ],
        &["delete", "configmap", "app-config", "-n", "demo"],
        &["delete", "namespace", "demo"],
        &[
            "exec",
            "web-0",
            "-n",
            "demo",
            "--",
            "echo",
            "hello from inside the pod",
        ],
    ] {
        step(&format!("in the pod: kubectl {}", args.join(" ")));
        println!("{}", kubectl(args)?);
    }
    step("in the pod: kubectl delete pod web-0 -n demo  (held for a human)");
    let held = topo
        .pod_command_in(&bot_cgroup, "kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["delete", "pod", "web-0", "-n", "demo", "--wait=false"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut name = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let list = admin(&kgate, &["approvals", "list", "-o", "json"])?;
        let items: serde_json::Value = serde_json::from_str(&list)?;
        if let Some(a) = items
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["status"]["phase"] == "Pending")
        {
            name = a["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            break;
        }
    }
    anyhow::ensure!(!name.is_empty(), "no approval appeared");
    step("the admin: kgate approvals list");
    println!(
        "{}",
        admin(&kgate, &["approvals", "list"])?
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    step(&format!("the admin: kgate approve {name}"));
    println!("    {}", admin(&kgate, &["approve", &name])?.trim());
    let out = held.wait_with_output()?;
    println!(
        "    (the held kubectl) {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    step("the admin: kgate status  (every node, from its agent's heartbeat Lease)");
    let out = topo
        .node_command(&kgate)
        .env("KUBECONFIG", &admin_config)
        .arg("status")
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    println!(
        "    (exit {}: node-2 of the API-server double runs no agent, so not every node is enforcing)",
        out.status.code().unwrap_or(-1)
    );

    step("what the agent knows about those connections (from the kernel, not the client)");
    for line in agent
        .output
        .lines()
        .iter()
        .filter(|l| l.contains("accepted redirected connection"))
        .take(2)
    {
        println!("  {}", line.trim());
    }
    step("what the agent recorded per request");
    for line in agent
        .output
        .lines()
        .iter()
        .filter(|l| l.contains(" request ") || l.contains("kgate::proxy::record"))
        .filter(|l| {
            !l.contains("nonResource") && !l.contains("path=/api ") && !l.contains("path=/apis ")
        })
        .take(10)
    {
        println!("  {}", line.trim());
    }

    step("the pod dials the API server's endpoint directly: it still lands in kgate");
    println!(
        "{}",
        kubectl(&[
            "--server",
            &format!("https://{ENDPOINT}"),
            "--tls-server-name",
            "kubernetes.default.svc",
            "delete",
            "namespace",
            "demo",
        ])?
    );
    println!("    (kgate's answer: the kernel sent the connection to the agent all the same)");

    step("the admin: kgate sessions list, then replay of the bot's exec");
    let records = dir.join("records");
    let records = records.to_str().context("record dir")?;
    println!(
        "{}",
        admin(&kgate, &["sessions", "list", "--dir", records])?
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let sessions: serde_json::Value = serde_json::from_str(&admin(
        &kgate,
        &["sessions", "list", "--dir", records, "-o", "json"],
    )?)?;
    let exec = sessions
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["streams"].as_array().is_some_and(|a| !a.is_empty()))
        .and_then(|s| s["id"].as_str())
        .context("no session with an exec stream was recorded")?
        .to_owned();
    println!("  $ kgate sessions replay {exec} --speed 0");
    for line in admin(
        &kgate,
        &[
            "sessions", "replay", &exec, "--dir", records, "--speed", "0",
        ],
    )?
    .lines()
    {
        println!("    {line}");
    }

    step("the admin: kgate crds | kubectl apply -f -, then kgate check  (every requirement)");
    let crds = dir.join("crds.yaml");
    fs::write(&crds, admin(&kgate, &["crds"])?)?;
    admin(
        std::path::Path::new("kubectl"),
        &["apply", "-f", crds.to_str().context("crds path")?],
    )?;
    let out = topo
        .node_command(&kgate)
        .env("KUBECONFIG", &admin_config)
        .arg("check")
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    println!(
        "    (exit {}: the double's node-2 runs no agent)",
        out.status.code().unwrap_or(-1)
    );

    step("stopping the agent: enforcement stays (fail closed)");
    topo.stop(&agent)?;
    println!(
        "{}",
        kubectl(&["get", "pods", "-n", "demo"])?
            .lines()
            .last()
            .unwrap_or_default()
    );

    step("detaching and cleaning up");
    let status = Command::new(&kgate)
        .args(["detach", "--bpffs"])
        .arg(&topo.bpffs)
        .status()?;
    anyhow::ensure!(status.success(), "kgate detach failed");
    drop(topo);
    println!("demo done");
    Ok(())
}

/// The bot's pod.
const BOT_POD: &str = "ci-bot";

/// Creates Pod demo/ci-bot on node-1 in the API server and its container's cgroup,
/// laid out as the kubelet's (so kgate names the workload `demo/ci-bot/main`).
fn bot_pod(
    topo: &Topology,
    admin: &dyn Fn(&std::path::Path, &[&str]) -> anyhow::Result<String>,
) -> anyhow::Result<PathBuf> {
    let container_id = format!("{:0>64}", "c0ffee");
    let kubectl = |args: &[&str]| admin(std::path::Path::new("kubectl"), args);
    let (_, cgroup) = topo.kubelet_pod("demo", BOT_POD, &container_id, kubectl)?;
    Ok(cgroup)
}

/// A kubeconfig for the endpoint itself, trusting only the API server's own CA.
fn kubeconfig_direct(dir: &std::path::Path, token: &str) -> anyhow::Result<PathBuf> {
    let ca = fs::read_to_string(dir.join("apiserver/ca.crt"))?;
    Ok(kubeconfig(
        &dir.join("direct"),
        &format!("https://{ENDPOINT}"),
        &ca,
        token,
    ))
}
