//! Request recording through a standalone agent in front of the API-server double:
//! kubectl's requests become `audit.k8s.io/v1` events with kgate's annotations, the
//! API server sees the same audit ID, strict durability survives SIGKILLs under load
//! (randomized trials: `KGATE_KILL_TRIALS`, 1,000 in `cargo xtask chaos`),
//! `kgate sessions` reads the log, and a second agent on a held `record.dir` exits.

use std::{
    fs,
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use kgate::record::{
    event::{self, Event},
    log::{Limits, Log},
    sessions,
};
use kgate_tests::{
    apiserver::{ApiServer, Config},
    harness::{ADMIN_NO_SECRETS, Agent, Kubectl, free_port, https_client, kgate_bin, scratch_dir},
    recorder::get,
};
use serde_json::Value;

fn agent_with_records(
    server: &kgate_tests::apiserver::Handle,
    records: &Path,
    policy: &Path,
) -> Agent {
    Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow, files: ['{}']}}\n\
             record: {{dir: '{}', durability: strict}}\n",
            policy.display(),
            records.display()
        ),
    )
    .unwrap()
}

/// Polls the log (read-only) until `done` holds for its events.
fn events_until(dir: &Path, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (events, _) = sessions::load(dir).unwrap();
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kgate(args: &[&str]) -> String {
    let out = Command::new(kgate_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_requests_become_audit_events() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("recording");
    let (records, policy) = (dir.join("records"), dir.join("policy.yaml"));
    fs::write(&policy, ADMIN_NO_SECRETS).unwrap();
    let agent = agent_with_records(&server, &records, &policy);
    let kubectl = Kubectl::new(
        scratch_dir("rec-kubectl"),
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    let (pods, secret) = tokio::task::spawn_blocking(move || {
        (
            kubectl.run(&["get", "pods", "-n", "demo"]),
            kubectl.run(&["get", "secret", "db-creds", "-n", "demo"]),
        )
    })
    .await
    .unwrap();
    assert!(pods.0 && pods.1.contains("web-0"), "{pods:?}");
    assert!(
        !secret.0 && secret.2.contains("no secrets here"),
        "{secret:?}"
    );

    let is_final = |e: &Event, resource: &str| {
        e.stage == event::STAGE_COMPLETE
            && e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == resource)
    };
    let events = events_until(&records, |events| {
        events.iter().any(|e| is_final(e, "pods")) && events.iter().any(|e| is_final(e, "secrets"))
    });
    let list = events
        .iter()
        .find(|e| is_final(e, "pods"))
        .expect("a final record of the pod list");
    assert_eq!(
        (
            list.kind.as_str(),
            list.api_version.as_str(),
            list.level.as_str()
        ),
        ("Event", "audit.k8s.io/v1", "Metadata")
    );
    assert_eq!(list.verb, "list");
    assert_eq!(
        list.request_uri.split('?').next(),
        Some("/api/v1/namespaces/demo/pods")
    );
    assert_eq!(list.user.username, "kubernetes-admin");
    assert_eq!(list.source_ips, ["127.0.0.1"]);
    assert!(
        list.user_agent.starts_with("kubectl"),
        "{}",
        list.user_agent
    );
    let object = list.object_ref.as_ref().unwrap();
    assert_eq!(
        (
            object.namespace.as_str(),
            object.api_version.as_str(),
            object.name.as_str()
        ),
        ("demo", "v1", "")
    );
    assert_eq!(list.code(), Some(200));
    assert_eq!(list.annotation(event::DECISION), Some("allow"));
    assert_eq!(list.annotation(event::BINDING), Some("unbound"));
    assert!(list.annotation(event::LATENCY_US).is_some());
    assert!(list.annotation(event::CONNECTION).is_some());
    assert!(list.request_received_timestamp.ends_with('Z'));
    assert_eq!(
        list.stage_timestamp.split('.').nth(1).map(str::len),
        Some(7),
        "microseconds and a Z: {}",
        list.stage_timestamp
    );
    // Strict: the forwarded request was recorded as received first.
    assert!(
        events
            .iter()
            .any(|e| e.audit_id == list.audit_id && e.stage == event::STAGE_RECEIVED)
    );
    // The API server saw the record's audit ID.
    let seen = server.requests();
    let upstream = seen
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/demo/pods")
        .expect("the list reached the API server");
    let audit_header = upstream
        .headers
        .iter()
        .find(|(k, _)| k == "audit-id")
        .map(|(_, v)| v.as_str());
    assert_eq!(audit_header, Some(list.audit_id.as_str()));

    let denied = events.iter().find(|e| is_final(e, "secrets")).unwrap();
    assert_eq!(denied.verb, "get");
    assert_eq!(denied.object_ref.as_ref().unwrap().name, "db-creds");
    let status = denied.response_status.as_ref().unwrap();
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status.message.contains("no secrets here"),
        "{}",
        status.message
    );
    assert_eq!(denied.annotation(event::DECISION), Some("deny"));
    assert_eq!(denied.annotation(event::RULE), Some("admins/no-secrets"));
    // Refused, so never forwarded and never recorded as received.
    assert!(!seen.iter().any(|r| r.path.contains("secrets")));
    assert!(
        !events
            .iter()
            .any(|e| e.audit_id == denied.audit_id && e.stage == event::STAGE_RECEIVED)
    );

    // The CLI: kubectl's two commands are two connections, two sessions.
    let dir_arg = records.to_str().unwrap();
    let listed: Value = serde_json::from_str(&kgate(&[
        "sessions", "list", "--dir", dir_arg, "-o", "json",
    ]))
    .unwrap();
    let listed = listed.as_array().unwrap();
    let refused_session = listed
        .iter()
        .find(|s| s["refused"] == 1)
        .unwrap_or_else(|| panic!("no session with the refusal: {listed:?}"));
    assert_eq!(refused_session["user"], "kubernetes-admin");
    let table = kgate(&[
        "sessions", "list", "--dir", dir_arg, "--user", "kube*", "--since", "10m",
    ]);
    assert!(
        table.starts_with("ID") && table.contains("kubernetes-admin"),
        "{table}"
    );
    let none = kgate(&["sessions", "list", "--dir", dir_arg, "--user", "nobody"]);
    assert_eq!(none.lines().count(), 1, "{none}");
    let id = refused_session["id"].as_str().unwrap();
    let timeline = kgate(&["sessions", "show", id, "--dir", dir_arg]);
    assert!(
        timeline.contains("secrets/db-creds -n demo")
            && timeline.contains("403")
            && timeline.contains("deny (admins/no-secrets)"),
        "{timeline}"
    );
    let lines = kgate(&["sessions", "show", id, "--dir", dir_arg, "-o", "json"]);
    assert!(lines.lines().all(|l| {
        serde_json::from_str::<Event>(l).is_ok_and(|e| e.user.username == "kubernetes-admin")
    }));
    drop(agent);
}

/// Two agents on one `record.dir` destroyed records (the second's recovery scan cut
/// the first's live segment). The second now exits at start-up naming the directory
/// and the holder's PID, and leaves the first's records and recording alone; the
/// CLI reads the held directory; a `kill -9`ed holder leaves no lock behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_on_a_held_record_dir_exits_and_the_first_keeps_recording() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("recording-held");
    let (records, policy) = (dir.join("records"), dir.join("policy.yaml"));
    fs::write(&policy, ADMIN_NO_SECRETS).unwrap();
    let token = server.admin_token().to_owned();
    let first = agent_with_records(&server, &records, &policy);
    let requests = async |agent: &Agent, tag: &str| {
        let client = https_client(&agent.ca_pem, true);
        for i in 0..5 {
            let path = format!("/api/v1/namespaces/demo/configmaps/{tag}-{i}");
            assert_eq!(get(&client, agent, &token, &path).await.0, 404);
        }
    };
    requests(&first, "before").await;

    // The second agent: the first's config, on another port.
    let config = fs::read_to_string(first.dir.join("agent.yaml")).unwrap();
    let listen = config.lines().next().unwrap();
    assert!(listen.starts_with("listen: "), "{listen}");
    let second_config = dir.join("second.yaml");
    fs::write(
        &second_config,
        config.replacen(listen, &format!("listen: '127.0.0.1:{}'", free_port()), 1),
    )
    .unwrap();
    let mut second = Command::new(kgate_bin())
        .args(["agent", "--config"])
        .arg(&second_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second agent on a held record.dir kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    let expected = format!(
        "record.dir {} is in use by another kgate agent (pid {}); \
         two agents must not share a record directory",
        records.display(),
        first.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // The first records on, and nothing of its log was damaged.
    requests(&first, "after").await;
    let complete = |events: &[Event], tag: &str| {
        events
            .iter()
            .filter(|e| e.stage == event::STAGE_COMPLETE && e.request_uri.contains(tag))
            .count()
    };
    let events = events_until(&records, |e| complete(e, "/after-") == 5);
    assert_eq!(
        (complete(&events, "/before-"), complete(&events, "/after-")),
        (5, 5)
    );
    // The CLI reads the directory the first agent holds.
    let dir_arg = records.to_str().unwrap();
    let listed: Value = serde_json::from_str(&kgate(&[
        "sessions", "list", "--dir", dir_arg, "-o", "json",
    ]))
    .unwrap();
    assert!(!listed.as_array().unwrap().is_empty(), "{listed}");

    // The lock dies with its holder: after kill -9, a new agent takes the directory,
    // its recovery scan finds no damage, and it records.
    let killed = Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(first);
    let third = agent_with_records(&server, &records, &policy);
    let open = third
        .wait_for("record log open", Duration::from_secs(5))
        .unwrap();
    assert!(open.contains("\"damaged\":0"), "{open}");
    requests(&third, "third").await;
    let events = events_until(&records, |e| complete(e, "/third-") == 5);
    let (_, damage) = sessions::load(&records).unwrap();
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(
        [
            complete(&events, "/before-"),
            complete(&events, "/after-"),
            complete(&events, "/third-")
        ],
        [5, 5, 5]
    );
    drop(third);
}

/// Trials of [`kill_trial`]: `KGATE_KILL_TRIALS` (default 3, as in CI; `cargo xtask
/// chaos` runs 1,000).
#[tokio::test(flavor = "multi_thread")]
async fn strict_records_survive_sigkills_under_load() {
    let trials: u64 = std::env::var("KGATE_KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    // A fixed base seed: a failing trial names its seed, and reruns the same way.
    let base: u64 = std::env::var("KGATE_KILL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x6b67_6174_6521);
    for trial in 0..trials {
        let seed = base.wrapping_add(trial);
        let summary = kill_trial(seed).await;
        eprintln!("trial {trial} (seed {seed}): {summary}");
    }
}

/// xorshift64*: the trial's choices, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One strict-mode agent under a randomized load of reads and writes (HTTP/2 or
/// HTTP/1.1, 50 to 250 requests, staggered), killed with SIGKILL once a random number
/// of them have been answered. The durability promise: every request that changes
/// the cluster and reached the API server has a durable RequestReceived record (a
/// write waits for it before it is forwarded), and so does every read whose answer
/// reached the client (a read goes upstream while its record is written, and its
/// answer waits for it). The recovery scan must leave no damage.
async fn kill_trial(seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("recording-kill");
    let (records, policy) = (dir.join("records"), dir.join("policy.yaml"));
    fs::write(&policy, ADMIN_NO_SECRETS).unwrap();
    let agent = agent_with_records(&server, &records, &policy);
    let http2 = rng.below(2) == 0;
    let client = https_client(&agent.ca_pem, http2);
    let url = agent.url();
    let token = server.admin_token().to_owned();

    let total = 50 + rng.below(200);
    let kill_after = usize::try_from(5 + rng.below(total / 2)).unwrap();
    let writes_in_10 = rng.below(11);
    let stagger_ms = 1 + rng.below(3);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        let write = rng.below(10) < writes_in_10;
        let (client, url, token, done) =
            (client.clone(), url.clone(), token.clone(), done_tx.clone());
        tokio::spawn(async move {
            // Staggered, so that the kill lands while requests are in flight.
            tokio::time::sleep(Duration::from_millis(i * stagger_ms)).await;
            let req = if write {
                let body = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("trial-{seed}-{i}")},
                    "data": {"i": i.to_string()},
                });
                Request::post(format!("{url}/api/v1/namespaces/demo/configmaps"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(body.to_string())))
            } else {
                Request::get(format!(
                    "{url}/api/v1/namespaces/demo/configmaps/app-config"
                ))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
            }
            .unwrap();
            // The answer names its record (`Audit-Id`): a read's must be durable.
            let answered = client
                .request(req)
                .await
                .ok()
                .filter(|r| r.status().is_success());
            let read_id = answered
                .as_ref()
                .filter(|_| !write)
                .and_then(|r| r.headers().get("audit-id")?.to_str().ok())
                .map(str::to_owned);
            let _ = done.send((answered.is_some(), read_id));
        });
    }
    drop(done_tx);
    let (mut ok, mut reads_answered) = (0, Vec::new());
    while ok < kill_after {
        match done_rx.recv().await {
            Some((answered, read_id)) => {
                ok += usize::from(answered);
                reads_answered.extend(read_id);
            }
            None => break,
        }
    }
    let killed = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Some((answered, read_id)) = done_rx.recv().await {
        ok += usize::from(answered);
        reads_answered.extend(read_id);
    }
    assert!(
        ok >= kill_after,
        "seed {seed}: only {ok} answers before the kill"
    );
    // Reaped: until the process is gone, its lock on the directory holds.
    drop(agent);

    // The recovery scan, as the next agent would run it.
    let limits = Limits {
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    };
    let (_log, recovery) = Log::open(&records, limits).unwrap();
    let (events, damage) = sessions::load(&records).unwrap();
    assert!(
        damage.is_empty(),
        "seed {seed}: the recovery scan left damage: {damage:?}"
    );
    let received: std::collections::HashSet<&str> = events
        .iter()
        .filter(|e| e.stage == event::STAGE_RECEIVED)
        .map(|e| e.audit_id.as_str())
        .collect();
    let audit_id = |r: &kgate_tests::apiserver::Logged| {
        r.headers
            .iter()
            .find(|(k, _)| k == "audit-id")
            .map(|(_, v)| v.clone())
            .expect("every forwarded request carries an Audit-ID")
    };
    let forwarded: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/namespaces/demo/configmaps"))
        .collect();
    assert!(
        forwarded.len() >= kill_after,
        "seed {seed}: {} requests reached the double",
        forwarded.len()
    );
    let writes: Vec<String> = forwarded
        .iter()
        .filter(|r| r.method != "GET")
        .map(audit_id)
        .collect();
    let missing: Vec<_> = writes
        .iter()
        .filter(|id| !received.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: {} of {} forwarded writes have no durable RequestReceived record, e.g. {:?}",
        missing.len(),
        writes.len(),
        &missing[..missing.len().min(5)]
    );
    let unrecorded_reads: Vec<_> = reads_answered
        .iter()
        .filter(|id| !received.contains(id.as_str()))
        .collect();
    assert!(
        unrecorded_reads.is_empty(),
        "seed {seed}: {} of {} answered reads have no durable RequestReceived record, e.g. {:?}",
        unrecorded_reads.len(),
        reads_answered.len(),
        &unrecorded_reads[..unrecorded_reads.len().min(5)]
    );
    let seen = forwarded;
    format!(
        "{} over {}, {writes_in_10}/10 writes, killed after {kill_after} answers: {ok} answered, \
         {} forwarded ({} writes, all recorded), {} reads answered, all recorded; recovery: {} records, repaired {:?}",
        total,
        if http2 { "h2" } else { "http/1.1" },
        seen.len(),
        writes.len(),
        reads_answered.len(),
        recovery.records,
        recovery
            .damaged
            .iter()
            .map(|d| d.reason)
            .collect::<Vec<_>>()
    )
}
