//! Writes through masking, table-driven, and the round trip as a property: whatever
//! the object and the rules, reading through kgate and writing back stores the
//! original except for what the write changed.

use http::{Method, Uri};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{RestoreError, guard};
use crate::{
    mask::{LAST_APPLIED, MASKED_BASE64, MASKED_TEXT, MaskConfig, Masker, Plan},
    request_info::RequestInfo,
};

const RULES: &str =
    "configMapKeys: ['^a', 'b$']\nenvNames: [PASSWORD|TOKEN]\nannotations: [example.com/secret]\n";

fn plan(uri: &str) -> Plan {
    let config: MaskConfig = serde_yaml::from_str(RULES).unwrap();
    let masker = Masker::new(&config).unwrap();
    let info = RequestInfo::parse(&Method::PUT, &uri.parse::<Uri>().unwrap()).unwrap();
    masker.plan(&info, "bot").expect("a masked resource")
}

fn masked(plan: &Plan, stored: &Value) -> Value {
    let mut read = stored.clone();
    assert!(plan.mask_object(&mut read));
    read
}

const SECRETS: &str = "/api/v1/namespaces/demo/secrets/db";
const CONFIGMAPS: &str = "/api/v1/namespaces/demo/configmaps/app";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/demo/deployments/web";

fn secret() -> Value {
    let applied = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "demo"},
        "stringData": {"token": "t0ken"}, "data": {"password": "cGFzcw=="}});
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "demo", "resourceVersion": "7",
            "annotations": {LAST_APPLIED: format!("{applied}\n"), "example.com/secret": "s3"}},
        "data": {"password": "cGFzcw==", "token": "dDBrZW4="}, "type": "Opaque"})
}

fn deployment() -> Value {
    let container = |name: &str, password: &str| {
        json!({"name": name, "image": "nginx", "env": [
            {"name": "MODE", "value": "prod"},
            {"name": "DB_PASSWORD", "value": password},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})
    };
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "9"},
        "spec": {"template": {"spec": {
            "containers": [container("app", "hunter2"), container("side", "swordfish")]}}}})
}

#[test]
fn a_read_modify_write_stores_the_original_values() {
    let p = plan(SECRETS);
    let stored = secret();
    let mut write = masked(&p, &stored);
    assert_ne!(write, stored, "something was masked");
    write["metadata"]["labels"] = json!({"team": "db"});
    let restored = p.restore_object(&mut write, Some(&stored)).unwrap();
    let mut want = stored.clone();
    want["metadata"]["labels"] = json!({"team": "db"});
    assert_eq!(write, want);
    assert_eq!(
        restored,
        [
            "/data/password",
            "/data/token",
            "/metadata/annotations/example.com~1secret",
            "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration#/data/password",
            "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration#/stringData/token",
        ]
    );
}

