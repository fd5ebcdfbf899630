//! The double's writes as the real API server does them, checked with the real
//! kubectl and no kgate in between, since kgate's write-through-masking relies on each:
//! an update with a stale `resourceVersion` is a 409 Conflict (also when a patch
//! carries it), an update or patch that changes nothing keeps the `resourceVersion`
//! and sends no watch event (etcd3's GuaranteedUpdate compares before writing),
//! `kubectl apply` stores its `last-applied-configuration` and prunes by it, a
//! JSON patch whose `test` fails is a 422, concurrent patches that name no
//! `resourceVersion` are re-applied to the stored object, never answered 409, and
//! server-side apply owns, prunes and conflicts by managed fields.

use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{Kubectl, scratch_dir},
};
use serde_json::{Value, json};

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

fn run(k: &Kubectl, args: &[&str]) -> (bool, String, String) {
    tokio::task::block_in_place(|| k.run(args))
}

fn ok(k: &Kubectl, args: &[&str]) -> String {
    tokio::task::block_in_place(|| k.ok(args))
}

fn file(k: &Kubectl, name: &str, text: &str) -> String {
    let path = k.config.with_file_name(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_writes_conflict_and_no_op_writes_keep_the_version() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-writes");
    ok(&k, &["create", "configmap", "c", "--from-literal=a=1"]);
    let read: Value = serde_json::from_str(&ok(&k, &["get", "cm", "c", "-o", "json"])).unwrap();

    // A no-op replace and a no-op patch: same version.
    let same = file(&k, "same.json", &read.to_string());
    ok(&k, &["replace", "-f", &same]);
    ok(
        &k,
        &[
            "patch",
            "cm",
            "c",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"1"}}"#,
        ],
    );
    let now = server.get("configmaps", "demo", "c").unwrap();
    assert_eq!(
        rv(&now),
        rv(&read),
        "a write that changes nothing is not written"
    );

    // Someone else changes it; the stale replace and a patch with the stale version
    // conflict.
    let mut changed = now.clone();
    changed["data"]["a"] = json!("2");
    server.update("configmaps", "demo", changed).unwrap();
    let conflict = "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again";
    let (done, _, err) = run(&k, &["replace", "-f", &same]);
    assert!(
        !done && err.contains("Error from server (Conflict)") && err.contains(conflict),
        "{err}"
    );
    let stale = format!(
        r#"{{"metadata":{{"resourceVersion":"{}"}},"data":{{"b":"x"}}}}"#,
        rv(&read)
    );
    for kind in ["merge", "strategic"] {
        let (done, _, err) = run(
            &k,
            &["patch", "cm", "c", &format!("--type={kind}"), "-p", &stale],
        );
        assert!(!done && err.contains(conflict), "{kind}: {err}");
    }
    let replace_rv = format!(
        r#"[{{"op":"replace","path":"/metadata/resourceVersion","value":"{}"}}]"#,
        rv(&read)
    );
    let (done, _, err) = run(&k, &["patch", "cm", "c", "--type=json", "-p", &replace_rv]);
    assert!(!done && err.contains(conflict), "json: {err}");
    let (done, _, err) = run(
        &k,
        &[
            "patch",
            "cm",
            "c",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/a","value":"9"}]"#,
        ],
    );
    assert!(
        !done && (err.contains("Error from server (Invalid)") || err.contains("is invalid")),
        "{err}"
    );
    assert_eq!(
        server.get("configmaps", "demo", "c").unwrap()["data"],
        json!({"a": "2"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_stores_its_annotation_and_prunes_by_it() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-apply");
    let cm = |data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: applied, namespace: demo}}\ndata: {data}\n"
        )
    };
    ok(
        &k,
        &["apply", "-f", &file(&k, "1.yaml", &cm("{a: '1', b: '2'}"))],
    );
    let stored = server.get("configmaps", "demo", "applied").unwrap();
    let annotation: Value = serde_json::from_str(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(annotation["data"], json!({"a": "1", "b": "2"}));
    let out = ok(&k, &["apply", "-f", &file(&k, "2.yaml", &cm("{a: '1'}"))]);
    assert!(out.contains("configured"), "{out}");
    let out = ok(&k, &["apply", "-f", &file(&k, "3.yaml", &cm("{a: '1'}"))]);
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(
        server.get("configmaps", "demo", "applied").unwrap()["data"],
        json!({"a": "1"})
    );
}

