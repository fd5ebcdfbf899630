//! Response masking through kgate (standalone agent) against the API-server double:
//! kubectl `-o yaml`, Table, watches and writes never show a Secret value; kube-rs
//! decodes the placeholder; a protobuf-only client gets a 406; unmasked subjects see
//! values; a 1 GiB Secret list and a long, busy watch are masked as they stream, with
//! bounded agent memory.

use std::time::{Duration, Instant};

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

/// The double's `demo/db-creds` values, base64 as stored.
const USERNAME: &str = "YWRtaW4=";
const PASSWORD: &str = "czNjcjN0LXBhc3N3b3Jk";

struct Setup {
    server: Handle,
    agent: Agent,
}

async fn setup(mask: &str) -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!("identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n{mask}"),
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

    fn get(&self, path: &str, accept: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.agent.url()))
            .header(
                "authorization",
                format!("Bearer {}", self.server.admin_token()),
            )
            .header("accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// A Secret `demo/late` with the double's password, created straight in the double
    /// while a watch through kgate is open.
    fn create_late_secret(&self) {
        self.server
            .create(
                "secrets",
                "demo",
                json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "late"}, "type": "Opaque", "data": {"password": PASSWORD}}),
            )
            .unwrap();
    }
}

fn assert_no_values(text: &str) {
    assert!(
        [USERNAME, PASSWORD, "s3cr3t", "czNjcjN0"]
            .iter()
            .all(|v| !text.contains(v)),
        "a Secret value leaked: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_and_writes_show_no_secret_values() {
    let s = setup("").await;
    let k = s.kubectl("mask-rw");
    blocking(move || {
        let yaml = k.ok(&["get", "secret", "db-creds", "-n", "demo", "-o", "yaml"]);
        assert_no_values(&yaml);
        assert!(
            yaml.contains(&format!("password: {MASKED_BASE64}"))
                && yaml.contains(&format!("username: {MASKED_BASE64}"))
                && yaml.contains("name: db-creds"),
            "{yaml}"
        );
        let table = k.ok(&["get", "secrets", "-n", "demo"]);
        assert!(
            table.contains("db-creds") && table.contains("Opaque"),
            "{table}"
        );
        let wide = k.ok(&["get", "secrets", "-n", "demo", "-o", "json"]);
        assert_no_values(&wide);
        assert!(wide.contains("SecretList") || wide.contains("\"List\""), "{wide}");

        // The answer to a create is masked; what was stored is not.
        let created = k.ok(&[
            "create", "secret", "generic", "made-here", "-n", "demo",
            "--from-literal=token=s3cr3t", "-o", "json",
        ]);
        assert_no_values(&created);
        assert!(created.contains(MASKED_BASE64), "{created}");
        // An applied Secret's last-applied annotation would embed its values.
        let manifest = k.config.with_file_name("secret.yaml");
        std::fs::write(
            &manifest,
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: applied, namespace: demo}}\ndata: {{password: {PASSWORD}}}\n"),
        )
        .unwrap();
        let applied = k.ok(&["apply", "--validate=false", "-f", manifest.to_str().unwrap(), "-o", "yaml"]);
        assert_no_values(&applied);
        let yaml = k.ok(&["get", "secret", "applied", "-n", "demo", "-o", "yaml"]);
        assert_no_values(&yaml);
        // The annotation stays (kubectl apply diffs against it), its values masked.
        assert!(
            yaml.contains("last-applied-configuration") && yaml.contains(&format!(r#"{{"password":"{MASKED_BASE64}"}}"#)),
            "{yaml}"
        );
    })
    .await;
    let stored = s.server.get("secrets", "demo", "made-here").unwrap();
    assert_eq!(
        stored["data"]["token"], "czNjcjN0",
        "masking is response-only"
    );
    let stored = s.server.get("secrets", "demo", "applied").unwrap();
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains(PASSWORD)),
        "the server keeps the annotation: {stored}"
    );
}

