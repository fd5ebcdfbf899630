//! Just-in-time approval through a standalone agent and the API-server double: a
//! bot's `kubectl delete pod` is held until an admin runs `kgate approve` (or `kgate
//! deny`), approve-for grants let repeats pass and survive an agent restart,
//! undecided requests time out, and concurrent holds are decided independently. A
//! request about an object that does not exist gets the API server's 404, and no
//! approval; a delete's options are shown to the approver, even for a Secret.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use kgate_tests::{
    apiserver::{ApiServer, Config, DEFAULT_ISSUER, Handle},
    background::{blocking, delete, finish},
    harness::{Agent, Kubectl, ScratchDir, kgate_bin, kubeconfig, scratch_dir},
};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: allow
  rules:
    - name: delete-pods
      match: {verbs: [delete], resources: [pods]}
      action: approve
      approval: {approvers: [sre], timeoutSeconds: 30}
    - name: delete-configmaps
      match: {verbs: [delete], resources: [configmaps]}
      action: approve
      approval: {timeoutSeconds: 2}
    - name: delete-secrets
      match: {verbs: [delete], resources: [secrets]}
      action: approve
      approval: {timeoutSeconds: 30}
"#;

struct Setup {
    server: Handle,
    _dir: ScratchDir,
    extra: String,
    admin: PathBuf,
    bot_token: String,
}

async fn setup() -> (Setup, Agent) {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("approval");
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    let extra = format!(
        "identity: {{unboundSubjects: ['system:serviceaccount:demo:*', kubernetes-admin]}}\n\
         policy: {{files: ['{}']}}\n",
        dir.join("policy.yaml").display()
    );
    // The admin talks to the API server directly, as `kgate approve` would.
    let admin = kubeconfig(
        &dir.join("admin"),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    let bot_token = server.mint_token(
        &kgate_tests::harness::service_account(&server, "bot"),
        &[DEFAULT_ISSUER.to_owned()],
        3600,
    );
    for name in ["a", "b", "c", "d"] {
        server
            .create(
                "pods",
                "demo",
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}),
            )
            .unwrap();
    }
    let s = Setup {
        server,
        _dir: dir,
        extra,
        admin,
        bot_token,
    };
    let agent = s.agent();
    (s, agent)
}

impl Setup {
    fn agent(&self) -> Agent {
        Agent::standalone_with(
            &self.server.url(),
            self.server.ca_pem(),
            self.server.admin_token(),
            &self.extra,
        )
        .unwrap()
    }

