//! Cluster-wide `kgate sessions` from an admin's kubeconfig, without the node's disk:
//! two agents (nodes) with record logs of their own, heartbeat Leases and host-network
//! pods in the double; the CLI finds them by their Leases, port-forwards through the
//! double to each admin endpoint, pins its certificate to the Lease's fingerprint and
//! presents the kubeconfig's token. Shows: the merged list with its NODE column, `-o
//! json`, `--node`, `show` and `replay --asciicast` of a session on the second node, a
//! node that stops answering named (exit 3) while the other's sessions still print,
//! a tampered fingerprint refused, and a caller with `/status` but not
//! `sessions.kgate.io` refused by the agent.

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    console::Console,
    harness::{Agent, Kubectl, ScratchDir, free_port, https_client, kgate_bin, scratch_dir, text},
};
use serde_json::{Value, json};

const NAMESPACE: &str = "kgate-system";

/// A node: its agent (admin endpoint, record log, heartbeat) and its pod in the double.
struct Node {
    agent: Agent,
    admin_port: u16,
    /// The agent's record log; declared after the agent, so removed after it stops.
    _records: ScratchDir,
}

fn start_node(server: &Handle, node: &str) -> Node {
    let admin_port = free_port();
    let records = scratch_dir(&format!("records-{node}"));
    let pod = format!("kgate-agent-{node}");
    let agent = Agent::standalone_in_env(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        "",
        &format!(
            "identity: {{nodeName: {node}, unboundSubjects: ['*']}}\n\
             policy: {{defaultAction: allow}}\nheartbeat: {{intervalSeconds: 1}}\n\
             admin: {{listen: '127.0.0.1:{admin_port}'}}\n\
             record: {{dir: '{}'}}\n",
            records.display()
        ),
        &[("POD_NAME", pod.as_str()), ("POD_NAMESPACE", NAMESPACE)],
    )
    .unwrap();
    server
        .create(
            "pods",
            NAMESPACE,
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": pod},
                   "spec": {"nodeName": node, "hostNetwork": true,
                            "containers": [{"name": "agent", "image": "kgate"}]},
                   "status": {"phase": "Running"}}),
        )
        .unwrap();
    Node {
        agent,
        admin_port,
        _records: records,
    }
}

