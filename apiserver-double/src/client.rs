//! The client side of tests against the double (or any server of the Kubernetes API):
//! scratch directories, kubeconfigs, the real kubectl, an HTTPS client trusting a given
//! CA, `kubectl port-forward` and an echo round trip through it.
//!
//! Not here: kgate itself (the agent a proxy test runs is `kgate_tests::harness`'s).

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory under the temp dir, removed with its contents when dropped. Named
/// by the process and a counter, and created only if it did not exist: two tests of
/// one process never share one (a free port as the name's tail did collide, and two
/// agents then read one config).
pub fn scratch_dir(tag: &str) -> ScratchDir {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kgate-{tag}-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return ScratchDir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("scratch dir {}: {e}", dir.display()),
        }
    }
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

/// What kubectl up to 1.32 prints on stderr when its WebSocket exec or attach drops a
/// message: it starts reading the connection before it has set up its streams, and
/// discards what arrives for a stream not there yet, which may be the output or the
/// exit status (kubernetes/kubernetes#131189, fixed in 1.33 by #131203). The run then
/// ends with the output missing, and often with exit code 0. A program that answers
/// at once, as the double's do, on a busy machine meets it about once in a few
/// hundred runs; a real API server, a few milliseconds slower to answer, less often.
pub const KUBECTL_EXEC_RACE: &str = "Unknown stream id";

/// Runs `run` (a kubectl command that reads no stdin) again, three times in all at
/// most, while kubectl reports [`KUBECTL_EXEC_RACE`]: the lost message is the
/// client's doing, and a test is about what the server sent. Anything else lost,
/// without that message, stays for the test to see.
pub fn rerun_on_exec_race(mut run: impl FnMut() -> Output) -> Output {
    let mut out = run();
    for _ in 1..3 {
        if !String::from_utf8_lossy(&out.stderr).contains(KUBECTL_EXEC_RACE) {
            break;
        }
        out = run();
    }
    out
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

    /// kubectl with this kubeconfig and a discovery cache of its own: the shared one
    /// in `~/.kube/cache` is keyed by host and port, and a port an earlier test's
    /// server used would hand this one that server's discovery.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(self.config.with_file_name("kubectl-cache"));
        cmd
    }

    /// Runs to completion: (success, stdout, stderr). A run that kubectl says lost
    /// part of an exec stream to its own race runs again ([`KUBECTL_EXEC_RACE`]).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.output(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs to completion, with stdin closed, as [`Kubectl::run`] does; the whole
    /// output, for its exit code.
    pub fn output(&self, args: &[&str]) -> Output {
        rerun_on_exec_race(|| {
            self.command()
                .args(["--request-timeout", "20s"])
                .args(args)
                .output()
                .expect("kubectl runs")
        })
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
