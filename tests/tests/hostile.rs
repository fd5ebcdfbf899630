//! Hostile clients against a standalone agent in front of the API-server double, in
//! raw bytes over TLS where the attack lives below HTTP: request smuggling (CL.TE,
//! TE.CL, duplicate and conflicting Content-Length, obs-fold, invalid chunk sizes, a
//! request hidden in a body), header and body limits, slowloris and slow-read
//! clients, a flood of malformed tokens, and deep or huge JSON through the masker.
//!
//! The double's request log is the oracle for desync: every request it saw must be
//! one that the agent parsed, authorized and forwarded as such.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle, Subject},
    fault_proxy::{Fault, FaultProxy},
    harness::{ADMIN_NO_SECRETS, Agent, ScratchDir, https_client, scratch_dir, text},
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

#[path = "hostile/slow.rs"]
mod slow;
#[path = "hostile/smuggling.rs"]
mod smuggling;
#[path = "hostile/tokens.rs"]
mod tokens;

use self::{
    slow::{client_hello, quiet_watch, time_to_close},
    smuggling::smuggling_cases,
    tokens::malformed_tokens,
};

struct Setup {
    server: Handle,
    agent: Agent,
    _dir: ScratchDir,
}

async fn setup(upstream: Option<&FaultProxy>, extra: &str) -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("hostile");
    let policy = dir.join("policy.yaml");
    // No Secrets for the admin: a smuggled Secret read that reached the API server
    // would have passed kgate unseen.
    std::fs::write(&policy, ADMIN_NO_SECRETS).unwrap();
    let (url, ca) = match upstream {
        Some(proxy) => (proxy.url(), proxy.ca_pem().to_owned()),
        None => (server.url(), server.ca_pem().to_owned()),
    };
    let agent = Agent::standalone_with(
        &url,
        &ca,
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow, files: ['{}']}}\n{extra}",
            policy.display()
        ),
    )
    .unwrap();
    Setup {
        server,
        agent,
        _dir: dir,
    }
}

/// A TLS connection to the agent offering only `alpn`.
async fn connect(agent: &Agent, alpn: &[u8]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(agent.addr).await.unwrap();
    tls_connector(agent, alpn)
        .connect(ServerName::from(IpAddr::from([127, 0, 0, 1])), tcp)
        .await
        .unwrap()
}

