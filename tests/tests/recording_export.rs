//! The recorder's export and its behaviour when the disk is full, through a standalone
//! agent in front of the API-server double: records as JSON lines on stdout, an audit
//! webhook receiver that is down, up, failing and up again across an agent restart
//! (nothing lost), and a full record filesystem (strict refuses with a 503 Status and
//! forwards nothing; batch serves and counts the lost records; both resume).

use std::{
    collections::HashSet,
    convert::Infallible,
    fs,
    io::Write,
    path::{Path, PathBuf},
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
use kgate::record::{event::Event, sessions};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, HttpsClient, free_port, https_client, scratch_dir, text},
    pki::Ca,
};
use serde_json::Value;
use tokio::net::TcpListener;

/// A GET through the agent as the admin; the status and the body.
async fn get(client: &HttpsClient, agent: &Agent, token: &str, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("{}{path}", agent.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    (status, text(response.into_body()).await)
}

/// The agent's admin endpoint at `port`: `/metrics` (as the admin) or a probe.
async fn admin(agent: &Agent, port: u16, token: &str, path: &str) -> (StatusCode, String) {
    let client = https_client(&agent.ca_pem, false);
    let req = Request::get(format!("https://127.0.0.1:{port}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    (status, text(response.into_body()).await)
}

/// The value of an unlabelled sample in a Prometheus exposition.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The audit IDs the double saw on requests for `path`.
fn seen_audit_ids(server: &Handle, path_prefix: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(path_prefix))
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "audit-id")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === stdout ===

#[tokio::test(flavor = "multi_thread")]
async fn records_go_to_stdout_as_json_lines() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        "identity: {unboundSubjects: [kubernetes-admin]}\npolicy: {defaultAction: allow}\n\
         record: {stdout: true}\n",
    )
    .unwrap();
    let client = https_client(&agent.ca_pem, true);
    let token = server.admin_token();
    for i in 0..5 {
        let (status, _) = get(
            &client,
            &agent,
            token,
            &format!("/api/v1/namespaces/demo/configmaps/stdout-{i}"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "the double answers for itself"
        );
    }
    let ids = seen_audit_ids(&server, "/api/v1/namespaces/demo/configmaps/stdout-");
    assert_eq!(ids.len(), 5);
    let lines = eventually(
        "five records on stdout",
        Duration::from_secs(10),
        async || {
            let lines = agent.stdout();
            (lines.len() >= 5).then_some(lines)
        },
    )
    .await;
    // stdout holds records only (the log is on stderr), one event per line.
    let events: Vec<Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not an event: {e}")))
        .collect();
    for event in &events {
        assert_eq!(
            (event.kind.as_str(), event.api_version.as_str()),
            ("Event", "audit.k8s.io/v1")
        );
        assert_eq!(event.user.username, "kubernetes-admin");
    }
    let printed: HashSet<&str> = events.iter().map(|e| e.audit_id.as_str()).collect();
    for id in &ids {
        assert!(
            printed.contains(id.as_str()),
            "no stdout record for {id}: {lines:?}"
        );
    }
    assert_eq!(
        events.len(),
        5,
        "one record per request without a log: {lines:?}"
    );
}

// === webhook ===

/// An audit webhook receiver on loopback: answers 500 while `failing`, keeps every
/// batch it acknowledged.
#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicBool>,
    /// Batches holding this text are refused with 400, as bad.
    poison: Arc<Mutex<Option<String>>>,
    refused: Arc<AtomicU64>,
    batches: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts serving on `port` with the certificate `pair`; expects `token`.
    async fn serve(&self, port: u16, pair: &kgate_tests::pki::Pair, token: &str) {
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
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (receiver, token) = (self.clone(), format!("Bearer {token}"));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (receiver, acceptor, token) =
                    (receiver.clone(), acceptor.clone(), token.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let (receiver, token) = (receiver.clone(), token.clone());
                        async move { Ok::<_, Infallible>(receiver.handle(req, &token).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        token: &str,
    ) -> Response<Full<Bytes>> {
        let answer = |code: StatusCode, body: &str| {
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap()
        };
        if req.method() != http::Method::POST
            || req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(token)
            || req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                != Some("application/json")
        {
            return answer(StatusCode::UNAUTHORIZED, "{}");
        }
        // A sender killed mid-request leaves a cut-off body: not a batch.
        let Ok(body) = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
        else {
            return answer(StatusCode::BAD_REQUEST, "{}");
        };
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"kind":"Status","code":500}"#,
            );
        }
        if let Some(poison) = self.poison.lock().unwrap().as_deref()
            && String::from_utf8_lossy(&body).contains(poison)
        {
            return answer(StatusCode::BAD_REQUEST, r#"{"kind":"Status","code":400}"#);
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(list) => {
                self.batches.lock().unwrap().push(list);
                answer(StatusCode::OK, "{}")
            }
            Err(_) => answer(StatusCode::BAD_REQUEST, "{}"),
        }
    }

    /// (audit ID, stage) of every event received.
    fn received(&self) -> HashSet<(String, String)> {
        self.items().into_iter().collect()
    }

    /// (audit ID, stage) of every event received, duplicates included.
    fn items(&self) -> Vec<(String, String)> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|list| list["items"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                (
                    e["auditID"].as_str().unwrap_or_default().to_owned(),
                    e["stage"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// (audit ID, stage) of every record in the log.
fn logged(dir: &Path) -> HashSet<(String, String)> {
    sessions::load(dir)
        .unwrap()
        .0
        .into_iter()
        .map(|e| (e.audit_id, e.stage))
        .collect()
}

fn webhook_agent(
    server: &Handle,
    records: &Path,
    hook: &Path,
    hook_port: u16,
    admin: u16,
    limits: &str,
    batch: usize,
) -> Agent {
    Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             admin: {{listen: '127.0.0.1:{admin}'}}\n\
             record:\n  dir: '{records}'\n{limits}  webhook:\n    url: 'https://localhost:{hook_port}/audit'\n    \
             caFile: '{hook}/ca.crt'\n    tokenFile: '{hook}/token'\n    batchMaxRecords: {batch}\n    \
             batchMaxWaitMillis: 100\n    initialBackoffMillis: 50\n    maxBackoffMillis: 400\n    \
             timeoutSeconds: 5\n",
            records = records.display(),
            hook = hook.display(),
        ),
    )
    .unwrap()
}

async fn traffic(agent: &Agent, token: &str, tag: &str, n: usize) {
    let client = https_client(&agent.ca_pem, true);
    for i in 0..n {
        let (status, body) = get(
            &client,
            agent,
            token,
            &format!("/api/v1/namespaces/demo/configmaps/{tag}-{i}"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_receiver_down_up_failing_and_an_agent_restart_lose_nothing() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let token = server.admin_token().to_owned();
    let dir = scratch_dir("webhook");
    let (records, hook) = (dir.join("records"), dir.join("hook"));
    fs::create_dir_all(&hook).unwrap();
    let ca = Ca::new("audit receiver CA").unwrap();
    let pair = ca.issue(&["localhost"], &[]).unwrap();
    fs::write(hook.join("ca.crt"), ca.cert_pem()).unwrap();
    fs::write(hook.join("token"), "audit-sink-token\n").unwrap();
    let (hook_port, admin_port) = (free_port(), free_port());
    let receiver = Receiver::default();

    // 1. The receiver is down: requests are served, records wait in the log.
    let agent = webhook_agent(&server, &records, &hook, hook_port, admin_port, "", 7);
    traffic(&agent, &token, "down", 10).await;
    let metrics = eventually(
        "failed webhook attempts",
        Duration::from_secs(10),
        async || {
            let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
            (sample(&m, "kgate_record_webhook_failed_attempts_total") >= Some(2.0)).then_some(m)
        },
    )
    .await;
    assert!(
        sample(&metrics, "kgate_record_webhook_lag_records") >= Some(10.0),
        "ten requests' records wait: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "kgate_record_webhook_sent_records_total"),
        Some(0.0)
    );

    // 2. Up: everything so far arrives.
    receiver.serve(hook_port, &pair, "audit-sink-token").await;
    eventually(
        "the backlog at the receiver",
        Duration::from_secs(20),
        async || {
            logged(&records)
                .is_subset(&receiver.received())
                .then_some(())
        },
    )
    .await;
    let metrics = eventually("no lag", Duration::from_secs(10), async || {
        let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
        (sample(&m, "kgate_record_webhook_lag_records") == Some(0.0)).then_some(m)
    })
    .await;
    assert!(
        sample(&metrics, "kgate_record_webhook_sent_records_total") >= Some(20.0),
        "{metrics}"
    );

    // 3. Failing with 500: records wait again; then the agent is killed and replaced.
    receiver.failing.store(true, Ordering::SeqCst);
    traffic(&agent, &token, "failing", 10).await;
    eventually("refused batches", Duration::from_secs(10), async || {
        (receiver.refused.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let killed = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(agent);
    let agent = webhook_agent(&server, &records, &hook, hook_port, admin_port, "", 7);
    traffic(&agent, &token, "restarted", 10).await;
    eventually(
        "refusals of the restarted agent",
        Duration::from_secs(10),
        async || {
            let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
            (sample(&m, "kgate_record_webhook_failed_attempts_total") >= Some(1.0)).then_some(())
        },
    )
    .await;

    // 4. Up again: every record of the log, before and after the restart, arrives.
    receiver.failing.store(false, Ordering::SeqCst);
    let all = eventually(
        "every record at the receiver",
        Duration::from_secs(30),
        async || {
            let logged = logged(&records);
            logged.is_subset(&receiver.received()).then_some(logged)
        },
    )
    .await;
    // Strict mode: two records (received, complete) per forwarded request, 30 requests.
    let forwarded = seen_audit_ids(&server, "/api/v1/namespaces/demo/configmaps/");
    assert_eq!(forwarded.len(), 30);
    let received = receiver.received();
    for id in &forwarded {
        for stage in ["RequestReceived", "ResponseComplete"] {
            assert!(
                received.contains(&(id.clone(), stage.to_owned())),
                "{id} {stage} never reached the receiver"
            );
        }
    }
    assert!(all.len() >= 60, "{} records in the log", all.len());
    // At least once allows a resend only of a batch acknowledged just before a crash;
    // here the agent died while its batch was being refused, so the restarted agent's
    // cursor must have skipped everything acknowledged before: no duplicates at all.
    let items = receiver.items();
    assert_eq!(
        items.len(),
        received.len(),
        "records sent twice: the restarted agent did not go on from its cursor"
    );
    // Every batch is an EventList of valid audit events, within the batch limit.
    for list in receiver.batches.lock().unwrap().iter() {
        assert_eq!(
            (list["kind"].as_str(), list["apiVersion"].as_str()),
            (Some("EventList"), Some("audit.k8s.io/v1"))
        );
        let items = list["items"].as_array().unwrap();
        assert!((1..=7).contains(&items.len()), "{} items", items.len());
        for item in items {
            let event: Event = serde_json::from_value(item.clone()).unwrap();
            assert_eq!(
                (event.kind.as_str(), event.api_version.as_str()),
                ("Event", "audit.k8s.io/v1")
            );
        }
    }
    // The cursor is saved just after the receiver's answer.
    eventually(
        "the cursor past every record",
        Duration::from_secs(10),
        async || {
            let cursor: Value =
                serde_json::from_slice(&fs::read(records.join("webhook.cursor")).ok()?).ok()?;
            (cursor["seq"].as_u64()? >= all.len() as u64).then_some(())
        },
    )
    .await;
    eprintln!(
        "webhook: {} records, {} received ({} distinct) in {} batches, {} refused POSTs",
        all.len(),
        items.len(),
        received.len(),
        receiver.batches.lock().unwrap().len(),
        receiver.refused.load(Ordering::SeqCst)
    );
}

// === disk full ===

/// A tmpfs of `size` mounted at a fresh directory; unmounted and removed on drop,
/// whatever the test's outcome.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&path).unwrap();
        let guard = Self(path);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&guard.0)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        guard
    }

    /// Writes a file until the filesystem is full; its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 16 << 10];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Single bytes into what partial pages remain.
        while file.write_all(b"x").is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn disk_agent(server: &Handle, records: &Path, durability: &str, admin: u16) -> Agent {
    Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             admin: {{listen: '127.0.0.1:{admin}'}}\n\
             record: {{dir: '{}', durability: {durability}, flushMillis: 50}}\n",
            records.display()
        ),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root"]
async fn a_full_disk_makes_strict_refuse_and_batch_count() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let token = server.admin_token().to_owned();
    let dir = scratch_dir("diskfull");

    // Strict: a request that cannot be recorded is refused and never forwarded.
    let strict_fs = Tmpfs::mount(dir.join("strict"), "2m");
    let admin_port = free_port();
    let agent = disk_agent(&server, &strict_fs.0, "strict", admin_port);
    let client = https_client(&agent.ca_pem, true);
    let path = |tag: &str| format!("/api/v1/namespaces/demo/configmaps/{tag}");
    assert_eq!(
        get(&client, &agent, &token, &path("before")).await.0,
        StatusCode::NOT_FOUND
    );
    let filler = strict_fs.fill();
    let mut refused = Vec::new();
    for i in 0..20 {
        let tag = format!("strict-full-{i}");
        let (status, body) = get(&client, &agent, &token, &path(&tag)).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let status: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (status["kind"].as_str(), status["code"].as_u64()),
                (Some("Status"), Some(503))
            );
            let message = status["message"].as_str().unwrap();
            assert!(message.contains("cannot be recorded"), "{message}");
            refused.push(tag);
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }
    }
    assert!(
        refused.len() >= 10,
        "only {} of 20 requests were refused on a full disk",
        refused.len()
    );
    let seen: HashSet<String> = server.requests().into_iter().map(|r| r.path).collect();
    for tag in &refused {
        assert!(
            !seen.contains(&path(tag)),
            "{tag} was refused yet reached the API server"
        );
    }
    let (ready, body) = admin(&agent, admin_port, &token, "/readyz").await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"recorderWritable\":false"), "{body}");
    // Space again: recording and forwarding resume.
    fs::remove_file(&filler).unwrap();
    assert_eq!(
        get(&client, &agent, &token, &path("strict-after")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == path("strict-after"))
    );
    assert_eq!(
        admin(&agent, admin_port, &token, "/readyz").await.0,
        StatusCode::OK
    );
    let (_, metrics) = admin(&agent, admin_port, &token, "/metrics").await;
    assert!(
        sample(&metrics, "kgate_record_write_failed_records_total") >= Some(refused.len() as f64),
        "{metrics}"
    );
    drop(agent);

    // Batch: every request is served; the records lost are counted.
    let batch_fs = Tmpfs::mount(dir.join("batch"), "2m");
    let admin_port = free_port();
    let agent = disk_agent(&server, &batch_fs.0, "batch", admin_port);
    let client = https_client(&agent.ca_pem, true);
    let filler = batch_fs.fill();
    for i in 0..20 {
        let (status, body) = get(&client, &agent, &token, &path(&format!("batch-full-{i}"))).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "batch mode serves on a full disk: {body}"
        );
    }
    let metrics = eventually(
        "lost records counted",
        Duration::from_secs(10),
        async || {
            let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
            (sample(&m, "kgate_record_write_failed_records_total") >= Some(10.0)).then_some(m)
        },
    )
    .await;
    assert_eq!(
        sample(&metrics, "kgate_record_writable"),
        Some(0.0),
        "{metrics}"
    );
    fs::remove_file(&filler).unwrap();
    for i in 0..3 {
        get(&client, &agent, &token, &path(&format!("batch-after-{i}"))).await;
    }
    let events = eventually(
        "records after space was freed",
        Duration::from_secs(10),
        async || {
            let events = sessions::load(&batch_fs.0).unwrap().0;
            (0..3)
                .all(|i| {
                    let uri = path(&format!("batch-after-{i}"));
                    events.iter().any(|e| e.request_uri == uri)
                })
                .then_some(events)
        },
    )
    .await;
    let lost = sample(&metrics, "kgate_record_write_failed_records_total").unwrap_or_default();
    eprintln!(
        "batch: {} records in the log, {lost} counted as lost while the disk was full",
        events.len()
    );
    let (_, metrics) = admin(&agent, admin_port, &token, "/metrics").await;
    assert_eq!(
        sample(&metrics, "kgate_record_writable"),
        Some(1.0),
        "{metrics}"
    );
    drop(agent);
    drop(batch_fs);
    drop(strict_fs);
}

// === level Request ===

#[tokio::test(flavor = "multi_thread")]
async fn request_level_records_request_bodies_masked() {
    use base64::Engine as _;
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("request-level");
    let records = dir.join("records");
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             record: {{dir: '{}', level: Request}}\n",
            records.display()
        ),
    )
    .unwrap();
    // kube-rs writes JSON bodies; kubectl writes built-in kinds as protobuf.
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::{Api, Client, api::PostParams};
    let kube_dir = scratch_dir("request-level-kube");
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &kube_dir,
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "demo");
    let maps: Api<ConfigMap> = Api::namespaced(client, "demo");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "data": {"apikey": "a2V5LXZhbHVlLTEyMw=="},
        "stringData": {"password": "hunter2-value"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    // A JSON patch (an array of operations), as kubectl patch --type=json sends it.
    let patch = Request::patch(format!(
        "{}/api/v1/namespaces/demo/secrets/creds",
        agent.url()
    ))
    .header("authorization", format!("Bearer {}", server.admin_token()))
    .header("content-type", "application/json-patch+json")
    .body(Full::new(Bytes::from_static(
        br#"[{"op":"replace","path":"/data/password","value":"bmV3LXNlY3JldA=="}]"#,
    )))
    .unwrap();
    let patched = https_client(&agent.ca_pem, true)
        .request(patch)
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    maps.get("settings").await.unwrap();
    let kubectl = kgate_tests::harness::Kubectl::new(
        scratch_dir("request-level-kubectl"),
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    tokio::task::spawn_blocking(move || {
        kubectl.ok(&["create", "configmap", "from-kubectl", "--from-literal=x=y"]);
        // An upgraded stream at level Request: no body to keep, nothing to say.
        let out = kubectl.ok(&["exec", "web-0", "--", "echo", "streamed"]);
        assert_eq!(out.trim(), "streamed");
    })
    .await
    .unwrap();

    let complete = |events: &[Event], verb: &str, resource: &str| {
        events
            .iter()
            .find(|e| {
                e.stage == "ResponseComplete"
                    && e.verb == verb
                    && e.object_ref
                        .as_ref()
                        .is_some_and(|o| o.resource == resource)
            })
            .cloned()
    };
    let events = eventually("the writes' records", Duration::from_secs(10), async || {
        let events = sessions::load(&records).unwrap().0;
        (complete(&events, "patch", "secrets").is_some()
            && complete(&events, "get", "configmaps").is_some()
            && events
                .iter()
                .filter(|e| e.stage == "ResponseComplete" && e.verb == "create")
                .count()
                == 3
            && events.iter().any(|e| e.stage == "ResponseStarted"))
        .then_some(events)
    })
    .await;
    assert!(
        events.iter().all(|e| e.level == "Request"),
        "every event at level Request"
    );

    let secret = complete(&events, "create", "secrets").unwrap();
    let object = secret.request_object.clone().unwrap_or_else(|| {
        panic!(
            "the Secret's body is not recorded: {:?}",
            secret.annotations
        )
    });
    assert_eq!(object["kind"], "Secret");
    assert_eq!(object["metadata"]["name"], "creds");
    assert_eq!(object["data"]["apikey"], kgate::mask::MASKED_BASE64);
    assert_eq!(object["stringData"]["password"], kgate::mask::MASKED_TEXT);
    let map = events
        .iter()
        .find(|e| {
            e.stage == "ResponseComplete"
                && e.verb == "create"
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource == "configmaps")
                && e.request_object.is_some()
        })
        .cloned()
        .expect("the kube-rs ConfigMap's body is recorded");
    assert_eq!(
        map.request_object.expect("the ConfigMap's body")["data"]["mode"],
        "fast"
    );
    let patch = complete(&events, "patch", "secrets").unwrap();
    assert_eq!(
        patch.request_object, None,
        "a JSON patch of a Secret cannot be masked by field"
    );
    let why = patch
        .annotation(kgate::record::event::REQUEST_OBJECT)
        .unwrap_or_default();
    assert!(why.contains("not an object"), "{why:?}");
    let protobuf = events
        .iter()
        .filter(|e| e.stage == "ResponseComplete" && e.verb == "create")
        .find_map(|e| e.annotation(kgate::record::event::REQUEST_OBJECT))
        .expect("kubectl's protobuf create says why it has no requestObject");
    assert_eq!(protobuf, "omitted: not JSON");
    let read = complete(&events, "get", "configmaps").unwrap();
    assert_eq!(
        (
            read.request_object.as_ref(),
            read.annotation(kgate::record::event::REQUEST_OBJECT)
        ),
        (None, None)
    );
    let exec = events
        .iter()
        .find(|e| {
            e.stage == "ResponseStarted"
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.subresource == "exec")
        })
        .expect("the exec's record");
    assert_eq!(
        (
            exec.request_object.as_ref(),
            exec.annotation(kgate::record::event::REQUEST_OBJECT)
        ),
        (None, None)
    );
    // Nothing of the Secret's values anywhere in the log's bytes.
    let secrets = [
        "hunter2-value".to_owned(),
        base64::engine::general_purpose::STANDARD.encode("hunter2-value"),
        "bmV3LXNlY3JldA==".to_owned(),
        "a2V5LXZhbHVlLTEyMw==".to_owned(),
        "key-value-123".to_owned(),
    ];
    for entry in fs::read_dir(&records).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} is in the record log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_receiver_rejects_does_not_hold_back_the_rest() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let token = server.admin_token().to_owned();
    let dir = scratch_dir("webhook-reject");
    let (records, hook) = (dir.join("records"), dir.join("hook"));
    fs::create_dir_all(&hook).unwrap();
    let ca = Ca::new("audit receiver CA").unwrap();
    let pair = ca.issue(&["localhost"], &[]).unwrap();
    fs::write(hook.join("ca.crt"), ca.cert_pem()).unwrap();
    fs::write(hook.join("token"), "audit-sink-token").unwrap();
    let (hook_port, admin_port) = (free_port(), free_port());
    let receiver = Receiver::default();
    *receiver.poison.lock().unwrap() = Some("configmaps/poison".to_owned());
    receiver.serve(hook_port, &pair, "audit-sink-token").await;
    let agent = webhook_agent(&server, &records, &hook, hook_port, admin_port, "", 7);
    traffic(&agent, &token, "before", 10).await;
    traffic(&agent, &token, "poison", 1).await;
    traffic(&agent, &token, "after", 10).await;
    let metrics = eventually(
        "the sink past the poison",
        Duration::from_secs(20),
        async || {
            let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
            (sample(&m, "kgate_record_webhook_lag_records") == Some(0.0)
                && sample(&m, "kgate_record_written_records_total") >= Some(42.0))
            .then_some(m)
        },
    )
    .await;
    // Strict: the poisoned request's two records, each refused even alone.
    assert_eq!(
        sample(&metrics, "kgate_record_webhook_rejected_records_total"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "kgate_record_webhook_sent_records_total"),
        Some(40.0),
        "{metrics}"
    );
    let events = sessions::load(&records).unwrap().0;
    let received = receiver.received();
    for event in &events {
        let poisoned = event.request_uri.contains("configmaps/poison");
        assert_eq!(
            received.contains(&(event.audit_id.clone(), event.stage.clone())),
            !poisoned,
            "{} {}",
            event.request_uri,
            event.stage
        );
    }
    agent
        .wait_for(
            "the receiver rejects this record; skipped",
            Duration::from_secs(1),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_records_deleted_by_retention_are_logged_and_counted() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let token = server.admin_token().to_owned();
    let dir = scratch_dir("webhook-retention");
    let (records, hook) = (dir.join("records"), dir.join("hook"));
    fs::create_dir_all(&hook).unwrap();
    let ca = Ca::new("audit receiver CA").unwrap();
    let pair = ca.issue(&["localhost"], &[]).unwrap();
    fs::write(hook.join("ca.crt"), ca.cert_pem()).unwrap();
    fs::write(hook.join("token"), "audit-sink-token").unwrap();
    let (hook_port, admin_port) = (free_port(), free_port());
    // Two segments of about three records each: most of the backlog is deleted.
    let agent = webhook_agent(
        &server,
        &records,
        &hook,
        hook_port,
        admin_port,
        "  segmentBytes: 4096\n  maxBytes: 8192\n",
        7,
    );
    traffic(&agent, &token, "retained", 30).await;
    // Said when it happens, not only when the receiver is back.
    agent
        .wait_for(
            "retention deleted records the webhook has not sent yet",
            Duration::from_secs(5),
        )
        .unwrap();
    let receiver = Receiver::default();
    receiver.serve(hook_port, &pair, "audit-sink-token").await;
    let metrics = eventually("the sink caught up", Duration::from_secs(20), async || {
        let (_, m) = admin(&agent, admin_port, &token, "/metrics").await;
        let written = sample(&m, "kgate_record_written_records_total")?;
        let sent = sample(&m, "kgate_record_webhook_sent_records_total")?;
        let skipped = sample(&m, "kgate_record_webhook_skipped_records_total")?;
        (written >= 60.0 && sent + skipped == written).then_some(m)
    })
    .await;
    let skipped = sample(&metrics, "kgate_record_webhook_skipped_records_total").unwrap();
    assert!(
        skipped >= 30.0,
        "most of 60 records were deleted unsent: {metrics}"
    );
    agent
        .wait_for(
            "records lost to the receiver before they were sent",
            Duration::from_secs(1),
        )
        .unwrap();
    // What retention kept was sent, and the receiver got no more than that.
    let kept = logged(&records);
    let received = receiver.received();
    assert!(
        kept.is_subset(&received),
        "{} kept, {} received",
        kept.len(),
        received.len()
    );
    assert_eq!(
        receiver.items().len() as f64,
        sample(&metrics, "kgate_record_webhook_sent_records_total").unwrap()
    );
}