#[test]
fn env_values_are_found_by_container_and_name_not_position() {
    let p = plan(DEPLOYMENTS);
    let stored = deployment();
    let mut write = masked(&p, &stored);
    // The client reorders containers and env entries, and changes MODE.
    let containers = write["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers.reverse();
    for c in containers.iter_mut() {
        c["env"].as_array_mut().unwrap().reverse();
    }
    p.restore_object(&mut write, Some(&stored)).unwrap();
    let side = &write["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(side["name"], "side");
    assert_eq!(
        side["env"][1],
        json!({"name": "DB_PASSWORD", "value": "swordfish"})
    );
    let app = &write["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(
        app["env"][1],
        json!({"name": "DB_PASSWORD", "value": "hunter2"})
    );
}

#[test]
fn placeholders_that_cannot_be_restored_are_refused() {
    let secrets = plan(SECRETS);
    let configmaps = plan(CONFIGMAPS);
    let deployments = plan(DEPLOYMENTS);
    let stored_cm = json!({"kind": "ConfigMap", "metadata": {"name": "app", "resourceVersion": "3"},
        "data": {"a_key": "v1", "other": "v2"}});
    let cases: Vec<(&str, &Plan, Value, Option<Value>, RestoreError)> = vec![
        (
            "a key the stored Secret lacks",
            &secrets,
            json!({"metadata": {"name": "db"}, "data": {"new": MASKED_BASE64}}),
            Some(secret()),
            RestoreError::NoStoredValue("/data/new".into()),
        ),
        (
            "a new object",
            &secrets,
            json!({"metadata": {"name": "db"}, "data": {"password": MASKED_BASE64}}),
            None,
            RestoreError::Unrestorable("/data/password (the object does not exist yet)".into()),
        ),
        (
            "text placeholder in base64 data",
            &secrets,
            json!({"metadata": {"name": "db"}, "data": {"password": MASKED_TEXT}}),
            Some(secret()),
            RestoreError::Unrestorable("/data/password".into()),
        ),
        (
            "a ConfigMap key kgate does not mask",
            &configmaps,
            json!({"metadata": {"name": "app"}, "data": {"a_key": MASKED_TEXT, "other": MASKED_TEXT}}),
            Some(stored_cm.clone()),
            RestoreError::Unrestorable("/data/other".into()),
        ),
        (
            "an env entry of a container the stored object lacks",
            &deployments,
            json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [
                {"name": "new", "env": [{"name": "DB_PASSWORD", "value": MASKED_TEXT}]}]}}}}),
            Some(deployment()),
            RestoreError::NoStoredValue(
                "/spec/template/spec/containers/0/env/0/value".into(),
            ),
        ),
        (
            "a placeholder inside last-applied where nothing is stored",
            &configmaps,
            json!({"metadata": {"name": "app", "annotations": {LAST_APPLIED:
                json!({"data": {"a_new": MASKED_TEXT}}).to_string()}}}),
            Some(stored_cm),
            RestoreError::NoStoredValue(
                "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration#/data/a_new"
                    .into(),
            ),
        ),
    ];
    for (name, plan, mut body, stored, want) in cases {
        let got = plan.restore_object(&mut body, stored.as_ref());
        assert_eq!(got, Err(want), "{name}");
    }
}

#[test]
fn json_patches_restore_values_and_never_read_masked_fields() {
    let p = plan(SECRETS);
    let stored = secret();
    let last_applied = "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration";
    let refused: Vec<(Value, &str)> = vec![
        (
            json!([{"op": "test", "path": "/data/password", "value": "cGFzcw=="}]),
            "/data/password",
        ),
        (
            json!([{"op": "test", "path": "/data", "value": {}}]),
            "/data",
        ),
        (
            json!([{"op": "copy", "from": "/data/token", "path": "/metadata/labels"}]),
            "/data/token",
        ),
        (
            json!([{"op": "move", "from": last_applied, "path": "/metadata/name"}]),
            last_applied,
        ),
        (json!([{"op": "test", "path": "", "value": {}}]), ""),
        // Reads after an earlier operation put a value there.
        (
            json!([{"op": "add", "path": "/data/x", "value": "eA=="},
            {"op": "test", "path": "/data/x", "value": "eA=="}]),
            "/data/x",
        ),
    ];
    for (mut ops, path) in refused {
        let got = p.restore_json_patch(&mut ops, &stored);
        assert!(
            matches!(&got, Err(RestoreError::ReadsMasked { path: p, .. }) if p == path),
            "{ops}: {got:?}"
        );
    }
    // Reading what kgate does not mask is fine.
    let mut ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels"}]);
    assert_eq!(p.restore_json_patch(&mut ops, &stored), Ok(vec![]));

    let mut ops = json!([
        {"op": "replace", "path": "/data/password", "value": MASKED_BASE64},
        {"op": "add", "path": "/data", "value": {"token": MASKED_BASE64, "new": "bmV3"}},
    ]);
    let restored = p.restore_json_patch(&mut ops, &stored).unwrap();
    assert_eq!(restored, ["/data/password", "/data/token"]);
    assert_eq!(ops[0]["value"], "cGFzcw==");
    assert_eq!(ops[1]["value"], json!({"token": "dDBrZW4=", "new": "bmV3"}));

    let mut ops = json!([{"op": "add", "path": "/data/new", "value": MASKED_BASE64}]);
    assert_eq!(
        p.restore_json_patch(&mut ops, &stored),
        Err(RestoreError::NoStoredValue("/data/new".into()))
    );

    let d = plan(DEPLOYMENTS);
    let env = "/spec/template/spec/containers/1/env";
    let mut ops = json!([{"op": "remove", "path": format!("{env}/1")},
        {"op": "add", "path": format!("{env}/-"), "value": {"name": "DB_PASSWORD", "value": MASKED_TEXT}}]);
    d.restore_json_patch(&mut ops, &deployment()).unwrap();
    assert_eq!(ops[1]["value"]["value"], "swordfish");
}

