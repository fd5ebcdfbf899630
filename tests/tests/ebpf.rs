//! The kernel redirect, end to end: real cgroup programs, a pod in its own netns with no
//! route out, the real `kgate agent` on the node side, echo servers standing in for
//! the API server. (The same with the API-server double: `cluster.rs`; attempts to get
//! around it: `bypass.rs`.)
//!
//! These need root. `cargo xtask test` runs them (CI is root); plain `cargo test` skips
//! them through the ignore reason.

use std::fs;

use kgate_tests::{
    harness::kgate_bin,
    kernel::{
        AGENT_PORT, CLUSTER_IP, CLUSTER_IP6, OTHER, Rig, UPSTREAM, WAIT, accepted_lines,
        assert_redirected, parse_probe, probe_bin,
    },
    topology::{NODE_IP4, POD_IP4},
};

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
        .wait_for("programs replaced in place", WAIT)
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
