//! `kgate console` against the API-server double and a standalone agent's record log.
//!
//! In a real browser (Debian's Chromium driven by tests/browser/console.mjs through
//! playwright-core): a bot's `kubectl delete pod` is held and appears on the Approvals
//! page without a reload, is approved there and completes; a second is denied with a
//! reason, which the page and the bot both show; the bot's exec session plays its
//! output in the page. Screenshots go to target/console-screenshots/. Skipped, saying
//! why, when node, Chromium, the test's npm packages or the console's assets are
//! missing; never skipped with `KGATE_REQUIRE_BROWSER=1` (`cargo xtask test`).
//!
//! Without a browser: the protections (a foreign Host refused, a change without the
//! CSRF token or from another origin refused, a non-loopback address without TLS
//! refused at start) and the JSON API's answers.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use kgate::record::sessions;
use kgate_tests::{
    apiserver::{ApiServer, Config, DEFAULT_ISSUER, Handle},
    background::finish,
    console::{Console, get, http, http_full},
    harness::{Agent, Kubectl, ScratchDir, kgate_bin, kubeconfig, scratch_dir},
};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: allow
  rules:
    - name: delete-pods
      match: {verbs: [delete], resources: [pods]}
      action: approve
      approval: {timeoutSeconds: 60}
"#;

const EXEC_TEXT: &str = "hello from the bot's exec";
const REASON: &str = "not during the freeze";

/// The double, an agent holding the bot's pod deletes and recording into a log, the
/// bot's kubectl through the agent, and the admin's kubeconfig for the console.
struct Rig {
    server: Handle,
    agent: Agent,
    bot: Kubectl,
    records: PathBuf,
    admin: PathBuf,
    bot_token: String,
    _dir: ScratchDir,
}

impl Rig {
    async fn start(tag: &str) -> Self {
        let server = ApiServer::start(Config::default()).await.unwrap();
        let dir = scratch_dir(tag);
        let records = dir.join("records");
        std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        let agent = Agent::standalone_with(
            &server.url(),
            server.ca_pem(),
            server.admin_token(),
            &format!(
                "identity: {{unboundSubjects: ['system:serviceaccount:demo:*', kubernetes-admin]}}\n\
                 policy: {{files: ['{}']}}\n\
                 record: {{dir: '{}', durability: batch, flushMillis: 100}}\n",
                dir.join("policy.yaml").display(),
                records.display()
            ),
        )
        .unwrap();
        let admin = kubeconfig(
            &dir.join("admin"),
            &server.url(),
            server.ca_pem(),
            server.admin_token(),
        );
        let token = server.mint_token(
            &kgate_tests::harness::service_account(&server, "bot"),
            &[DEFAULT_ISSUER.to_owned()],
            3600,
        );
        for name in ["a", "b"] {
            server
                .create(
                    "pods",
                    "demo",
                    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name},
                    "spec": {"containers": [{"name": "app", "image": "x"}]}}),
                )
                .unwrap();
        }
        let bot = Kubectl::new(
            scratch_dir(&format!("{tag}-bot")),
            &agent.url(),
            &agent.ca_pem,
            &token,
        );
        Self {
            server,
            agent,
            bot,
            records,
            admin,
            bot_token: token,
            _dir: dir,
        }
    }

    /// `kgate console --listen 127.0.0.1:0 --dir RECORDS` with the admin's kubeconfig.
    fn console(&self) -> Console {
        Console::start(
            &self.admin,
            Some(&self.records),
            &["--listen", "127.0.0.1:0"],
        )
    }

    /// `kubectl delete pod NAME -n demo` as the bot, in the background.
    fn delete(&self, name: &str) -> Child {
        self.bot
            .command()
            .args(["delete", "pod", name, "-n", "demo", "--wait=false"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The bot's `kubectl exec web-0 -- echo …`, and the ID of the session that
    /// recorded it once its stream is in the log.
    fn exec_session(&self) -> String {
        let (ok, out, err) = self
            .bot
            .run(&["exec", "web-0", "-n", "demo", "--", "echo", EXEC_TEXT]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), EXEC_TEXT);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (all, _) = sessions::load_summaries(&self.records).unwrap();
            if let Some(s) = all.iter().find(|s| {
                s.streams
                    .iter()
                    .any(|st| st.subresource == "exec" && st.closed)
            }) {
                return s.id.clone();
            }
            assert!(Instant::now() < deadline, "no exec session in the log");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Rig {
    /// A fresh heartbeat Lease for `node`, as an enforcing agent writes it
    /// (admin/heartbeat.rs): the Nodes page shows it beside the nodes without one.
    fn heartbeat(&self, node: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let status = json!({"node": node, "version": "0.1.0", "enforcing": true,
            "targets": ["10.96.0.1:443"], "targetsSynced": true, "policyGeneration": 3,
            "policiesLoaded": true, "podIndexSynced": true, "approvalsHeld": 0,
            "certNotAfter": now + 90 * 86400, "recorderWritable": true, "ready": true});
        let renewed = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
            .output()
            .unwrap();
        self.server
            .create(
                "leases",
                "kgate-system",
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": format!("kgate-{node}"),
                    "labels": {"app.kubernetes.io/name": "kgate", "kgate.io/node": node},
                    "annotations": {"kgate.io/status": status.to_string()}},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 300,
                    "renewTime": String::from_utf8_lossy(&renewed.stdout).trim()}}),
            )
            .unwrap();
    }
}

