//! The `apiserver-double` binary as the demo, the bench and the kernel test run it:
//! it prints its address once the cert dir is written, kubectl can use what it wrote,
//! and SIGTERM ends it cleanly.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kgate_apiserver_double::client::{Kubectl, scratch_dir};

#[test]
fn prints_its_address_serves_kubectl_and_exits_on_sigterm() {
    let dir = scratch_dir("double-bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiserver-double"))
        .args(["--listen", "127.0.0.1:0", "--cert-dir"])
        .arg(dir.join("api"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(
        url.starts_with("https://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );

    let ca = fs::read_to_string(dir.join("api/ca.crt")).unwrap();
    let token = fs::read_to_string(dir.join("api/token")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----") && !token.is_empty());
    let kubectl = Kubectl::new(scratch_dir("double-bin-kube"), &url, &ca, &token);
    let namespaces = kubectl.ok(&["get", "namespaces", "-o", "name"]);
    assert_eq!(
        namespaces.lines().collect::<Vec<_>>(),
        [
            "namespace/default",
            "namespace/demo",
            "namespace/kgate-system",
            "namespace/kube-system"
        ]
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("apiserver-double ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
}

#[test]
fn refuses_unknown_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_apiserver-double"))
        .args(["--cert-dir", "/nonexistent", "--issuers", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown argument \"--issuers\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
