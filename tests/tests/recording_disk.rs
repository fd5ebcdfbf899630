//! The recorder on a full disk (root: a small tmpfs as `record.dir`): strict mode
//! records into the space it wrote ahead, then refuses requests with a 503 Status (a
//! read's answer is dropped, a write is never forwarded); batch mode serves and counts
//! the records it loses; both resume once there is space.

use std::{
    collections::HashSet,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use http::{Method, StatusCode};
use kgate::record::sessions;
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, free_port, https_client, scratch_dir},
    recorder::{admin, eventually, get, sample, send},
};
use serde_json::Value;

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
    // The zeros strict mode writes ahead of its last record (a MiB, most of this disk's
    // other half) still take records: those requests are recorded, then served. Once
    // the space is used up, requests are refused.
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for i in 0..5000 {
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
            if refused.len() == 20 {
                break;
            }
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            served.push(tag);
        }
    }
    assert_eq!(
        refused.len(),
        20,
        "a full disk refused {} requests, served {}",
        refused.len(),
        served.len()
    );
    // Without the zeros none would be served: the filler took every byte left.
    assert!(
        served.len() >= 100,
        "only {} requests were recorded into the reserve",
        served.len()
    );
    // A read goes upstream while its record is written, and its answer is dropped for
    // the 503 when the record fails (asserted above); a write is never forwarded.
    let mut deletes = Vec::new();
    for i in 0..5 {
        let tag = format!("strict-delete-{i}");
        let (status, body) = send(&client, &agent, &token, Method::DELETE, &path(&tag)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("cannot be recorded"), "{body}");
        deletes.push(tag);
    }
    let seen: HashSet<String> = server.requests().into_iter().map(|r| r.path).collect();
    for tag in &refused {
        assert!(
            seen.contains(&path(tag)),
            "the read {tag} waited for its record before going upstream"
        );
    }
    for tag in &deletes {
        assert!(
            !seen.contains(&path(tag)),
            "{tag} was refused yet reached the API server"
        );
    }
    let recorded: HashSet<String> = sessions::load(&strict_fs.0)
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.stage == kgate::record::event::STAGE_RECEIVED)
        .map(|e| e.request_uri)
        .collect();
    for tag in &served {
        assert!(
            recorded.contains(&path(tag)),
            "{tag} was served on a full disk without a record"
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
