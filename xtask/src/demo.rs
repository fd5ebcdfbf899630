//! `cargo xtask demo`: a pod's connection to the API server's ClusterIP lands in the kgate
//! agent, which names the pod's cgroup, process and the address it dialled.
//!
//! Runs on an embedded default: a "node" and a "pod" network namespace joined by a veth
//! pair (the pod has no route out), a cgroup for the pod, a private bpffs, an upstream
//! stand-in on the node side, and the real `kgate agent`. Everything is removed at the end.

use std::{fs, path::PathBuf, time::Duration};

use anyhow::Context;
use kgate_tests::topology::{NODE_IP4, Topology};

use crate::step;

const UPSTREAM: &str = "10.213.0.1:16443";
const CLUSTER_IP: &str = "10.96.0.1:443";

fn bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("debug").join(name)
}

pub fn run() -> anyhow::Result<()> {
    anyhow::ensure!(
        kgate_tests::topology::is_root(),
        "the demo attaches eBPF programs: run it as root"
    );
    let (kgate, probe) = (bin("kgate"), bin("kgate-probe"));
    step("creating a node and a pod (network namespaces, cgroup, bpffs)");
    let topo = Topology::create("demo")?;
    let config = topo.dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "# kgate agent config (demo)\n\
             listen: '{NODE_IP4}:7443'\n\
             targets: ['{CLUSTER_IP}', '{UPSTREAM}']\n\
             cgroup: {}\n\
             bpffs: {}\n\
             upstream: {{address: '{UPSTREAM}'}}\n",
            topo.cgroup_root.display(),
            topo.bpffs.display()
        ),
    )?;
    println!(
        "  pod netns {} (10.213.0.2, no default route), cgroup {}",
        topo.pod_ns,
        topo.pod_cgroup.display()
    );
    println!(
        "  node netns {} (10.213.0.1): agent on :7443, API server stand-in on {UPSTREAM}",
        topo.node_ns
    );

    let mut upstream = topo.node_command(&probe);
    upstream.args(["serve", UPSTREAM]);
    topo.spawn(upstream)?
        .output
        .wait_for("listening", Duration::from_secs(10))?;

    step("starting `kgate agent` (attaches the kernel programs to the pod cgroup)");
    let mut cmd = topo.agent_command(&kgate);
    cmd.args(["agent", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1");
    let agent = topo.spawn(cmd)?;
    agent
        .output
        .wait_for("agent listening", Duration::from_secs(20))
        .context("agent did not start")?;

    step(&format!(
        "the pod connects to the API server's ClusterIP {CLUSTER_IP}"
    ));
    let out = topo
        .pod_command(&probe)
        .args(["connect", CLUSTER_IP, "GET /version"])
        .output()?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).context("probe output")?;
    println!(
        "  pod sees peer {} and gets back: {}",
        result["peer"], result["reply"]
    );
    let accepted = agent
        .output
        .wait_for("accepted redirected connection", Duration::from_secs(5))?;
    println!("  agent: {}", accepted.trim());

    step("stopping the agent: enforcement stays (fail closed)");
    topo.stop(&agent)?;
    let out = topo
        .pod_command(&probe)
        .args(["connect", CLUSTER_IP])
        .output()?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    println!("  pod connect without an agent: {}", result["error"]);

    step("detaching and cleaning up");
    let status = std::process::Command::new(&kgate)
        .args(["detach", "--bpffs"])
        .arg(&topo.bpffs)
        .status()?;
    anyhow::ensure!(status.success(), "kgate detach failed");
    drop(topo);
    println!("demo done");
    Ok(())
}
