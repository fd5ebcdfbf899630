use serde_json::{Value, json};

use super::{
    cluster,
    install::{self, AGENT_PERMISSIONS, Permission},
    nodes,
    report::{Check, Outcome, Report},
};

fn outcome(check: &Check) -> (Outcome, &str) {
    (check.status, check.message.as_str())
}

#[test]
fn api_server_versions() {
    let cases = [
        ("1", "32", Outcome::Ok),
        ("1", "28", Outcome::Ok),
        // GKE and EKS write the minor with a `+`.
        ("1", "30+", Outcome::Ok),
        ("1", "27", Outcome::Fail),
        ("1", "", Outcome::Warn),
        ("2", "0", Outcome::Warn),
    ];
    for (major, minor, want) in cases {
        let check = cluster::version(major, minor);
        assert_eq!(check.status, want, "{major}.{minor}: {}", check.message);
        assert_eq!(check.hint.is_some(), want != Outcome::Ok);
    }
}

#[test]
fn kernel_releases() {
    let cases = [
        ("6.1.0-28-amd64", Outcome::Ok, ""),
        ("5.15.0-1051-azure", Outcome::Ok, ""),
        ("5.10.0", Outcome::Ok, ""),
        (
            "5.8.18-100.fc31.x86_64",
            Outcome::Warn,
            "no longer maintained",
        ),
        (
            "5.4.0-150-generic",
            Outcome::Fail,
            "lacks cgroup/getpeername4 (5.8), cgroup/getpeername6 (5.8)",
        ),
        ("4.19.0", Outcome::Fail, "bpf_link (5.7)"),
        ("garbage", Outcome::Warn, "cannot read"),
    ];
    for (release, want, says) in cases {
        let check = nodes::kernel_check(release);
        assert_eq!(check.status, want, "{release}: {}", check.message);
        assert!(check.message.contains(says), "{release}: {}", check.message);
    }
}

#[test]
fn kubelet_cgroup_drivers() {
    let cases = [
        (Ok("systemd"), Outcome::Ok, "kubepods.slice"),
        (
            Ok("cgroupfs"),
            Outcome::Ok,
            "pods under kubepods (not kubepods.slice)",
        ),
        (Ok("other"), Outcome::Warn, "kubepods under cgroupfs"),
        (
            Err("404 not found"),
            Outcome::Warn,
            "/var/lib/kubelet/config.yaml",
        ),
    ];
    for (driver, want, hint) in cases {
        let check = nodes::driver_check(driver);
        assert_eq!(check.status, want, "{driver:?}");
        let text = format!("{} {}", check.message, check.hint.unwrap_or_default());
        assert!(text.contains(hint), "{driver:?}: {text}");
    }
}

#[test]
fn api_server_endpoints() {
    let slice = |endpoints: Value| {
        serde_json::from_value(json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
            "endpoints": endpoints, "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }))
        .unwrap()
    };
    let cases = [
        (
            vec![slice(
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                               {"addresses": ["10.0.0.2"]}]),
            )],
            Outcome::Ok,
            "2 ready endpoint(s): 10.0.0.1:6443, 10.0.0.2:6443",
        ),
        (
            vec![slice(
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
            )],
            Outcome::Fail,
            "no ready API server endpoint in 1",
        ),
        (Vec::new(), Outcome::Fail, "in 0 EndpointSlice(s)"),
    ];
    for (slices, want, says) in cases {
        let check = cluster::endpoints_check(&slices);
        assert_eq!(outcome(&check), (want, check.message.as_str()));
        assert!(check.message.contains(says), "{}", check.message);
    }
}

#[test]
fn jwks_contents() {
    let ec = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let cases = [
        (json!({"keys": [ec]}), Outcome::Ok, "1 signing key(s)"),
        (
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}),
            Outcome::Warn,
            "none agents can verify with",
        ),
        (json!({"nokeys": 1}), Outcome::Warn, "not a JWKS"),
    ];
    for (jwks, want, says) in cases {
        let check = cluster::jwks_check("https://issuer", &jwks);
        assert_eq!(check.status, want, "{jwks}: {}", check.message);
        assert!(check.message.contains(says), "{}", check.message);
    }
}