/// Concurrent patches that name no `resourceVersion` all land: kube-apiserver
/// re-applies a patch to the object as stored when another write got in between
/// (`GuaranteedUpdate` calls the patcher again), and answers 409 only to a patch that
/// pins a version of its own. 16 writers × 60 merge patches, each setting its own key,
/// over HTTP/2 so that they overlap in the server.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_are_reapplied_not_conflicted() {
    use kgate_apiserver_double::client::{https_client, text};

    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-patches");
    ok(
        &k,
        &[
            "create",
            "-n",
            "default",
            "configmap",
            "p",
            "--from-literal=seed=0",
        ],
    );
    let client = https_client(server.ca_pem(), true);
    let (url, token) = (
        format!("{}/api/v1/namespaces/default/configmaps/p", server.url()),
        server.admin_token().to_owned(),
    );
    let patch = move |body: Value| {
        let req = http::Request::builder()
            .method("PATCH")
            .uri(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/merge-patch+json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let fut = client.request(req);
        async move {
            let response = fut.await.unwrap();
            (response.status().as_u16(), text(response.into_body()).await)
        }
    };
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let patch = patch.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let (code, body) =
                        patch(json!({"data": {format!("w{w}"): i.to_string()}})).await;
                    assert_eq!(code, 200, "writer {w}, patch {i}: {body}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let read: Value =
        serde_json::from_str(&ok(&k, &["get", "-n", "default", "cm", "p", "-o", "json"])).unwrap();
    for w in 0..16 {
        assert_eq!(read["data"][format!("w{w}")], "59", "{read}");
    }

    // A patch that pins a stale version conflicts.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}});
    let (code, body) = patch(stale).await;
    assert_eq!(code, 409, "{body}");
    // One that pins the current version lands.
    let current = json!({"metadata": {"resourceVersion": rv(&read)}, "data": {"x": "y"}});
    let (code, body) = patch(current).await;
    assert_eq!(code, 200, "{body}");
}

/// Server-side apply with the real kubectl (`apply --server-side`): the object is
/// created and owned by kubectl's `Apply` entry, a second apply removes what it no
/// longer applies (and only that), the same configuration again is not written, a
/// field `kubectl create` set and the apply would change is a 409 naming it, which
/// `--force-conflicts` takes, and `--dry-run=server` stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_owns_prunes_and_conflicts() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-ssa");
    let cm = |name: &str, data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: demo, labels: {{app: web}}}}\ndata: {data}\n"
        )
    };
    let apply = |text: &str, extra: &[&str]| {
        let f = file(&k, "ssa.yaml", text);
        let mut args = vec!["apply", "--server-side", "-f", f.as_str()];
        args.extend_from_slice(extra);
        run(&k, &args)
    };
    let stored = |name: &str| server.get("configmaps", "demo", name).unwrap();

    let (done, out, err) = apply(&cm("ssa", "{a: '1', b: '2'}"), &[]);
    assert!(
        done && out.contains("configmap/ssa serverside-applied"),
        "{out}{err}"
    );
    let first = stored("ssa");
    let fields = &first["metadata"]["managedFields"];
    assert_eq!(fields.as_array().unwrap().len(), 1, "{fields}");
    assert_eq!(fields[0]["manager"], "kubectl");
    assert_eq!(fields[0]["operation"], "Apply");
    assert_eq!(fields[0]["fieldsType"], "FieldsV1");
    assert_eq!(
        fields[0]["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    // kubectl shows them only when asked.
    let yaml = ok(&k, &["get", "cm", "ssa", "-o", "yaml"]);
    assert!(!yaml.contains("managedFields"), "{yaml}");
    let yaml = ok(
        &k,
        &["get", "cm", "ssa", "-o", "yaml", "--show-managed-fields"],
    );
    assert!(yaml.contains("operation: Apply"), "{yaml}");

    // Someone else adds a key; the next apply drops b, keeps theirs.
    ok(
        &k,
        &[
            "patch",
            "cm",
            "ssa",
            "--type=merge",
            "-p",
            r#"{"data":{"theirs":"x"}}"#,
        ],
    );
    let (done, _, err) = apply(&cm("ssa", "{a: '1'}"), &[]);
    assert!(done, "{err}");
    assert_eq!(stored("ssa")["data"], json!({"a": "1", "theirs": "x"}));
    let second = stored("ssa");
    let (done, _, err) = apply(&cm("ssa", "{a: '1'}"), &[]);
    assert!(done, "{err}");
    assert_eq!(
        rv(&stored("ssa")),
        rv(&second),
        "the same apply is not written"
    );

    // kubectl create owns what it set: applying another value is a conflict.
    ok(
        &k,
        &["create", "configmap", "created", "--from-literal=a=1"],
    );
    let (done, _, err) = apply(&cm("created", "{a: '2'}"), &[]);
    assert!(!done, "a conflicting apply passed");
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a"#
        ),
        "{err}"
    );
    assert_eq!(stored("created")["data"], json!({"a": "1"}));
    let (done, _, err) = apply(&cm("created", "{a: '2'}"), &["--force-conflicts"]);
    assert!(done, "{err}");
    let taken = stored("created");
    assert_eq!(taken["data"], json!({"a": "2"}));
    let managers: Vec<(&str, &str, &Value)> = taken["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = |k: &str| e[k].as_str().unwrap();
            (name("manager"), name("operation"), &e["fieldsV1"])
        })
        .collect();
    // The creator keeps the map it created, no longer its key.
    assert_eq!(
        managers,
        [
            (
                "kubectl",
                "Apply",
                &json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
            ),
            ("kubectl-create", "Update", &json!({"f:data": {}})),
        ]
    );

    // A server-side dry run answers and stores nothing.
    let (done, out, err) = apply(&cm("dry", "{a: '1'}"), &["--dry-run=server"]);
    assert!(
        done && out.contains("serverside-applied (server dry run)"),
        "{out}{err}"
    );
    assert!(server.get("configmaps", "demo", "dry").is_none());
}
