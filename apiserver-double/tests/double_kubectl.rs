//! The API-server double against the real kubectl binary, directly (no kgate), for
//! what `double.rs` does not cover: `get -w` (a Table watch) seeing changes made from
//! the handle, writes checked in the double's store rather than through kubectl again,
//! and the request log that proxy tests rely on.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{Kubectl, scratch_dir},
};
use serde_json::Value;

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

/// A spawned kubectl whose stdout lines arrive on a channel; killed on drop.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn spawn(k: &Kubectl, args: &[&str]) -> Self {
        let mut child = k
            .command()
            .args(["--request-timeout", "60s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line that contains `needle`, failing after 20 s.
    fn expect_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("kubectl never printed {needle:?}: {e}"),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_watch_prints_added_then_modified() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-watch");
    // Table output with the event type in front: the watch asks for as=Table.
    let watch = Streaming::spawn(
        &k,
        &["get", "pods", "-n", "demo", "-w", "--output-watch-events"],
    );
    // Reading kubectl blocks; block_in_place lets the double run on other workers.
    let added = tokio::task::block_in_place(|| watch.expect_line("web-0"));
    assert!(
        added.starts_with("ADDED") && added.contains("Running"),
        "{added}"
    );

    // A "kubelet" reports the pod finished.
    let mut pod = server.get("pods", "demo", "web-0").unwrap();
    pod["status"]["phase"] = "Succeeded".into();
    server.update("pods", "demo", pod).unwrap();

    let modified = tokio::task::block_in_place(|| watch.expect_line("Succeeded"));
    assert!(
        modified.starts_with("MODIFIED") && modified.contains("web-0"),
        "{modified}"
    );

    // What reached the API server: a Table watch, by the admin.
    let requests = server.requests();
    let logged = requests
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/demo/pods" && r.query.contains("watch=true"))
        .expect("the watch request is logged");
    assert_eq!(logged.user.as_deref(), Some("kubernetes-admin"));
    assert!(
        logged
            .headers
            .iter()
            .any(|(k, v)| k == "accept" && v.contains("as=Table")),
        "{logged:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_land_in_the_store() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "double-writes");
    let manifest = k.config.with_file_name("cm.yaml");
    fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web}\ndata:\n  color: blue\n",
    )
    .unwrap();
    let run = |args: &[&str]| tokio::task::block_in_place(|| k.ok(args));
    // The double serves no OpenAPI schemas, so client-side validation is off; the real
    // server accepts the `fieldValidation=Ignore` that this makes kubectl send.
    run(&[
        "create",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    let created = server.get("configmaps", "demo", "settings").unwrap();
    assert_eq!(created["data"]["color"], "blue");
    assert_eq!(created["metadata"]["labels"]["tier"], "web");
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(
            created["metadata"][field]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{field} not assigned: {created}"
        );
    }

    run(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":null,"size":"xl"}}"#,
    ]);
    let patched = server.get("configmaps", "demo", "settings").unwrap();
    assert_eq!(
        patched["data"],
        serde_json::json!({"size": "xl"}),
        "merge patch: null deletes a key"
    );
    assert!(
        rv(&patched) > rv(&created),
        "resourceVersion must grow: {patched}"
    );

    run(&["delete", "configmap", "settings"]);
    assert!(server.get("configmaps", "demo", "settings").is_none());

    let username = run(&[
        "get",
        "secret",
        "db-creds",
        "-o",
        "jsonpath={.data.username}",
    ]);
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(username.trim())
        .expect("secret data is base64");
    assert_eq!(decoded, b"admin");

    run(&["scale", "deployment", "web", "--replicas=4"]);
    let deploy = server.get("deployments", "demo", "web").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 4);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/deployments/web/scale")),
        "kubectl scale goes through the scale subresource"
    );
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("numeric resourceVersion")
}
