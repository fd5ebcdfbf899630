//! The recorder's export through a standalone agent in front of the API-server
//! double: records as JSON lines on stdout; an audit webhook receiver that is down,
//! up, failing and up again across an agent restart (nothing lost, nothing sent
//! twice), one that rejects a record (skipped, the rest delivered), and retention
//! deleting records the webhook had not sent (logged and counted).

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use http::StatusCode;
use kgate::record::{event::Event, sessions};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, ScratchDir, free_port, https_client, scratch_dir},
    pki::Ca,
    recorder::{Receiver, admin, eventually, get, sample, seen_audit_ids},
};
use serde_json::Value;

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

/// The double, an audit receiver with its CA and bearer token under `hook`, and the
/// ports for an agent's admin endpoint: what each webhook test starts from.
struct Webhook {
    server: Handle,
    token: String,
    records: PathBuf,
    hook: PathBuf,
    receiver: Receiver,
    hook_port: u16,
    admin_port: u16,
    /// Holds `records` and `hook`.
    _dir: ScratchDir,
}

impl Webhook {
    /// `newline`: the token file ends with one (kgate must trim it). `down`: the
    /// receiver does not answer at first.
    async fn start(tag: &str, newline: bool, down: bool) -> Self {
        let server = ApiServer::start(Config::default()).await.unwrap();
        let token = server.admin_token().to_owned();
        let dir = scratch_dir(tag);
        let (records, hook) = (dir.join("records"), dir.join("hook"));
        fs::create_dir_all(&hook).unwrap();
        let ca = Ca::new("audit receiver CA").unwrap();
        let pair = ca.issue(&["localhost"], &[]).unwrap();
        fs::write(hook.join("ca.crt"), ca.cert_pem()).unwrap();
        let file = if newline {
            "audit-sink-token\n"
        } else {
            "audit-sink-token"
        };
        fs::write(hook.join("token"), file).unwrap();
        let (receiver, hook_port) = Receiver::start(&pair, "audit-sink-token", down).await;
        Self {
            server,
            token,
            records,
            hook,
            receiver,
            hook_port,
            admin_port: free_port(),
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_receiver_down_up_failing_and_an_agent_restart_lose_nothing() {
    let rig = Webhook::start("webhook", true, true).await;
    let (server, token, records, hook) = (&rig.server, &rig.token, &rig.records, &rig.hook);
    let (receiver, hook_port, admin_port) = (&rig.receiver, rig.hook_port, rig.admin_port);

    // 1. The receiver is down: requests are served, records wait in the log.
    let agent = webhook_agent(server, records, hook, hook_port, admin_port, "", 7);
    traffic(&agent, token, "down", 10).await;
    let metrics = eventually(
        "failed webhook attempts",
        Duration::from_secs(10),
        async || {
            let (_, m) = admin(&agent, admin_port, token, "/metrics").await;
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
    receiver.down.store(false, Ordering::SeqCst);
    eventually(
        "the backlog at the receiver",
        Duration::from_secs(20),
        async || {
            logged(records)
                .is_subset(&receiver.received())
                .then_some(())
        },
    )
    .await;
    let metrics = eventually("no lag", Duration::from_secs(10), async || {
        let (_, m) = admin(&agent, admin_port, token, "/metrics").await;
        (sample(&m, "kgate_record_webhook_lag_records") == Some(0.0)).then_some(m)
    })
    .await;
    assert!(
        sample(&metrics, "kgate_record_webhook_sent_records_total") >= Some(20.0),
        "{metrics}"
    );

    // 3. Failing with 500: records wait again; then the agent is killed and replaced.
    receiver.failing.store(true, Ordering::SeqCst);
    traffic(&agent, token, "failing", 10).await;
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
    let agent = webhook_agent(server, records, hook, hook_port, admin_port, "", 7);
    traffic(&agent, token, "restarted", 10).await;
    eventually(
        "refusals of the restarted agent",
        Duration::from_secs(10),
        async || {
            let (_, m) = admin(&agent, admin_port, token, "/metrics").await;
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
            let logged = logged(records);
            logged.is_subset(&receiver.received()).then_some(logged)
        },
    )
    .await;
    // Strict mode: two records (received, complete) per forwarded request, 30 requests.
    let forwarded = seen_audit_ids(server, "/api/v1/namespaces/demo/configmaps/");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_receiver_rejects_does_not_hold_back_the_rest() {
    let rig = Webhook::start("webhook-reject", false, false).await;
    let (server, token, records, hook) = (&rig.server, &rig.token, &rig.records, &rig.hook);
    let (receiver, hook_port, admin_port) = (&rig.receiver, rig.hook_port, rig.admin_port);
    *receiver.poison.lock().unwrap() = Some("configmaps/poison".to_owned());
    let agent = webhook_agent(server, records, hook, hook_port, admin_port, "", 7);
    traffic(&agent, token, "before", 10).await;
    traffic(&agent, token, "poison", 1).await;
    traffic(&agent, token, "after", 10).await;
    let metrics = eventually(
        "the sink past the poison",
        Duration::from_secs(20),
        async || {
            let (_, m) = admin(&agent, admin_port, token, "/metrics").await;
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
    let events = sessions::load(records).unwrap().0;
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
    let rig = Webhook::start("webhook-retention", false, true).await;
    let (server, token, records, hook) = (&rig.server, &rig.token, &rig.records, &rig.hook);
    let (receiver, hook_port, admin_port) = (&rig.receiver, rig.hook_port, rig.admin_port);
    // Two segments of about three records each: most of the backlog is deleted.
    let agent = webhook_agent(
        server,
        records,
        hook,
        hook_port,
        admin_port,
        "  segmentBytes: 4096\n  maxBytes: 8192\n",
        7,
    );
    traffic(&agent, token, "retained", 30).await;
    // Said when it happens, not only when the receiver is back.
    agent
        .wait_for(
            "retention deleted records the webhook has not sent yet",
            Duration::from_secs(5),
        )
        .unwrap();
    receiver.down.store(false, Ordering::SeqCst);
    let metrics = eventually("the sink caught up", Duration::from_secs(20), async || {
        let (_, m) = admin(&agent, admin_port, token, "/metrics").await;
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
    let kept = logged(records);
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
