//! Writes through masking, with the real kubectl through a standalone kgate in front
//! of the API-server double: what users and controllers do (read-modify-write,
//! `kubectl apply` twice, client- and server-side, `kubectl edit`, patches of every
//! type) never stores kgate's placeholder, prunes as it does without kgate, and a
//! concurrent change still meets the API server's own 409.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kgate::mask::{MASKED_BASE64, MASKED_TEXT};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    background::blocking,
    harness::{Agent, Kubectl, https_client, scratch_dir},
};
use serde_json::{Value, json};

/// The double's `demo/db-creds` password, base64 as stored.
const PASSWORD: &str = "czNjcjN0LXBhc3N3b3Jk";

const MASK: &str = "mask: {configMapKeys: ['PASSWORD', '^secret-'], envNames: [PASSWORD]}\n\
                    record: {stdout: true}\n";

struct Setup {
    server: Handle,
    agent: Agent,
}

async fn setup() -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n{MASK}"
        ),
    )
    .unwrap();
    Setup { server, agent }
}

impl Setup {
    fn kubectl(&self, tag: &str) -> Kubectl {
        Kubectl::new(
            scratch_dir(tag),
            &self.agent.url(),
            &self.agent.ca_pem,
            self.server.admin_token(),
        )
    }

    fn stored(&self, resource: &str, name: &str) -> Value {
        self.server
            .get(resource, "demo", name)
            .unwrap_or_else(|| panic!("{resource} {name} is stored"))
    }

    /// The records the agent printed that carry `annotation`.
    fn records_with(&self, annotation: &str) -> Vec<Value> {
        self.agent
            .stdout()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| !e["annotations"][annotation].is_null())
            .collect()
    }
}

fn write_file(k: &Kubectl, name: &str, text: &str) -> String {
    let path = k.config.with_file_name(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The Secret `demo/NAME` with `data` (a YAML flow map), as a manifest.
fn secret_manifest(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\ndata: {data}\n"
    )
}

/// The Deployment `demo/webapp` whose container `app` has `env` (a YAML flow list);
/// `metadata` is added to its metadata's flow map (`, labels: {…}`, or nothing).
fn deployment_manifest(metadata: &str, env: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: webapp, namespace: demo{metadata}}}\n\
         spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n\
         \x20   spec:\n      containers:\n      - name: app\n        image: nginx\n        env: {env}\n"
    )
}

fn no_placeholder(v: &Value) {
    let text = v.to_string();
    assert!(
        !text.contains(MASKED_TEXT) && !text.contains(MASKED_BASE64),
        "a placeholder was stored: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_modify_write_keeps_the_values_it_could_not_read() {
    let s = setup().await;
    let k = s.kubectl("rmw");
    s.server
        .create(
            "configmaps",
            "demo",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app"},
                "data": {"DB_PASSWORD": "hunter2", "mode": "blue"}}),
        )
        .unwrap();
    let before = s.stored("secrets", "db-creds");
    blocking(move || {
        // kubectl get -o yaml | sed | kubectl replace -f -
        let yaml = k.ok(&["get", "secret", "db-creds", "-n", "demo", "-o", "yaml"]);
        assert!(yaml.contains(MASKED_BASE64), "{yaml}");
        let edited = yaml.replace(
            "namespace: demo",
            "namespace: demo\n  labels: {edited: \"yes\"}",
        );
        let file = write_file(&k, "secret.yaml", &edited);
        let out = k.ok(&["replace", "-f", &file]);
        assert!(out.contains("secret/db-creds replaced"), "{out}");

        // The Python client's way: read the object, change another key, PUT it back.
        let json = k.ok(&["get", "configmap", "app", "-n", "demo", "-o", "json"]);
        let mut cm: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(cm["data"]["DB_PASSWORD"], MASKED_TEXT);
        cm["data"]["mode"] = json!("green");
        let file = write_file(&k, "cm.json", &cm.to_string());
        k.ok(&["replace", "-f", &file]);

        // kubectl edit: the editor changes a label; kubectl sends a patch.
        let editor = write_file(
            &k,
            "editor.sh",
            "#!/bin/sh\nsed -i 's/mode: green/mode: red/' \"$1\"\n",
        );
        std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = k
            .command()
            .env("KUBE_EDITOR", &editor)
            .args(["edit", "configmap", "app", "-n", "demo"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    let secret = s.stored("secrets", "db-creds");
    assert_eq!(
        secret["data"], before["data"],
        "the Secret's values are kept"
    );
    assert_eq!(secret["metadata"]["labels"]["edited"], "yes");
    let cm = s.stored("configmaps", "app");
    assert_eq!(cm["data"], json!({"DB_PASSWORD": "hunter2", "mode": "red"}));
    let restored = s.records_with("kgate.io/restored");
    assert!(
        restored
            .iter()
            .any(|e| e["annotations"]["kgate.io/restored"] == "/data/password,/data/username"),
        "{restored:?}"
    );
    assert!(
        restored.iter().all(|e| !e.to_string().contains(PASSWORD)),
        "a record holds a value"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_twice_prunes_as_without_kgate() {
    let s = setup().await;
    let k = s.kubectl("apply");
    blocking(move || {
        let apply = |name: &str, text: &str| {
            let file = write_file(&k, name, text);
            let (ok, out, err) = k.run(&["apply", "--validate=false", "-f", &file]);
            assert!(ok, "{err}");
            assert!(!err.contains("missing the kubectl.kubernetes.io/last-applied"), "{err}");
            out
        };
        let cm = |data: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pruned, namespace: demo}}\ndata: {data}\n")
        };
        apply("cm1.yaml", &cm("{secret-a: '1', secret-b: '2', plain: x}"));
        apply("cm2.yaml", &cm("{secret-a: '1'}"));
        let secret = |data: &str| secret_manifest("pruned", data);
        apply("s1.yaml", &secret("{a: MQ==, b: Mg==}"));
        apply("s2.yaml", &secret("{a: MQ==}"));
        // Twice the same: nothing left to change.
        apply("s3.yaml", &secret("{a: MQ==}"));
        apply(
            "d1.yaml",
            &deployment_manifest(", labels: {x: '1', y: '2'}", "[{name: DB_PASSWORD, value: hunter2}, {name: MODE, value: m}]"),
        );
        apply("d2.yaml", &deployment_manifest(", labels: {x: '1'}", "[{name: DB_PASSWORD, value: hunter2}]"));
        // What kgate shows keeps the annotation, its values masked.
        let yaml = k.ok(&["get", "deployment", "webapp", "-n", "demo", "-o", "yaml"]);
        assert!(yaml.contains("last-applied-configuration") && !yaml.contains("hunter2"), "{yaml}");
    })
    .await;
    assert_eq!(
        s.stored("configmaps", "pruned")["data"],
        json!({"secret-a": "1"})
    );
    assert_eq!(s.stored("secrets", "pruned")["data"], json!({"a": "MQ=="}));
    let web = s.stored("deployments", "webapp");
    assert_eq!(web["metadata"]["labels"], json!({"x": "1"}));
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "DB_PASSWORD", "value": "hunter2"}])
    );
    for (resource, name) in [
        ("configmaps", "pruned"),
        ("secrets", "pruned"),
        ("deployments", "webapp"),
    ] {
        no_placeholder(&s.stored(resource, name));
    }
}