fn tls_connector(agent: &Agent, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(agent.ca_pem.as_bytes()).flatten() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends `bytes` and reads until the agent closes or is quiet for `quiet`: what came
/// back, and whether the agent closed the connection.
async fn exchange(bytes: &[u8], agent: &Agent, quiet: Duration) -> (Vec<u8>, bool) {
    let mut tls = connect(agent, b"http/1.1").await;
    // A refusal may close the connection before everything is written: not an error.
    let _ = tls.write_all(bytes).await;
    let _ = tls.flush().await;
    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match tokio::time::timeout(quiet, tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// The status codes of the HTTP/1.1 responses in `bytes`.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    // Pipelined answers follow each other's bodies directly; no body here says this.
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

// === smuggling ===

#[tokio::test(flavor = "multi_thread")]
async fn smuggled_requests_never_desync_the_agent_and_the_api_server() {
    let s = setup(None, "").await;
    let cases = smuggling_cases(s.server.admin_token());
    let runs = cases.iter().map(|case| {
        let agent = &s.agent;
        async move {
            (
                case,
                exchange(&case.bytes, agent, Duration::from_secs(3)).await,
            )
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let seen = s.server.requests();
    let mut failures = Vec::new();
    for (case, (answer, closed)) in &results {
        let codes = statuses(answer);
        let forwarded = seen
            .iter()
            .filter(|r| r.query.contains(&format!("case={}", case.name)))
            .count();
        eprintln!(
            "{:<15} answers {codes:?}, closed: {closed}, forwarded: {forwarded}",
            case.name
        );
        // Whatever kgate read after the first request is a request of its own: it
        // has no token, so kgate answers 401 to it and forwards nothing.
        let later_ok = codes.iter().skip(1).all(|&c| matches!(c, 400 | 401));
        let refused = codes.first().is_none_or(|&c| c == 400) && forwarded == 0;
        // RFC 9112 §6.1: a request with both framings may be read by Transfer-Encoding
        // alone, but the connection must close after it.
        let both = case.name == "cl_te" || case.name == "te_cl";
        if forwarded > 1 || !later_ok || (case.must_refuse && !refused) || (both && !closed) {
            failures.push(format!(
                "{}: answers {codes:?}, forwarded {forwarded}: {}",
                case.name,
                String::from_utf8_lossy(answer)
            ));
        }
    }
    let smuggled: Vec<_> = seen
        .iter()
        .filter(|r| r.query.contains("smuggled=") || r.path.contains("secrets"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(
        smuggled.is_empty(),
        "requests the agent never authorized reached the API server: {smuggled:?}"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // The pooled upstream connections are still in step: an honest request gets its
    // own answer.
    let client = https_client(&s.agent.ca_pem, false);
    let response = client
        .request(
            Request::get(format!(
                "{}/api/v1/namespaces/demo/configmaps/app-config",
                s.agent.url()
            ))
            .header(
                "authorization",
                format!("Bearer {}", s.server.admin_token()),
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&text(response.into_body()).await).unwrap();
    assert_eq!(body["metadata"]["name"], "app-config");
    assert!(!s.agent.log().iter().any(|l| l.contains("panicked")));
}

// === limits ===

async fn post_configmap(
    s: &Setup,
    http2: bool,
    body: Vec<u8>,
    extra: Option<(&str, String)>,
) -> (StatusCode, String) {
    post(s, "configmaps", http2, body, extra).await
}

async fn post(
    s: &Setup,
    resource: &str,
    http2: bool,
    body: Vec<u8>,
    extra: Option<(&str, String)>,
) -> (StatusCode, String) {
    let client = https_client(&s.agent.ca_pem, http2);
    let mut req = Request::post(format!(
        "{}/api/v1/namespaces/demo/{resource}",
        s.agent.url()
    ))
    .header(
        "authorization",
        format!("Bearer {}", s.server.admin_token()),
    )
    .header("content-type", "application/json");
    if let Some((name, value)) = extra {
        req = req.header(name, value);
    }
    match client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
    {
        Ok(response) => (response.status(), text(response.into_body()).await),
        Err(error) => (StatusCode::from_u16(599).unwrap(), error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_and_bodies_get_the_api_servers_answers() {
    let s = setup(None, "").await;
    let configmap = |pad: usize| {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("big-{pad}")},
            "data": {"pad": "x".repeat(pad)},
        }))
        .unwrap()
    };
    for http2 in [false, true] {
        // Above the API server's 1 MiB head limit, below hyper's own: kgate's Status.
        let (code, body) = post_configmap(
            &s,
            http2,
            configmap(10),
            Some(("x-pad", "p".repeat(1_500_000))),
        )
        .await;
        assert_eq!(code, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some(431))
        );
        // Far above: refused at the parser, the connection closed or answered 431.
        let (code, _) = post_configmap(
            &s,
            http2,
            configmap(10),
            Some(("x-pad", "p".repeat(5_000_000))),
        )
        .await;
        assert!(
            matches!(code.as_u16(), 431 | 599),
            "a 5 MB header was answered {code}"
        );
        // The API server's 3 MiB body limit: its 413 Status, streamed through.
        let (code, body) = post_configmap(&s, http2, configmap(4 << 20), None).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(body.contains("\"kind\":\"Status\""), "{body}");
        // Under it: created.
        let (code, body) = post_configmap(&s, http2, configmap(2 << 20), None).await;
        assert!(
            code == StatusCode::CREATED || code == StatusCode::CONFLICT,
            "{code} {body}"
        );
    }
    // Refused unread (policy denies Secrets): the client still reads the refusal, not
    // a reset that came before it. 2 MiB is more than the sockets' buffers take.
    for http2 in [false, true] {
        for _ in 0..5 {
            let (code, body) = post(&s, "secrets", http2, configmap(2 << 20), None).await;
            assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("no secrets here"), "{body}");
        }
    }
    // The agent still serves.
    let (code, body) = post_configmap(&s, true, configmap(1), None).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert!(!s.agent.log().iter().any(|l| l.contains("panicked")));
}

// === slow clients ===

/// The cut-off deadline the agent promises (30 s), with room for a loaded machine.
const CUT_OFF: Duration = Duration::from_secs(35);

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_cut_off_and_quiet_watches_are_not() {
    let s = setup(None, "").await;
    let agent = &s.agent;
    let token = s.server.admin_token();
    let head = format!(
        "GET /api/v1/namespaces/demo/pods HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {token}\r\n"
    );
    let hello = client_hello(agent);
    let tcp = || TcpStream::connect(agent.addr);
    let clients = async {
        tokio::join!(
            // Connects and says nothing.
            async { time_to_close(tcp().await.unwrap(), Vec::new(), Vec::new()).await },
            // Dribbles its ClientHello.
            async { time_to_close(tcp().await.unwrap(), Vec::new(), hello.clone()).await },
            // TLS, then nothing (HTTP/1.1 and h2).
            async {
                time_to_close(connect(agent, b"http/1.1").await, Vec::new(), Vec::new()).await
            },
            async { time_to_close(connect(agent, b"h2").await, Vec::new(), Vec::new()).await },
            // Dribbles the h2 preface.
            async {
                let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                time_to_close(connect(agent, b"h2").await, Vec::new(), preface).await
            },
            // A request head that never ends.
            async {
                time_to_close(
                    connect(agent, b"http/1.1").await,
                    head.clone().into_bytes(),
                    b"X-Slow: loris\r\n".to_vec(),
                )
                .await
            },
        )
    };
    let watch = quiet_watch(&s, Duration::from_secs(45));
    let (cut, watched) = tokio::join!(clients, watch);
    let cut = [
        ("tcp silent", cut.0),
        ("tls hello dribbled", cut.1),
        ("http/1.1 silent", cut.2),
        ("h2 silent", cut.3),
        ("h2 preface dribbled", cut.4),
        ("http/1.1 head dribbled", cut.5),
    ];
    for (client, after) in cut {
        eprintln!("{client}: cut off after {after:?}");
        assert!(after < CUT_OFF, "{client}: still connected after {after:?}");
    }
    let event = watched.expect("the quiet watch stayed open");
    assert!(event.contains("after-the-silence"), "{event}");
    assert!(!s.agent.log().iter().any(|l| l.contains("panicked")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off() {
    let s = setup(None, "").await;
    // About 40 MB of list: far more than the socket buffers hold.
    s.server.insert_configmaps("demo", 2000, 20_000);
    let mut tls = connect(&s.agent, b"http/1.1").await;
    let request = format!(
        "GET /api/v1/namespaces/demo/configmaps HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {}\r\n\r\n",
        s.server.admin_token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0; 1024];
    let n = tls.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // Reads nothing for the deadline; then takes what is left.
    tokio::time::sleep(CUT_OFF).await;
    let mut rest = Vec::new();
    let mut buf = vec![0; 1 << 20];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => rest.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    eprintln!(
        "after the stall: {} more bytes, then the end: {ended}",
        rest.len()
    );
    assert!(ended, "the connection neither ended nor went on");
    assert!(
        !rest.ends_with(b"\r\n0\r\n\r\n"),
        "the whole 40 MB response arrived: the stalled client was never cut off"
    );
    assert!(
        rest.len() < 30 << 20,
        "{} bytes arrived after the stall",
        rest.len()
    );
}

// === tokens ===

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_malformed_tokens_are_refused_with_bounded_memory() {
    let s = setup(None, "").await;
    let tokens = malformed_tokens(&s.server, 10_000);
    let client = https_client(&s.agent.ca_pem, true);
    let url = format!("{}/api/v1/namespaces/demo/pods", s.agent.url());
    let before_kib = s.agent.peak_rss_kib();
    let upstream_before = s.server.requests().len();
    let started = Instant::now();
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    let mut not_status = Vec::new();
    for batch in tokens.chunks(64) {
        let requests = batch.iter().map(|token| {
            let req = Request::get(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let client = client.clone();
            async move {
                let response = client.request(req).await.unwrap();
                let code = response.status().as_u16();
                (code, text(response.into_body()).await)
            }
        });
        for (code, body) in futures_util::future::join_all(requests).await {
            *codes.entry(code).or_default() += 1;
            if !body.contains("\"kind\":\"Status\"") && not_status.len() < 3 {
                not_status.push(body);
            }
        }
    }
    let after_kib = s.agent.peak_rss_kib();
    let pods_forwarded = s.server.requests()[upstream_before..]
        .iter()
        .filter(|r| r.path.ends_with("/pods"))
        .count();
    eprintln!(
        "10,000 malformed tokens in {:?}: {codes:?}; agent peak RSS {before_kib} KiB before, {after_kib} KiB after",
        started.elapsed()
    );
    assert_eq!(codes.get(&401), Some(&10_000), "{codes:?}");
    assert!(
        not_status.is_empty(),
        "refusals that are not a Status: {not_status:?}"
    );
    assert_eq!(
        pods_forwarded, 0,
        "a request with a malformed token was forwarded"
    );
    // The verdict cache is bounded; 10,000 tokens must not grow the agent by more
    // than a few tens of MiB over its baseline.
    assert!(
        after_kib < before_kib + 64 * 1024,
        "peak RSS grew from {before_kib} KiB to {after_kib} KiB"
    );
    assert!(!s.agent.log().iter().any(|l| l.contains("panicked")));
    // And honest clients still get in.
    let response = client
        .request(
            Request::get(&url)
                .header(
                    "authorization",
                    format!("Bearer {}", s.server.admin_token()),
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// === hostile JSON through the masker ===

#[tokio::test(flavor = "multi_thread")]
async fn deep_and_huge_json_is_masked_or_refused_with_bounded_memory() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    let dir = scratch_dir("hostile-json");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "").unwrap();
    let agent = Agent::standalone_with(
        &proxy.url(),
        proxy.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow, files: ['{}']}}\n",
            policy.display()
        ),
    )
    .unwrap();
    let client = https_client(&agent.ca_pem, true);
    let get = |path: &str| {
        let req = Request::get(format!("{}{path}", agent.url()))
            .header("authorization", format!("Bearer {}", server.admin_token()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.request(req).await.unwrap();
            let code = response.status();
            (code, text(response.into_body()).await)
        }
    };
    let baseline_kib = agent.peak_rss_kib();

    // 100,000 nested arrays in a Secret: too deep to parse, so refused, never passed.
    let depth = 100_000;
    let deep = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"deep"}},"data":{{"k":"czNjcjN0"}},"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    proxy.set(Fault::Respond {
        prefix: "/api/v1/namespaces/demo/secrets/deep".into(),
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from(deep),
    });
    let (code, body) = get("/api/v1/namespaces/demo/secrets/deep").await;
    assert_eq!(
        code,
        StatusCode::BAD_GATEWAY,
        "{}",
        &body[..body.len().min(300)]
    );
    assert!(
        body.contains("\"kind\":\"Status\"") && !body.contains("czNjcjN0"),
        "{body}"
    );

    // 100,000 nested arrays as a watch event: the stream ends, nothing leaks.
    let event = format!(
        "{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Secret\",\"data\":{{\"k\":\"czNjcjN0\"}},\"x\":{}{}}}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    proxy.set(Fault::Respond {
        prefix: "/api/v1/namespaces/demo/secrets".into(),
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from(event),
    });
    // The stream is cut: after its 200 head, or (when the masker fails first) by a
    // stream reset before it. Either way, nothing of the event arrives.
    let req = Request::get(format!(
        "{}/api/v1/namespaces/demo/secrets?watch=1",
        agent.url()
    ))
    .header("authorization", format!("Bearer {}", server.admin_token()))
    .body(Full::new(Bytes::new()))
    .unwrap();
    if let Ok(response) = client.request(req).await {
        let code = response.status();
        let body = text(response.into_body()).await;
        assert!(
            !body.contains("czNjcjN0"),
            "a deep watch event leaked: {code} {body}"
        );
    }
    proxy.set(Fault::None);

    // A 50 MB value in a Secret, from the real double: masked, memory bounded by a
    // small multiple of the one object.
    server.insert_secrets("demo", 1, 50 << 20);
    let (code, body) = get("/api/v1/namespaces/demo/secrets/bulk-0000000").await;
    assert_eq!(code, StatusCode::OK);
    let secret: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(secret["data"]["blob"], kgate::mask::MASKED_BASE64);
    let (code, body) = get("/api/v1/namespaces/demo/secrets").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.len() < 1 << 20 && body.contains(kgate::mask::MASKED_BASE64));
    let peak_kib = agent.peak_rss_kib();
    eprintln!("agent peak RSS: {baseline_kib} KiB before, {peak_kib} KiB after a 50 MB Secret");
    assert!(
        peak_kib < baseline_kib + 6 * 50 * 1024,
        "peak RSS {peak_kib} KiB for a 50 MB object (baseline {baseline_kib} KiB)"
    );
    assert!(!agent.log().iter().any(|l| l.contains("panicked")));
}
