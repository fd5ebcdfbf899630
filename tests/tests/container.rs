//! The agent's image (`cargo xtask image`), run by podman the way deploy/daemonset.yaml
//! runs it (its capabilities and no more, host network and PID namespace, read-only
//! root, bpffs and the host's cgroup tree, config, certificates and token as mounted
//! files, the config deploy/configmap.yaml ships), on the test node in front of the
//! API-server double: a pod's kubectl, run as a non-root user from a kubelet-style
//! pod cgroup, is intercepted, identified, masked and recorded by the containerized
//! agent exactly as by the bare binary; a stopped container leaves enforcement (fail
//! closed); a new container from a new image takes over the pinned programs.
//!
//! Needs root and podman. `cargo xtask test` installs podman, builds the image and
//! passes it in `KGATE_IMAGE` (without it, this builds the image itself).

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kgate_tests::{
    apiserver::{ApiServer, Config},
    container::{PodSpec, Podman, Volumes, image_archive},
    harness::{Agent, Kubectl, kgate_bin, scratch_dir},
    kernel::{CLUSTER_IP, Cluster, ENDPOINT, Node, WAIT, node, parse_probe, probe_bin},
    topology::{NODE_IP4, Process},
};
use serde_json::Value;

/// The double's `demo/db-creds` password, base64 as stored.
const PASSWORD: &str = "czNjcjN0LXBhc3N3b3Jk";