/// `kubectl apply --server-side` through kgate: applied twice, it prunes as without
/// kgate (a Secret's key, a Deployment's env entry by name); and what kgate showed of
/// a masked Secret, a label added, applies back without a conflict and without a
/// placeholder stored. The Secret predates managed fields, so every value is held by
/// `before-first-apply`: a placeholder kgate failed to restore would be a conflict.
#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_prunes_and_keeps_the_values_it_could_not_read() {
    let s = setup().await;
    let k = s.kubectl("ssa");
    let before = s.stored("secrets", "db-creds");
    blocking(move || {
        let apply = |name: &str, text: &str| {
            let file = write_file(&k, name, text);
            let (ok, out, err) = k.run(&["apply", "--server-side", "-f", &file]);
            assert!(ok, "{err}");
            out
        };
        apply("s1.yaml", &secret_manifest("applied", "{a: MQ==, b: Mg==}"));
        apply("s2.yaml", &secret_manifest("applied", "{a: MQ==}"));
        apply(
            "d1.yaml",
            &deployment_manifest(
                "",
                "[{name: DB_PASSWORD, value: hunter2}, {name: MODE, value: m}]",
            ),
        );
        apply(
            "d2.yaml",
            &deployment_manifest("", "[{name: DB_PASSWORD, value: hunter2}]"),
        );
        let yaml = k.ok(&["get", "deployment", "webapp", "-n", "demo", "-o", "yaml"]);
        assert!(!yaml.contains("hunter2"), "{yaml}");

        let yaml = k.ok(&["get", "secret", "db-creds", "-n", "demo", "-o", "yaml"]);
        assert!(yaml.contains(MASKED_BASE64), "{yaml}");
        let edited = yaml.replace(
            "namespace: demo",
            "namespace: demo\n  labels: {applied: \"yes\"}",
        );
        let out = apply("db.yaml", &edited);
        assert!(out.contains("secret/db-creds serverside-applied"), "{out}");
    })
    .await;
    assert_eq!(s.stored("secrets", "applied")["data"], json!({"a": "MQ=="}));
    assert_eq!(
        s.stored("deployments", "webapp")["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "DB_PASSWORD", "value": "hunter2"}])
    );
    let secret = s.stored("secrets", "db-creds");
    assert_eq!(
        secret["data"], before["data"],
        "the Secret's values are kept"
    );
    assert_eq!(secret["metadata"]["labels"]["applied"], "yes");
    let restored = s.records_with("kgate.io/restored");
    assert!(
        restored.iter().any(|e| e["verb"] == "patch"
            && e["annotations"]["kgate.io/restored"] == "/data/password,/data/username"),
        "{restored:?}"
    );
    for (resource, name) in [
        ("secrets", "applied"),
        ("secrets", "db-creds"),
        ("deployments", "webapp"),
    ] {
        no_placeholder(&s.stored(resource, name));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_change_meets_the_api_servers_conflict() {
    let s = setup().await;
    let k = s.kubectl("conflict");
    let yaml = {
        let k = s.kubectl("conflict-read");
        blocking(move || k.ok(&["get", "secret", "db-creds", "-n", "demo", "-o", "yaml"])).await
    };
    // Someone else rotates the password after the bot read the Secret.
    let mut rotated = s.stored("secrets", "db-creds");
    rotated["data"]["password"] = json!("bmV3LXBhc3N3b3Jk");
    s.server.update("secrets", "demo", rotated).unwrap();
    let (ok, err) = blocking(move || {
        let file = write_file(&k, "stale.yaml", &yaml);
        let (ok, _, err) = k.run(&["replace", "-f", &file]);
        (ok, err)
    })
    .await;
    assert!(!ok);
    assert!(
        err.contains(
            "Operation cannot be fulfilled on secrets \"db-creds\": the object has been modified"
        ),
        "{err}"
    );
    assert_eq!(
        s.stored("secrets", "db-creds")["data"]["password"],
        "bmV3LXBhc3N3b3Jk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn placeholders_kgate_cannot_restore_and_patches_that_read_masked_fields_are_refused() {
    let s = setup().await;
    let k = s.kubectl("refused");
    blocking(move || {
        let refused = |args: &[&str], needle: &str| {
            let (ok, _, err) = k.run(args);
            assert!(!ok, "{args:?} passed");
            assert!(err.contains(needle), "{args:?}: {err}");
        };
        // A copy of a masked Secret under a new name: its values cannot be restored.
        let yaml = k.ok(&["get", "secret", "db-creds", "-n", "demo", "-o", "yaml"]);
        let copy = yaml.replace("name: db-creds", "name: db-copy");
        let file = write_file(&k, "copy.yaml", &copy);
        refused(&["create", "-f", &file], "kgate: the write carries kgate's placeholder at /data/");
        let test = format!(r#"[{{"op":"test","path":"/data/password","value":"{PASSWORD}"}}]"#);
        refused(
            &["patch", "secret", "db-creds", "-n", "demo", "--type=json", "-p", &test],
            "JSON patch operation 0 (test) reads /data/password, which kgate masks",
        );
        refused(
            &["patch", "secret", "db-creds", "-n", "demo", "--type=json", "-p",
              r#"[{"op":"copy","from":"/data/password","path":"/metadata/labels"}]"#],
            "reads /data/password",
        );
        refused(
            &["patch", "secret", "db-creds", "-n", "demo", "--type=merge", "-p",
              &format!(r#"{{"data":{{"fresh":"{MASKED_BASE64}"}}}}"#)],
            "no value there to restore",
        );
        // Placeholders where kgate put them are restored; the rest of the patch applies.
        k.ok(&["patch", "secret", "db-creds", "-n", "demo", "--type=merge", "-p",
            &format!(r#"{{"metadata":{{"labels":{{"m":"1"}}}},"data":{{"password":"{MASKED_BASE64}"}}}}"#)]);
        k.ok(&["patch", "secret", "db-creds", "-n", "demo", "--type=json", "-p",
            &format!(r#"[{{"op":"replace","path":"/data/password","value":"{MASKED_BASE64}"}},{{"op":"add","path":"/metadata/labels/j","value":"2"}}]"#)]);
        k.ok(&["patch", "secret", "db-creds", "-n", "demo", "-p",
            &format!(r#"{{"metadata":{{"labels":{{"s":"3"}}}},"data":{{"password":"{MASKED_BASE64}"}}}}"#)]);
    })
    .await;
    let secret = s.stored("secrets", "db-creds");
    assert_eq!(secret["data"]["password"], PASSWORD);
    assert_eq!(
        secret["metadata"]["labels"],
        json!({"m": "1", "j": "2", "s": "3"})
    );
    assert!(s.server.get("secrets", "demo", "db-copy").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_kgate_cannot_parse_never_carry_a_placeholder_upstream() {
    let s = setup().await;
    let client = https_client(&s.agent.ca_pem, false);
    let send = |content_type: &'static str, body: Vec<u8>| {
        Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "{}/api/v1/namespaces/demo/secrets/db-creds",
                s.agent.url()
            ))
            .header(
                "authorization",
                format!("Bearer {}", s.server.admin_token()),
            )
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    // Protobuf strings are never escaped: the placeholder's bytes are found.
    let mut proto = b"k8s\x00".to_vec();
    proto.extend_from_slice(b"\x0a\x02v1\x12\x06Secret\x12\x10");
    proto.extend_from_slice(MASKED_BASE64.as_bytes());
    let response = client
        .request(send("application/vnd.kubernetes.protobuf", proto))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("protobuf body carries kgate's placeholder"));
    let response = client
        .request(send("application/cbor", vec![0xa0]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An escaped placeholder in JSON is still one.
    let escaped = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db-creds"},"data":{"password":"a2dhdGU6bWFza2Vk","username":"kgate\u003amasked"}}"#;
    let response = client
        .request(send("application/json", escaped.to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    no_placeholder(&s.stored("secrets", "db-creds"));
}
