//! What the proxy tests share: the `kgate` binary run as a standalone agent in front of
//! the API-server double, kubeconfigs, the real kubectl, and an HTTPS client.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory under the temp dir, removed with its contents when dropped.
pub fn scratch_dir(tag: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!(
        "kgate-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    fs::create_dir_all(&dir).expect("scratch dir");
    ScratchDir(dir)
}

pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
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

/// Writes a kubeconfig for `server` and returns its path.
pub fn kubeconfig(dir: &Path, server: &str, ca_pem: &str, token: &str) -> PathBuf {
    fs::create_dir_all(dir).expect("kubeconfig dir");
    fs::write(dir.join("ca.crt"), ca_pem).expect("ca");
    let path = dir.join("kubeconfig");
    fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{server}', certificate-authority: {}}}\n\
             users:\n- name: u\n  user: {{token: '{token}'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: demo}}\ncurrent-context: x\n",
            dir.join("ca.crt").display()
        ),
    )
    .expect("kubeconfig");
    path
}

/// The real kubectl with a kubeconfig in a directory of its own.
pub struct Kubectl {
    pub config: PathBuf,
    _dir: ScratchDir,
}

impl Kubectl {
    pub fn new(dir: ScratchDir, server: &str, ca_pem: &str, token: &str) -> Self {
        Self {
            config: kubeconfig(&dir, server, ca_pem, token),
            _dir: dir,
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.config);
        cmd
    }

    /// Runs to completion: (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .command()
            .args(["--request-timeout", "20s"])
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "kubectl {args:?} failed: {stderr}");
        stdout
    }
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS client trusting `ca_pem`, HTTP/2 only or HTTP/1.1 only.
pub fn https_client(ca_pem: &str, http2: bool) -> HttpsClient {
    https_client_with(ca_pem, http2)
}

/// As [`https_client`], for request bodies of type `B` (a proxy's `Incoming`, say).
pub fn https_client_with<B>(
    ca_pem: &str,
    http2: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        roots.add(cert).expect("CA certificate");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let mut client = Client::builder(TokioExecutor::new());
    client.http2_only(http2);
    client.build(connector)
}

/// Reads a whole response body as text.
pub async fn text(body: hyper::body::Incoming) -> String {
    String::from_utf8_lossy(
        &body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default(),
    )
    .into_owned()
}

/// A child process killed (and reaped) on drop, whatever the test's outcome.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kubectl port-forward pod/POD :REMOTE` (with `env`) and returns it with the
/// local port it listens on.
pub fn port_forward(k: &Kubectl, env: &[(&str, &str)], pod: &str, remote: u16) -> (Killed, u16) {
    let mut child = Killed(
        k.command()
            .args(["port-forward", &format!("pod/{pod}"), &format!(":{remote}")])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward starts"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("port-forward prints its address");
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    (child, port)
}

/// Sends `payload` to 127.0.0.1:`port` and reads as many bytes back (the double's
/// container ports echo).
pub fn echo_round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("local port");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    conn.read_exact(&mut back).expect("the echo");
    back
}
