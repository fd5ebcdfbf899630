//! Real Kubernetes traffic through kgate (standalone agent, direct connection) to the
//! API-server double: kubectl reads, writes, watches, exec and logs; streaming of large
//! lists with bounded agent memory; long idle watches; HTTP/2 multiplexing; malformed
//! and forbidden requests refused with a Kubernetes Status.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    background::blocking,
    harness::{
        Agent, HttpsClient, Kubectl, echo_round_trip, https_client, port_forward, scratch_dir, text,
    },
};
use serde_json::{Value, json};

struct Setup {
    server: Handle,
    agent: Agent,
}

async fn setup() -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone(&server.url(), server.ca_pem(), server.admin_token()).unwrap();
    Setup { server, agent }
}

/// An agent with one worker thread, so that all its clients share that worker's
/// upstream connections, before a double holding 200 ConfigMaps of 100 KiB in `demo`
/// (a 20 MB list).
async fn one_worker_with_large_list() -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        "workers: 1\nidentity: {unboundSubjects: [kubernetes-admin]}\npolicy: {defaultAction: allow}\n",
    )
    .unwrap();
    server.insert_configmaps("demo", 200, 100 * 1024);
    Setup { server, agent }
}

impl Setup {
    /// A GET of `path` on a connection of its own whose answer is never read: the
    /// client and the response, to hold while the data stays unread.
    async fn hold_unread(
        &self,
        path: &str,
        http2: bool,
    ) -> (HttpsClient, http::Response<hyper::body::Incoming>) {
        let client = https_client(&self.agent.ca_pem, http2);
        let req = self
            .request(Method::GET, path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .unwrap_or_else(|_| panic!("GET {path} (HTTP/2: {http2}) held back"))
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        (client, response)
    }

    fn kubectl(&self, tag: &str) -> Kubectl {
        Kubectl::new(
            scratch_dir(tag),
            &self.agent.url(),
            &self.agent.ca_pem,
            self.server.admin_token(),
        )
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.agent.url()))
            .header(
                "authorization",
                format!("Bearer {}", self.server.admin_token()),
            )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_and_writes_through_kgate() {
    let s = setup().await;
    let k = s.kubectl("rw");
    blocking(move || {
        let pods = k.ok(&["get", "pods"]);
        assert!(pods.contains("web-0") && pods.contains("Running"), "{pods}");
        let yaml = k.ok(&["get", "pod", "web-0", "-o", "yaml"]);
        assert!(yaml.contains("nodeName: node-1"), "{yaml}");
        let manifest = k.config.with_file_name("cm.yaml");
        std::fs::write(
            &manifest,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: through}\ndata: {a: '1'}\n",
        )
        .unwrap();
        k.ok(&[
            "create",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ]);
        k.ok(&[
            "patch",
            "configmap",
            "through",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ]);
        assert_eq!(
            k.ok(&["get", "cm", "through", "-o", "jsonpath={.data.b}"]),
            "2"
        );
        k.ok(&["scale", "deployment", "web", "--replicas=2"]);
        k.ok(&["delete", "configmap", "through"]);
        let (ok, _, err) = k.run(&["get", "configmap", "through"]);
        assert!(
            !ok && err.contains("(NotFound)"),
            "upstream Status must reach kubectl intact: {err}"
        );
    })
    .await;
    // The API server saw kgate's X-Forwarded-For, and each request exactly once.
    let seen = s.server.requests();
    let patch = seen
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/configmaps/through"))
        .collect::<Vec<_>>();
    assert_eq!(patch.len(), 1, "{seen:?}");
    assert!(
        patch[0]
            .headers
            .contains(&("x-forwarded-for".into(), "127.0.0.1".into())),
        "{:?}",
        patch[0]
    );
    assert_eq!(patch[0].user.as_deref(), Some("kubernetes-admin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_watch_receives_events() {
    let s = setup().await;
    let k = s.kubectl("watch");
    let mut child = k
        .command()
        .args(["get", "pods", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        // The initial listing first.
        reader.read_line(&mut line).unwrap();
        lines.push(std::mem::take(&mut line));
        (reader, lines)
    })
    .await;
    let (mut reader, mut lines) = lines;
    // Then a change made on the server side arrives as a watch event.
    s.server.create("pods", "demo", json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "late-1"}, "spec": {"containers": [{"name": "app"}]}})).unwrap();
    let lines = blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line);
        lines
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines, ["pod/web-0\n", "pod/late-1\n"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_logs_stream_through_kgate() {
    let s = setup().await;
    let k = s.kubectl("exec");
    blocking(move || {
        let (ok, out, err) = k.run(&["exec", "web-0", "--", "echo", "through", "kgate"]);
        assert!(ok && out == "through kgate\n", "{out} {err}");
        // stdin crosses the upgraded stream, and its EOF ends `cat`.
        let mut child = k
            .command()
            .args(["exec", "-i", "web-0", "--", "cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hello over websocket\n")
            .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello over websocket\n"
        );
        // Exit codes come back through the error channel.
        let out = k.output(&["exec", "web-0", "--", "sh", "-c", "exit 3"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        // logs -f keeps streaming: more lines than the non-follow output has.
        let mut child = k
            .command()
            .args(["logs", "-f", "web-0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..13 {
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line, "line 13\n");
    })
    .await;
}

/// SPDY/3.1 (what kubectl before 1.31, client-go's remotecommand and most operators
/// speak) and WebSocket port-forward cross kgate unharmed: stdin, exit codes, and
/// several port-forward connections at once, each its own stream pair.
#[tokio::test(flavor = "multi_thread")]
async fn spdy_exec_and_port_forward_through_kgate() {
    let s = setup().await;
    let k = s.kubectl("spdy");
    let Setup { server, agent } = s;
    let server = Arc::new(server);
    blocking(move || {
        let _agent = agent;
        let spdy_exec = [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
        let from = server.requests().len();
        let mut child = k
            .command()
            .args(["exec", "-i", "web-0", "--", "cat"])
            .envs(spdy_exec)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hello over spdy\n").unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over spdy\n");
        let out = k
            .command()
            .args(["exec", "web-0", "--", "sh", "-c", "exit 7"])
            .envs(spdy_exec)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        assert_eq!(upgrades(&server, from, "/exec"), ["SPDY/3.1", "SPDY/3.1"]);

        for (env, upgrade) in [
            (
                &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..],
                "SPDY/3.1",
            ),
            (&[][..], "websocket"),
        ] {
            let from = server.requests().len();
            let (child, port) = port_forward(&k, env, "web-0", 8080);
            let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(echo_round_trip(port, &big), big, "{upgrade}");
            let a = std::thread::spawn(move || echo_round_trip(port, b"first"));
            let b = std::thread::spawn(move || echo_round_trip(port, b"second"));
            assert_eq!(a.join().unwrap(), b"first", "{upgrade}");
            assert_eq!(b.join().unwrap(), b"second", "{upgrade}");
            drop(child);
            assert_eq!(upgrades(&server, from, "/portforward"), [upgrade]);
        }
    })
    .await;
}

/// The `Upgrade` header of every request the double saw since `from` whose path ends
/// with `suffix`.
fn upgrades(server: &Handle, from: usize, suffix: &str) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "upgrade")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mb_list_streams_with_bounded_agent_memory() {
    let s = setup().await;
    s.server.insert_configmaps("demo", 2000, 100 * 1024);
    let client = https_client(&s.agent.ca_pem, false);
    let req = s
        .request(Method::GET, "/api/v1/namespaces/demo/configmaps")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut total = 0usize;
    while let Some(frame) = response.body_mut().frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
        }
    }
    assert!(total > 200_000_000, "only {total} bytes");
    let rss = s.agent.peak_rss_kib();
    assert!(
        rss > 0 && rss < 96 * 1024,
        "agent peak RSS {rss} KiB for a {total}-byte list: it buffered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stop_reading_large_lists_do_not_stall_the_others() {
    // One worker, so that every client below shares its upstream connections. Each
    // stalled client leaves its list's data unread in kgate's upstream stream: over an
    // HTTP/2 connection with hyper's default windows, three of them (2 MiB per stream)
    // exhausted the connection's window (5 MiB) and held back every other pod's
    // request on it.
    let s = one_worker_with_large_list().await;
    let mut stalled = Vec::new();
    for http2 in [true, true, true, true, true, true, false, false] {
        stalled.push(
            s.hold_unread("/api/v1/namespaces/demo/configmaps", http2)
                .await,
        );
    }
    // Let the windows and buffers between the API server and the stalled clients fill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for http2 in [true, false] {
        let client = https_client(&s.agent.ca_pem, http2);
        for path in [
            "/api/v1/namespaces/demo/configmaps/app-config",
            "/api/v1/namespaces/demo/configmaps?limit=2",
        ] {
            let req = s
                .request(Method::GET, path)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let read = async {
                let response = client.request(req).await.unwrap();
                let status = response.status();
                (
                    status,
                    response.into_body().collect().await.unwrap().to_bytes(),
                )
            };
            let (status, body) = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .unwrap_or_else(|_| {
                    panic!("GET {path} (HTTP/2: {http2}) held back by the stalled clients")
                });
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(!body.is_empty(), "{path}");
        }
    }
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_that_stop_being_read_do_not_stall_the_others() {
    // Watches share upstream HTTP/2 connections (lanes of up to 100 streams). Each
    // watch below starts with 20 MB of initial events that its client never reads; the
    // next watch on the same connection must still get its event.
    let s = one_worker_with_large_list().await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        stalled.push(
            s.hold_unread(
                "/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion=0",
                true,
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_client, response) = s
        .hold_unread(
            "/api/v1/namespaces/demo/secrets?watch=1&fieldSelector=metadata.name%3Dafter-stall",
            true,
        )
        .await;
    s.server
        .create(
            "secrets",
            "demo",
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "after-stall"}}),
        )
        .unwrap();
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the watch's event held back by the stalled watches")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_slice(frame.data_ref().unwrap()).unwrap();
    assert_eq!(event["object"]["metadata"]["name"], "after-stall");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_survives_long_idle_gaps() {
    let s = setup().await;
    let client = https_client(&s.agent.ca_pem, true);
    let req = s
        .request(
            Method::GET,
            "/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion=0",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The initial ADDED event for app-config.
    let first = response
        .body_mut()
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("app-config"));
    // Nothing at all for longer than common proxy idle timeouts (60 s), then an event.
    tokio::time::sleep(Duration::from_secs(70)).await;
    s.server
        .create(
            "configmaps",
            "demo",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "after-idle"}}),
        )
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), response.body_mut().frame())
        .await
        .expect("event after idle gap")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_slice(next.data_ref().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "after-idle");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_watches_share_one_http2_connection() {
    let s = setup().await;
    // Three clients, each its own connection carrying as many watches as kube-apiserver
    // grants one connection (250, as the double does): more than hyper's server
    // default (200), and together more than fit on a few upstream connections. Each
    // watch is opened after the last one's answer began, so a watch held back by a
    // stream limit stops the test there rather than racing past it.
    let mut watches = Vec::new();
    for _ in 0..3 {
        let client = https_client(&s.agent.ca_pem, true);
        for i in 0..WATCHES {
            let req = s.request(Method::GET, "/api/v1/namespaces/demo/secrets?watch=1&resourceVersion=0&fieldSelector=metadata.name%3Dfan-out").body(Full::new(Bytes::new())).unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .unwrap_or_else(|_| {
                    panic!("watch {} held back: no answer in 10 s", watches.len() + 1)
                })
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "watch {i}");
            watches.push(tokio::spawn(async move {
                let mut body = response.into_body();
                let frame = body.frame().await.unwrap().unwrap();
                serde_json::from_slice::<Value>(frame.data_ref().unwrap()).unwrap()
            }));
        }
    }
    s.server
        .create(
            "secrets",
            "demo",
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "fan-out"}}),
        )
        .unwrap();
    for watch in watches {
        let event = tokio::time::timeout(Duration::from_secs(20), watch)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event["object"]["metadata"]["name"], "fan-out");
    }
    // Each client's connection carried all of its watches.
    let connections = s
        .agent
        .log()
        .iter()
        .filter(|l| l.contains("accepted direct connection"))
        .count();
    assert_eq!(connections, 3, "{connections} connections for 3 clients");
}

