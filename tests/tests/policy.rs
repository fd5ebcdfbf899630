//! Policy through a standalone agent in front of the API-server double, with the real
//! kubectl as a bot: allowed reads, denials with the rule's message, shadow mode,
//! live reload of the policy file (a bad version never replaces a good one, and no
//! request is lost while it changes), and the `kgate policy` CLI.

use std::{fs, process::Command, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate_tests::{
    apiserver::{ApiServer, Config, DEFAULT_ISSUER, Handle},
    background::blocking,
    harness::{Agent, Kubectl, https_client, kgate_bin, kubectl_as_service_account, scratch_dir},
};

const POLICY: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: deny
  rules:
    - name: read
      match: {verbs: [get, list, watch]}
      action: allow
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
      message: bots do not read secrets
    - name: delete-pods-needs-a-human
      match: {verbs: [delete], resources: [pods]}
      action: approve
      approval: {timeoutSeconds: 1}
    - name: discovery
      match: {verbs: [get], nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", /version, "/openapi/*"]}
      action: allow
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: trial}
spec:
  mode: shadow
  subjects: {serviceAccounts: ["demo/trial"]}
  defaultAction: deny
"#;

struct Setup {
    server: Handle,
    agent: Agent,
    policy: std::path::PathBuf,
    _dir: kgate_tests::harness::ScratchDir,
}

async fn setup() -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("policy");
    let policy = dir.join("policy.yaml");
    fs::write(&policy, POLICY).unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: ['system:serviceaccount:demo:*', kubernetes-admin]}}\n\
             policy: {{files: ['{}'], reloadSeconds: 1}}\n",
            policy.display()
        ),
    )
    .unwrap();
    Setup {
        server,
        agent,
        policy,
        _dir: dir,
    }
}

impl Setup {
    fn kubectl_as(&self, sa: &str) -> Kubectl {
        kubectl_as_service_account(&self.server, &self.agent, sa)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_as_a_bot_is_allowed_denied_and_shadowed() {
    let s = setup().await;
    let bot = s.kubectl_as("bot");
    let trial = s.kubectl_as("trial");
    blocking(move || {
        let out = bot.ok(&["get", "pods", "-n", "demo"]);
        assert!(out.contains("web-0"), "{out}");

        let (ok, _, err) = bot.run(&["get", "secret", "db-creds", "-n", "demo"]);
        assert!(!ok);
        assert!(
            err.contains("Error from server (Forbidden): kgate: denied by policy bots/no-secrets: bots do not read secrets"),
            "{err}"
        );
        let (ok, _, err) = bot.run(&["delete", "configmap", "app-config", "-n", "demo"]);
        assert!(!ok);
        assert!(
            err.contains("kgate: denied by policy bots (default): system:serviceaccount:demo:bot may not delete configmaps \"app-config\" in namespace \"demo\""),
            "{err}"
        );
        let (ok, _, err) = bot.run(&["delete", "pod", "web-0", "-n", "demo", "--wait=false"]);
        // Held for a human (see approval.rs); nobody decides here, so it times out.
        assert!(!ok && err.contains("was not decided within 1s"), "{err}");

        // Shadow mode: the delete passes, recorded as would-deny.
        let out = trial.ok(&["delete", "configmap", "app-config", "-n", "demo"]);
        assert!(out.contains("deleted"), "{out}");
    })
    .await;
    assert!(
        s.server.get("pods", "demo", "web-0").is_some(),
        "the held delete never reached the API server"
    );
    assert!(s.server.get("configmaps", "demo", "app-config").is_none());
    let record = s
        .agent
        .wait_for("\"would\":\"Deny\"", Duration::from_secs(5))
        .unwrap();
    assert!(
        record.contains("trial (default)") && record.contains("system:serviceaccount:demo:trial"),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_file_reloads_and_a_bad_version_changes_nothing() {
    let s = setup().await;
    let bot = std::sync::Arc::new(s.kubectl_as("bot"));
    let (ok, _, _) = blocking({
        let bot = bot.clone();
        move || bot.run(&["get", "secrets", "-n", "demo"])
    })
    .await;
    assert!(!ok);

    // A broken edit: refused, logged with its location; the old policy still decides.
    fs::write(
        &s.policy,
        POLICY.replace("verbs: [get, list, watch]", "verbs: [get, lst]"),
    )
    .unwrap();
    let line = s
        .agent
        .wait_for("policy file rejected", Duration::from_secs(10))
        .unwrap();
    assert!(
        line.contains("spec.rules[0].match.verbs[1]") && line.contains("lst"),
        "{line}"
    );
    let (ok, out, err) = blocking({
        let bot = bot.clone();
        move || bot.run(&["get", "pods", "-n", "demo"])
    })
    .await;
    assert!(ok, "{out} {err}");

    // A good edit: secrets become readable.
    fs::write(
        &s.policy,
        POLICY.replace(
            "action: deny\n      message: bots do not read secrets",
            "action: allow",
        ),
    )
    .unwrap();
    s.agent
        .wait_for("policy file reloaded", Duration::from_secs(10))
        .unwrap();
    let (ok, out, err) = blocking(move || bot.run(&["get", "secrets", "-n", "demo"])).await;
    assert!(ok && out.contains("db-creds"), "{out} {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_lose_no_request() {
    let s = setup().await;
    let token = s.server.mint_token(
        &kgate_tests::harness::service_account(&s.server, "bot"),
        &[DEFAULT_ISSUER.to_owned()],
        3600,
    );
    let client = https_client(&s.agent.ca_pem, true);
    let url = format!("{}/api/v1/namespaces/demo/pods", s.agent.url());
    let load = tokio::spawn(async move {
        let mut codes = Vec::new();
        for _ in 0..400 {
            let req = Request::get(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            codes.push(client.request(req).await.map(|r| r.status()));
        }
        codes
    });
    // Rewrite the file (every version allows the reads) while the load runs.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        fs::write(&s.policy, format!("{POLICY}\n# edit {i}\n")).unwrap();
    }
    let codes = load.await.unwrap();
    assert_eq!(codes.len(), 400);
    assert!(
        codes.iter().all(|c| matches!(c, Ok(StatusCode::OK))),
        "{:?}",
        codes
            .iter()
            .filter(|c| !matches!(c, Ok(StatusCode::OK)))
            .collect::<Vec<_>>()
    );
    assert!(
        s.agent
            .log()
            .iter()
            .filter(|l| l.contains("policy file reloaded"))
            .count()
            >= 2,
        "the file really was reloaded during the load"
    );
}

#[test]
fn policy_check_and_explain() {
    let dir = scratch_dir("policy-cli");
    let good = dir.join("good.yaml");
    fs::write(&good, POLICY).unwrap();
    let out = Command::new(kgate_bin())
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 policies)"));

    let bad = dir.join("bad.yaml");
    fs::write(
        &bad,
        POLICY
            .replace("operator", "x")
            .replace("[delete]", "[remove]"),
    )
    .unwrap();
    let out = Command::new(kgate_bin())
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: document 1: policy \"bots\": spec.rules[2].match.verbs[0]: unknown verb \"remove\""),
        "{err}"
    );

    let out = Command::new(kgate_bin())
        .args(["policy", "explain", "-f"])
        .arg(&good)
        .args([
            "--as",
            "system:serviceaccount:demo:bot",
            "--verb",
            "delete",
            "--resource",
            "pods",
            "-n",
            "demo",
            "--name",
            "web-0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("bots/delete-pods-needs-a-human: Approve"),
        "{text}"
    );
    assert!(text.contains("bots/read: verb does not match"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_policies_apply_live_and_a_bad_one_is_reported_not_used() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        "identity: {unboundSubjects: ['system:serviceaccount:demo:*']}\n\
         policy: {cluster: true, defaultAction: allow}\n",
    )
    .unwrap();
    agent
        .wait_for("cluster policies loaded", Duration::from_secs(10))
        .unwrap();
    let s = Setup {
        server,
        agent,
        policy: std::path::PathBuf::new(),
        _dir: scratch_dir("cluster-policy"),
    };
    let bot = std::sync::Arc::new(s.kubectl_as("bot"));
    // The admin applies policies to the API server directly, with the real kubectl.
    let admin = Kubectl::new(
        scratch_dir("admin"),
        &s.server.url(),
        s.server.ca_pem(),
        s.server.admin_token(),
    );
    let manifest = s._dir.join("policy.yaml");
    let apply = move |text: String| {
        fs::write(&manifest, text).unwrap();
        admin.ok(&[
            "apply",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ]);
        admin
    };
    let secrets_rule = POLICY.split("---").next().unwrap().to_owned();
    let admin = blocking(move || apply(secrets_rule)).await;
    s.agent
        .wait_for("policy loaded", Duration::from_secs(10))
        .unwrap();
    let (ok, _, err) = blocking({
        let bot = bot.clone();
        move || bot.run(&["get", "secrets", "-n", "demo"])
    })
    .await;
    assert!(!ok && err.contains("bots/no-secrets"), "{err}");

    // A broken edit: reported on the object and in the log; the good version stays.
    let manifest = s._dir.join("bad.yaml");
    fs::write(
        &manifest,
        POLICY
            .split("---")
            .next()
            .unwrap()
            .replace("[get, list, watch]", "[get, lst]"),
    )
    .unwrap();
    let admin = blocking(move || {
        admin.ok(&[
            "apply",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ]);
        admin
    })
    .await;
    s.agent
        .wait_for("policy rejected", Duration::from_secs(10))
        .unwrap();
    // The log line comes first; the status patch follows it to the API server.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = s.server.get("kgatepolicies", "", "bots").unwrap()["status"].clone();
        if status["valid"] == "False" || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["valid"], "False", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].match.verbs[1]: unknown verb \"lst\""),
        "{status}"
    );
    let (ok, _, err) = blocking({
        let bot = bot.clone();
        move || bot.run(&["get", "secrets", "-n", "demo"])
    })
    .await;
    assert!(
        !ok && err.contains("bots/no-secrets"),
        "the last good version still decides: {err}"
    );

    // Deleted: its rules go.
    blocking(move || admin.ok(&["delete", "kgatepolicy", "bots"])).await;
    s.agent
        .wait_for("policy deleted", Duration::from_secs(10))
        .unwrap();
    let (ok, out, err) = blocking(move || bot.run(&["get", "secrets", "-n", "demo"])).await;
    assert!(ok && out.contains("db-creds"), "{out} {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmasked_rule_grants_real_secret_values_to_its_subjects_only() {
    let s = setup().await;
    fs::write(
        &s.policy,
        format!(
            "{POLICY}---\napiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {{name: vault-sync}}\n\
             spec:\n  subjects: {{serviceAccounts: [demo/vault-sync]}}\n  rules:\n\
             \x20   - {{name: read-secrets, match: {{verbs: [get], resources: [secrets]}}, action: allow, unmasked: true}}\n\
             \x20   - {{name: discovery, match: {{verbs: [get], nonResourceURLs: ['/api*', '/openapi/*']}}, action: allow}}\n"
        ),
    )
    .unwrap();
    s.agent
        .wait_for("policy file reloaded", Duration::from_secs(10))
        .unwrap();
    let sync = s.kubectl_as("vault-sync");
    let trial = s.kubectl_as("trial");
    blocking(move || {
        let jsonpath = [
            "get",
            "secret",
            "db-creds",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.password}",
        ];
        assert_eq!(
            sync.ok(&jsonpath),
            "czNjcjN0LXBhc3N3b3Jk",
            "granted: the real value"
        );
        assert_eq!(
            trial.ok(&jsonpath),
            "a2dhdGU6bWFza2Vk",
            "everyone else: masked"
        );
    })
    .await;
}

/// A refusal's message reaches kubectl with and without a discovery cache. Without
/// one, kubectl's first requests are discovery (`/api`, `/apis`), whose answers
/// client-go reads raw: a JSON Status there printed as `Error from server
/// (Forbidden): unknown`. With one, kubectl goes straight to the resource.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_reads_the_same_with_and_without_a_discovery_cache() {
    let s = setup().await;
    fs::write(
        &s.policy,
        format!(
            "{POLICY}---\napiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {{name: locked}}\n\
             spec:\n  subjects: {{serviceAccounts: [demo/locked]}}\n  defaultAction: deny\n  rules:\n\
             \x20   - {{name: pods, match: {{verbs: [get, list], resources: [pods]}}, action: allow}}\n"
        ),
    )
    .unwrap();
    s.agent
        .wait_for("policy file reloaded", Duration::from_secs(10))
        .unwrap();
    let locked = s.kubectl_as("locked");
    let bot = s.kubectl_as("bot");
    let cache = scratch_dir("discovery-cache");
    let cache_dir = cache.to_str().unwrap().to_owned();
    blocking(move || {
        let get_secrets = ["get", "secrets", "-n", "demo", "--cache-dir", &cache_dir];
        // No cache: the refusal of discovery itself is what kubectl shows.
        let (ok, _, cold) = locked.run(&get_secrets);
        assert!(!ok);
        assert!(
            cold.contains("Error from server (Forbidden): kgate: denied by policy locked (default): system:serviceaccount:demo:locked may not get path /api")
                && !cold.contains("unknown"),
            "{cold}"
        );
        // A cache that another client filled (discovery is cached per server, not per
        // user): the resource's refusal.
        bot.ok(&["get", "pods", "-n", "demo", "--cache-dir", &cache_dir]);
        let (ok, _, warm) = locked.run(&get_secrets);
        assert!(!ok);
        assert_eq!(
            warm.trim(),
            "Error from server (Forbidden): kgate: denied by policy locked (default): system:serviceaccount:demo:locked may not list secrets in namespace \"demo\""
        );
    })
    .await;
}
