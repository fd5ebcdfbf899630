//! Workload identity through a standalone agent in front of the API-server double:
//! projected tokens verified locally against the double's JWKS (no upstream call per
//! token), TokenReview for what cannot be verified locally (cached), 401/403 Statuses
//! for missing, invalid and misused tokens (a stolen token's refusal recorded with its
//! user and pods), and impersonation mode.
//!
//! Pod binding from the kernel's side (a token used from another pod's cgroup) is in
//! `ebpf.rs`: it needs the netns topology.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kgate::record::{
    event::{self, Event},
    sessions,
};
use kgate_tests::{
    apiserver::{ApiServer, Config, DEFAULT_ISSUER, Handle, Subject},
    harness::{
        Agent, Kubectl, free_port, https_client, kgate_bin, scratch_dir, service_account, text,
    },
};
use serde_json::{Value, json};

const IDENTITY: &str = "identity:\n  unboundSubjects: [kubernetes-admin, 'system:serviceaccount:demo:bot', 'system:serviceaccount:demo:imp-*', 'token:*']\n  impersonate: ['system:serviceaccount:demo:imp-*']\npolicy: {defaultAction: allow}\n";

struct Setup {
    server: Handle,
    agent: Agent,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// As [`setup`], with `extra` appended to the agent's config.
async fn setup_with(extra: &str) -> Setup {
    setup_on(Config::default(), extra).await
}

/// As [`setup_with`], in front of a double started with `config`.
async fn setup_on(config: Config, extra: &str) -> Setup {
    let server = ApiServer::start(config).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!("{IDENTITY}{extra}"),
    )
    .unwrap();
    agent
        .wait_for(
            "service-account JWKS loaded",
            std::time::Duration::from_secs(20),
        )
        .unwrap();
    Setup { server, agent }
}

impl Setup {
    fn service_account(&self, name: &str) -> Subject {
        service_account(&self.server, name)
    }

    fn token(&self, subject: &Subject) -> String {
        self.server
            .mint_token(subject, &[DEFAULT_ISSUER.to_owned()], 3600)
    }

    /// GET `path` through kgate with `token` (none: no Authorization header).
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.agent.url()));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = https_client(&self.agent.ca_pem, false)
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = text(response.into_body()).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The agent's `/metrics` on its admin port, as the admin.
    async fn admin_metrics(&self, port: u16) -> String {
        let req = Request::get(format!("https://127.0.0.1:{port}/metrics"))
            .header(
                "authorization",
                format!("Bearer {}", self.server.admin_token()),
            )
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = https_client(&self.agent.ca_pem, false)
            .request(req)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        text(response.into_body()).await
    }

    /// How many requests for `path` reached the double.
    fn upstream_count(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

const PODS: &str = "/api/v1/namespaces/demo/pods";
const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// On a cluster whose API audience is not its issuer (EKS: tokens for
/// `https://kubernetes.default.svc` under an `oidc.eks` issuer), the pods' tokens are
/// verified locally with no `identity.audiences` set: the agent's own projected token
/// names the API server's audiences. A token for the issuer alone, which the API
/// server refuses as well, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_audiences_come_from_the_agents_own_token() {
    let config = Config::eks_shaped();
    // Tokens for the API audiences, or for the issuer alone.
    let (api, issuer) = (config.api_audiences.clone(), [config.issuer.clone()]);
    let server = ApiServer::start(config).await.unwrap();
    let agent_token = server.mint_token(&service_account(&server, "kgate"), &api, 3600);
    let agent =
        Agent::standalone_with(&server.url(), server.ca_pem(), &agent_token, IDENTITY).unwrap();
    agent
        .wait_for(
            "service-account JWKS loaded",
            std::time::Duration::from_secs(20),
        )
        .unwrap();
    let s = Setup { server, agent };
    let bot = s.service_account("bot");
    let for_api = s.server.mint_token(&bot, &api, 3600);
    let (status, body) = s.get(PODS, Some(&for_api)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.upstream_count(REVIEWS), 0, "verified locally");
    let for_issuer = s.server.mint_token(&bot, &issuer, 3600);
    let (status, body) = s.get(PODS, Some(&for_issuer)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("audience"),
        "{body}"
    );
}

