//! deploy/ renders with the real kubectl (kustomize), and the agent config it ships is
//! one that kgate accepts once the DaemonSet supplies the node IP.

use std::process::Command;

#[test]
fn manifests_render_and_ship_a_valid_agent_config() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let out = Command::new("kubectl")
        .args(["kustomize", deploy])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: Namespace",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "kind: CustomResourceDefinition",
        "kind: ConfigMap",
        "kind: DaemonSet",
    ] {
        assert!(rendered.contains(kind), "{kind} missing from:\n{rendered}");
    }
    assert!(
        rendered.matches("namespace: kgate-system").count() >= 3,
        "{rendered}"
    );

    let config = std::fs::read_to_string(format!("{deploy}/configmap.yaml")).unwrap();
    let text = config.split_once("config.yaml: |\n").unwrap().1;
    let text: String = text
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        kgate::config::Config::parse(&text).is_err(),
        "without the node IP and name the config must be refused"
    );
    let parsed = kgate::config::Config::parse_with(&text, |c| {
        c.redirect.ipv4 = Some([10, 0, 0, 5].into());
        c.identity.node_name = Some("node-1".into());
    })
    .unwrap();
    assert_eq!(parsed.listen.port(), 7443);
    assert_eq!(
        parsed.upstream.token_file.as_deref(),
        Some(std::path::Path::new("/var/run/secrets/kgate/token"))
    );
    let daemonset = std::fs::read_to_string(format!("{deploy}/daemonset.yaml")).unwrap();
    for needle in [
        "containerPort: 7443",
        "KGATE_REDIRECT_IPV4",
        "NODE_NAME",
        "mountPath: /var/run/secrets/kgate",
        "readinessProbe",
        "path: /readyz",
    ] {
        assert!(
            daemonset.contains(needle),
            "{needle} missing from the DaemonSet"
        );
    }
}

/// deploy/crds.yaml is what `kgate crds` generates from the Rust types: regenerate it
/// with `cargo xtask crds` when they change.
#[test]
fn the_crds_in_deploy_match_the_rust_types() {
    let out = Command::new(kgate_tests::harness::kgate_bin())
        .arg("crds")
        .output()
        .expect("kgate runs");
    assert!(out.status.success(), "{out:?}");
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml"))
            .unwrap();
    assert!(
        generated == committed,
        "deploy/crds.yaml has drifted from the Rust types: run `cargo xtask crds`"
    );
    for name in ["kgatepolicies.kgate.io", "kgateapprovals.kgate.io"] {
        assert!(generated.contains(name), "{name}");
    }
}
