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

/// The DaemonSet runs the image `cargo xtask image` builds from this source:
/// `ghcr.io/kgate/kgate:<kgate's version>`, with kustomize's `images:` naming the same
/// tag, and the private-registry overlay renaming it but keeping the tag.
#[test]
fn the_manifests_name_the_image_of_this_version() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cargo = std::fs::read_to_string(format!("{root}/kgate-userspace/Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("kgate's version");
    let rendered = |dir: &str| {
        let out = Command::new("kubectl")
            .args(["kustomize", &format!("{root}/{dir}")])
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image: "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let image = format!("ghcr.io/kgate/kgate:{version}");
    let daemonset = std::fs::read_to_string(format!("{root}/deploy/daemonset.yaml")).unwrap();
    assert!(
        daemonset.contains(&format!("image: {image}\n")),
        "deploy/daemonset.yaml must name {image}"
    );
    let kustomization =
        std::fs::read_to_string(format!("{root}/deploy/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains(&format!("newTag: {version}\n")),
        "deploy/kustomization.yaml's images: must name tag {version}"
    );
    assert_eq!(rendered("deploy"), std::slice::from_ref(&image));
    assert_eq!(
        rendered("overlays/private-registry"),
        [format!("registry.example.com/platform/kgate:{version}")]
    );
    // The gateway and the uninstall DaemonSet run the same image as the agents.
    assert_eq!(rendered("deploy/gateway"), std::slice::from_ref(&image));
    let mut uninstall = rendered("deploy/uninstall");
    uninstall.sort();
    assert_eq!(uninstall, [image, "registry.k8s.io/pause:3.10".to_owned()]);
}
