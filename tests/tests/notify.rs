//! Approval notifications through standalone agents and the API-server double, to a
//! webhook receiver on loopback (HTTPS, a test CA) that keeps what it is sent: the
//! Slack message and the CloudEvent of a held request and of its approval, denial or
//! expiry; retries through a receiver outage while the held request is decided as if
//! nothing failed; one `held` notification per approval with two agents, and none when
//! a restarted agent abandons what it held; a webhook URL read from a file, never in
//! the agent's log, metrics or status.

use std::{
    convert::Infallible,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use kgate_tests::{
    apiserver::{ApiServer, Config, DEFAULT_ISSUER, Handle},
    background::{blocking, delete, finish},
    harness::{Agent, Kubectl, ScratchDir, free_port, kgate_bin, kubeconfig, scratch_dir},
    pki::{Ca, Pair},
    recorder::{admin, eventually},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

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
      approval: {approvers: [sre], timeoutSeconds: 60}
    - name: delete-configmaps
      match: {verbs: [delete], resources: [configmaps]}
      action: approve
      approval: {timeoutSeconds: 2, notify: [events]}
"#;

const CONSOLE: &str = "https://console.example.test";

// === the receiver ===

/// One POST the receiver took.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// A webhook receiver: drops connections while `down`, answers 503 to the next
/// `fail_next` POSTs (and to every one while `failing`), keeps the rest.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    fail_next: Arc<AtomicU64>,
    /// POSTs answered 503, and connections dropped.
    refused: Arc<AtomicU64>,
    got: Arc<Mutex<Vec<Received>>>,
    port: u16,
}

impl Receiver {
    async fn start(pair: &Pair) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let receiver = Self {
            port: listener.local_addr().unwrap().port(),
            ..Self::default()
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if serving.down.load(Ordering::SeqCst) {
                    serving.refused.fetch_add(1, Ordering::SeqCst);
                    drop(tcp);
                    continue;
                }
                let (receiver, acceptor) = (serving.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let receiver = receiver.clone();
                        async move { Ok::<_, Infallible>(receiver.handle(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let answer = |code: StatusCode| {
            Response::builder()
                .status(code)
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap()
        };
        let path = req.uri().path().to_owned();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Ok(body) = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
        else {
            return answer(StatusCode::BAD_REQUEST);
        };
        let take_failure = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if take_failure || self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return answer(StatusCode::SERVICE_UNAVAILABLE);
        }
        let Ok(body) = serde_json::from_slice(&body) else {
            return answer(StatusCode::BAD_REQUEST);
        };
        self.got.lock().unwrap().push(Received {
            path,
            content_type,
            body,
        });
        answer(StatusCode::OK)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The CloudEvents received, as (subject, type).
    fn events(&self) -> Vec<(String, String)> {
        self.got()
            .into_iter()
            .filter(|r| r.body["specversion"] == "1.0")
            .map(|r| {
                (
                    r.body["subject"].as_str().unwrap_or_default().to_owned(),
                    r.body["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits for a POST to `path` that `matches`.
    fn wait(&self, what: &str, path: &str, matches: impl Fn(&Value) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self
                .got()
                .into_iter()
                .find(|r| r.path == path && matches(&r.body))
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} at {path}; got {:#?}",
                self.got()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// === the setup ===

struct Setup {
    server: Handle,
    dir: ScratchDir,
    admin: PathBuf,
    bot_token: String,
    receiver: Receiver,
}

async fn setup(tag: &str) -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir(tag);
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    let ca = Ca::new("kgate test webhook CA").unwrap();
    std::fs::write(dir.join("webhook-ca.crt"), ca.cert_pem()).unwrap();
    let receiver = Receiver::start(
        &ca.issue(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    )
    .await;
    let admin = kubeconfig(
        &dir.join("admin"),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    let bot_token = server.mint_token(
        &kgate_tests::harness::service_account(&server, "bot"),
        &[DEFAULT_ISSUER.to_owned()],
        3600,
    );
    for name in ["a", "b", "c", "d"] {
        server
            .create(
                "pods",
                "demo",
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}),
            )
            .unwrap();
    }
    server
        .create(
            "configmaps",
            "demo",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "settings"}}),
        )
        .unwrap();
    Setup {
        server,
        dir,
        admin,
        bot_token,
        receiver,
    }
}

impl Setup {
    /// An agent of node `node` whose `approval:` section is `approval` (YAML flow).
    fn agent(&self, node: &str, approval: &str) -> Agent {
        let extra = format!(
            "identity: {{nodeName: {node}, unboundSubjects: ['system:serviceaccount:demo:*', kubernetes-admin]}}\n\
             heartbeat: {{enabled: false}}\n\
             policy: {{files: ['{}']}}\n\
             approval: {approval}\n",
            self.dir.join("policy.yaml").display()
        );
        Agent::standalone_with(
            &self.server.url(),
            self.server.ca_pem(),
            self.server.admin_token(),
            &extra,
        )
        .unwrap()
    }

    fn ca(&self) -> String {
        self.dir.join("webhook-ca.crt").display().to_string()
    }

    /// Slack at `/slack`, CloudEvents at `/events`, quick retries.
    fn both_targets(&self) -> String {
        format!(
            "{{consoleUrl: '{CONSOLE}', notify: [\
             {{name: sre, format: slack, url: '{}', caFile: '{ca}', initialBackoffMillis: 100, maxBackoffMillis: 400}}, \
             {{name: events, format: cloudevents, url: '{}', caFile: '{ca}', initialBackoffMillis: 100, maxBackoffMillis: 400}}]}}",
            self.receiver.url("/slack"),
            self.receiver.url("/events"),
            ca = self.ca(),
        )
    }

    fn bot(&self, agent: &Agent, tag: &str) -> Kubectl {
        Kubectl::new(
            scratch_dir(tag),
            &agent.url(),
            &agent.ca_pem,
            &self.bot_token,
        )
    }

    /// `kgate ARGS` as the admin.
    fn kgate(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(kgate_bin())
            .env("KUBECONFIG", &self.admin)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn approvals(&self) -> Vec<Value> {
        let (ok, out, err) = self.kgate(&["approvals", "list", "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Waits for an approval of `verb` on `name` in `phase`, and returns its name.
    fn approval(&self, verb: &str, name: &str, phase: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.approvals().into_iter().find(|a| {
                a["spec"]["request"]["verb"] == verb
                    && a["spec"]["request"]["name"] == name
                    && a["status"]["phase"] == phase
            });
            if let Some(a) = found {
                return a["metadata"]["name"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {phase} approval for {verb} {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every text of a Slack message, joined.
fn slack_text(message: &Value) -> String {
    let mut out = vec![message["text"].as_str().unwrap_or_default().to_owned()];
    for block in message["blocks"].as_array().into_iter().flatten() {
        out.extend(block["text"]["text"].as_str().map(str::to_owned));
        for e in block["elements"].as_array().into_iter().flatten() {
            out.extend(e["text"].as_str().map(str::to_owned));
        }
    }
    out.join("\n")
}

fn is_event(name: &str, kind: &str) -> impl Fn(&Value) -> bool {
    let (name, kind) = (name.to_owned(), format!("io.kgate.approval.{kind}"));
    move |b| b["subject"] == name.as_str() && b["type"] == kind.as_str()
}

fn slack_about(name: &str, says: &str) -> impl Fn(&Value) -> bool {
    let (name, says) = (name.to_owned(), says.to_owned());
    move |b| {
        let text = slack_text(b);
        text.contains(&name) && text.contains(&says)
    }
}

// === the tests ===

#[tokio::test(flavor = "multi_thread")]
async fn held_approved_denied_and_expired_are_announced_to_slack_and_as_cloudevents() {
    let s = setup("notify-bodies").await;
    let agent = s.agent("node-a", &s.both_targets());
    let bot = s.bot(&agent, "bot");
    blocking(move || {
        let r = &s.receiver;
        // Held, then approved.
        let held = delete(&bot, "pod", "a");
        let name = s.approval("delete", "a", "Pending");
        let slack = r.wait(
            "the held Slack message",
            "/slack",
            slack_about(&name, "Approval needed"),
        );
        assert_eq!(slack.content_type, "application/json");
        let text = slack_text(&slack.body);
        for want in [
            format!("kgate approve {name}"),
            format!("kgate deny {name}"),
            format!("<{CONSOLE}/approvals/{name}|"),
            "`system:serviceaccount:demo:bot`".into(),
            "`delete` `pods` `a` in namespace `demo`".into(),
            "`bots/delete-pods`".into(),
            "*Approvers:* sre".into(),
            "*Waits until*".into(),
            "`node-a`".into(),
        ] {
            assert!(text.contains(&want), "no {want:?} in\n{text}");
        }
        let blocks = slack.body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(
            blocks[0]["text"]["text"],
            "Approval needed: delete pods demo/a"
        );

        let ce = r.wait("the held CloudEvent", "/events", is_event(&name, "held"));
        assert_eq!(ce.content_type, "application/cloudevents+json");
        let e = &ce.body;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "/kgate/nodes/node-a");
        assert_eq!(e["datacontenttype"], "application/json");
        let time = e["time"].as_str().unwrap();
        assert!(
            time.len() >= 20 && time.contains('T') && time.ends_with('Z'),
            "{e}"
        );
        assert_eq!(e["data"]["kind"], "KgateApproval");
        assert_eq!(e["data"]["metadata"]["name"], name.as_str());
        assert_eq!(e["data"]["spec"]["request"]["name"], "a");
        assert_eq!(e["data"]["status"]["phase"], "Pending");
        let uid = e["data"]["metadata"]["uid"].as_str().unwrap().to_owned();
        assert_eq!(e["id"], format!("{uid}.held"));

        let (ok, _, err) = s.kgate(&["approve", &name]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(ok, "{out}");
        let slack = r.wait(
            "the approved Slack message",
            "/slack",
            slack_about(&name, "Approved by"),
        );
        assert!(
            slack_text(&slack.body).contains("`kubernetes-admin`"),
            "{}",
            slack_text(&slack.body)
        );
        let ce = r.wait(
            "the approved CloudEvent",
            "/events",
            is_event(&name, "approved"),
        );
        assert_eq!(ce.body["id"], format!("{uid}.approved"));
        assert_eq!(ce.body["data"]["status"]["phase"], "Approved");
        assert_eq!(ce.body["data"]["spec"]["decidedBy"], "kubernetes-admin");

        // Denied.
        let held = delete(&bot, "pod", "b");
        let name = s.approval("delete", "b", "Pending");
        r.wait("the held CloudEvent", "/events", is_event(&name, "held"));
        let (ok, _, err) = s.kgate(&["deny", &name, "--reason", "not during the freeze"]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(!ok && out.contains("denied"), "{out}");
        let slack = r.wait(
            "the denied Slack message",
            "/slack",
            slack_about(&name, "Denied by"),
        );
        assert!(slack_text(&slack.body).contains("not during the freeze"));
        let ce = r.wait(
            "the denied CloudEvent",
            "/events",
            is_event(&name, "denied"),
        );
        assert_eq!(ce.body["data"]["status"]["phase"], "Denied");

        // Expired, for the rule's own target only (`notify: [events]`).
        let (ok, out) = finish(delete(&bot, "configmap", "settings"));
        assert!(!ok && out.contains("was not decided"), "{out}");
        let name = s.approval("delete", "settings", "Expired");
        r.wait("the held CloudEvent", "/events", is_event(&name, "held"));
        let ce = r.wait(
            "the expired CloudEvent",
            "/events",
            is_event(&name, "expired"),
        );
        assert_eq!(ce.body["data"]["status"]["phase"], "Expired");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !r.got()
                .iter()
                .any(|m| m.path == "/slack" && slack_text(&m.body).contains(&name)),
            "the rule names only `events`: {:#?}",
            r.got()
        );
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_notification_is_retried_until_the_receiver_answers() {
    let s = setup("notify-retry").await;
    // Down at first (connections dropped), then 503 for two more attempts.
    s.receiver.down.store(true, Ordering::SeqCst);
    s.receiver.fail_next.store(2, Ordering::SeqCst);
    let agent = s.agent("node-a", &s.both_targets());
    let bot = s.bot(&agent, "bot");
    blocking(move || {
        let r = &s.receiver;
        let held = delete(&bot, "pod", "a");
        let name = s.approval("delete", "a", "Pending");
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.refused.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "no retries seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(r.got().is_empty(), "{:#?}", r.got());
        r.down.store(false, Ordering::SeqCst);
        // Still held: the notification arrives once the receiver answers.
        r.wait(
            "the held Slack message",
            "/slack",
            slack_about(&name, "Approval needed"),
        );
        r.wait("the held CloudEvent", "/events", is_event(&name, "held"));
        assert_eq!(s.approval("delete", "a", "Pending"), name, "still held");
        let (ok, _, err) = s.kgate(&["approve", &name]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(ok, "{out}");
        // Retries resend the same event: one held CloudEvent per approval arrived.
        let held_events = r
            .events()
            .into_iter()
            .filter(|(subject, kind)| *subject == name && kind.ends_with(".held"))
            .count();
        assert_eq!(held_events, 1);
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_decided_while_notifications_fail_and_the_secret_url_never_shows() {
    let s = setup("notify-outage").await;
    // The URL is the secret, as Slack's are: read from a file, sent to, never shown.
    let secret_path = "/services/T0KGATE/B0TEST/s3cr3tT0ken";
    std::fs::write(
        s.dir.join("slack-url"),
        format!("{}\n", s.receiver.url(secret_path)),
    )
    .unwrap();
    s.receiver.failing.store(true, Ordering::SeqCst);
    let admin_port = free_port();
    let approval = format!(
        "{{notify: [{{name: sre, format: slack, urlFile: '{}', caFile: '{}', \
         initialBackoffMillis: 100, maxBackoffMillis: 300}}]}}\n\
         admin: {{listen: '127.0.0.1:{admin_port}'}}",
        s.dir.join("slack-url").display(),
        s.ca(),
    );
    let agent = Arc::new(s.agent("node-a", &approval));
    let bot = s.bot(&agent, "bot");
    let token = s.server.admin_token().to_owned();
    let s = Arc::new(s);
    let (s2, agent2) = (s.clone(), agent.clone());
    let (held, name) = blocking(move || {
        let held = delete(&bot, "pod", "a");
        let name = s2.approval("delete", "a", "Pending");
        let deadline = Instant::now() + Duration::from_secs(10);
        while s2.receiver.refused.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "no attempts seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(agent2);
        (held, name)
    })
    .await;

    // The agent says the target is failing, by name, with what failed.
    let (code, status) = admin(&agent, admin_port, &token, "/status").await;
    assert_eq!(code, StatusCode::OK, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    let target = &status["notifications"][0];
    assert_eq!(target["target"], "sre", "{status}");
    assert_eq!(target["failing"], true, "{status}");
    assert_eq!(
        target["lastError"], "HTTP 503 Service Unavailable",
        "{status}"
    );

    // Decided while every notification fails: the request goes on at once.
    let (s3, name3) = (s.clone(), name.clone());
    let latency = blocking(move || {
        let started = Instant::now();
        let (ok, _, err) = s3.kgate(&["approve", &name3]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(ok && out.contains("deleted"), "{out}");
        started.elapsed()
    })
    .await;
    eprintln!("kgate approve to the held request's response, notifications failing: {latency:?}");
    assert!(
        latency < Duration::from_secs(3),
        "approve to response took {latency:?} while notifications failed"
    );
    assert!(s.receiver.got().is_empty());

    // The receiver recovers: the approval's news arrives; the held one, no longer
    // relevant, was given up.
    s.receiver.failing.store(false, Ordering::SeqCst);
    let (s4, name4) = (s.clone(), name.clone());
    let approved = blocking(move || {
        s4.receiver.wait(
            "the approved message",
            secret_path,
            slack_about(&name4, "Approved by"),
        )
    })
    .await;
    assert_eq!(approved.path, secret_path);
    // The held one ends at its next attempt, after its backoff.
    let lines = [
        "kgate_notifications_total{target=\"sre\",event=\"approved\",result=\"sent\"} 1",
        "kgate_notifications_total{target=\"sre\",event=\"held\",result=\"gave_up\"} 1",
    ];
    let metrics = eventually(
        "the notifications' results",
        Duration::from_secs(10),
        async || {
            let (_, metrics) = admin(&agent, admin_port, &token, "/metrics").await;
            lines.iter().all(|l| metrics.contains(l)).then_some(metrics)
        },
    )
    .await;
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kgate_notification_failures_total{target=\"sre\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(failures >= 2.0, "{metrics}");
    assert!(metrics.contains("kgate_notification_last_failure_timestamp_seconds{target=\"sre\"}"));
    let (_, status) = admin(&agent, admin_port, &token, "/status").await;

    for (what, text) in [
        ("log", agent.log().join("\n")),
        ("metrics", metrics),
        ("status", status),
    ] {
        for secret in ["s3cr3tT0ken", "B0TEST", "T0KGATE"] {
            assert!(
                !text.contains(secret),
                "the URL is in the agent's {what}:\n{text}"
            );
        }
    }
    assert!(
        agent
            .log()
            .iter()
            .any(|l| l.contains("notification attempt failed") && l.contains("HTTP 503")),
        "the failures are logged (by target name)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_held_notification_per_approval_with_two_agents_and_none_when_abandoned() {
    let s = setup("notify-agents").await;
    let events = format!(
        "{{notify: [{{name: events, format: cloudevents, url: '{}', caFile: '{}', initialBackoffMillis: 100}}]}}",
        s.receiver.url("/events"),
        s.ca(),
    );
    let a = s.agent("node-a", &events);
    let b = s.agent("node-b", &events);
    let (bot_a, bot_b) = (s.bot(&a, "bot-a"), s.bot(&b, "bot-b"));
    blocking(move || {
        let r = &s.receiver;
        let on_a = delete(&bot_a, "pod", "a");
        let on_b = delete(&bot_b, "pod", "b");
        let name_a = s.approval("delete", "a", "Pending");
        let name_b = s.approval("delete", "b", "Pending");
        let held_a = r.wait("a's held event", "/events", is_event(&name_a, "held"));
        let held_b = r.wait("b's held event", "/events", is_event(&name_b, "held"));
        // Each from the agent holding it.
        assert_eq!(held_a.body["source"], "/kgate/nodes/node-a");
        assert_eq!(held_b.body["source"], "/kgate/nodes/node-b");
        for name in [&name_a, &name_b] {
            let (ok, _, err) = s.kgate(&["approve", name]);
            assert!(ok, "{err}");
        }
        assert!(finish(on_a).0 && finish(on_b).0);
        r.wait(
            "a's approved event",
            "/events",
            is_event(&name_a, "approved"),
        );
        r.wait(
            "b's approved event",
            "/events",
            is_event(&name_b, "approved"),
        );

        // An agent stops while holding a request; its successor on the node marks the
        // approval Abandoned, and tells no one.
        let on_a = delete(&bot_a, "pod", "c");
        let name_c = s.approval("delete", "c", "Pending");
        r.wait("c's held event", "/events", is_event(&name_c, "held"));
        drop(a);
        let _ = finish(on_a);
        let successor = s.agent("node-a", &events);
        s.approval("delete", "c", "Abandoned");
        std::thread::sleep(Duration::from_secs(1));

        let mut seen = r.events();
        seen.sort();
        let mut want = vec![
            (name_a.clone(), "io.kgate.approval.approved".to_owned()),
            (name_a, "io.kgate.approval.held".to_owned()),
            (name_b.clone(), "io.kgate.approval.approved".to_owned()),
            (name_b, "io.kgate.approval.held".to_owned()),
            (name_c, "io.kgate.approval.held".to_owned()),
        ];
        want.sort();
        assert_eq!(
            seen, want,
            "exactly one notification per approval and event"
        );
        drop((b, successor));
    })
    .await;
}