fn assert_status(got: &(StatusCode, Value), code: StatusCode, needle: &str) {
    assert_eq!(got.0, code, "{}", got.1);
    assert_eq!(got.1["kind"], "Status", "{}", got.1);
    assert_eq!(got.1["code"], code.as_u16(), "{}", got.1);
    let message = got.1["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("kgate: ") && message.contains(needle),
        "{message:?} does not contain {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn projected_tokens_are_verified_locally() {
    let s = setup().await;
    let bot = s.service_account("bot");
    let token = s.token(&bot);
    let reviews = s.upstream_count(REVIEWS);
    for _ in 0..3 {
        let (code, body) = s.get(PODS, Some(&token)).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(
        s.upstream_count(REVIEWS),
        reviews,
        "a token of the API server's issuer needs no TokenReview"
    );
    assert!(
        s.agent
            .log()
            .iter()
            .any(|l| l.contains("system:serviceaccount:demo:bot") && l.contains("\"status\":200")),
        "the request record names the verified user"
    );

    // A new signing key: its first token makes kgate fetch the JWKS again (or ask
    // TokenReview while a refresh is rate limited); either way it is accepted.
    s.server.rotate_signing_key();
    let (code, body) = s.get(PODS, Some(&s.token(&bot))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// With `--service-account-jwks-uri`, OIDC discovery names where relying parties
/// outside fetch the keys (an object store, an OIDC front); the API server still
/// serves them at /openid/v1/jwks, and that is where kgate reads them: tokens verify
/// locally, with no TokenReview.
#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_comes_from_the_api_server_whatever_jwks_uri_says() {
    let config = Config {
        jwks_uri: Some("https://oidc.example.test/cluster-1/keys".into()),
        ..Config::default()
    };
    // Waits for the agent to load the JWKS.
    let s = setup_on(config, "").await;
    let token = s.token(&s.service_account("bot"));
    let reviews = s.upstream_count(REVIEWS);
    let (code, body) = s.get(PODS, Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(s.upstream_count(REVIEWS), reviews, "verified locally");
    assert_eq!(s.upstream_count("/cluster-1/keys"), 0);
    assert!(s.upstream_count("/openid/v1/jwks") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_misused_tokens_are_refused_before_the_api_server() {
    let s = setup().await;
    let bot = s.service_account("bot");
    let forwarded = s.upstream_count(PODS);
    let claims = |f: &dyn Fn(&mut Value)| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut c = json!({
            "iss": DEFAULT_ISSUER, "aud": [DEFAULT_ISSUER], "exp": now + 600, "iat": now, "nbf": now,
            "sub": "system:serviceaccount:demo:bot",
            "kubernetes.io": {"namespace": "demo", "serviceaccount": {"name": "bot", "uid": bot.service_account_uid}},
        });
        f(&mut c);
        s.server.sign_claims(&c)
    };

    let cases = [
        (None, StatusCode::UNAUTHORIZED, "bearer token is required"),
        (
            Some(
                s.server
                    .mint_foreign_token(&bot, &[DEFAULT_ISSUER.into()], 600),
            ),
            StatusCode::UNAUTHORIZED,
            // An unknown key id: the API server's TokenReview is the judge.
            "invalid bearer token",
        ),
        (
            Some(claims(&|c| c["exp"] = json!(1_000_000))),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            Some(claims(&|c| c["aud"] = json!(["https://vault.example"]))),
            StatusCode::UNAUTHORIZED,
            "audience",
        ),
        (
            Some(claims(&|c| {
                c["sub"] = json!("system:serviceaccount:kube-system:admin");
            })),
            StatusCode::UNAUTHORIZED,
            "does not name the token's service account",
        ),
        // Bound to web-0, presented by a client kgate cannot attribute to that pod.
        (
            Some(
                s.token(&Subject {
                    pod: Some((
                        "web-0".into(),
                        s.server.get("pods", "demo", "web-0").unwrap()["metadata"]["uid"]
                            .as_str()
                            .unwrap()
                            .into(),
                        Some("node-1".into()),
                    )),
                    ..bot.clone()
                }),
            ),
            StatusCode::FORBIDDEN,
            "token bound to pod demo/web-0",
        ),
        // Unbound, and not a subject allowed unbound tokens.
        (
            Some(s.token(&s.service_account("deployer"))),
            StatusCode::FORBIDDEN,
            "unboundSubjects",
        ),
    ];
    for (token, code, needle) in cases {
        let got = s.get(PODS, token.as_deref()).await;
        assert_status(&got, code, needle);
    }
    assert_eq!(
        s.upstream_count(PODS),
        forwarded,
        "nothing refused reached the API server"
    );
}

/// A stolen token's refusal is recorded with who verified and both pods: the user the
/// token stands for (as an allowed request's record has it), the pod the token is bound
/// to, and where the connection came from (here a direct client: no pod; a pod's
/// connection is in `kgate::proxy::record` unit tests, a kernel rig in `cluster.rs`),
/// so that `kgate sessions list --user/--pod` finds the attempt. The stolen-token
/// counter counts it; an unbound token's refusal is not a stolen token.
#[tokio::test(flavor = "multi_thread")]
async fn a_stolen_tokens_refusal_is_recorded_with_its_user_and_both_pods() {
    let dir = scratch_dir("identity-stolen");
    let records = dir.join("records");
    let admin_port = free_port();
    let s = setup_with(&format!(
        "record: {{dir: '{}', durability: strict}}\nadmin: {{listen: '127.0.0.1:{admin_port}'}}\n",
        records.display()
    ))
    .await;
    let bot = s.service_account("bot");
    let web_uid = s.server.get("pods", "demo", "web-0").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let stolen = s.token(&Subject {
        pod: Some(("web-0".into(), web_uid.clone(), Some("node-1".into()))),
        ..bot.clone()
    });
    let got = s.get(PODS, Some(&stolen)).await;
    assert_status(&got, StatusCode::FORBIDDEN, "token bound to pod demo/web-0");
    // Not bound, not allowed unbound: refused, but no stolen token.
    let unbound = s.token(&s.service_account("deployer"));
    let got = s.get(PODS, Some(&unbound)).await;
    assert_status(&got, StatusCode::FORBIDDEN, "unboundSubjects");

    let refusal = |events: &[Event], user: &str| {
        events
            .iter()
            .find(|e| e.code() == Some(403) && e.user.username == user)
            .cloned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let (events, _) = sessions::load(&records).unwrap();
        let done = refusal(&events, "system:serviceaccount:demo:deployer").is_some()
            && events.iter().filter(|e| e.code() == Some(403)).count() == 2;
        if done || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let event = refusal(&events, "system:serviceaccount:demo:bot").unwrap_or_else(|| {
        panic!(
            "no 403 record names the stolen token's user: {:#?}",
            events
                .iter()
                .map(|e| (&e.user, e.code()))
                .collect::<Vec<_>>()
        )
    });
    // The user as the token verified, as an allowed request's record has it.
    assert_eq!(event.user.uid, bot.service_account_uid);
    assert!(
        event
            .user
            .groups
            .contains(&"system:serviceaccounts:demo".to_owned()),
        "{:?}",
        event.user
    );
    assert_eq!(
        event
            .user
            .extra
            .get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["web-0".to_owned()])
    );
    let annotation = |key: &str| event.annotation(key).map(str::to_owned);
    assert_eq!(annotation(event::TOKEN_POD).as_deref(), Some("demo/web-0"));
    assert_eq!(annotation(event::TOKEN_POD_UID), Some(web_uid));
    // The connection's side: a direct client, no pod.
    assert_eq!(annotation(event::WORKLOAD).as_deref(), Some("direct"));
    assert_eq!(annotation(event::POD), None);
    assert_eq!(annotation(event::BINDING).as_deref(), Some("refused"));

    // `kgate sessions list` finds the attempt by its user and by the token's pod.
    let list = |filter: &[&str]| -> Vec<Value> {
        let mut args = vec![
            "sessions",
            "list",
            "--dir",
            records.to_str().unwrap(),
            "-o",
            "json",
        ];
        args.extend_from_slice(filter);
        let out = std::process::Command::new(kgate_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let by_user = list(&["--user", "system:serviceaccount:demo:bot"]);
    assert_eq!(by_user.len(), 1, "{by_user:?}");
    assert_eq!(by_user[0]["refused"], 1, "{by_user:?}");
    let by_pod = list(&["--pod", "demo/web-*"]);
    assert_eq!(by_pod.len(), 1, "{by_pod:?}");
    assert_eq!(by_pod[0]["user"], "system:serviceaccount:demo:bot");
    assert!(list(&["--pod", "demo/other"]).is_empty());

    // Counted as a stolen token from its kind: once, for the bound token only.
    let metrics = s.admin_metrics(admin_port).await;
    assert!(
        metrics.contains("kgate_stolen_token_denials_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kgate_refusals_total{kind=\"StolenToken\",side=\"client\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_tokens_go_to_token_review_and_are_cached() {
    let s = setup().await;
    s.server.add_token("static-ci-token");
    let reviews = s.upstream_count(REVIEWS);
    for _ in 0..3 {
        let (code, body) = s.get(PODS, Some("static-ci-token")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(
        s.upstream_count(REVIEWS),
        reviews + 1,
        "one review, then the cache"
    );

    let got = s.get(PODS, Some("not-a-token-the-server-knows")).await;
    assert_status(&got, StatusCode::UNAUTHORIZED, "invalid bearer token");
    // The rejection is cached too: a retry storm does not become a review storm.
    let _ = s.get(PODS, Some("not-a-token-the-server-knows")).await;
    assert_eq!(s.upstream_count(REVIEWS), reviews + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonated_subjects_reach_the_api_server_as_the_agent() {
    let s = setup().await;
    let subject = s.service_account("imp-ci");
    let token = s.token(&subject);
    let before = s.server.requests().len();
    let (code, body) = s.get(PODS, Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let requests = s.server.requests();
    let seen = requests[before..]
        .iter()
        .find(|r| r.path == PODS)
        .expect("forwarded");
    // The double authenticated the agent's credential, not the bot's token...
    assert_eq!(seen.user.as_deref(), Some("kubernetes-admin"));
    let header = |name: &str| {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    // ...which asks to act as the verified bot.
    assert_eq!(
        header("impersonate-user"),
        ["system:serviceaccount:demo:imp-ci"]
    );
    assert_eq!(
        header("impersonate-uid"),
        [subject.service_account_uid.as_str()]
    );
    assert!(header("impersonate-group").contains(&"system:serviceaccounts:demo"));

    // `kubectl auth whoami` with the bot's token sees the bot, through impersonation.
    let k = Kubectl::new(
        scratch_dir("whoami"),
        &s.agent.url(),
        &s.agent.ca_pem,
        &token,
    );
    let out = tokio::task::spawn_blocking(move || k.ok(&["auth", "whoami", "-o", "json"]))
        .await
        .unwrap();
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:serviceaccount:demo:imp-ci"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_key_floods_do_not_become_a_jwks_refresh_storm() {
    let s = setup().await;
    let bot = s.service_account("bot");
    let jwks = |s: &Setup| s.upstream_count("/openid/v1/jwks");
    let before = jwks(&s);
    // Each token is signed by a key (and kid) the API server never had.
    for _ in 0..40 {
        let forged = s
            .server
            .mint_foreign_token(&bot, &[DEFAULT_ISSUER.into()], 600);
        let got = s.get(PODS, Some(&forged)).await;
        assert_status(&got, StatusCode::UNAUTHORIZED, "invalid bearer token");
    }
    assert!(
        jwks(&s) <= before + 1,
        "40 unknown key ids fetched the JWKS {} times",
        jwks(&s) - before
    );
}