// === measurement ===

/// `n` GETs from 8 concurrent clients; how long they took.
async fn load(agent: &Agent, token: &str, n: usize) -> Duration {
    let client = https_client(&agent.ca_pem, true);
    let url = format!(
        "{}/api/v1/namespaces/demo/configmaps/app-config",
        agent.url()
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.clone(), token.to_owned());
            tokio::spawn(async move {
                for _ in 0..n / 8 {
                    let req = Request::get(&url)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let response = client.request(req).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    text(response.into_body()).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement: prints request rates and the webhook's drain rate"]
async fn measure_the_webhook_sink() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let token = server.admin_token().to_owned();
    let dir = scratch_dir("webhook-measure");
    let hook = dir.join("hook");
    fs::create_dir_all(&hook).unwrap();
    let ca = Ca::new("audit receiver CA").unwrap();
    let pair = ca.issue(&["localhost"], &[]).unwrap();
    fs::write(hook.join("ca.crt"), ca.cert_pem()).unwrap();
    fs::write(hook.join("token"), "audit-sink-token").unwrap();
    let n = 2000;

    let plain = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        &token,
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             record: {{dir: '{}'}}\n",
            dir.join("plain").display()
        ),
    )
    .unwrap();
    load(&plain, &token, 200).await;
    let without = load(&plain, &token, n).await;
    drop(plain);

    let (hook_port, admin_port) = (free_port(), free_port());
    let receiver = Receiver::default();
    receiver.serve(hook_port, &pair, "audit-sink-token").await;
    let records = dir.join("hooked");
    let hooked = webhook_agent(&server, &records, &hook, hook_port, admin_port, "", 400);
    load(&hooked, &token, 200).await;
    let with = load(&hooked, &token, n).await;
    drop(hooked);

    // A backlog: the receiver is down (a port nobody serves) while requests come in.
    let (down_port, admin_port) = (free_port(), free_port());
    let backlog = dir.join("backlog");
    let agent = webhook_agent(&server, &backlog, &hook, down_port, admin_port, "", 400);
    load(&agent, &token, n).await;
    drop(agent);
    let receiver = Receiver::default();
    receiver.serve(down_port, &pair, "audit-sink-token").await;
    let total = logged(&backlog).len();
    let batch: usize = std::env::var("KGATE_MEASURE_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(400);
    let started = Instant::now();
    let agent = webhook_agent(&server, &backlog, &hook, down_port, admin_port, "", batch);
    eventually(
        "the backlog drained",
        Duration::from_secs(120),
        async || (receiver.items().len() >= total).then_some(()),
    )
    .await;
    let drained = started.elapsed();
    drop(agent);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    eprintln!(
        "strict GETs, 8 clients: {:.0}/s without a webhook, {:.0}/s with a live webhook \
         (batchMaxRecords 400); a backlog of {total} records drained in {drained:?} \
         (batchMaxRecords {batch}, agent start included, {:.0} records/s)",
        rate(without),
        rate(with),
        total as f64 / drained.as_secs_f64()
    );
}
