//! Attempts to get around kgate from a pod, each ending in kgate (a redirected
//! connection, recorded with its origin) or in a refusal. The cases that need the API
//! server (a token copied to another pod, a new endpoint) are in `cluster.rs`; the
//! agent stopped or restarted in `ebpf.rs`.
//!
//! These need root. `cargo xtask test` runs them (CI is root).

use std::{fs, path::PathBuf, process::Command};

use kgate_tests::{
    harness::kgate_bin,
    kernel::{
        CLUSTER_IP, Rig, UPSTREAM, accepted_lines, assert_redirected, parse_probe, probe_bin,
    },
    topology::cgroup2_mount,
};

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn every_address_of_the_api_server_leads_to_kgate() {
    let rig = Rig::new("alladdr");
    let agent = rig.start_agent();
    // The endpoint, also written as IPv4-mapped IPv6 on an AF_INET6 socket.
    for dialled in [CLUSTER_IP, UPSTREAM, "[::ffff:10.213.0.1]:16443"] {
        assert_redirected(&rig, &agent, dialled);
    }
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn a_host_network_pod_is_redirected_too() {
    let rig = Rig::new("hostnet");
    let agent = rig.start_agent();
    let before = accepted_lines(&agent).len();
    // hostNetwork: the node's network namespace, but still the pod's cgroup.
    let out = rig
        .topo
        .host_network_pod_command(probe_bin())
        .args(["connect", CLUSTER_IP, "hello"])
        .output()
        .unwrap();
    let probe = parse_probe(&out);
    assert_eq!(probe["peer"], CLUSTER_IP, "{probe}");
    assert!(
        probe["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("\u{15}\u{3}")),
        "expected kgate's TLS alert: {probe}"
    );
    let deadline = std::time::Instant::now() + kgate_tests::kernel::WAIT;
    while accepted_lines(&agent).len() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let line = accepted_lines(&agent)
        .get(before)
        .cloned()
        .expect("the agent recorded the connection");
    let mount = cgroup2_mount().unwrap();
    let pod_cgroup = format!(
        "/{}",
        rig.topo.pod_cgroup.strip_prefix(mount).unwrap().display()
    );
    assert_eq!(line["cgroup"], pod_cgroup.as_str(), "{line}");
    assert_eq!(line["comm"], "kgate-probe", "{line}");
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn a_pod_without_privileges_cannot_open_remove_or_detach_the_pins() {
    let rig = Rig::new("tamper");
    let agent = rig.start_agent();
    let pins: Vec<PathBuf> = fs::read_dir(rig.pin_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        pins.len() >= 10,
        "programs, links and maps are pinned: {pins:?}"
    );
    // A pod's process runs as an unprivileged user, in the pod's cgroup and netns.
    let unprivileged = |program: PathBuf, args: &[&str]| {
        let mut cmd: Command = rig.topo.pod_command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args);
        cmd.output().unwrap()
    };
    for pin in &pins {
        let pin = pin.to_str().unwrap();
        let opened = parse_probe(&unprivileged(probe_bin(), &["bpf-open", pin]));
        assert_eq!(opened["ok"], false, "{pin}: {opened}");
        assert_eq!(opened["kind"], "PermissionDenied", "{pin}: {opened}");
        let removed = unprivileged("rm".into(), &["-f", pin]);
        assert!(!removed.status.success(), "{pin} removed");
    }
    let detach = unprivileged(
        kgate_bin(),
        &["detach", "--bpffs", rig.topo.bpffs.to_str().unwrap()],
    );
    assert!(!detach.status.success(), "detach as an unprivileged user");
    assert!(
        String::from_utf8_lossy(&detach.stderr).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&detach.stderr)
    );
    // Root can: the probe itself is sound.
    let root = Command::new(probe_bin())
        .args(["bpf-open", pins[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(parse_probe(&root)["ok"], true);
    // Nothing changed: every pin is there and the pod is still redirected.
    assert!(pins.iter().all(|p| p.exists()));
    assert_redirected(&rig, &agent, CLUSTER_IP);
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups): run by `cargo xtask test`"]
fn restarting_or_upgrading_the_agent_never_lets_a_pod_through() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let rig = Rig::new("upgrade");
    let agent = rig.start_agent();
    assert_redirected(&rig, &agent, UPSTREAM);
    // A pod dialling the API server's endpoint as fast as it can while the agent is
    // stopped and started again (each start loads its own programs into the pinned
    // links, as an upgrade does): every connect meets kgate or is refused.
    let stop = AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        let dialler = s.spawn(|| {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(rig.pod_connect(UPSTREAM));
            }
            outcomes
        });
        let mut agent = agent;
        for _ in 0..2 {
            assert_eq!(rig.topo.stop(&agent).unwrap(), Some(0));
            std::thread::sleep(std::time::Duration::from_millis(200));
            agent = rig.start_agent();
            agent
                .output
                .wait_for("programs replaced in place", kgate_tests::kernel::WAIT)
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        dialler.join().unwrap()
    });
    let kgate = |p: &serde_json::Value| {
        p["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("\u{15}\u{3}"))
    };
    let refused = |p: &serde_json::Value| p["kind"] == "ConnectionRefused";
    // Only the echo server itself answers `from <peer>`: that is a connect that got
    // through. A reset or a broken pipe is a connection to an agent that was stopping.
    let got_through =
        |p: &serde_json::Value| p["reply"].as_str().is_some_and(|r| r.starts_with("from "));
    assert!(outcomes.len() > 10, "{} connects", outcomes.len());
    let through: Vec<_> = outcomes.iter().filter(|p| got_through(p)).collect();
    assert!(
        through.is_empty(),
        "connects that got around kgate: {through:?}"
    );
    assert!(outcomes.iter().any(refused), "the agent was never down");
    assert!(outcomes.iter().any(kgate));
}
