//! `kgate bench --upstream` against the API-server double as if it were a user's
//! cluster: the debug kgate binary runs the bench, which runs itself as the agent,
//! with a bot token that `kubectl create token` got from the double. The report's
//! JSON must hold direct and kgate rows that served requests; nginx's rows are there
//! when nginx is installed and left out, saying why, when it is not; a path the token
//! cannot GET and a token the API server refuses end the run with a clear error.

use std::{path::Path, process::Command};

use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Kubectl, ScratchDir, kgate_bin, scratch_dir},
};
use serde_json::Value;

/// The double, and a directory with its CA and a bot's token in it.
async fn cluster(tag: &str) -> (Handle, ScratchDir) {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir(tag);
    let kubectl = Kubectl::new(
        scratch_dir(&format!("{tag}-kube")),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    );
    let token =
        tokio::task::spawn_blocking(move || kubectl.ok(&["create", "token", "bot", "-n", "demo"]))
            .await
            .unwrap();
    std::fs::write(dir.join("ca.crt"), server.ca_pem()).unwrap();
    std::fs::write(dir.join("token"), token.trim()).unwrap();
    (server, dir)
}

/// `kgate bench --upstream <the double> …ARGS`: (success, stderr).
async fn bench(server: &Handle, dir: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(kgate_bin());
    cmd.args(["bench", "--upstream", &server.url()])
        .arg("--ca-file")
        .arg(dir.join("ca.crt"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one JSON report in `dir/out`.
fn report(dir: &Path) -> Value {
    let json: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(json.len(), 1, "{json:?}");
    serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap()).unwrap()
}

/// The `via` of the rows of a section that served requests without errors.
fn served(report: &Value, section: &str) -> Vec<String> {
    let rows = report["results"][section]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} in {report}"));
    rows.iter()
        .filter(|r| r["ok"].as_u64().unwrap_or(0) > 0 && r["errors"] == 0)
        .map(|r| r["via"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_measures_direct_nginx_and_kgate_in_front_of_an_api_server() {
    let (server, dir) = cluster("bench-up").await;
    let (ok, stderr) = bench(&server, &dir, &["--seconds", "1", "--quick", "--yes"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("system:serviceaccount:demo:bot"),
        "{stderr}"
    );
    let report = report(&dir);
    assert_eq!(report["settings"]["user"], "system:serviceaccount:demo:bot");
    assert_eq!(report["settings"]["path"], "/version");
    let nginx = Path::new("/usr/sbin/nginx").exists();
    for section in ["open_loop", "saturation"] {
        let served = served(&report, section);
        for via in ["direct", "kgate", "kgate-batch"] {
            // Both protocols.
            assert_eq!(
                served.iter().filter(|v| *v == via).count(),
                2,
                "{section} {via}: {served:?}"
            );
        }
        assert_eq!(served.iter().any(|v| v == "nginx"), nginx, "{served:?}");
    }
    assert!(
        report["results"]["handshakes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["via"] == "kgate" && r["ok"].as_u64().unwrap_or(0) > 0),
        "{report}"
    );
    // The agents' requests reached the double as the bot, with the bot's token.
    let seen = server.requests();
    let bot = seen
        .iter()
        .filter(|r| {
            r.path == "/version" && r.user.as_deref() == Some("system:serviceaccount:demo:bot")
        })
        .count();
    assert!(bot > 100, "{bot} GETs of /version as the bot");
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_without_nginx_leaves_its_rows_out_and_says_why() {
    let (server, dir) = cluster("bench-no-nginx").await;
    let (ok, stderr) = bench(
        &server,
        &dir,
        &[
            "--seconds",
            "1",
            "--quick",
            "--only",
            "latency",
            "--nginx",
            "/nonexistent/nginx",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("nginx not installed at /nonexistent/nginx: its rows are left out"),
        "{stderr}"
    );
    let report = report(&dir);
    assert!(
        report["machine"]["nginx"]
            .as_str()
            .unwrap()
            .starts_with("not installed"),
        "{report}"
    );
    let served = served(&report, "open_loop");
    assert!(!served.iter().any(|v| v == "nginx"), "{served:?}");
    assert_eq!(
        served.iter().filter(|v| *v == "kgate").count(),
        2,
        "{served:?}"
    );
    assert!(report["results"].get("saturation").is_none(), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_the_token_cannot_read_or_a_refused_token_is_a_clear_error() {
    let (server, dir) = cluster("bench-bad").await;
    let path = "/api/v1/namespaces/demo/configmaps/no-such-thing";
    let (ok, stderr) = bench(&server, &dir, &["--quick", "--path", path]).await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "GET {path} directly as system:serviceaccount:demo:bot answered 404 Not Found"
        )) && stderr.contains("--path must name something the token may GET"),
        "{stderr}"
    );
    std::fs::write(dir.join("token"), "not-a-token-the-cluster-knows").unwrap();
    let (ok, stderr) = bench(&server, &dir, &["--quick"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("the API server does not accept the token (401)"),
        "{stderr}"
    );
    assert!(
        !dir.join("out").exists(),
        "no report for a run that did not start"
    );
}
