//! Gateway mode: clients outside the cluster with OIDC ID tokens of a local issuer
//! (RS256 and ES256, keys rotating, an outage), through standalone agents (`kernel:
//! false`, `podBinding: false`) configured with the API server's own
//! `AuthenticationConfiguration` file, in front of the API-server double.
//!
//! The real kubectl with a gateway kubeconfig (the token in it) is allowed, denied,
//! masked and held by group (the example policies of docs/examples); the double sees
//! the agent impersonating the OIDC user and its groups; every bad token is a 401
//! naming its reason with nothing upstream; an issuer outage keeps cached keys working
//! and refuses unknown ones with 503; client impersonation is decided by policy; two
//! replicas behind one address serve a held request that `kgate approve` releases;
//! records and `kgate sessions` carry the OIDC user, groups and issuer.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate::mask::MASKED_BASE64;
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, Kubectl, ScratchDir, https_client, kgate_bin, kubeconfig, scratch_dir, text},
    oidc::{Alg, Issuer},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const POLICIES: &str = include_str!("../../docs/examples/gateway-policies.yaml");
const PODS: &str = "/api/v1/namespaces/demo/pods";

struct Gateway {
    server: Handle,
    issuer: Issuer,
    dir: ScratchDir,
    /// The admin's kubeconfig, straight to the API server (as `kgate approve` runs).
    admin: PathBuf,
}