fn post(port: u16, path: &str, headers: &str, body: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{headers}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or_default()["message"]
        .as_str()
        .unwrap_or(body)
        .to_owned()
}

/// The CSRF token the page embeds.
fn csrf(console: &Console) -> String {
    let (code, page) = get(
        console.port(),
        &format!("localhost:{}", console.port()),
        "/",
    );
    assert_eq!(code, 200, "{page}");
    let at = page
        .find("name=\"kgate-csrf\" content=\"")
        .expect("the token in the page");
    page[at + 27..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_refuses_foreign_hosts_cross_site_changes_and_exposure_without_tls() {
    let rig = Rig::start("console-guard").await;
    tokio::task::spawn_blocking(move || {
        // A non-loopback address without TLS: refused before anything else.
        let out = Command::new(kgate_bin())
            .env("KUBECONFIG", &rig.admin)
            .args(["console", "--listen", "0.0.0.0:0", "--dir"])
            .arg(&rig.records)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not a loopback address, so the console needs --tls-cert and --tls-key"),
            "{err}"
        );

        let console = rig.console();
        let port = console.port();
        // The API answers the console's own names.
        for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
            let (code, body) = get(port, &host, "/api/approvals");
            assert_eq!(code, 200, "{host}: {body}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([]));
        }
        // DNS rebinding: a page on another name that resolves to 127.0.0.1.
        for path in ["/api/approvals", "/", "/sessions"] {
            let (code, body) = get(port, &format!("rebind.example:{port}"), path);
            assert_eq!(code, 403, "{path}: {body}");
            assert!(
                message(&body).contains("is not this console's address"),
                "{body}"
            );
        }

        let token = csrf(&console);
        let origin = format!("Origin: http://localhost:{port}\r\n");
        let with_token = format!("{origin}X-Kgate-Csrf: {token}\r\n");
        let path = "/api/approvals/nope/approve";
        // No token, a wrong token, another origin, no origin: refused before any call.
        for (headers, why) in [
            (origin.clone(), "CSRF"),
            (
                format!("{origin}X-Kgate-Csrf: {}x\r\n", &token[1..]),
                "CSRF",
            ),
            (
                format!("Origin: http://evil.example\r\nX-Kgate-Csrf: {token}\r\n"),
                "own page",
            ),
            (format!("X-Kgate-Csrf: {token}\r\n"), "own page"),
        ] {
            let (code, body) = post(port, path, &headers, "{}");
            assert_eq!(code, 403, "{headers:?}: {body}");
            assert!(message(&body).contains(why), "{headers:?}: {body}");
        }
        // With both, it reaches the API server, whose 404 comes back as JSON.
        let (code, body) = post(port, path, &with_token, "{}");
        assert_eq!(code, 404, "{body}");
        assert!(message(&body).contains("nope"), "{body}");
        // A bad grant window is the console's 400.
        let (code, body) = post(port, path, &with_token, r#"{"for": "forever"}"#);
        assert_eq!(code, 400, "{body}");

        // Sessions: the list, and unknown IDs as 404 with a message.
        let (code, body) = get(port, &format!("localhost:{port}"), "/api/sessions?since=1h");
        assert_eq!(code, 200, "{body}");
        let (code, body) = get(
            port,
            &format!("localhost:{port}"),
            "/api/sessions/ffffffffffff",
        );
        assert_eq!(code, 404, "{body}");
        assert!(message(&body).contains("no session"), "{body}");
        let (code, body) = get(
            port,
            &format!("localhost:{port}"),
            "/api/sessions?since=soon",
        );
        assert_eq!(code, 400, "{body}");
        drop(rig.agent);
    })
    .await
    .unwrap();
}

/// With `--sign-in` (implied off loopback), nothing is served before a viewer signs in
/// with a token the API server accepts, and the viewer's decision is recorded as the
/// viewer's, not the kubeconfig's user.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_viewer_decides_with_their_own_token() {
    let rig = Rig::start("console-viewer").await;
    let bot_token = rig.bot_token.clone();
    tokio::task::spawn_blocking(move || {
        let console = Console::start(
            &rig.admin,
            Some(&rig.records),
            &["--listen", "127.0.0.1:0", "--sign-in"],
        );
        let port = console.port();
        let host = format!("localhost:{port}");
        let (code, body) = get(port, &host, "/api/approvals");
        assert_eq!(code, 401, "{body}");
        assert!(message(&body).contains("sign in"), "{body}");

        let change = format!(
            "Origin: http://localhost:{port}\r\nX-Kgate-Csrf: {}\r\n",
            csrf(&console)
        );
        let (code, body) = post(port, "/api/signin", &change, r#"{"token": "not-a-token"}"#);
        assert_eq!(code, 401, "{body}");
        assert!(message(&body).contains("did not accept this token"), "{body}");

        let (code, head, body) = http_full(
            port,
            &format!(
                "POST /api/signin HTTP/1.1\r\nHost: {host}\r\n{change}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                json!({ "token": bot_token }).to_string().len(),
                json!({ "token": bot_token })
            ),
        );
        assert_eq!(code, 200, "{body}");
        let viewer = "system:serviceaccount:demo:bot";
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["user"], viewer);
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .expect("a cookie")
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains(&bot_token), "the token must not come back");
        let cookie = format!("Cookie: {}\r\n", cookie.split(';').next().unwrap());

        // Held: the viewer approves it, and the approval says the viewer decided.
        let held = rig.delete("a");
        let name = loop {
            let (code, body) = http(
                port,
                &format!("GET /api/approvals HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"),
            );
            assert_eq!(code, 200, "{body}");
            let items: Vec<Value> = serde_json::from_str(&body).unwrap();
            if let Some(a) = items.iter().find(|a| a["status"]["phase"] == "Pending") {
                break a["metadata"]["name"].as_str().unwrap().to_owned();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (code, body) = post(
            port,
            &format!("/api/approvals/{name}/approve"),
            &format!("{change}{cookie}"),
            "{}",
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["decidedBy"], viewer);
        let (ok, out) = finish(held);
        assert!(ok, "{out}");
        let decided = rig.server.get("kgateapprovals", "", &name).unwrap();
        assert_eq!(decided["spec"]["decidedBy"], viewer);

        // Signed out: the cookie names no one any more.
        let (code, _) = post(port, "/api/signout", &format!("{change}{cookie}"), "");
        assert_eq!(code, 200);
        let (code, body) = http(
            port,
            &format!("GET /api/approvals HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"),
        );
        assert_eq!(code, 401, "{body}");
        drop(rig.agent);
    })
    .await
    .unwrap();
}

/// With `--tls-cert` and `--tls-key` the console speaks HTTPS with that certificate,
/// and a change's Origin must name the https origin.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_with_a_certificate_serves_https() {
    use bytes::Bytes;
    use http_body_util::Full;
    use kgate_tests::{harness::https_client, pki::Ca};

    let rig = Rig::start("console-tls").await;
    let ca = Ca::new("console test CA").unwrap();
    let pair = ca
        .issue(&["localhost"], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let certs = scratch_dir("console-tls-certs");
    pair.write(&certs, "console").unwrap();
    let console = Console::start(
        &rig.admin,
        Some(&rig.records),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            certs.join("console.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("console.key").to_str().unwrap(),
        ],
    );
    assert!(
        console.url.starts_with("https://localhost:"),
        "{}",
        console.url
    );
    let client = https_client(&ca.cert_pem(), false);
    let send = |req: http::Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let resp = client.request(req).await.unwrap();
            let code = resp.status().as_u16();
            (code, kgate_tests::harness::text(resp.into_body()).await)
        }
    };
    let (code, page) = send(
        http::Request::get(format!("{}/approvals", console.url))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{page}");
    let at = page.find("name=\"kgate-csrf\" content=\"").unwrap();
    let token = page[at + 27..].split('"').next().unwrap().to_owned();
    let post = |origin: String| {
        http::Request::post(format!("{}/api/approvals/nope/deny", console.url))
            .header("origin", origin)
            .header("x-kgate-csrf", &token)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    let port = console.port();
    // The plain-http origin is another origin.
    let (code, body) = send(post(format!("http://localhost:{port}"))).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = send(post(format!("https://localhost:{port}"))).await;
    assert_eq!(code, 404, "{body}");
    drop(console);
    drop(rig);
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing(root: &Path) -> Option<String> {
    let chromium = chromium();
    if !chromium.exists() {
        return Some(format!("no Chromium at {}", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/browser has no node_modules (npm ci there)".into());
    }
    None
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Skips (returns true) with a message, unless `KGATE_REQUIRE_BROWSER=1` makes it a failure.
fn skip(why: &str) -> bool {
    assert!(
        std::env::var("KGATE_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "KGATE_REQUIRE_BROWSER=1 but {why} (`cargo xtask console` builds the assets and \
         installs the browser test's packages; Chromium is Debian's `chromium`)"
    );
    eprintln!("SKIPPED the browser test: {why}");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_and_sessions_work_in_a_real_browser() {
    let root = workspace_root();
    if let Some(why) = browser_missing(&root) {
        skip(&why);
        return;
    }
    let rig = Rig::start("console-browser").await;
    tokio::task::spawn_blocking(move || {
        let console = rig.console();
        let (code, page) = get(
            console.port(),
            &format!("localhost:{}", console.port()),
            "/",
        );
        if code != 200 {
            skip(&format!(
                "kgate was built without the console's assets ({})",
                message(&page)
            ));
            return;
        }
        let session = rig.exec_session();
        rig.heartbeat("node-1");
        let shots = root.join("target/console-screenshots");
        let mut browser = Command::new("node")
            .arg(root.join("tests/browser/console.mjs"))
            .env("CONSOLE_URL", &console.url)
            .env("SCREENSHOTS", &shots)
            .env("SESSION_ID", &session)
            .env("EXEC_TEXT", EXEC_TEXT)
            .env("REASON", REASON)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = browser.stdin.take().unwrap();
        let steps = steps(browser.stdout.take().unwrap());
        let next = |want: &str| -> Vec<String> {
            let words = steps
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| panic!("the browser never reached {want}"));
            assert_eq!(words[0], want, "{words:?}");
            words
        };
        let go = |stdin: &mut ChildStdin| stdin.write_all(b"GO\n").unwrap();

        // The page is open; the bot's delete is held, shows up, is approved.
        next("approvals-open");
        let held = rig.delete("a");
        let approved = next("approved");
        assert!(
            approved[2].contains("approved by kubernetes-admin"),
            "{approved:?}"
        );
        let (ok, out) = finish(held);
        assert!(ok, "{out}");
        assert!(out.contains("pod \"a\" deleted"), "{out}");
        let phase = rig
            .server
            .get("kgateapprovals", "", &approved[1])
            .map(|a| a["spec"]["decidedBy"].clone());
        assert_eq!(phase, Some(json!("kubernetes-admin")));
        go(&mut stdin);

        // The second is denied with a reason, which the bot sees too.
        let held = rig.delete("b");
        let denied = next("denied");
        let (ok, out) = finish(held);
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!(
                "kgate: request denied by kubernetes-admin (approval {}): {REASON}",
                denied[1]
            )),
            "{out}"
        );
        assert!(rig.server.get("pods", "demo", "b").is_some());
        go(&mut stdin);

        next("player-ok");
        let status = browser.wait().unwrap();
        assert!(status.success(), "the browser script failed: {status}");
        for page in [
            "nodes",
            "approvals-pending",
            "approvals",
            "sessions",
            "session",
        ] {
            let png = shots.join(format!("{page}.png"));
            assert!(
                std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
                "no screenshot {}",
                png.display()
            );
        }
        drop(console);
        drop(rig.agent);
    })
    .await
    .unwrap();
}

/// The browser script's `STEP …` lines, as words; its other lines are echoed.
fn steps(stdout: std::process::ChildStdout) -> mpsc::Receiver<Vec<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("browser: {line}");
            if let Some(rest) = line.strip_prefix("STEP ") {
                let mut words: Vec<String> = rest.splitn(3, ' ').map(str::to_owned).collect();
                if words.len() == 3 {
                    words[2] = serde_json::from_str(&words[2]).unwrap_or_else(|_| words[2].clone());
                }
                let _ = tx.send(words);
            }
        }
    });
    rx
}

/// A measurement, not a check: `KGATE_CONSOLE_SESSIONS` (default 10,000) sessions of
/// five requests each written to a log, then the console's sessions API and its
/// Sessions page timed and its memory read. Run with
/// `cargo test -p kgate-tests --test console -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement (docs/console.md), not a check"]
async fn measure_the_console_with_many_sessions() {
    use kgate::record::log::{self, Limits, Log};

    let count: usize = std::env::var("KGATE_CONSOLE_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let rig = Rig::start("console-measure").await;
    let records = scratch_dir("console-measure-log");
    let started = Instant::now();
    {
        let limits = Limits {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 34,
            max_age: Duration::from_secs(30 * 86400),
        };
        let (mut log, _) = Log::open(&records, limits).unwrap();
        let mut buf = Vec::new();
        let base = 1_780_000_000u64;
        for s in 0..count {
            let conn = format!("{s:012x}{}", "0".repeat(20));
            for r in 0..5 {
                let t = base + (s * 5 + r) as u64;
                let event = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1",
                    "level": "Metadata", "auditID": format!("{s:08x}-0000-4000-8000-{r:012x}"),
                    "stage": "ResponseComplete",
                    "requestURI": format!("/api/v1/namespaces/demo/pods/web-{r}"), "verb": "get",
                    "user": {"username": format!("system:serviceaccount:demo:bot-{}", s % 50),
                             "groups": ["system:serviceaccounts", "system:authenticated"]},
                    "sourceIPs": ["10.213.0.2"],
                    "objectRef": {"resource": "pods", "namespace": "demo", "name": format!("web-{r}"), "apiVersion": "v1"},
                    "responseStatus": {"code": 200},
                    "requestReceivedTimestamp": micro(t), "stageTimestamp": micro(t),
                    "annotations": {"kgate.io/connection": conn, "kgate.io/decision": "allow",
                        "kgate.io/pod": format!("demo/bot-{}", s % 50),
                        "kgate.io/workload": format!("pod demo/bot-{}/app", s % 50),
                        "kgate.io/latency-us": "850"}});
                buf.clear();
                log::frame(&serde_json::to_vec(&event).unwrap(), &mut buf);
                log.append(&buf, 1).unwrap();
            }
        }
        log.sync().unwrap();
    }
    let size: u64 = std::fs::read_dir(&*records)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "MEASURE wrote {count} sessions ({} requests, {} MB of log) in {:?}",
        count * 5,
        size >> 20,
        started.elapsed()
    );
    let records: PathBuf = records.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let console = Console::start(&rig.admin, Some(&records), &["--listen", "127.0.0.1:0"]);
        let host = format!("localhost:{}", console.port());
        let rss = |what: &str| {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", console.pid())).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            eprintln!(
                "MEASURE rss {what}: VmRSS {} VmHWM {}",
                field("VmRSS:"),
                field("VmHWM:")
            );
        };
        rss("idle");
        for run in ["first (reads the log)", "again (cached)", "again (cached)"] {
            let t = Instant::now();
            let (code, body) = get(console.port(), &host, "/api/sessions?limit=100");
            assert_eq!(code, 200, "{body}");
            let page: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(page["total"], count);
            eprintln!(
                "MEASURE GET /api/sessions {run}: {:?}, {} KB",
                t.elapsed(),
                body.len() >> 10
            );
        }
        let t = Instant::now();
        let (code, body) = get(console.port(), &host, "/api/sessions?user=*bot-7&limit=100");
        assert_eq!(code, 200, "{body}");
        eprintln!("MEASURE GET /api/sessions?user=*bot-7: {:?}", t.elapsed());
        let t = Instant::now();
        let (code, body) = get(console.port(), &host, "/api/sessions/000000000abc");
        assert_eq!(code, 200, "{body}");
        eprintln!("MEASURE GET /api/sessions/ID: {:?}", t.elapsed());
        rss("after the API calls");
        if browser_missing(&workspace_root()).is_none() {
            let out = Command::new("node")
                .arg(workspace_root().join("tests/browser/measure.mjs"))
                .env("CONSOLE_URL", &console.url)
                .env("CHROMIUM", chromium())
                .output()
                .unwrap();
            eprintln!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            rss("after the browser");
        }
    })
    .await
    .unwrap();
}

/// `MicroTime` (RFC 3339 in UTC, microseconds) of `secs` since the epoch.
fn micro(secs: u64) -> String {
    // Days to civil date: Howard Hinnant's algorithm.
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn micro_times() {
    assert_eq!(micro(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(micro(1_780_000_000), "2026-05-28T20:26:40.000000Z");
}