    fn bot(&self, agent: &Agent, tag: &str) -> Kubectl {
        Kubectl::new(
            scratch_dir(tag),
            &agent.url(),
            &agent.ca_pem,
            &self.bot_token,
        )
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

    fn approvals(&self) -> Vec<Value> {
        let (ok, out, err) = self.kgate(&["approvals", "list", "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Waits for a pending approval of `verb` on `name`, and returns its name.
    fn pending(&self, verb: &str, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.approvals().into_iter().find(|a| {
                a["spec"]["request"]["verb"] == verb
                    && a["spec"]["request"]["name"] == name
                    && a["status"]["phase"] == "Pending"
            });
            if let Some(a) = found {
                return a["metadata"]["name"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no pending approval for {verb} {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn phase(&self, approval: &str) -> Value {
        self.approvals()
            .into_iter()
            .find(|a| a["metadata"]["name"] == approval)
            .map(|a| a["status"].clone())
            .unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_delete_waits_for_kgate_approve_and_a_grant_covers_repeats() {
    let (s, agent) = setup().await;
    let bot = s.bot(&agent, "bot");
    let (s, bot) = blocking(move || {
        let held = delete(&bot, "pod", "a");
        let name = s.pending("delete", "a");
        let listed = s.kgate(&["approvals", "list"]).1;
        assert!(
            listed.contains(&name)
                && listed.contains("system:serviceaccount:demo:bot")
                && listed.contains("bots/delete-pods"),
            "{listed}"
        );
        assert!(
            s.server.get("pods", "demo", "a").is_some(),
            "held, not forwarded"
        );
        let (ok, out, err) = s.kgate(&["approve", &name, "--for", "10m"]);
        assert!(
            ok && out.contains("approved by kubernetes-admin"),
            "{out} {err}"
        );
        let (ok, out) = finish(held);
        assert!(ok && out.contains("pod \"a\" deleted"), "{out}");
        assert_eq!(s.phase(&name)["phase"], "Approved");
        assert!(s.phase(&name)["grantUntil"].is_string());

        // A repeat within the window passes without a new approval.
        let before = s.approvals().len();
        let (ok, out) = finish(delete(&bot, "pod", "b"));
        assert!(ok, "{out}");
        assert_eq!(s.approvals().len(), before);
        // A decided approval cannot be decided again.
        let (ok, _, err) = s.kgate(&["deny", &name]);
        assert!(!ok && err.contains("is Approved"), "{err}");
        (s, bot)
    })
    .await;
    drop(bot);

    // The grant is in the approval object: a restarted agent still honours it.
    drop(agent);
    let agent = s.agent();
    let bot = s.bot(&agent, "bot-again");
    blocking(move || {
        let before = s.approvals().len();
        let (ok, out) = finish(delete(&bot, "pod", "c"));
        assert!(ok, "{out}");
        assert_eq!(s.approvals().len(), before, "the restored grant covered it");
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_timed_out_and_concurrent_holds() {
    let (s, agent) = setup().await;
    let bot = s.bot(&agent, "bot");
    blocking(move || {
        // Two holds at once, decided independently.
        let first = delete(&bot, "pod", "a");
        let second = delete(&bot, "pod", "b");
        let a = s.pending("delete", "a");
        let b = s.pending("delete", "b");
        assert_ne!(a, b);
        let (ok, _, err) = s.kgate(&["deny", &b, "--reason", "not during the freeze"]);
        assert!(ok, "{err}");
        let (ok, out) = finish(second);
        assert!(!ok);
        assert!(
            out.contains(&format!("Error from server (Forbidden): kgate: request denied by kubernetes-admin (approval {b}): not during the freeze")),
            "{out}"
        );
        assert!(s.server.get("pods", "demo", "b").is_some());
        let (ok, _, err) = s.kgate(&["approve", &a]);
        assert!(ok, "{err}");
        let (ok, out) = finish(first);
        assert!(ok, "{out}");
        assert_eq!(s.phase(&b)["phase"], "Denied");

        // Nobody decides: refused when the rule's timeout passes.
        let started = Instant::now();
        let (ok, out) = finish(delete(&bot, "configmap", "app-config"));
        assert!(!ok && out.contains("was not decided within 2s"), "{out}");
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(s.server.get("configmaps", "demo", "app-config").is_some());
        let expired = s
            .approvals()
            .into_iter()
            .find(|a| a["spec"]["request"]["resource"] == "configmaps")
            .unwrap();
        assert_eq!(expired["status"]["phase"], "Expired");

        // A client that gives up abandons its approval; approving it later forwards nothing.
        let mut gone = delete(&bot, "pod", "d");
        let d = s.pending("delete", "d");
        let _ = gone.kill();
        let _ = gone.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.phase(&d)["phase"] != "Abandoned" {
            assert!(Instant::now() < deadline, "{}", s.phase(&d));
            std::thread::sleep(Duration::from_millis(100));
        }
        let (ok, _, err) = s.kgate(&["approve", &d]);
        assert!(!ok && err.contains("is Abandoned"), "{err}");
        assert!(s.server.get("pods", "demo", "d").is_some());
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_held_when_the_agent_dies_is_never_forwarded() {
    let (s, agent) = setup().await;
    let bot = s.bot(&agent, "bot");
    let (s, held, name, agent) = blocking(move || {
        let held = delete(&bot, "pod", "a");
        let name = s.pending("delete", "a");
        (s, held, name, agent)
    })
    .await;
    // The agent dies (SIGKILL) while holding the request: the client's connection
    // goes with it.
    drop(agent);
    let (ok, out) = blocking(move || finish(held)).await;
    assert!(!ok, "{out}");
    // A new agent finds the approval it can no longer serve and abandons it; approving
    // it now changes nothing.
    let agent = s.agent();
    blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.phase(&name)["phase"] != "Abandoned" {
            assert!(Instant::now() < deadline, "{}", s.phase(&name));
            std::thread::sleep(Duration::from_millis(100));
        }
        let (ok, _, err) = s.kgate(&["approve", &name]);
        assert!(!ok && err.contains("is Abandoned"), "{err}");
        assert!(
            s.server.get("pods", "demo", "a").is_some(),
            "never forwarded"
        );
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_object_gets_the_api_servers_404_and_no_approval() {
    let (s, agent) = setup().await;
    let bot = s.bot(&agent, "bot");
    blocking(move || {
        let (ok, out, err) = bot.run(&["delete", "pod", "missing", "-n", "demo", "--wait=false"]);
        assert!(!ok, "{out}");
        assert_eq!(
            err.trim(),
            "Error from server (NotFound): pods \"missing\" not found"
        );
        let (ok, _, err) = bot.run(&["delete", "configmap", "gone", "-n", "demo"]);
        assert!(!ok);
        assert_eq!(
            err.trim(),
            "Error from server (NotFound): configmaps \"gone\" not found"
        );
        assert_eq!(
            s.approvals(),
            Vec::<Value>::new(),
            "no approval was created"
        );
        // An object that exists is still held.
        let held = delete(&bot, "pod", "a");
        let name = s.pending("delete", "a");
        let (ok, _, err) = s.kgate(&["approve", &name]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(ok && out.contains("pod \"a\" deleted"), "{out}");
        drop(agent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_delete_shows_its_options_even_for_a_secret() {
    let (s, agent) = setup().await;
    let bot = s.bot(&agent, "bot");
    blocking(move || {
        let held = delete(&bot, "secret", "db-creds");
        let name = s.pending("delete", "db-creds");
        let approval = s
            .approvals()
            .into_iter()
            .find(|a| a["metadata"]["name"] == name.as_str())
            .unwrap();
        let body: Value = serde_json::from_str(approval["spec"]["body"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null);
        // kubectl's DeleteOptions, as it sends them (no kind).
        assert_eq!(
            body,
            json!({"propagationPolicy": "Background"}),
            "{approval}"
        );
        let (ok, _, err) = s.kgate(&["deny", &name]);
        assert!(ok, "{err}");
        let (ok, out) = finish(held);
        assert!(!ok, "{out}");
        assert!(s.server.get("secrets", "demo", "db-creds").is_some());
        drop(agent);
    })
    .await;
}