impl Gateway {
    async fn start() -> Self {
        let server = ApiServer::start(Config::default()).await.unwrap();
        let issuer = Issuer::start().await.unwrap();
        let dir = scratch_dir("gateway");
        // The file an admin wrote for the API server's --authentication-config.
        let ca = issuer
            .ca_pem
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>();
        std::fs::write(
            dir.join("authn.yaml"),
            format!(
                "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\njwt:\n\
                 - issuer:\n    url: {url}\n    audiences: [kgate]\n    certificateAuthority: |\n{ca}\
                 \x20 claimMappings:\n    username: {{claim: email, prefix: 'oidc:'}}\n    \
                 groups: {{claim: groups, prefix: 'oidc:'}}\n    uid: {{claim: sub}}\n  \
                 claimValidationRules:\n  - {{claim: tenant, requiredValue: acme}}\n",
                url = issuer.url
            ),
        )
        .unwrap();
        std::fs::write(dir.join("policies.yaml"), POLICIES).unwrap();
        for ns in ["prod", "staging"] {
            server
                .create(
                    "namespaces",
                    "",
                    json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}}),
                )
                .unwrap();
        }
        server
            .create(
                "secrets",
                "demo",
                json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"},
                       "type": "Opaque", "data": {"password": "czNjcjN0"}}),
            )
            .unwrap();
        server
            .create(
                "deployments",
                "prod",
                json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web"},
                       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                                "template": {"metadata": {"labels": {"app": "web"}},
                                             "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
            )
            .unwrap();
        let admin = kubeconfig(
            &dir.join("admin"),
            &server.url(),
            server.ca_pem(),
            server.admin_token(),
        );
        Self {
            server,
            issuer,
            dir,
            admin,
        }
    }

    /// A gateway replica named `name`, its records in `records-NAME`.
    fn replica(&self, name: &str) -> Agent {
        let d = self.dir.display();
        let agent = Agent::standalone_with(
            &self.server.url(),
            self.server.ca_pem(),
            self.server.admin_token(),
            &format!(
                "identity:\n  nodeName: {name}\n  podBinding: false\n  clientImpersonation: policy\n  \
                 authenticationConfigFile: {d}/authn.yaml\n\
                 heartbeat: {{enabled: false}}\n\
                 policy: {{files: ['{d}/policies.yaml']}}\n\
                 record: {{dir: '{d}/records-{name}'}}\n"
            ),
        )
        .unwrap();
        agent
            .wait_for("OIDC issuer keys loaded", Duration::from_secs(20))
            .unwrap();
        agent
    }

    /// An ID token for `email` in `groups`, signed `alg`, with `patch` merged in.
    fn token(&self, alg: Alg, email: &str, groups: &[&str], patch: &Value) -> String {
        let mut claims = self
            .issuer
            .claims(&json!({"email": email, "groups": groups, "tenant": "acme"}));
        for (k, v) in patch.as_object().into_iter().flatten() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        self.issuer.sign(alg, &claims)
    }

    /// kubectl through `url` with a gateway kubeconfig holding `token`.
    fn kubectl(&self, url: &str, ca_pem: &str, token: &str, tag: &str) -> Kubectl {
        Kubectl::new(scratch_dir(tag), url, ca_pem, token)
    }

    fn upstream_count(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// `kgate sessions list -o json` of replica `replica`'s record log, polled for up
    /// to 10 s until `done` holds of it; the last list either way.
    fn sessions_until(&self, replica: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let dir = self.dir.join(format!("records-{replica}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out, err) = self.kgate(&[
                "sessions",
                "list",
                "--dir",
                dir.to_str().unwrap(),
                "-o",
                "json",
            ]);
            assert!(ok, "{err}");
            let list: Vec<Value> = serde_json::from_str(&out).unwrap();
            if done(&list) || Instant::now() > deadline {
                return list;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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
}

/// GET `path` through `agent` with `token`.
async fn get(agent: &Agent, path: &str, token: &str) -> (StatusCode, Value) {
    let req = Request::get(format!("{}{path}", agent.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = https_client(&agent.ca_pem, false)
        .request(req)
        .await
        .unwrap();
    let status = response.status();
    let body = text(response.into_body()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn run(k: &Kubectl, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = tokio::task::block_in_place(|| k.run(args));
    (ok, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_with_a_gateway_kubeconfig_is_allowed_denied_and_masked_by_group() {
    let g = Gateway::start().await;
    let agent = g.replica("gw-a");

    // An AI agent (ES256 token): reads, with Secret values masked; writes denied.
    let token = g.token(Alg::Es256, "agent@example.com", &["ai-agents"], &json!({}));
    let ai = g.kubectl(&agent.url(), &agent.ca_pem, &token, "gw-ai");
    let (ok, out) = run(&ai, &["get", "secret", "db", "-n", "demo", "-o", "json"]);
    assert!(ok, "{out}");
    let secret: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(secret["data"]["password"], MASKED_BASE64);
    let (ok, out) = run(&ai, &["delete", "secret", "db", "-n", "demo"]);
    assert!(
        !ok && out.contains("denied by policy ai-agents (default)"),
        "{out}"
    );
    assert!(g.server.get("secrets", "demo", "db").is_some());

    // The double saw the agent's credential impersonating the prefixed OIDC user.
    let seen = g
        .server
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/api/v1/namespaces/demo/secrets/db")
        .expect("the read reached the API server");
    assert_eq!(seen.user.as_deref(), Some("kubernetes-admin"));
    assert_eq!(
        seen.impersonated_user.as_deref(),
        Some("oidc:agent@example.com")
    );
    assert_eq!(
        seen.impersonated_groups,
        ["oidc:ai-agents", "system:authenticated"]
    );
    let header = |name: &str| {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("impersonate-uid"), ["user-1"]);

    // A CI job (RS256 token): deploys outside prod, never deletes a namespace.
    let token = g.token(
        Alg::Rs256,
        "ci-bot@example.com",
        &["ci-deployers"],
        &json!({}),
    );
    // Its kubeconfig comes from `kgate kubeconfig`, the ID token in a file the job
    // keeps fresh.
    let ci = g.kubectl(&agent.url(), &agent.ca_pem, "unused", "gw-ci");
    let token_file = ci.config.with_file_name("id-token");
    let ca_file = ci.config.with_file_name("gateway-ca.crt");
    std::fs::write(&token_file, &token).unwrap();
    std::fs::write(&ca_file, &agent.ca_pem).unwrap();
    let (ok, config, err) = g.kgate(&[
        "kubeconfig",
        "--server",
        &agent.url(),
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--namespace",
        "staging",
    ]);
    assert!(ok, "{err}");
    std::fs::write(&ci.config, config).unwrap();
    let (ok, out) = run(&ci, &["create", "deployment", "api", "--image=nginx:1.27"]);
    assert!(ok, "{out}");
    assert!(g.server.get("deployments", "staging", "api").is_some());
    let (ok, out) = run(&ci, &["delete", "namespace", "staging"]);
    assert!(
        !ok && out.contains("CI jobs never delete namespaces"),
        "{out}"
    );
    // Someone in no profile: the global default (deny).
    let token = g.token(Alg::Rs256, "eve@example.com", &["interns"], &json!({}));
    let eve = g.kubectl(&agent.url(), &agent.ca_pem, &token, "gw-eve");
    let (ok, out) = run(&eve, &["get", "pods", "-n", "demo"]);
    assert!(!ok && out.contains("global default"), "{out}");

    // Records carry the OIDC user, groups and issuer; `kgate sessions` shows them.
    let dir = g.dir.join("records-gw-a");
    let list = g.sessions_until("gw-a", |list| list.len() >= 3);
    let ai_session = list
        .iter()
        .find(|s| s["user"] == "oidc:agent@example.com")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(ai_session["issuer"], g.issuer.url.as_str());
    assert_eq!(
        ai_session["groups"],
        json!(["oidc:ai-agents", "system:authenticated"])
    );
    let id = ai_session["id"].as_str().unwrap();
    let (ok, shown, err) = g.kgate(&["sessions", "show", id, "--dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("oidc:agent@example.com")
            && shown.contains(&format!("Issuer   {} (OIDC)", g.issuer.url))
            && shown.contains("Groups   oidc:ai-agents, system:authenticated"),
        "{shown}"
    );
    let (_, table, _) = g.kgate(&["sessions", "list", "--dir", dir.to_str().unwrap()]);
    assert!(table.contains(&format!("oidc {}", g.issuer.url)), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_is_a_401_naming_its_reason_and_nothing_goes_upstream() {
    let g = Gateway::start().await;
    let agent = g.replica("gw-a");
    let good = g.token(Alg::Rs256, "ada@example.com", &["ai-agents"], &json!({}));
    assert_eq!(get(&agent, PODS, &good).await.0, StatusCode::OK);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let foreign = Issuer::start().await.unwrap();
    let cases = [
        (
            foreign.sign(Alg::Rs256, &foreign.claims(&json!({"tenant": "acme"}))),
            "is not one kgate accepts",
        ),
        (
            g.token(
                Alg::Es256,
                "ada@example.com",
                &[],
                &json!({"aud": "someone-else"}),
            ),
            "audience",
        ),
        (
            g.token(
                Alg::Rs256,
                "ada@example.com",
                &[],
                &json!({"exp": now - 5, "iat": now - 700, "nbf": now - 700}),
            ),
            "expired",
        ),
        (
            g.token(
                Alg::Es256,
                "ada@example.com",
                &[],
                &json!({"nbf": now + 3600}),
            ),
            "not valid yet",
        ),
        (
            g.token(Alg::Rs256, "ada@example.com", &[], &json!({"email": null})),
            "username claim \\\"email\\\" is missing",
        ),
        (
            g.token(
                Alg::Rs256,
                "ada@example.com",
                &[],
                &json!({"tenant": "initech"}),
            ),
            "required claim \\\"tenant\\\"",
        ),
        (
            g.token(
                Alg::Rs256,
                "ada@example.com",
                &[],
                &json!({"email_verified": false}),
            ),
            "not verified",
        ),
    ];
    let before = g.upstream_count(PODS);
    for (token, reason) in cases {
        let (code, body) = get(&agent, PODS, &token).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{reason}: {body}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "Unauthorized");
        let message = body["message"].to_string();
        assert!(message.contains(reason), "{message} lacks {reason}");
    }
    assert_eq!(
        g.upstream_count(PODS),
        before,
        "a bad token reached upstream"
    );
    // kubectl reads a 401 as "log in again" (it does not print a 401's message).
    let token = g.token(Alg::Rs256, "ada@example.com", &[], &json!({"aud": "nope"}));
    let k = g.kubectl(&agent.url(), &agent.ca_pem, &token, "gw-bad");
    let (ok, out) = run(&k, &["get", "pods"]);
    assert!(!ok && out.contains("must be logged in"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_and_an_issuer_outage_keeps_cached_keys_and_refuses_unknown_ones() {
    let g = Gateway::start().await;
    let agent = g.replica("gw-a");
    let fetches = g.issuer.jwks_fetches();
    for alg in [Alg::Rs256, Alg::Es256] {
        let token = g.token(alg, "ada@example.com", &["ai-agents"], &json!({}));
        assert_eq!(get(&agent, PODS, &token).await.0, StatusCode::OK, "{alg:?}");
    }
    assert_eq!(g.issuer.jwks_fetches(), fetches, "known keys need no fetch");

    // A rotated key is fetched when a token first names it (once the start-up fetch
    // is past the refresh rate limit).
    std::thread::sleep(Duration::from_secs(10));
    g.issuer.rotate(Alg::Rs256);
    let token = g.token(Alg::Rs256, "ada@example.com", &["ai-agents"], &json!({}));
    let (code, body) = get(&agent, PODS, &token).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(g.issuer.jwks_fetches(), fetches + 1);

    // The issuer goes away: tokens of cached keys keep working...
    g.issuer.set_down(true);
    std::thread::sleep(Duration::from_secs(11)); // past the refresh rate limit
    for alg in [Alg::Rs256, Alg::Es256] {
        let token = g.token(alg, "bob@example.com", &["ai-agents"], &json!({}));
        assert_eq!(get(&agent, PODS, &token).await.0, StatusCode::OK, "{alg:?}");
    }
    // ...and one whose key cannot be fetched is a 503, never a pass.
    let before = g.upstream_count(PODS);
    let unknown = g.issuer.sign_unpublished(
        Alg::Es256,
        &g.issuer
            .claims(&json!({"groups": ["ai-agents"], "tenant": "acme"})),
    );
    let (code, body) = get(&agent, PODS, &unknown).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot be fetched"),
        "{body}"
    );
    assert_eq!(g.upstream_count(PODS), before);

    // Back up: the key is still unknown to the issuer too, so now it is a 401.
    g.issuer.set_down(false);
    std::thread::sleep(Duration::from_secs(11));
    let (code, body) = get(&agent, PODS, &unknown).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_impersonation_is_decided_by_policy_and_both_identities_recorded() {
    let g = Gateway::start().await;
    let agent = g.replica("gw-a");
    let sre = g.token(Alg::Rs256, "oncall@example.com", &["sre"], &json!({}));
    let k = g.kubectl(&agent.url(), &agent.ca_pem, &sre, "gw-sre");
    // Allowed: the CI bot and its group, then decided as the bot (may read).
    let (ok, out) = run(
        &k,
        &[
            "get",
            "pods",
            "-n",
            "demo",
            "--as=oidc:ci-bot@example.com",
            "--as-group=oidc:ci-deployers",
        ],
    );
    assert!(ok, "{out}");
    let seen = g
        .server
        .requests()
        .into_iter()
        .rfind(|r| r.path == PODS)
        .unwrap();
    assert_eq!(
        seen.impersonated_user.as_deref(),
        Some("oidc:ci-bot@example.com")
    );
    assert_eq!(
        seen.impersonated_groups,
        ["oidc:ci-deployers", "system:authenticated"]
    );
    // As the bot, the bot's rules: no namespace deletes, even for an SRE.
    let (ok, out) = run(
        &k,
        &[
            "delete",
            "namespace",
            "staging",
            "--as=oidc:ci-bot@example.com",
            "--as-group=oidc:ci-deployers",
        ],
    );
    assert!(
        !ok && out.contains("CI jobs never delete namespaces"),
        "{out}"
    );
    // Anyone else, or a group the policy does not name: refused, naming the rule.
    let (ok, out) = run(&k, &["get", "pods", "-n", "demo", "--as=kubernetes-admin"]);
    assert!(
        !ok && out.contains("may not impersonate users \"kubernetes-admin\""),
        "{out}"
    );
    let (ok, out) = run(
        &k,
        &[
            "get",
            "pods",
            "--as=oidc:ci-bot@example.com",
            "--as-group=system:masters",
        ],
    );
    assert!(
        !ok && out.contains("may not impersonate groups \"system:masters\""),
        "{out}"
    );
    // The record names both: the SRE as the user, the bot as whom it acted as.
    let acted = |list: &[Value]| {
        list.iter()
            .find(|s| s["user"] == "oidc:oncall@example.com")
            .is_some_and(|s| s["actingAs"] == json!(["oidc:ci-bot@example.com"]))
    };
    let list = g.sessions_until("gw-a", acted);
    assert!(acted(&list), "{list:?}");
}

/// Two replicas behind one address (a round-robin TCP balancer, as a Service): a CI
/// job's prod rollout is held by whichever replica got it, `kgate approve` (with the
/// admin's kubeconfig) releases it, and the rollout lands.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_behind_one_address_serve_a_held_rollout_approved_with_kgate_approve() {
    let g = Gateway::start().await;
    let a = g.replica("gw-a");
    let mut b = g.replica("gw-b");
    tokio::task::block_in_place(|| b.serve_certificate_of(&a)).unwrap();
    let front = balance(&[a.addr, b.addr]).await;
    let token = g.token(
        Alg::Rs256,
        "ci-bot@example.com",
        &["ci-deployers"],
        &json!({}),
    );
    let ci = g.kubectl(&format!("https://{front}"), &a.ca_pem, &token, "gw-front");
    // Both replicas answer reads through the one address.
    for _ in 0..4 {
        let (ok, out) = run(&ci, &["get", "deployments", "-n", "prod"]);
        assert!(ok, "{out}");
    }
    let held = ci
        .command()
        .args([
            "patch",
            "deployment",
            "web",
            "-n",
            "prod",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let name = loop {
        let (ok, out, err) = g.kgate(&["approvals", "list", "-o", "json"]);
        assert!(ok, "{err}");
        let list: Vec<Value> = serde_json::from_str(&out).unwrap();
        if let Some(a) = list.iter().find(|a| a["status"]["phase"] == "Pending") {
            assert_eq!(a["spec"]["user"], "oidc:ci-bot@example.com");
            assert_eq!(a["spec"]["rule"], "ci-deployers/deploy-prod");
            break a["metadata"]["name"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no pending approval: {list:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        g.server.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        1,
        "held, not forwarded"
    );
    let (ok, out, err) = g.kgate(&["approve", &name]);
    assert!(ok, "{out} {err}");
    let out = tokio::task::block_in_place(|| held.wait_with_output().unwrap());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        g.server.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        3
    );
}

/// A TCP balancer on loopback sending each connection to the next backend in turn.
async fn balance(backends: &[SocketAddr]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let backends = backends.to_vec();
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}
