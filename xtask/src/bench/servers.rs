//! The local mode's API server: the project's double (release build) with the bulk
//! Secrets of the masking rows, and the bot's token and ConfigMap that every GET row
//! uses. kgate and nginx are started by the harness ([`kgate_bench::agent`],
//! [`kgate_bench::nginx`]).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use kgate_bench::child::{Child, free_port, wait_for};

pub(super) fn release_bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("release").join(name)
}

/// The API-server double with `bulk` Secrets (count, bytes each) in namespace `demo`.
pub(super) struct Double {
    /// Killed when the double is dropped.
    _child: Child,
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub admin_token: String,
}

impl Double {
    pub(super) fn start(dir: &Path, bulk: (usize, usize)) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut child = Child::spawn(
            Command::new(release_bin("apiserver-double"))
                .args(["--listen", &addr.to_string(), "--bulk-secrets"])
                .arg(format!("{}:{}", bulk.0, bulk.1))
                .arg("--cert-dir")
                .arg(dir.join("api")),
            &dir.join("double.log"),
        )?;
        // The token is written before the double serves; inserting a GiB of Secrets
        // takes a while.
        wait_for(Duration::from_secs(300), || dir.join("api/token").exists())?;
        child.check_running("the API-server double")?;
        wait_for(Duration::from_secs(300), || {
            fs::read_to_string(dir.join("double.log")).is_ok_and(|l| l.contains("listening on"))
        })?;
        Ok(Self {
            _child: child,
            addr,
            ca_pem: fs::read_to_string(dir.join("api/ca.crt"))?,
            admin_token: fs::read_to_string(dir.join("api/token"))?.trim().to_owned(),
        })
    }
}

/// The ConfigMap in `demo` the write rows PATCH (the bot may, through kgate).
pub(super) const WRITE_CONFIGMAP: &str = "bench-write";

/// The bot's projected service-account token, as TokenRequest issues it.
pub(super) fn bot_token(double: &Double, dir: &Path) -> anyhow::Result<String> {
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir.join("kube"),
        &format!("https://{}", double.addr),
        &double.ca_pem,
        &double.admin_token,
    );
    let manifest = dir.join("cm.json");
    // The latency rows' object: a ConfigMap whose GET answer is about 1 KiB; and the
    // write rows', of the same size.
    let configmap = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"blob":"{}"}}}}"#,
            "x".repeat(800)
        )
    };
    fs::write(
        &manifest,
        format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{},{}]}}"#,
            configmap("bench-1k"),
            configmap(WRITE_CONFIGMAP)
        ),
    )?;
    crate::run_cmd(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["create", "--validate=false", "-n", "demo", "-f"])
            .arg(&manifest)
            .stdout(Stdio::null()),
    )?;
    let token = crate::cmd_output(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["create", "token", "bot", "-n", "demo"]),
    )?;
    Ok(token.trim().to_owned())
}
