//! The agent's admin endpoint and `kgate status`: probes without credentials,
//! `/metrics` and `/status` only for callers the API server vouches for (401 without
//! a token, 403 when the SubjectAccessReview says no), and a status table that
//! shows, and fails on, an agent that is down.

use std::{process::Command, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate_tests::{
    apiserver::{ApiServer, Config},
    harness::{Agent, free_port, https_client, kgate_bin, scratch_dir, text},
    recorder::{admin, eventually, get, sample},
};
use serde_json::Value;

/// A standalone agent in front of `server` with its admin endpoint on a free port.
fn agent_with_admin(server: &kgate_tests::apiserver::Handle) -> (Agent, u16) {
    agent_with_admin_and(server, "")
}

/// [`agent_with_admin`], with more config lines.
fn agent_with_admin_and(server: &kgate_tests::apiserver::Handle, extra: &str) -> (Agent, u16) {
    let port = free_port();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: ['*']}}\npolicy: {{defaultAction: allow}}\n\
             admin: {{listen: '127.0.0.1:{port}'}}\n{extra}"
        ),
    )
    .unwrap();
    (agent, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoint_and_kgate_status() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let (agent, port) = agent_with_admin(&server);
    let admin = format!("https://127.0.0.1:{port}");
    let client = https_client(&agent.ca_pem, false);
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(format!("{admin}{path}"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        client.request(req.body(Full::new(Bytes::new())).unwrap())
    };

    // Some traffic through the proxy, so the metrics have something to say.
    let proxy_req = Request::get(format!("{}/api/v1/namespaces/demo/pods", agent.url()))
        .header("authorization", format!("Bearer {}", server.admin_token()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        client.request(proxy_req).await.unwrap().status(),
        StatusCode::OK
    );

    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            get(probe, None).await.unwrap().status(),
            StatusCode::OK,
            "{probe}"
        );
    }
    let refused = get("/metrics", None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_str(&text(refused.into_body()).await).unwrap();
    assert_eq!(body["kind"], "Status");

    server.add_token("viewer-token");
    server.deny_access_reviews_for("token:viewer-token");
    let forbidden = get("/status", Some("viewer-token")).await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(
        text(forbidden.into_body())
            .await
            .contains("token:viewer-token may not get /status"),
    );

    let metrics = get("/metrics", Some(server.admin_token())).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = text(metrics.into_body()).await;
    assert!(
        metrics.contains("kgate_requests_total{decision=\"allow\",code=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kgate_request_duration_seconds_bucket"),
        "{metrics}"
    );
    for series in [
        "kgate_connections_total{origin=\"direct\"} ",
        "kgate_stage_duration_seconds_count{stage=\"identify\"} 1",
        "kgate_stage_duration_seconds_count{stage=\"forward\"} 1",
        "kgate_kernel_targets_synced 1",
    ] {
        assert!(metrics.contains(series), "no {series} in {metrics}");
    }
    let not_after = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kgate_serving_cert_not_after_seconds "))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {metrics}"));
    assert!(not_after > 1_700_000_000, "{metrics}");

    let status = get("/status", Some(server.admin_token())).await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let status: Value = serde_json::from_str(&text(status.into_body()).await).unwrap();
    assert_eq!(
        status["enforcing"], false,
        "a standalone agent attaches nothing"
    );
    assert_eq!(status["policiesLoaded"], true);
    let expiry = status["certNotAfter"]
        .as_i64()
        .unwrap_or_else(|| panic!("no serving certificate expiry in {status}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > i64::try_from(now).unwrap(), "{status}");

    // kgate status, with one agent up and one down.
    let dir = scratch_dir("status");
    std::fs::write(dir.join("ca.crt"), &agent.ca_pem).unwrap();
    std::fs::write(dir.join("token"), server.admin_token()).unwrap();
    let down = format!("https://127.0.0.1:{}", free_port());
    let out = tokio::task::spawn_blocking({
        let (admin, down, dir) = (admin.clone(), down.clone(), dir.to_path_buf());
        move || {
            Command::new(kgate_bin())
                .args(["status", "--agent", &admin, "--agent", &down, "--ca-file"])
                .arg(dir.join("ca.crt"))
                .arg("--token-file")
                .arg(dir.join("token"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let up_row = table.lines().find(|l| l.starts_with(&admin)).unwrap();
    assert!(
        up_row.contains("standalone") && up_row.contains(" no "),
        "{table}"
    );
    let down_row = table.lines().find(|l| l.starts_with(&down)).unwrap();
    assert!(down_row.contains("unreachable"), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not every agent is enforcing"));
}

#[test]
fn cert_issue_covers_the_kubernetes_service_names() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = scratch_dir("cert");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
    let issue = |extra: &[&str]| {
        Command::new(kgate_bin())
            .args(["cert", "issue", "--ca-cert"])
            .arg(dir.join("ca.crt"))
            .arg("--ca-key")
            .arg(dir.join("ca.key"))
            .args([
                "--cluster-ip",
                "10.96.0.1",
                "--cluster-ip",
                "fd00:96::1",
                "--dns",
                "node-1",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = issue(&["--out-dir", dir.join("tls").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read(dir.join("tls/tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    for want in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "node-1",
        // IP SANs as x509-parser prints them.
        "0a:60:00:01",
        "fd:00:00:96:00:00:00:00:00:00:00:00:00:00:00:01",
    ] {
        assert!(
            sans.iter().any(|s| s.contains(want)),
            "{want} missing from {sans:?}"
        );
    }
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 365);

    let out = issue(&["--secret", "kgate-serving-cert"]);
    let manifest = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && manifest.contains("type: kubernetes.io/tls")
            && manifest.contains("tls.key: "),
        "{manifest}"
    );
    let out = issue(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out-dir DIR or --secret NAME"));
}

/// `kgate status` with only a kubeconfig: every node's row from its agent's heartbeat
/// Lease, and a node whose agent stopped turns into "agent down" once its Lease lapses.
#[tokio::test(flavor = "multi_thread")]
async fn kgate_status_reads_heartbeat_leases_with_a_kubeconfig() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = |node: &str| {
        Agent::standalone_with(
            &server.url(),
            server.ca_pem(),
            server.admin_token(),
            &format!(
                "identity: {{nodeName: {node}, unboundSubjects: ['*']}}\n\
                 policy: {{defaultAction: allow}}\nheartbeat: {{intervalSeconds: 1}}\n"
            ),
        )
        .unwrap()
    };
    let first = agent("node-1");
    let second = agent("node-2");
    let dir = scratch_dir("status-leases");
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir,
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    let status = move |args: &[&str]| {
        let out = Command::new(kgate_bin())
            .arg("status")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let status = std::sync::Arc::new(status);
    let run = |args: &'static [&'static str]| {
        let status = status.clone();
        tokio::task::spawn_blocking(move || status(args))
    };
    let wait_for = |needle: &'static str| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (code, table, err) = run(&[]).await.unwrap();
            if table.contains(needle) || std::time::Instant::now() > deadline {
                return (code, table, err);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };

    // Both agents beat; standalone agents enforce nothing, so the answer is still 1.
    let (code, table, err) = wait_for("node-2               no        yes").await;
    let row = |table: &str, node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no row for {node}: {table}"))
            .to_owned()
    };
    assert!(table.starts_with("NODE "), "{table}");
    for node in ["node-1", "node-2"] {
        let row = row(&table, node);
        assert!(
            row.split_whitespace().nth(1) == Some("no") && !row.contains("down"),
            "{table}"
        );
    }
    assert_eq!(code, Some(1), "{table}");
    assert!(err.contains("not every agent is enforcing"), "{err}");
    let lease = server
        .get("leases", "kgate-system", "kgate-node-1")
        .expect("the heartbeat Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "node-1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);

    let (_, json, _) = run(&["-o", "json"]).await.unwrap();
    let rows: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["node"], "node-1", "{json}");
    assert_eq!(rows[0]["status"]["node"], "node-1", "{json}");
    assert_eq!(rows[0]["status"]["targetsSynced"], true, "{json}");

    // The second agent stops: its Lease lapses after three intervals.
    drop(second);
    let (code, table, _) = wait_for("agent down: last heartbeat").await;
    assert!(row(&table, "node-2").contains("agent down"), "{table}");
    assert!(!row(&table, "node-1").contains("down"), "{table}");
    assert_eq!(code, Some(1));
    drop(first);
}

/// `/loglevel`: read and replaced at runtime by callers the API server lets `get` or
/// `update` the path; a bad filter is refused with what is wrong, and the old one stays.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_filter_changes_at_runtime() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let (agent, port) = agent_with_admin(&server);
    let client = https_client(&agent.ca_pem, false);
    let call = |method: &str, token: Option<&str>, body: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1:{port}/loglevel"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let client = client.clone();
        async move {
            let response = client.request(req).await.unwrap();
            (response.status(), text(response.into_body()).await)
        }
    };
    let admin = Some(server.admin_token());
    let debug_lines = || {
        agent
            .log()
            .iter()
            .filter(|l| l.contains("\"level\":\"DEBUG\""))
            .count()
    };

    assert_eq!(call("GET", None, "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call("GET", admin, "").await,
        (StatusCode::OK, "info\n".to_owned())
    );
    let (code, body) = call("PUT", admin, "kgate=loud").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("invalid filter \\\"kgate=loud\\\""), "{body}");
    server.add_token("viewer-token");
    server.deny_access_reviews_for("token:viewer-token");
    let (code, body) = call("PUT", Some("viewer-token"), "debug").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("may not update /loglevel"), "{body}");
    assert_eq!(
        call("DELETE", admin, "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(debug_lines(), 0, "still at info");

    assert_eq!(
        call("PUT", admin, "debug").await,
        (StatusCode::OK, "debug\n".to_owned())
    );
    // Any request now leaves debug lines (hyper's and kgate's own).
    call("GET", admin, "").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while debug_lines() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(debug_lines() > 0, "no debug line after the change");
    assert!(agent.log().iter().any(|l| l.contains("log filter changed")));
}

/// A node's clients need more sockets than the usual soft limit of 1024: the agent
/// raises its open-files limit to the hard limit at start.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_raises_its_open_files_limit() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let (agent, _) = agent_with_admin(&server);
    // The same config on other ports, for an agent started with a low soft limit.
    let text = std::fs::read_to_string(agent.dir.join("agent.yaml")).unwrap();
    let text = text
        .replace(&agent.addr.port().to_string(), &free_port().to_string())
        .replace("admin: {listen:", "# admin: {listen:");
    let config = agent.dir.join("low-limit.yaml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg("--")
        .arg(kgate_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let limit = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("open files limit raised") || l.contains("agent listening"))
    })
    .await
    .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        limit.is_some_and(|l| l.contains("open files limit raised")),
        "no word of the limit"
    );
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(open_files[3..5], ["4096", "4096"], "{limits}");
}

/// Connections are spread over the worker threads, fewest open first, and each is
/// counted off when it closes.
#[tokio::test(flavor = "multi_thread")]
async fn connections_spread_over_the_workers_and_are_counted_off() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let (agent, port) = agent_with_admin_and(&server, "workers: 3\n");
    let token = server.admin_token().to_owned();
    let open = async || {
        let (_, metrics) = admin(&agent, port, &token, "/metrics").await;
        (0..3)
            .map(|worker| {
                let series = format!("kgate_open_connections{{worker=\"{worker}\"}}");
                sample(&metrics, &series).unwrap_or_else(|| panic!("no {series} in {metrics}"))
            })
            .collect::<Vec<f64>>()
    };
    // The counts once `total` connections are open.
    let settled = async |total: f64| {
        let what = format!("{total} open connections");
        eventually(&what, Duration::from_secs(10), async || {
            let now = open().await;
            (now.iter().sum::<f64>() == total).then_some(now)
        })
        .await
    };
    assert_eq!(settled(0.0).await, [0.0; 3]);

    // Seven connections that send nothing yet: none may go to a worker holding more
    // than the others.
    let held: Vec<_> = (0..7)
        .map(|_| std::net::TcpStream::connect(agent.addr).unwrap())
        .collect();
    let spread = settled(7.0).await;
    let mut sorted = spread.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        sorted,
        [2.0, 2.0, 3.0],
        "open connections by worker: {spread:?}"
    );

    // The workers serve requests: eight, over a fresh connection each.
    for _ in 0..8 {
        let fresh = https_client(&agent.ca_pem, false);
        let (status, body) = get(&fresh, &agent, &token, "/api/v1/namespaces/demo/pods").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    drop(held);
    assert_eq!(settled(0.0).await, [0.0; 3]);
}