/// `kgate sessions ARGS` with `kubeconfig`: (exit code, stdout, stderr).
fn kgate(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(kgate_bin())
        .arg("sessions")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KGATE_RECORD_DIR")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `kgate sessions list -o json` until `done` holds (or 20 s pass).
fn list_until(kubeconfig: &Path, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = vec!["list", "-o", "json"];
        all.extend_from_slice(args);
        let (_, out, err) = kgate(kubeconfig, &all);
        let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if done(&list) || Instant::now() > deadline {
            assert!(list.is_object(), "{out}\n{err}");
            return list;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn dir_of(file: &Path) -> &Path {
    file.parent().unwrap()
}

fn nodes_of(list: &Value) -> Vec<String> {
    list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["node"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_of_every_node_through_the_api_server() {
    let server = Arc::new(ApiServer::start(Config::default()).await.unwrap());
    let first = start_node(&server, "node-1");
    let second = start_node(&server, "node-2");
    let dir = scratch_dir("sessions-cluster");
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir,
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    let through = |node: &Node, tag: &str| {
        Kubectl::new(
            scratch_dir(tag),
            &node.agent.url(),
            &node.agent.ca_pem,
            server.admin_token(),
        )
    };
    let (k1, k2) = (through(&first, "k-node-1"), through(&second, "k-node-2"));
    let ca_pems = format!("{}{}", first.agent.ca_pem, second.agent.ca_pem);
    let (s, config, viewer_token) = (server.clone(), kubeconfig.clone(), dir.join("viewer-token"));

    let console = tokio::task::spawn_blocking(move || {
        let (server, kubeconfig) = (s, config);
        k1.ok(&["get", "pods"]);
        k2.ok(&["get", "configmaps"]);
        let said = k2.ok(&["exec", "web-0", "--", "echo", "hi from node-2"]);
        assert_eq!(said, "hi from node-2\n");

        // Both nodes' sessions, merged oldest first, each with its node.
        let list = list_until(&kubeconfig, &[], |l| {
            let nodes = nodes_of(l);
            nodes.iter().any(|n| n == "node-1")
                && l["sessions"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["streams"][0]["subresource"] == "exec"))
        });
        assert_eq!(list["unreachable"], json!([]), "{list:#}");
        let sessions = list["sessions"].as_array().unwrap();
        let starts: Vec<&str> = sessions
            .iter()
            .map(|s| s["start"].as_str().unwrap())
            .collect();
        assert!(starts.is_sorted(), "oldest first across nodes: {starts:?}");
        let exec = sessions
            .iter()
            .find(|s| s["streams"][0]["subresource"] == "exec")
            .unwrap();
        assert_eq!(exec["node"], "node-2", "{list:#}");
        let id = exec["id"].as_str().unwrap().to_owned();

        // The table: a NODE column, rows of both nodes, exit 0.
        let (code, table, err) = kgate(&kubeconfig, &["list"]);
        assert_eq!(code, Some(0), "{table}\n{err}");
        assert!(table.starts_with("NODE "), "{table}");
        for node in ["node-1", "node-2"] {
            assert!(
                table.lines().any(|l| l.starts_with(node)),
                "no {node} row: {table}"
            );
        }
        // --node: that node's only.
        let only = list_until(&kubeconfig, &["--node", "node-2"], |_| true);
        let nodes = nodes_of(&only);
        assert!(
            !nodes.is_empty() && nodes.iter().all(|n| n == "node-2"),
            "{only:#}"
        );
        // --ca-file: the agents' certificates verified by their CAs instead of pinned.
        let cas = dir_of(&kubeconfig).join("agents-ca.crt");
        std::fs::write(&cas, &ca_pems).unwrap();
        let (code, table, err) = kgate(&kubeconfig, &["list", "--ca-file", cas.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{table}\n{err}");
        assert_eq!(table.lines().count(), sessions.len() + 1, "{table}");
        // The kubeconfig's token from an exec plugin; a kubeconfig with client
        // certificates only is told what to do.
        let base = std::fs::read_to_string(&kubeconfig).unwrap();
        let token_user = format!("user: {{token: '{}'}}", server.admin_token());
        let plugin = dir_of(&kubeconfig).join("credential-plugin");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\necho '{{\"apiVersion\": \"client.authentication.k8s.io/v1\", \
                 \"kind\": \"ExecCredential\", \"status\": {{\"token\": \"{}\"}}}}'\n",
                server.admin_token()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &plugin,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let exec = dir_of(&kubeconfig).join("exec-kubeconfig");
        std::fs::write(
            &exec,
            base.replace(
                &token_user,
                &format!(
                    "user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: '{}', interactiveMode: Never}}}}",
                    plugin.display()
                ),
            ),
        )
        .unwrap();
        let (code, table, err) = kgate(&exec, &["list"]);
        assert_eq!(code, Some(0), "{table}\n{err}");
        assert!(table.lines().any(|l| l.starts_with("node-2")), "{table}");
        let certs = dir_of(&kubeconfig).join("cert-kubeconfig");
        std::fs::write(
            &certs,
            base.replace(
                &token_user,
                "user: {client-certificate-data: Zm9v, client-key-data: YmFy}",
            ),
        )
        .unwrap();
        let (code, _, err) = kgate(&certs, &["list"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("no bearer token") && err.contains("--token-file") && err.contains("kubectl create token"),
            "{err}"
        );
        // --user: the agents filter.
        let nobody = list_until(&kubeconfig, &["--user", "nobody"], |_| true);
        assert_eq!(nobody["sessions"], json!([]), "{nobody:#}");

        // show and replay find the session on the second node by a prefix.
        let prefix = &id[..8];
        let (code, shown, err) = kgate(&kubeconfig, &["show", prefix]);
        assert_eq!(code, Some(0), "{err}");
        assert!(shown.starts_with("Node     node-2"), "{shown}");
        assert!(shown.contains("pods/web-0/exec"), "{shown}");
        let (code, events, err) = kgate(&kubeconfig, &["show", prefix, "-o", "json"]);
        assert_eq!(code, Some(0), "{err}");
        let first_event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
        assert_eq!(first_event["kind"], "Event");
        let (code, cast, err) = kgate(&kubeconfig, &["replay", prefix, "--asciicast", "-"]);
        assert_eq!(code, Some(0), "{err}");
        let mut lines = cast.lines();
        let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2, "{cast}");
        let output: String = lines
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e[1] == "o")
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(output, "hi from node-2\n", "{cast}");
        let (code, played, err) = kgate(&kubeconfig, &["replay", prefix, "--speed", "0"]);
        assert_eq!(
            (code, played.as_str()),
            (Some(0), "hi from node-2\n"),
            "{err}"
        );
        // The web console without --dir: the same sessions, through the same agents.
        let console = Console::start(&kubeconfig, None, &["--listen", "127.0.0.1:0", "-n", NAMESPACE]);
        let page = json(&console, "/api/sessions?limit=100");
        let mut nodes: Vec<&str> = page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node"].as_str().unwrap())
            .collect();
        nodes.dedup();
        nodes.sort_unstable();
        nodes.dedup();
        assert_eq!(nodes, ["node-1", "node-2"], "{page:#}");
        assert!(page.get("unreachable").is_none(), "{page:#}");
        let shown = json(&console, &format!("/api/sessions/{prefix}"));
        assert_eq!(shown["node"], "node-2", "{shown:#}");
        assert!(
            shown["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resource"].as_str().unwrap().contains("pods/web-0/exec")),
            "{shown:#}"
        );
        let stream = shown["session"]["streams"][0]["auditID"].as_str().unwrap();
        let (status, cast) = console.get(&format!(
            "/api/sessions/{prefix}/streams/{stream}/asciicast"
        ));
        assert_eq!(status, 200, "{cast}");
        assert!(cast.contains("hi from node-2"), "{cast}");

        // A prefix of sessions on both nodes names them, with their nodes.
        let (code, _, err) = kgate(&kubeconfig, &["show", ""]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("is ambiguous") && err.contains(" on node-1") && err.contains(" on node-2"),
            "{err}"
        );
        let (code, _, err) = kgate(&kubeconfig, &["show", "zzz"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("no session \"zzz\""), "{err}");

        // A caller allowed /status but not sessions.kgate.io: the agent says 403.
        server.add_token("viewer-token");
        for verb in ["list", "get"] {
            server.refuse_access("token:viewer-token", verb, "sessions");
        }
        std::fs::write(&viewer_token, "viewer-token").unwrap();
        let (code, _, err) = kgate(
            &kubeconfig,
            &["list", "--token-file", viewer_token.to_str().unwrap()],
        );
        assert_eq!(code, Some(3), "{err}");
        assert!(
            err.contains("403") && err.contains("may not list sessions.kgate.io"),
            "{err}"
        );
        console
    })
    .await
    .unwrap();

    // Straight to the agent: /status yes, /sessions no, as Kubernetes Status objects.
    let client = https_client(&first.agent.ca_pem, false);
    let get = |path: &str| {
        client.request(
            Request::get(format!("https://127.0.0.1:{}{path}", first.admin_port))
                .header("authorization", "Bearer viewer-token")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };
    assert_eq!(get("/status").await.unwrap().status(), StatusCode::OK);
    for path in ["/sessions", "/sessions/abc"] {
        let refused = get(path).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        let status: Value = serde_json::from_str(&text(refused.into_body()).await).unwrap();
        assert_eq!(status["kind"], "Status", "{path}");
        assert_eq!(status["details"]["group"], "kgate.io", "{status}");
    }

    // The second node's agent stops: its sessions are missing, and it is named.
    drop(second);
    let config = kubeconfig.clone();
    let (code, table, err, page) = tokio::task::spawn_blocking(move || {
        let (code, table, err) = kgate(&config, &["list"]);
        (code, table, err, json(&console, "/api/sessions"))
    })
    .await
    .unwrap();
    // The console names the node too, and shows the other's sessions.
    assert_eq!(page["unreachable"][0]["node"], "node-2", "{page:#}");
    assert!(
        page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["node"] == "node-1"),
        "{page:#}"
    );
    assert_eq!(code, Some(3), "{table}\n{err}");
    assert!(err.contains("node node-2 did not answer"), "{err}");
    assert!(
        err.contains("partial list: no sessions from node-2"),
        "{err}"
    );
    assert!(table.lines().any(|l| l.starts_with("node-1")), "{table}");
    assert!(!table.lines().any(|l| l.starts_with("node-2")), "{table}");
    let config = kubeconfig.clone();
    let list = tokio::task::spawn_blocking(move || list_until(&config, &[], |_| true))
        .await
        .unwrap();
    assert_eq!(list["unreachable"][0]["node"], "node-2", "{list:#}");
    assert!(nodes_of(&list).iter().all(|n| n == "node-1"), "{list:#}");

    tokio::task::spawn_blocking(move || {
        // A Lease that names node-1's pod with another certificate: refused.
        let mut forged = server.get("leases", NAMESPACE, "kgate-node-1").unwrap();
        let mut status: Value = serde_json::from_str(
            forged["metadata"]["annotations"]["kgate.io/status"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        status["certSha256"] = "00".repeat(32).into();
        status["node"] = "node-3".into();
        forged["metadata"] = json!({"name": "kgate-node-3",
            "labels": {"app.kubernetes.io/name": "kgate", "kgate.io/node": "node-3"},
            "annotations": {"kgate.io/status": status.to_string()}});
        forged["spec"]["leaseDurationSeconds"] = 3600.into();
        server.create("leases", NAMESPACE, forged).unwrap();
        let (code, table, err) = kgate(&kubeconfig, &["list"]);
        assert_eq!(code, Some(3), "{table}\n{err}");
        assert!(
            err.contains("node node-3 did not answer")
                && err.contains("is not the one its heartbeat Lease names"),
            "{err}"
        );
        assert!(table.lines().any(|l| l.starts_with("node-1")), "{table}");
    })
    .await
    .unwrap();
    drop(first);
}

/// A console answer that must be 200 with JSON.
fn json(console: &Console, path: &str) -> Value {
    let (status, body) = console.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}