const POLICY: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: deny
  rules:
    - name: read
      match: {verbs: [get, list]}
      action: allow
    - name: discovery
      match: {verbs: [get], nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", /version, "/openapi/*"]}
      action: allow
"#;

/// The image carries no CA bundle: the agent trusts the CA files its config names and
/// must not need the system's trust store for anything (kube-rs asks it when its TLS
/// config is built without roots, and fails on a system that has none).
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_needs_no_system_trust_store() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let empty = scratch_dir("no-system-cas");
    let nothing = empty.join("none").display().to_string();
    let agent = Agent::standalone_in_env(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        "",
        "identity: {unboundSubjects: [kubernetes-admin]}\npolicy: {defaultAction: allow}\n",
        // rustls-native-certs reads only these when they are set.
        &[("SSL_CERT_FILE", &nothing), ("SSL_CERT_DIR", &nothing)],
    );
    let agent = agent.unwrap_or_else(|e| panic!("the agent needs the system's CAs: {e:#}"));
    let kubectl = Kubectl::new(
        scratch_dir("no-system-cas-kubectl"),
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    let (ok, out, err) = kubectl.run(&["get", "pods", "-n", "demo", "-o", "name"]);
    assert!(
        ok && out.contains("pod/"),
        "{out} {err}\n{}",
        agent.log().join("\n")
    );
}

#[test]
#[ignore = "needs root (CAP_BPF, netns, cgroups) and podman: run by `cargo xtask test`"]
fn the_image_runs_the_agent_as_the_daemonset_does() {
    let node = node("image");
    let dir = node.topo.dir.clone();
    let podman = match Podman::new(&dir) {
        Ok(podman) => podman,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: the container engine cannot start here: {why}");
            return;
        }
        Err(why) => panic!("CI must run the container test, but podman cannot start: {why}"),
    };
    let spec = PodSpec::from_deploy().unwrap();
    let archive = image_archive(&dir).unwrap();
    let loaded = podman.load(&archive).unwrap();
    assert_eq!(
        loaded,
        std::slice::from_ref(&spec.image),
        "the image is named as the DaemonSet names it"
    );
    // What the image says about itself is what the binary inside it says.
    let labels: Value = serde_json::from_str(
        &podman
            .output(&[
                "image",
                "inspect",
                "--format",
                "{{json .Labels}}",
                &spec.image,
            ])
            .unwrap(),
    )
    .unwrap();
    let version = podman
        .run_once(&node.topo, &spec.image, &["version"])
        .unwrap();
    for (key, line) in [
        ("org.opencontainers.image.version", "version"),
        ("org.opencontainers.image.revision", "commit"),
        ("io.kgate.kernel-programs", "kernel programs"),
    ] {
        let label = labels[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {labels}"));
        assert!(
            version.contains(&format!("{line}: {label}\n")),
            "{key}={label}: {version}"
        );
    }

    let (bot, token) = bot_pod(&node);
    node.admin(&["apply", "-f", &write(&dir, "policy.yaml", POLICY)]);
    let volumes = volumes(&node, &spec);

    // A: the first install, in a private cgroup namespace as on a cgroup v2 node.
    let name_a = unique("a");
    let a = podman
        .run(&node.topo, &spec, &spec.image, &name_a, "private", &volumes)
        .unwrap();
    ready(&a);
    let in_a = scenario(&node, &a, &bot, &token);

    // Stopped, its programs stay: the pod's connects are refused, never let through.
    podman.stop(&name_a).unwrap();
    node.topo.wait(&a, WAIT).unwrap();
    let probe = parse_probe(
        &node
            .topo
            .pod_command(probe_bin())
            .args(["connect", CLUSTER_IP, "hello"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        probe["kind"], "ConnectionRefused",
        "not fail closed: {probe}"
    );
    let (ok, _, err) = kubectl(&node, &bot, &token, &["get", "pods"]);
    assert!(
        !ok,
        "the API server was reached with no agent running: {err}"
    );

    // B: a new image (another label: another digest), in the host's cgroup namespace as
    // on a v1 node, takes the pinned programs over.
    let upgraded = format!("localhost/{}:b", unique("kgate"));
    let containerfile = write(
        &dir,
        "Containerfile",
        &format!("FROM {}\nLABEL io.kgate.test=upgrade\n", spec.image),
    );
    podman
        .output(&[
            "build",
            "--pull=never",
            "--tag",
            &upgraded,
            "--file",
            &containerfile,
            &dir.to_string_lossy(),
        ])
        .unwrap();
    let name_b = unique("b");
    let b = podman
        .run(&node.topo, &spec, &upgraded, &name_b, "host", &volumes)
        .unwrap();
    ready(&b);
    b.output
        .wait_for("programs replaced in place", WAIT)
        .expect("the new container took over the pinned programs");
    let in_b = scenario(&node, &b, &bot, &token);
    podman.stop(&name_b).unwrap();
    node.topo.wait(&b, WAIT).unwrap();

    // The bare binary with the same config (host paths), for the comparison.
    let bare_config = write(&dir, "bare.yaml", &agent_config(&node, &spec, false));
    let mut cmd = node.topo.agent_command(kgate_bin());
    cmd.args(["--log-format", "json", "agent", "--config", &bare_config])
        .env("KGATE_REDIRECT_IPV4", NODE_IP4.to_string())
        .env("NODE_NAME", "node-1");
    let bare = node.topo.spawn(cmd).unwrap();
    ready(&bare);
    let in_bare = scenario(&node, &bare, &bot, &token);
    assert_eq!(
        in_a, in_bare,
        "the containerized agent recorded otherwise than the bare one"
    );
    assert_eq!(
        in_b, in_bare,
        "the upgraded container recorded otherwise than the bare one"
    );
}

/// What a run of the scenario recorded, without what differs from run to run.
type Records = Vec<BTreeMap<String, Value>>;

/// The pod's kubectl lists pods and reads a Secret; returns the agent's records of it.
fn scenario(node: &Node, agent: &Process, bot: &Path, token: &str) -> Records {
    let before = request_lines(agent).len();
    let (ok, out, err) = kubectl(node, bot, token, &["get", "pods", "-o", "name"]);
    assert!(ok && out.contains("pod/bot-a"), "{out} {err}");
    let (ok, out, err) = kubectl(
        node,
        bot,
        token,
        &["get", "secret", "db-creds", "-o", "json"],
    );
    assert!(ok, "{err}");
    let secret: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        secret["data"]["password"],
        kgate::mask::MASKED_BASE64,
        "{secret}"
    );
    assert!(!out.contains(PASSWORD), "{out}");

    let deadline = Instant::now() + WAIT;
    let records = loop {
        let lines = request_lines(agent)[before..].to_vec();
        let done = lines.iter().any(|l| l["resource"] == "secrets");
        if done || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kept = [
        "user",
        "workload",
        "comm",
        "exe",
        "cgroup",
        "verb",
        "resource",
        "namespace",
        "name",
        "decision",
        "rule",
        "status",
        "refused",
    ];
    // kubectl's discovery requests come only while its cache is cold: not compared.
    let records: Records = records
        .iter()
        .filter(|l| l["resource"].as_str().is_some_and(|r| !r.is_empty()))
        .map(|l| {
            kept.iter()
                .map(|k| ((*k).to_owned(), l[*k].clone()))
                .collect()
        })
        .collect();
    let read = records
        .iter()
        .find(|r| r["resource"] == "secrets")
        .unwrap_or_else(|| panic!("no record of the Secret read: {records:?}"));
    assert_eq!(read["user"], "system:serviceaccount:demo:bot", "{read:?}");
    assert_eq!(read["workload"], "pod demo/bot-a/main", "{read:?}");
    assert_eq!(read["comm"], "kubectl", "{read:?}");
    assert!(
        read["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/kubectl")),
        "{read:?}"
    );
    records
}

fn request_lines(agent: &Process) -> Vec<Value> {
    agent
        .output
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect()
}

/// Waits until the agent serves: listening, its targets synced from discovery.
fn ready(agent: &Process) {
    agent.output.wait_for("agent listening", WAIT).unwrap();
    agent.output.wait_for("\"synced\":true", WAIT).unwrap();
}

/// kubectl in pod bot-a's container cgroup, as the unprivileged user a pod runs as.
fn kubectl(node: &Node, cgroup: &Path, token: &str, args: &[&str]) -> (bool, String, String) {
    let home = node.topo.dir.join("home");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o777)).unwrap();
    let cmd = || {
        let mut cmd = node.topo.pod_command_in(cgroup, "setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "kubectl",
        ])
        .env("HOME", &home);
        cmd
    };
    let kubeconfig = node.kubeconfig("bot-a", token);
    Cluster::kubectl(cmd, &kubeconfig, args)
}

/// Pod demo/bot-a on node-1 (a container cgroup laid out as the kubelet's) and a
/// token bound to it.
fn bot_pod(node: &Node) -> (PathBuf, String) {
    let container_id = format!("{:0>64}", "c0ffeea");
    let (_, cgroup) = node
        .topo
        .kubelet_pod("demo", "bot-a", &container_id, |args| Ok(node.admin(args)))
        .unwrap();
    let token = node.admin(&[
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
    (cgroup, token.trim().to_owned())
}

/// deploy/configmap.yaml's agent config for the test node: the API server is the
/// double (the node has no kube-proxy to carry the Service IP there), the pods are the
/// topology's. In the container, the files are where the DaemonSet mounts them; for
/// the bare binary, where the test wrote them.
fn agent_config(node: &Node, spec: &PodSpec, in_container: bool) -> String {
    let shipped = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/configmap.yaml"
    ))
    .unwrap();
    let configmap: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(configmap["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let topo = &node.topo;
    let set = |config: &mut serde_yaml::Value, path: &[&str], value: String| {
        let mut at = config;
        for key in path {
            at = &mut at[*key];
        }
        *at = serde_yaml::Value::String(value);
    };
    set(
        &mut config,
        &["upstream", "server"],
        format!("https://{ENDPOINT}"),
    );
    let cgroup = if in_container {
        container_path(spec, &topo.cgroup_root)
    } else {
        topo.cgroup_root.clone()
    };
    set(&mut config, &["cgroup"], cgroup.display().to_string());
    if !in_container {
        let d = &topo.dir;
        set(&mut config, &["bpffs"], topo.bpffs.display().to_string());
        set(
            &mut config,
            &["record", "dir"],
            d.join("records-bare").display().to_string(),
        );
        set(
            &mut config,
            &["tls", "certFile"],
            d.join("tls.crt").display().to_string(),
        );
        set(
            &mut config,
            &["tls", "keyFile"],
            d.join("tls.key").display().to_string(),
        );
        set(
            &mut config,
            &["upstream", "caFile"],
            d.join("apiserver/ca.crt").display().to_string(),
        );
        set(
            &mut config,
            &["upstream", "tokenFile"],
            d.join("apiserver/token").display().to_string(),
        );
    }
    serde_yaml::to_string(&config).unwrap()
}

/// Where a host path appears in the container, through the DaemonSet's hostPath mounts.
fn container_path(spec: &PodSpec, host: &Path) -> PathBuf {
    spec.mounts
        .iter()
        .find_map(|(_, mount, _, volume)| {
            let source = volume["hostPath"]["path"].as_str()?;
            let rest = host.strip_prefix(source).ok()?;
            Some(Path::new(mount).join(rest))
        })
        .unwrap_or_else(|| panic!("no hostPath mount holds {}", host.display()))
}

/// What each of the DaemonSet's volumes holds on the test node.
fn volumes(node: &Node, spec: &PodSpec) -> Volumes {
    let topo = &node.topo;
    let files = |name: &str, content: &[(&str, PathBuf)]| {
        let dir = topo.dir.join("volumes").join(name);
        fs::create_dir_all(&dir).unwrap();
        for (file, from) in content {
            fs::copy(from, dir.join(file)).unwrap();
        }
        dir
    };
    let config = topo.dir.join("container.yaml");
    fs::write(&config, agent_config(node, spec, true)).unwrap();
    let mut sources = BTreeMap::new();
    for (name, _, _, volume) in &spec.mounts {
        let source = if volume["configMap"]["name"] == "kgate-agent" {
            files(name, &[("config.yaml", config.clone())])
        } else if volume["secret"]["secretName"] == "kgate-serving-cert" {
            files(
                name,
                &[
                    ("tls.crt", topo.dir.join("tls.crt")),
                    ("tls.key", topo.dir.join("tls.key")),
                ],
            )
        } else if volume["configMap"]["name"] == "kube-root-ca.crt" {
            files(name, &[("ca.crt", topo.dir.join("apiserver/ca.crt"))])
        } else if volume["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token" {
            files(name, &[("token", topo.dir.join("apiserver/token"))])
        } else if volume["hostPath"]["path"] == "/sys/fs/bpf" {
            topo.bpffs.clone()
        } else if volume["hostPath"]["path"] == "/var/lib/kgate/records" {
            let dir = topo.dir.join("volumes").join(name);
            fs::create_dir_all(&dir).unwrap();
            dir
        } else if let Some(path) = volume["hostPath"]["path"].as_str() {
            PathBuf::from(path)
        } else {
            panic!("the test does not know what volume {name} holds: {volume:?}");
        };
        sources.insert(name.clone(), source);
    }
    Volumes { sources }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path.display().to_string()
}

/// A container or image name no other run uses.
fn unique(what: &str) -> String {
    format!("kgate-test-{what}-{}", std::process::id())
}
