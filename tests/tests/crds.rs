//! kgate's CustomResourceDefinitions against the API-server double's CRD admission (a
//! copy of kube-apiserver's, crd.rs), with the real kubectl: the generated YAML goes
//! in on every server release the double models, and the YAML that a 1.22 server
//! refused (testdata/crds-before-issue-17.yaml, an `Option` enum written with a `null`
//! member) is refused there with that server's message. deploy.rs checks that
//! deploy/crds.yaml is what the Rust types generate.

use kgate_tests::{
    apiserver::{ApiServer, Config, Handle, ServerVersion, crd},
    harness::{Kubectl, scratch_dir},
};
use serde_json::Value;

const DEPLOYED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
const BEFORE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/testdata/crds-before-issue-17.yaml"
);

async fn double(minor: u32, patch: u32) -> Handle {
    ApiServer::start(Config {
        version: ServerVersion::new(minor, patch),
        ..Config::default()
    })
    .await
    .unwrap()
}

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

/// The documents of a YAML stream, as JSON.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_22_server_refuses_the_old_crds_and_takes_the_generated_ones() {
    let server = double(22, 2).await;
    let k = kubectl(&server, "crds-1-22");
    let (ok, out, err) = k.run(&["apply", "-f", BEFORE]);
    assert!(!ok, "the null enum member must be refused: {out}{err}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/kgateapprovals.kgate.io created"
        ),
        "the approvals CRD has no enum: {out}"
    );
    // kubectl prints an Invalid Status from its details: kind, name, then the cause.
    let head = r#"The CustomResourceDefinition "kgatepolicies.kgate.io" is invalid: spec.versions: Invalid value: []apiextensions.CustomResourceDefinitionVersion{apiextensions.CustomResourceDefinitionVersion{Name:"v1alpha1", Served:true, Storage:true, "#;
    let tail = "}}: per-version schemas may not all be set to identical values (top-level validation should be used instead)";
    assert!(err.contains(head) && err.contains(tail), "{err}");

    let applied = k.ok(&["apply", "-f", DEPLOYED]);
    assert!(
        applied.contains(
            "customresourcedefinition.apiextensions.k8s.io/kgatepolicies.kgate.io created"
        ),
        "{applied}"
    );
    let crd = server
        .get("customresourcedefinitions", "", "kgatepolicies.kgate.io")
        .unwrap();
    assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
    assert_eq!(crd["status"]["storedVersions"][0], "v1alpha1");
}

#[tokio::test(flavor = "multi_thread")]
async fn current_servers_take_both_and_warn_about_uint64_from_1_34() {
    for (minor, patch) in [(32, 4), (34, 0)] {
        let server = double(minor, patch).await;
        let k = kubectl(&server, &format!("crds-1-{minor}"));
        // A server with kubernetes#104969 converts the null member; 1.34 adds a
        // warning for the format it drops.
        let (ok, out, err) = k.run(&["apply", "-f", BEFORE]);
        assert!(ok, "1.{minor}: {out}{err}");
        let warned = err.contains(r#"Warning: unrecognized format "uint64""#);
        assert_eq!(warned, minor >= 34, "1.{minor}: {err}");
        let (ok, out, err) = k.run(&["delete", "-f", BEFORE]);
        assert!(ok, "1.{minor}: {out}{err}");

        let (ok, out, err) = k.run(&["apply", "-f", DEPLOYED]);
        assert!(ok, "1.{minor}: {out}{err}");
        assert!(!err.contains("Warning"), "1.{minor}: {err}");
        // Applied again: kubectl's merge patch changes nothing, the update is admitted.
        let again = k.ok(&["apply", "-f", DEPLOYED]);
        assert!(
            again.contains("kgatepolicies.kgate.io unchanged"),
            "{again}"
        );
        let listed = k.ok(&["get", "crds", "-o", "name"]);
        assert!(
            listed.contains("kgatepolicies.kgate.io") && listed.contains("kgateapprovals.kgate.io"),
            "{listed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_that_is_not_structural_is_refused_with_the_real_message() {
    let server = double(32, 4).await;
    let k = kubectl(&server, "crds-structural");
    let text = std::fs::read_to_string(DEPLOYED).unwrap().replacen(
        "type: boolean",
        "description: the type is gone",
        1,
    );
    let path = std::env::temp_dir().join(format!("kgate-crds-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = k.run(&["apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(!ok, "{out}");
    assert!(
        err.contains(r#"The CustomResourceDefinition "kgatepolicies.kgate.io" is invalid: spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[rules].items.properties[unmasked].type: Required value: must not be empty for specified object fields"#),
        "{err}"
    );
}

/// `kgate::crds::yaml()`, what `cargo xtask crds` writes, passes admission without a
/// warning on the releases whose behaviour differs.
#[test]
fn the_generated_crds_pass_admission_on_every_modelled_release() {
    let docs = documents(&kgate::crds::yaml().unwrap());
    assert_eq!(docs.len(), 2);
    for version in [
        ServerVersion::new(20, 11),
        ServerVersion::new(22, 2),
        ServerVersion::new(32, 4),
        ServerVersion::new(35, 0),
    ] {
        for doc in &docs {
            let name = &doc["metadata"]["name"];
            match crd::admit_create(doc.clone(), version) {
                Ok((_, warnings)) => {
                    assert!(warnings.is_empty(), "{version:?} {name}: {warnings:?}");
                }
                Err(errs) => panic!("{version:?} {name}: {errs:?}"),
            }
        }
    }
    let old = documents(&std::fs::read_to_string(BEFORE).unwrap());
    assert!(crd::admit_create(old[0].clone(), ServerVersion::new(22, 2)).is_err());
}