/// Watches one client connection carries in [`many_watches_share_one_http2_connection`].
const WATCHES: usize = 250;

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_kubernetes_statuses() {
    let s = setup().await;
    let client = https_client(&s.agent.ca_pem, false);
    let cases = [
        (
            s.request(Method::GET, "/api/v1/namespaces/demo/pods")
                .header("impersonate-user", "system:admin"),
            StatusCode::FORBIDDEN,
            "Forbidden",
            "impersonate-user",
        ),
        (
            s.request(
                Method::GET,
                "/api/v1/namespaces/demo/pods/web-0/exec?command=sh",
            )
            .header("connection", "Upgrade")
            .header("upgrade", "h2c"),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "h2c",
        ),
        (
            s.request(Method::GET, "/api/v1/namespaces/%zz/pods"),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "path",
        ),
    ];
    for (req, code, reason, needle) in cases {
        let response = client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), code);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = serde_json::from_str(&text(response.into_body()).await).unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], reason);
        assert_eq!(body["code"], code.as_u16());
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("kgate: ") && message.contains(needle),
            "{message}"
        );
    }
    // A request head over the API server's 1 MiB limit.
    let huge = s
        .request(Method::GET, "/api/v1/namespaces/demo/pods")
        .header("x-padding", "a".repeat(1_500_000));
    let response = client
        .request(huge.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let body: Value = serde_json::from_str(&text(response.into_body()).await).unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["code"].as_u64()),
        (Some("Status"), Some(431)),
        "{body}"
    );
    // None of those reached the API server.
    assert!(
        s.server
            .requests()
            .iter()
            .all(|r| !r.path.contains("%zz") && !r.path.ends_with("/exec"))
    );
    // A client-supplied X-Forwarded-For never reaches upstream.
    let req = s
        .request(Method::GET, "/api/v1/namespaces/demo/pods")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), StatusCode::OK);
    let last = s.server.requests().pop().unwrap();
    assert!(
        last.headers
            .contains(&("x-forwarded-for".into(), "127.0.0.1".into()))
            && !last.headers.iter().any(|(_, v)| v.contains("6.6.6.6")),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_a_503_status() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let ca = server.ca_pem().to_owned();
    let url = server.url();
    drop(server);
    let agent = Agent::standalone(&url, &ca, "admin-gone").unwrap();
    let client = https_client(&agent.ca_pem, false);
    let req = Request::get(format!("{}/api/v1/pods", agent.url()))
        .header("authorization", "Bearer admin-gone")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text(response.into_body()).await).unwrap();
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            // The token cannot be checked without the API server: refused before forward.
            .starts_with("kgate: cannot verify the bearer token"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_lists_gets_and_watches_through_kgate() {
    use futures_util::StreamExt as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::{Api, api::ListParams, runtime::watcher};

    let s = setup().await;
    let client =
        kgate_tests::harness::kube_client(&s.agent.url(), &s.agent.ca_pem, s.server.admin_token())
            .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    let listed = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect::<Vec<_>>(),
        ["web-0"]
    );
    let web = pods.get("web-0").await.unwrap();
    assert_eq!(web.spec.unwrap().node_name.as_deref(), Some("node-1"));
    let missing = pods.get("nope").await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{missing:?}"
    );

    // A kube-runtime watcher (list, then watch) sees an object created later.
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "demo");
    let mut events = watcher(configmaps, watcher::Config::default()).boxed();
    let server = &s.server;
    let created = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.create("configmaps", "demo", json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "from-kube-rs-test"}})).unwrap();
    };
    let seen = async {
        while let Some(event) = events.next().await {
            if let watcher::Event::Apply(cm) = event.unwrap()
                && cm.metadata.name.as_deref() == Some("from-kube-rs-test")
            {
                return true;
            }
        }
        false
    };
    let ((), seen) = tokio::join!(created, tokio::time::timeout(Duration::from_secs(20), seen));
    assert!(seen.unwrap(), "the watcher never saw the new ConfigMap");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_serving_certificate_is_served_without_dropping_connections() {
    let s = setup().await;
    let old = https_client(&s.agent.ca_pem, true);
    let get = |client: &kgate_tests::harness::HttpsClient| {
        let req = s
            .request(Method::GET, "/api/v1/namespaces/demo/pods")
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(req)
    };
    assert_eq!(get(&old).await.unwrap().status(), StatusCode::OK);

    // Rotate to a certificate from another CA; the agent checks every second.
    let rotated = kgate_tests::pki::Ca::new("rotated CA").unwrap();
    rotated
        .issue_kgate(&[])
        .unwrap()
        .write(&s.agent.dir, "tls")
        .unwrap();
    s.agent
        .wait_for("serving certificate reloaded", Duration::from_secs(10))
        .unwrap();

    // New connections get the new certificate; the open h2 connection keeps working.
    let fresh = https_client(&rotated.cert_pem(), true);
    assert_eq!(get(&fresh).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(&old).await.unwrap().status(),
        StatusCode::OK,
        "the established connection was dropped"
    );
    assert!(
        get(&https_client(&s.agent.ca_pem, true)).await.is_err(),
        "a new connection still got the old certificate"
    );

    // A broken replacement is refused and the current certificate kept.
    std::fs::write(s.agent.dir.join("tls.key"), "not a key").unwrap();
    s.agent
        .wait_for(
            "cannot be used; keeping the old one",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        get(&https_client(&rotated.cert_pem(), true))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
