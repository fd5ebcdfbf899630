//! `kubectl auth can-i` through a standalone agent, with the real kubectl: the
//! SelfSubjectAccessReview's answer is the API server's RBAC answer with kgate's
//! policy folded in (deny → `no`, approve → `yes` saying a human must approve, shadow
//! → `yes` with a note, RBAC's `no` unchanged), and `--list` warns that kgate's policy
//! may refuse what RBAC lists.

use std::{fs, time::Duration};

use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    background::blocking,
    harness::{Agent, Kubectl, ScratchDir, kubectl_as_service_account, scratch_dir},
};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: deny
  rules:
    - name: self-reviews
      match: {verbs: [create], apiGroups: [authorization.k8s.io], resources: [selfsubjectaccessreviews, selfsubjectrulesreviews]}
      action: allow
    - name: read
      match: {verbs: [get, list, watch]}
      action: allow
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
      message: bots do not touch secrets
    - name: delete-pods-needs-a-human
      match: {verbs: [delete], resources: [pods]}
      action: approve
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
  rules:
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
      message: trials do not touch secrets
"#;

struct Setup {
    server: Handle,
    agent: Agent,
    _dir: ScratchDir,
}

async fn setup() -> Setup {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("review");
    let policy = dir.join("policy.yaml");
    fs::write(&policy, POLICY).unwrap();
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: ['system:serviceaccount:demo:*', kubernetes-admin]}}\n\
             policy: {{files: ['{}'], defaultAction: allow}}\nrecord: {{stdout: true, level: RequestResponse}}\n",
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

impl Setup {
    fn kubectl_as(&self, sa: &str) -> Kubectl {
        kubectl_as_service_account(&self.server, &self.agent, sa)
    }

    /// The records the agent printed for self access reviews, oldest first.
    fn review_records(&self) -> Vec<Value> {
        self.agent
            .stdout()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["objectRef"]["resource"] == "selfsubjectaccessreviews"
                    && e["stage"] == "ResponseComplete"
            })
            .collect()
    }
}