#[test]
fn installed_crds_against_this_kgate() {
    let expected = crate::crds::all()[0].clone();
    let established = |mut crd: Value| {
        crd["status"] = json!({
            "conditions": [{"type": "Established", "status": "True"}],
            "storedVersions": ["v1alpha1"],
        });
        crd
    };
    let ours = serde_json::to_value(&expected).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut crd = established(ours.clone());
        f(&mut crd);
        serde_json::from_value(crd).unwrap()
    };
    let cases = [
        (
            "as generated",
            Some(edit(&|_| {})),
            Outcome::Ok,
            "serves v1alpha1, stores v1alpha1",
        ),
        ("missing", None, Outcome::Fail, "is not installed"),
        (
            "not established",
            Some(serde_json::from_value(ours.clone()).unwrap()),
            Outcome::Fail,
            "is not Established",
        ),
        (
            "another version",
            Some(edit(&|c| {
                c["spec"]["versions"][0]["name"] = json!("v1beta1");
            })),
            Outcome::Fail,
            "does not serve v1alpha1 (serves v1beta1)",
        ),
        (
            "another schema",
            Some(edit(&|c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] =
                    json!("older");
            })),
            Outcome::Warn,
            "with another schema",
        ),
        (
            "an old stored version",
            Some(edit(&|c| {
                c["status"]["storedVersions"] = json!(["v1alpha0", "v1alpha1"]);
            })),
            Outcome::Warn,
            "may still be stored as v1alpha0",
        ),
    ];
    for (name, installed, want, says) in cases {
        let check = install::crd_check(&expected, installed.as_ref());
        assert_eq!(check.status, want, "{name}: {}", check.message);
        assert!(check.message.contains(says), "{name}: {}", check.message);
    }
}

/// A rule of a ClusterRole or Role, as deploy/rbac.yaml writes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    verbs: Vec<String>,
}

/// Whether `rule` grants `p`, as RBAC matches (pkg/apis/rbac/v1/evaluation_helpers.go:
/// `*` matches any verb, group and resource; a subresource is `resource/sub`).
fn grants(rule: &Rule, p: &Permission) -> bool {
    let has = |list: &[String], item: &str| list.iter().any(|x| x == item || x == "*");
    if !has(&rule.verbs, p.verb) {
        return false;
    }
    if !p.path.is_empty() {
        return has(&rule.non_resource_urls, p.path);
    }
    let resource = if p.subresource.is_empty() {
        p.resource.to_owned()
    } else {
        format!("{}/{}", p.resource, p.subresource)
    };
    has(&rule.api_groups, p.group)
        && has(&rule.resources, &resource)
        && (rule.resource_names.is_empty() || has(&rule.resource_names, p.name))
}

/// What the check asks the API server about is what deploy/ grants the agent: the
/// ClusterRole everywhere, the heartbeat Role in kgate's namespace only.
#[test]
fn deploy_rbac_grants_every_permission_the_check_asks_about() {
    let text = include_str!("../../../../deploy/rbac.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let rules = |kind: &str, name: &str| -> Vec<Rule> {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/rbac.yaml"));
        serde_json::from_value(doc["rules"].clone()).unwrap()
    };
    let cluster = rules("ClusterRole", "kgate-agent");
    let heartbeat = rules("Role", "kgate-agent-heartbeat");
    for p in AGENT_PERMISSIONS {
        let in_kgate = p.namespace("kgate-system") == "kgate-system";
        let granted = cluster.iter().any(|r| grants(r, p))
            || (in_kgate && heartbeat.iter().any(|r| grants(r, p)));
        assert!(
            granted,
            "deploy/rbac.yaml does not grant {}",
            p.describe("kgate-system")
        );
    }
    // And the matcher can say no.
    let narrow: Rule =
        serde_json::from_value(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}))
            .unwrap();
    assert!(!AGENT_PERMISSIONS.iter().any(|p| grants(&narrow, p)));
}

#[test]
fn the_report_as_text_and_json() {
    let mut report = Report::default();
    report.add("API server", Check::ok("api.reachable", "answers"));
    report.add(
        "node node-2",
        Check::fail("node.agent", "no kgate agent", "run one\nor two").on("node-2"),
    );
    report.add("API server", Check::warn("api.version", "odd", "look"));
    assert_eq!(
        report.text(),
        "API server\n----------\n√ answers\n‼ odd\n    look\n\n\
         node node-2\n-----------\n× no kgate agent\n    run one\n    or two\n\n\
         Status: 1 ok, 1 warning, 1 failure\n"
    );
    let json = report.json();
    assert_eq!(json["success"], false);
    assert_eq!(json["summary"], json!({"ok": 1, "warn": 1, "fail": 1}));
    assert_eq!(
        json["checks"][2],
        json!({"group": "node node-2", "id": "node.agent", "node": "node-2", "status": "fail",
               "message": "no kgate agent", "hint": "run one\nor two"})
    );
    assert!(json["checks"][0].get("hint").is_none());
}
