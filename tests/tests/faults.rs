//! Faults on the agent's path to the API server, injected by a fault proxy between a
//! standalone agent and the API-server double: the API server down, resetting
//! connections, speaking garbage, hanging, slow, or answering a Secret read with
//! something that is not JSON. Each must give the client a clear Kubernetes Status
//! (503 when the API server cannot be reached or breaks the exchange, 504 when it
//! takes a request and never answers, 502 when its answer cannot be masked), and the
//! agent must recover as soon as the API server is back. When the cluster's policies
//! cannot be read, the last good ones stay in force; when none ever loaded, requests
//! get a 503, never a pass.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    fault_proxy::{Fault, FaultProxy},
    harness::{Agent, HttpsClient, https_client, text},
};
use serde_json::{Value, json};

struct Setup {
    server: Handle,
    proxy: FaultProxy,
    agent: Agent,
}

/// The agent's upstream is the fault proxy; the admin's TokenReview verdict is cached
/// for an hour, so that identity does not hide the fault under test.
async fn setup(extra: &str) -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    let agent = Agent::standalone_full(
        &proxy.url(),
        proxy.ca_pem(),
        server.admin_token(),
        "responseTimeoutSeconds: 3",
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin], tokenReviewCacheSeconds: 3600}}\n{extra}"
        ),
    );
    let agent = agent.unwrap();
    Setup {
        server,
        proxy,
        agent,
    }
}

/// GET `path` as the admin: the code and the body.
async fn get(client: &HttpsClient, s: &Setup, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("{}{path}", s.agent.url()))
        .header(
            "authorization",
            format!("Bearer {}", s.server.admin_token()),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
        Ok(Ok(response)) => {
            let code = response.status();
            (code, text(response.into_body()).await)
        }
        Ok(Err(error)) => panic!("GET {path}: the agent broke the exchange: {error}"),
        Err(_) => panic!("GET {path}: no answer from the agent in 30 s"),
    }
}

/// The Status in `body`, with `code`.
fn status(body: &str, code: u16) -> Value {
    let status: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["code"], code, "{body}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("kgate: ")),
        "{body}"
    );
    status
}