#[test]
fn the_guard_keeps_a_clients_own_precondition() {
    let mut body = json!({"metadata": {"name": "db"}});
    guard(&mut body, false, "7");
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    let mut body = json!({"metadata": {"name": "db", "resourceVersion": "5"}});
    guard(&mut body, false, "7");
    assert_eq!(body["metadata"]["resourceVersion"], "5");
    let mut ops = json!([{"op": "replace", "path": "/data/a", "value": "Yg=="}]);
    guard(&mut ops, true, "7");
    assert_eq!(
        ops[0],
        json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"})
    );
}

// === the round trip, as a property ===

/// An edit a client makes to what it read, applied to what it read and, to know what
/// must be stored, to the stored object.
#[derive(Clone, Debug)]
enum Edit {
    Label(String),
    SetData(usize, String),
    RemoveData(usize),
    SetEnv(usize, String),
}

fn apply(edit: &Edit, obj: &mut Value, base64: bool) {
    let key_at = |obj: &Value, i: usize| {
        obj["data"]
            .as_object()
            .and_then(|d| d.keys().nth(i % d.len().max(1)).cloned())
    };
    match edit {
        Edit::Label(v) => obj["metadata"]["labels"] = json!({"edited": v}),
        Edit::SetData(i, v) => {
            if let Some(k) = key_at(obj, *i) {
                obj["data"][&k] = json!(if base64 { format!("{v}==") } else { v.clone() });
            }
        }
        Edit::RemoveData(i) => {
            if let Some(k) = key_at(obj, *i) {
                obj["data"].as_object_mut().unwrap().remove(&k);
            }
        }
        Edit::SetEnv(i, v) => {
            if let Some(env) = obj
                .pointer_mut("/spec/template/spec/containers/0/env")
                .and_then(Value::as_array_mut)
                && !env.is_empty()
            {
                let n = env.len();
                env[*i % n]["value"] = json!(v);
            }
        }
    }
}

fn object(
    kind: u8,
    data: Vec<(String, String)>,
    env: Vec<(String, String)>,
    applied: bool,
) -> (String, Value) {
    let map: serde_json::Map<String, Value> =
        data.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let (uri, mut obj) = match kind {
        0 => (SECRETS, json!({"kind": "Secret", "data": map})),
        1 => (CONFIGMAPS, json!({"kind": "ConfigMap", "data": map})),
        _ => {
            let env: Vec<Value> = env
                .into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            (
                DEPLOYMENTS,
                json!({"kind": "Deployment",
                "spec": {"template": {"spec": {"containers": [{"name": "c", "env": env}]}}}}),
            )
        }
    };
    obj["metadata"] = json!({"name": "x", "resourceVersion": "1",
        "annotations": {"example.com/secret": "ann"}});
    if applied {
        let mut inner = obj.clone();
        inner["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        inner["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        obj["metadata"]["annotations"][LAST_APPLIED] = json!(format!("{inner}\n"));
    }
    (uri.to_owned(), obj)
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        "[a-z]{1,4}".prop_map(Edit::Label),
        (0usize..8, "[a-z]{1,4}").prop_map(|(i, v)| Edit::SetData(i, v)),
        (0usize..8).prop_map(Edit::RemoveData),
        (0usize..8, "[a-z]{1,4}").prop_map(|(i, v)| Edit::SetEnv(i, v)),
    ]
}

proptest! {
    #[test]
    fn reading_through_kgate_and_writing_back_changes_only_what_the_write_changed(
        kind in 0u8..3,
        data in proptest::collection::btree_map("[a-c]{1,3}", "[a-z0-9]{0,6}", 0..6),
        env in proptest::collection::btree_map(
            prop_oneof![Just("DB_PASSWORD"), Just("MODE"), Just("API_TOKEN"), Just("X")],
            "[a-z0-9]{0,6}", 0..4),
        applied in any::<bool>(),
        edits in proptest::collection::vec(edit(), 0..4),
    ) {
        let (uri, stored) = object(
            kind,
            data.into_iter().collect(),
            env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            applied,
        );
        let p = plan(&uri);
        let mut write = masked(&p, &stored);
        let mut want = stored.clone();
        for e in &edits {
            apply(e, &mut write, kind == 0);
            apply(e, &mut want, kind == 0);
        }
        p.restore_object(&mut write, Some(&stored)).unwrap();
        prop_assert_eq!(write, want);
    }
}