/// Reads `kubectl … -w` output lines until `until` has been seen.
fn read_until(reader: &mut impl std::io::BufRead, until: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(until) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_are_masked_event_by_event() {
    let s = setup("").await;
    let k = s.kubectl("mask-watch");
    let spawn = |args: &[&str]| {
        let mut child = k
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        (child, reader)
    };
    let (mut json_child, mut json_out) = spawn(&[
        "get",
        "secrets",
        "-n",
        "demo",
        "-w",
        "-o",
        "jsonpath={.metadata.name}={.data.password}{\"\\n\"}",
    ]);
    let (mut table_child, mut table_out) = spawn(&["get", "secrets", "-n", "demo", "-w"]);
    let (json_out, table_out) = blocking(move || {
        let first = read_until(&mut json_out, "db-creds=");
        let table = read_until(&mut table_out, "db-creds");
        ((json_out, first), (table_out, table))
    })
    .await;
    s.create_late_secret();
    let ((mut json_out, mut json_seen), (mut table_out, mut table_seen)) = (json_out, table_out);
    let (json_seen, table_seen) = blocking(move || {
        json_seen.push_str(&read_until(&mut json_out, "late="));
        table_seen.push_str(&read_until(&mut table_out, "late"));
        (json_seen, table_seen)
    })
    .await;
    for child in [&mut json_child, &mut table_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        json_seen,
        format!("db-creds={MASKED_BASE64}\nlate={MASKED_BASE64}\n")
    );
    assert!(table_seen.contains("Opaque"), "{table_seen}");
    // The upstream was asked for JSON, Table parameters kept.
    let accepts: Vec<String> = s
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/secrets") && r.query.contains("watch"))
        .flat_map(|r| r.headers)
        .filter(|(k, _)| k == "accept")
        .map(|(_, v)| v)
        .collect();
    assert!(
        accepts.iter().all(|a| !a.contains("protobuf"))
            && accepts
                .iter()
                .any(|a| a.starts_with("application/json;as=Table")),
        "{accepts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_decodes_the_placeholder() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::{Api, api::ListParams};

    let s = setup("").await;
    let client =
        kgate_tests::harness::kube_client(&s.agent.url(), &s.agent.ca_pem, s.server.admin_token())
            .await;
    let secrets: Api<Secret> = Api::namespaced(client, "demo");
    let one = secrets.get("db-creds").await.unwrap();
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    for secret in std::iter::once(&one).chain(&listed.items) {
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data.len(), 2);
        for value in data.values() {
            assert_eq!(value.0, MASKED_TEXT.as_bytes());
        }
    }
}

/// kube-rs's streaming list (`sendInitialEvents`, what informers use where the
/// WatchList feature is on) through kgate: each initial Secret masked, the
/// `k8s.io/initial-events-end` bookmark passed on so the initial state ends, and a
/// later Secret masked too.
#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_list_is_masked_and_ends_its_initial_state() {
    use futures_util::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Secret;
    use kube::{
        Api,
        runtime::watcher::{self, Event},
    };

    let s = setup("").await;
    let client =
        kgate_tests::harness::kube_client(&s.agent.url(), &s.agent.ca_pem, s.server.admin_token())
            .await;
    let secrets: Api<Secret> = Api::namespaced(client, "demo");
    let mut events =
        watcher::watcher(secrets, watcher::Config::default().streaming_lists()).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap()
    };
    let masked = |secret: &Secret| {
        let data = secret.data.as_ref().unwrap();
        assert!(!data.is_empty());
        assert!(
            data.values().all(|v| v.0 == MASKED_TEXT.as_bytes()),
            "{secret:?}"
        );
        secret.metadata.name.clone().unwrap()
    };
    let mut initial = Vec::new();
    loop {
        match next().await {
            Event::Init => {}
            Event::InitApply(secret) => initial.push(masked(&secret)),
            Event::InitDone => break,
            other => panic!("{other:?} before the initial state ended"),
        }
    }
    assert!(initial.contains(&"db-creds".to_owned()), "{initial:?}");
    s.create_late_secret();
    match next().await {
        Event::Apply(secret) => assert_eq!(masked(&secret), "late"),
        other => panic!("{other:?}"),
    }
    let streamed = s
        .server
        .requests()
        .into_iter()
        .any(|r| r.path.ends_with("/secrets") && r.query.contains("sendInitialEvents=true"));
    assert!(
        streamed,
        "the streaming list did not reach the API server as one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_negotiation_refuses_what_cannot_be_masked() {
    let s = setup("").await;
    let client = https_client(&s.agent.ca_pem, true);
    let path = "/api/v1/namespaces/demo/secrets/db-creds";
    let response = client
        .request(s.get(path, "application/vnd.kubernetes.protobuf"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotAcceptable");
    assert!(
        status["message"].as_str().unwrap().starts_with("kgate: "),
        "{status}"
    );
    assert!(
        !s.server.requests().iter().any(|r| r.path == path),
        "a refused request must not reach the API server"
    );
    // client-go's default Accept: protobuf preferred, JSON allowed; JSON comes back.
    let response = client
        .request(s.get(path, "application/vnd.kubernetes.protobuf,application/json"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("content-length").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let secret: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(secret["data"]["password"], MASKED_BASE64);
    // Other resources are not touched: the ConfigMap passes as the client asked.
    let response = client
        .request(s.get(
            "/api/v1/namespaces/demo/configmaps/app-config",
            "application/json",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmasked_subjects_and_configured_rules() {
    let s = setup("mask: {unmaskedSubjects: [kubernetes-adm*], configMapKeys: ['^mode$']}\n").await;
    let k = s.kubectl("mask-unmasked");
    blocking(move || {
        let password = k.ok(&[
            "get",
            "secret",
            "db-creds",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.password}",
        ]);
        assert_eq!(password, PASSWORD, "an unmasked subject sees the value");
    })
    .await;
    let s = setup("mask: {configMapKeys: ['^mode$']}\n").await;
    let k = s.kubectl("mask-configmap");
    blocking(move || {
        let mode = k.ok(&[
            "get",
            "configmap",
            "app-config",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.mode}",
        ]);
        assert_eq!(mode, MASKED_TEXT);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_secret_list_is_masked_with_bounded_agent_memory() {
    let s = setup("").await;
    let (count, size) = (10_240, 100 * 1024);
    s.server.insert_secrets("demo", count, size);
    let client = https_client(&s.agent.ca_pem, false);
    let started = Instant::now();
    let mut response = client
        .request(s.get("/api/v1/namespaces/demo/secrets", "application/json"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Checked as it streams (the test must not hold a GiB either): every bulk value
    // arrives masked, and no run of the original value crosses, even split between
    // two chunks.
    let (mut masked, mut bytes, mut tail) = (0usize, 0usize, Vec::<u8>::new());
    let needle = format!("\"blob\":\"{MASKED_BASE64}\"");
    while let Some(frame) = response.body_mut().frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        bytes += data.len();
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&data);
        let text = String::from_utf8_lossy(&window);
        assert!(
            !text.contains("eHh4eHh4"),
            "an unmasked value crossed kgate"
        );
        masked += text.matches(&needle).count();
        // Keep less than one needle, so nothing is counted twice.
        let keep = window.len().min(needle.len() - 1);
        tail = window[window.len() - keep..].to_vec();
    }
    let elapsed = started.elapsed();
    assert_eq!(masked, count, "every bulk Secret arrived, masked");
    let rss = s.agent.peak_rss_kib();
    let upstream_mb = (count * size) as f64 / 1e6;
    eprintln!(
        "masked a {upstream_mb:.0} MB Secret list ({bytes} bytes out) in {elapsed:?} ({:.0} MB/s end to end, debug build), agent peak RSS {rss} KiB",
        upstream_mb / elapsed.as_secs_f64()
    );
    assert!(
        rss > 0 && rss < 96 * 1024,
        "agent peak RSS {rss} KiB for a {upstream_mb:.0} MB list: it buffered"
    );
}

/// A watch that carries 3,000 Secret events (about 60 MB) over many seconds: every
/// event masked as it arrives, agent memory bounded by one event, not the stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_busy_watch_is_masked_event_by_event_with_bounded_memory() {
    let s = std::sync::Arc::new(setup("").await);
    let client = https_client(&s.agent.ca_pem, true);
    let mut response = client
        .request(s.get(
            "/api/v1/namespaces/demo/secrets?watch=true&resourceVersion=0",
            "application/json",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (count, size) = (3000usize, 20 * 1024);
    let writer = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let filler = "eHh4".repeat(size / 4);
            for i in 0..count {
                s.server
                    .create(
                        "secrets",
                        "demo",
                        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": format!("w-{i:05}")},
                               "type": "Opaque", "data": {"blob": filler}}),
                    )
                    .unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        })
    };
    let (mut events, mut pending) = (0usize, Vec::<u8>::new());
    while events < count {
        let frame = response
            .body_mut()
            .frame()
            .await
            .expect("the watch stays open")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).unwrap();
            let name = event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default();
            if name.starts_with("w-") {
                assert_eq!(event["type"], "ADDED");
                assert_eq!(event["object"]["data"]["blob"], MASKED_BASE64, "{name}");
                events += 1;
            }
        }
    }
    writer.await.unwrap();
    let rss = s.agent.peak_rss_kib();
    assert!(
        rss > 0 && rss < 96 * 1024,
        "agent peak RSS {rss} KiB after a {} MB watch",
        count * size / 1_000_000
    );
}

/// `kubectl describe secret` prints each key's size: the placeholder's, the same for
/// every value, so the real sizes (5 and 15 bytes here) are masked too.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_describe_shows_the_placeholders_size_for_every_key() {
    let s = setup("").await;
    let k = s.kubectl("mask-describe");
    blocking(move || {
        let out = k.ok(&["describe", "secret", "db-creds", "-n", "demo"]);
        let size = format!("{} bytes", MASKED_TEXT.len());
        assert_eq!(size, "12 bytes", "the size the docs state");
        assert!(
            out.contains(&format!("password:  {size}"))
                && out.contains(&format!("username:  {size}")),
            "{out}"
        );
        assert!(
            !out.contains(" 5 bytes") && !out.contains("15 bytes"),
            "{out}"
        );
    })
    .await;
}