/// After a fault ends, the agent serves again within a few seconds (the pool's broken
/// connections are dropped, new ones made).
async fn recovers(client: &HttpsClient, s: &Setup, after: &str) {
    s.proxy.set(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = get(client, s, "/api/v1/namespaces/demo/configmaps/app-config").await;
        if code == StatusCode::OK {
            assert!(body.contains("app-config"), "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after {after}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_api_server_gives_statuses_and_the_agent_recovers() {
    let s = setup("policy: {defaultAction: allow}\n").await;
    let path = "/api/v1/namespaces/demo/configmaps/app-config";
    for http2 in [true, false] {
        let client = https_client(&s.agent.ca_pem, http2);
        // Warm: identity cached, pooled upstream connections open.
        recovers(&client, &s, "start").await;
        for (fault, code, says) in [
            (Fault::Down, 503, "upstream API server unavailable"),
            (Fault::Reset, 503, "upstream API server unavailable"),
            (Fault::Garbage, 503, "upstream API server unavailable"),
            (Fault::Blackhole, 504, "did not answer within 3 s"),
            (
                Fault::Delay(Duration::from_secs(6)),
                504,
                "did not answer within 3 s",
            ),
            (
                Fault::Respond {
                    prefix: "/api/v1/namespaces/demo/secrets".into(),
                    status: 200,
                    content_type: "application/json".into(),
                    body: Bytes::from_static(b"{\"kind\":\"Secret\",\"data\":{\"k\":\"czNjcjN0\"}"),
                },
                502,
                "cannot be masked",
            ),
            (
                Fault::Respond {
                    prefix: "/api/v1/namespaces/demo/secrets".into(),
                    status: 200,
                    content_type: "application/json".into(),
                    body: Bytes::from_static(b"\x00\x01 czNjcjN0 not json at all"),
                },
                502,
                "cannot be masked",
            ),
        ] {
            let name = format!("{fault:?} (http2: {http2})");
            s.proxy.set(fault.clone());
            let target = if matches!(fault, Fault::Respond { .. }) {
                "/api/v1/namespaces/demo/secrets/db-creds"
            } else {
                path
            };
            let started = Instant::now();
            let (mut got, mut body) = get(&client, &s, target).await;
            if matches!(fault, Fault::Blackhole) && got == StatusCode::SERVICE_UNAVAILABLE {
                // The proxy closed the pooled connection as the request went out on it:
                // that request fails (503, fail closed); the next one dials afresh and
                // meets the silence.
                eprintln!("{name}: {got} on the closing connection; again");
                (got, body) = get(&client, &s, target).await;
            }
            eprintln!("{name}: {got} after {:?}", started.elapsed());
            assert_eq!(got.as_u16(), code, "{name}: {body}");
            let status = status(&body, code);
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains(says) || body.contains(says),
                "{name}: {message}"
            );
            assert!(
                !body.contains("czNjcjN0"),
                "{name}: the Secret's value leaked: {body}"
            );
            recovers(&client, &s, &name).await;
        }
        // Slow but within the deadline: the real answer, late.
        s.proxy.set(Fault::Delay(Duration::from_secs(1)));
        let (code, body) = get(&client, &s, path).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        s.proxy.set(Fault::None);
    }
    // A watch is long-running: a slow API server does not time it out.
    s.proxy.set(Fault::Delay(Duration::from_secs(4)));
    let client = https_client(&s.agent.ca_pem, true);
    let req = Request::get(format!(
        "{}/api/v1/namespaces/demo/configmaps?watch=1&timeoutSeconds=1",
        s.agent.url()
    ))
    .header(
        "authorization",
        format!("Bearer {}", s.server.admin_token()),
    )
    .body(Full::new(Bytes::new()))
    .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    s.proxy.set(Fault::None);
    assert!(!s.agent.log().iter().any(|l| l.contains("panicked")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_during_an_outage_is_a_503_not_a_hang() {
    let s = setup("policy: {defaultAction: allow}\n").await;
    let client = https_client(&s.agent.ca_pem, true);
    let token = "not-a-jwt-and-never-seen";
    s.server.add_token(token);
    s.proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let req = Request::get(format!("{}/api/v1/namespaces/demo/pods", s.agent.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let code = response.status();
    let body = text(response.into_body()).await;
    eprintln!(
        "TokenReview against a hung API server: {code} after {:?}",
        started.elapsed()
    );
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        status(&body, 503)["message"]
            .as_str()
            .unwrap()
            .contains("cannot verify the bearer token")
    );
    s.proxy.set(Fault::None);
}

const CLUSTER_POLICY: &str = r#"{
  "apiVersion": "kgate.io/v1alpha1", "kind": "KgatePolicy",
  "metadata": {"name": "admins"},
  "spec": {
    "subjects": {"users": ["kubernetes-admin"]},
    "rules": [{"name": "no-secrets", "match": {"resources": ["secrets"]}, "action": "deny", "message": "no secrets here"}]
  }
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_policy_store_keeps_the_last_good_policies() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    server
        .create(
            "kgatepolicies",
            "",
            serde_json::from_str(CLUSTER_POLICY).unwrap(),
        )
        .unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    let agent = Agent::standalone_full(
        &proxy.url(),
        proxy.ca_pem(),
        server.admin_token(),
        "",
        "identity: {unboundSubjects: [kubernetes-admin], tokenReviewCacheSeconds: 3600}\n\
         policy: {cluster: true, defaultAction: allow}\n",
    )
    .unwrap();
    agent
        .wait_for("cluster policies loaded", Duration::from_secs(20))
        .unwrap();
    let s = Setup {
        server,
        proxy,
        agent,
    };
    let client = https_client(&s.agent.ca_pem, true);
    let secret = "/api/v1/namespaces/demo/secrets/db-creds";
    let (code, body) = get(&client, &s, secret).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    // The policy store goes away: the watch's connection is cut, and every list and
    // watch of policies fails from now on. The rest of the API still answers.
    s.proxy.set(Fault::Reset);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.proxy.set(Fault::Respond {
        prefix: "/apis/kgate.io/".into(),
        status: 503,
        content_type: "application/json".into(),
        body: Bytes::from(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503, "message": "etcd is down"})
                .to_string(),
        ),
    });
    s.agent
        .wait_for("policy watch failed", Duration::from_secs(30))
        .unwrap();
    // Over several of the watcher's retries, the last good policy decides.
    for _ in 0..5 {
        let (code, body) = get(&client, &s, secret).await;
        assert_eq!(
            code,
            StatusCode::FORBIDDEN,
            "the deny rule was dropped: {body}"
        );
        assert!(body.contains("no secrets here"), "{body}");
        let (code, body) = get(&client, &s, "/api/v1/namespaces/demo/configmaps/app-config").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Back: the watch resumes and the same policy still holds.
    s.proxy.set(Fault::None);
    let (code, _) = get(&client, &s, secret).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_any_loaded_policy_nothing_passes() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let proxy = FaultProxy::start(&server.url(), server.ca_pem())
        .await
        .unwrap();
    proxy.set(Fault::Respond {
        prefix: "/apis/kgate.io/".into(),
        status: 500,
        content_type: "text/plain".into(),
        body: Bytes::from_static(b"internal error"),
    });
    let agent = Agent::standalone_full(
        &proxy.url(),
        proxy.ca_pem(),
        server.admin_token(),
        "",
        "identity: {unboundSubjects: [kubernetes-admin], tokenReviewCacheSeconds: 3600}\n\
         policy: {cluster: true, defaultAction: allow}\n",
    )
    .unwrap();
    let s = Setup {
        server,
        proxy,
        agent,
    };
    let client = https_client(&s.agent.ca_pem, true);
    let seen_before = s.server.requests().len();
    for _ in 0..3 {
        let (code, body) = get(&client, &s, "/api/v1/namespaces/demo/configmaps/app-config").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            status(&body, 503)["message"]
                .as_str()
                .unwrap()
                .contains("policies have not loaded"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let forwarded = s.server.requests()[seen_before..]
        .iter()
        .filter(|r| r.path.contains("configmaps"))
        .count();
    assert_eq!(forwarded, 0, "a request passed without a policy");
    // The store comes back: the policies load and decide.
    s.proxy.set(Fault::None);
    s.agent
        .wait_for("cluster policies loaded", Duration::from_secs(60))
        .unwrap();
    let (code, body) = get(&client, &s, "/api/v1/namespaces/demo/configmaps/app-config").await;
    assert_eq!(code, StatusCode::OK, "{body}");
}
