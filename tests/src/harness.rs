//! What the proxy tests share: the `kgate` binary run as a standalone agent in front of
//! the API-server double, kubeconfigs, the real kubectl, and an HTTPS client (those
//! three from the double's crate, re-exported here).

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

pub use crate::apiserver::client::{
    HttpsClient, Killed, Kubectl, ScratchDir, echo_round_trip, free_port, https_client,
    https_client_with, kubeconfig, port_forward, scratch_dir, text,
};
use crate::pki::Ca;

/// A KgatePolicy letting the admin (`kubernetes-admin`) do anything but touch
/// Secrets: denied with the message `no secrets here`.
pub const ADMIN_NO_SECRETS: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: admins}
spec:
  subjects: {users: [kubernetes-admin]}
  rules:
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
      message: no secrets here
"#;

/// The `kgate` binary: `KGATE_BIN`, or next to the test executable's `deps/`.
pub fn kgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KGATE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("kgate");
    assert!(
        bin.exists(),
        "{} missing: build it first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// `kgate agent` in standalone mode (no kernel programs, direct clients allowed) in
/// front of `upstream`; killed on drop.
pub struct Agent {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub dir: ScratchDir,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// A standalone agent (no kernel programs, direct clients allowed) in front of
    /// `upstream`, whose admin token is the agent's own credential; the admin user may
    /// use its unbound token, and policy allows what no rule decides.
    pub fn standalone(
        upstream: &str,
        upstream_ca_pem: &str,
        admin_token: &str,
    ) -> anyhow::Result<Self> {
        Self::standalone_with(
            upstream,
            upstream_ca_pem,
            admin_token,
            "identity: {unboundSubjects: [kubernetes-admin]}\npolicy: {defaultAction: allow}\n",
        )
    }

    /// As [`Agent::standalone`], with `extra` appended to the config (an `identity:`
    /// section, say).
    pub fn standalone_with(
        upstream: &str,
        upstream_ca_pem: &str,
        admin_token: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::standalone_full(upstream, upstream_ca_pem, admin_token, "", extra)
    }

    /// As [`Agent::standalone_with`], with `upstream_fields` added to the `upstream:`
    /// section (`responseTimeoutSeconds: 3`, say).
    pub fn standalone_full(
        upstream: &str,
        upstream_ca_pem: &str,
        admin_token: &str,
        upstream_fields: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::standalone_in_env(
            upstream,
            upstream_ca_pem,
            admin_token,
            upstream_fields,
            extra,
            &[],
        )
    }

    /// As [`Agent::standalone_full`], the agent's process with `env` set.
    pub fn standalone_in_env(
        upstream: &str,
        upstream_ca_pem: &str,
        admin_token: &str,
        upstream_fields: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = scratch_dir("agent");
        let ca = Ca::new("kgate test cluster CA")?;
        ca.issue_kgate(&[])?.write(&dir, "tls")?;
        fs::write(dir.join("upstream-ca.crt"), upstream_ca_pem)?;
        fs::write(dir.join("agent-token"), admin_token)?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.join("agent.yaml");
        let upstream_fields = if upstream_fields.is_empty() {
            String::new()
        } else {
            format!(", {upstream_fields}")
        };
        fs::write(
            &config,
            format!(
                "listen: '{addr}'\nkernel: false\ndirectClients: allow\n\
                 tls: {{certFile: {d}/tls.crt, keyFile: {d}/tls.key, reloadSeconds: 1}}\n\
                 upstream: {{server: '{upstream}', caFile: {d}/upstream-ca.crt, tokenFile: {d}/agent-token{upstream_fields}}}\n\
                 {extra}",
                d = dir.display()
            ),
        )?;
        let mut child = Command::new(kgate_bin())
            .args(["--log-format", "json", "agent", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning kgate")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>,
                lines.clone(),
            ),
            (
                Box::new(child.stdout.take().expect("piped")),
                stdout.clone(),
            ),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let agent = Self {
            addr,
            ca_pem: ca.cert_pem(),
            dir,
            child,
            lines,
            stdout,
        };
        agent.wait_for("agent listening", Duration::from_secs(20))?;
        Ok(agent)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log (stderr), line by line.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// What the agent printed on stdout (records, with `record.stdout`), line by line.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!("agent never logged {needle:?}:\n{}", self.log().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Serves `other`'s certificate from now on (replicas behind one address share
    /// one), through the agent's own certificate reload.
    pub fn serve_certificate_of(&mut self, other: &Agent) -> anyhow::Result<()> {
        for file in ["tls.crt", "tls.key"] {
            fs::copy(other.dir.join(file), self.dir.join(file))?;
        }
        self.wait_for("serving certificate reloaded", Duration::from_secs(10))?;
        self.ca_pem.clone_from(&other.ca_pem);
        Ok(())
    }

    /// Peak resident memory of the agent (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.child.id())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory (VmHWM) of a process, in KiB; 0 if it cannot be read.
pub fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A kube-rs client for `server` with `token`, trusting `ca_pem`, built from a
/// kubeconfig as a user's would be. The kubeconfig names its CA file; the client has
/// read it once it is built, so the scratch directory may go.
pub async fn kube_client(server: &str, ca_pem: &str, token: &str) -> kube::Client {
    let dir = scratch_dir("kube-client");
    let path = kubeconfig(&dir, server, ca_pem, token);
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("the kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("the kubeconfig makes a client config");
    kube::Client::try_from(config).expect("a kube client")
}

/// The service account `demo/NAME` (created in the double when missing), as the
/// subject of a token bound to no pod.
pub fn service_account(server: &crate::apiserver::Handle, name: &str) -> crate::apiserver::Subject {
    if server.get("serviceaccounts", "demo", name).is_none() {
        server
            .create(
                "serviceaccounts",
                "demo",
                serde_json::json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": name}}),
            )
            .expect("the service account is created");
    }
    let sa = server
        .get("serviceaccounts", "demo", name)
        .expect("created");
    crate::apiserver::Subject {
        namespace: "demo".into(),
        service_account: name.into(),
        service_account_uid: sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod: None,
    }
}

/// kubectl through `agent` as the service account `demo/NAME` (created in the double
/// when missing), with a token the double issued for it.
pub fn kubectl_as_service_account(
    server: &crate::apiserver::Handle,
    agent: &Agent,
    name: &str,
) -> Kubectl {
    let token = server.mint_token(
        &service_account(server, name),
        &[crate::apiserver::DEFAULT_ISSUER.to_owned()],
        3600,
    );
    Kubectl::new(scratch_dir(name), &agent.url(), &agent.ca_pem, &token)
}