/// `kubectl auth can-i ARGS`: (exit code, stdout).
fn can_i(k: &Kubectl, args: &[&str]) -> (Option<i32>, String) {
    let out = k
        .command()
        .args(["--request-timeout", "20s", "auth", "can-i"])
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A SelfSubjectAccessReview of `attributes` POSTed through kgate by kubectl
/// (`create --raw`), and the answer.
fn review_json(k: &Kubectl, dir: &std::path::Path, attributes: &Value) -> Value {
    let file = dir.join(format!("ssar-{}.json", rand_suffix()));
    fs::write(
        &file,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": attributes})
        .to_string(),
    )
    .unwrap();
    let out = k
        .command()
        .args([
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn can_i_answers_with_kgates_policy_folded_in() {
    let s = setup().await;
    s.server
        .refuse_access("system:serviceaccount:demo:bot", "get", "configmaps");
    let bot = s.kubectl_as("bot");
    let trial = s.kubectl_as("trial");
    let dir = scratch_dir("review-json");
    let records = blocking(move || {
        // kgate denies what RBAC allows: `no`, exit 1, and the rule says why.
        let (code, out) = can_i(&bot, &["delete", "secrets"]);
        assert_eq!(code, Some(1), "{out}");
        assert_eq!(
            out.trim(),
            "no - kgate: denied by policy bots/no-secrets: bots do not touch secrets"
        );
        let (code, out) = can_i(&bot, &["delete", "configmaps", "-n", "demo"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.starts_with("no - kgate: denied by policy bots (default)"), "{out}");

        // Allowed by both.
        let (code, out) = can_i(&bot, &["list", "pods"]);
        assert_eq!((code, out.trim()), (Some(0), "yes"));

        // RBAC refuses what kgate would allow: RBAC's `no` stands.
        let (code, out) = can_i(&bot, &["get", "configmaps"]);
        assert_eq!((code, out.trim()), (Some(1), "no"));

        // Held for approval: `yes`, and the reason says a human must approve.
        let (code, out) = can_i(&bot, &["delete", "pods"]);
        assert_eq!((code, out.trim()), (Some(0), "yes"));
        let review = review_json(
            &bot,
            &dir,
            &json!({"resourceAttributes": {"namespace": "demo", "verb": "delete", "resource": "pods", "name": "web-0"}}),
        );
        assert_eq!(review["kind"], "SelfSubjectAccessReview");
        assert_eq!(review["spec"]["resourceAttributes"]["name"], "web-0");
        assert_eq!(review["status"]["allowed"], true, "{review}");
        let reason = review["status"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("kgate: held for approval by policy bots/delete-pods-needs-a-human"),
            "{reason}"
        );
        assert!(reason.contains("RBAC: allowed by"), "the API server's reason stays: {reason}");

        // The denied answer in full: an explicit deny.
        let review = review_json(
            &bot,
            &dir,
            &json!({"resourceAttributes": {"namespace": "demo", "verb": "get", "resource": "secrets"}}),
        );
        assert_eq!(review["status"]["allowed"], false, "{review}");
        assert_eq!(review["status"]["denied"], true, "{review}");

        // Wildcards: `*` asks about every verb, so one denied verb makes it `no`.
        let (code, out) = can_i(&bot, &["*", "pods"]);
        assert_eq!(code, Some(1), "{out}");
        // A non-resource URL.
        let (code, out) = can_i(&bot, &["get", "/version"]);
        assert_eq!((code, out.trim()), (Some(0), "yes"));
        let (code, out) = can_i(&bot, &["get", "/logs"]);
        assert_eq!(code, Some(1), "{out}");

        // Shadow mode: what enforce would do is reported, the answer stays `yes`.
        let (code, out) = can_i(&trial, &["delete", "secrets"]);
        assert_eq!((code, out.trim()), (Some(0), "yes"));
        let review = review_json(
            &trial,
            &dir,
            &json!({"resourceAttributes": {"namespace": "demo", "verb": "delete", "resource": "secrets"}}),
        );
        assert_eq!(review["status"]["allowed"], true, "{review}");
        assert!(review["status"].get("denied").is_none_or(|d| d == false), "{review}");
        let reason = review["status"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("kgate (shadow mode): policy trial/no-secrets would deny this")
                && reason.contains("trials do not touch secrets"),
            "{reason}"
        );
    })
    .await;
    let () = records;
    // The answers were read as JSON, whatever kubectl accepts (protobuf first).
    let accepts: Vec<String> = s
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/selfsubjectaccessreviews"))
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "accept")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        accepts.len() >= 10
            && accepts
                .iter()
                .all(|a| a.split(',').all(|r| r == "application/json")),
        "{accepts:?}"
    );
    // Each review went through the record stage, and the event says what kgate changed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let rewritten = loop {
        let rewritten: Vec<Value> = s
            .review_records()
            .into_iter()
            .filter(|e| e["annotations"]["kgate.io/review"].is_string())
            .collect();
        if rewritten.len() >= 6 || std::time::Instant::now() > deadline {
            break rewritten;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let notes: Vec<&str> = rewritten
        .iter()
        .map(|e| e["annotations"]["kgate.io/review"].as_str().unwrap())
        .collect();
    assert!(
        notes.contains(&"allowed -> denied by bots/no-secrets"),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"allowed, held for approval by bots/delete-pods-needs-a-human"),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"allowed, shadow: would deny by trial/no-secrets"),
        "{notes:?}"
    );
    // At RequestResponse the event carries the answer the client got.
    let denied = rewritten
        .iter()
        .find(|e| e["annotations"]["kgate.io/review"] == "allowed -> denied by bots/no-secrets")
        .unwrap();
    assert_eq!(
        denied["responseObject"]["status"]["allowed"], false,
        "{denied}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn can_i_list_warns_that_kgate_may_refuse_what_rbac_lists() {
    let s = setup().await;
    let bot = s.kubectl_as("bot");
    let admin = Kubectl::new(
        scratch_dir("admin"),
        &s.agent.url(),
        &s.agent.ca_pem,
        s.server.admin_token(),
    );
    blocking(move || {
        let out = bot
            .command()
            .args(["auth", "can-i", "--list"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        // RBAC's rules are listed as the API server sent them...
        assert!(stdout.contains("*.*"), "{stdout}");
        // ...and kubectl warns that kgate's policy narrows them, naming the rules.
        assert!(
            stderr.contains("Warning: the list may be incomplete: kgate:"),
            "{stderr}"
        );
        for rule in [
            "bots/no-secrets (deny)",
            "bots/delete-pods-needs-a-human (approve)",
            "bots (default): deny",
        ] {
            assert!(stderr.contains(rule), "{rule}: {stderr}");
        }
        // A caller kgate restricts in no way gets the API server's list untouched.
        let out = admin
            .command()
            .args(["auth", "can-i", "--list"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("incomplete"), "{stderr}");
    })
    .await;
}
