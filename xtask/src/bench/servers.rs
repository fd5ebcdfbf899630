//! The processes a bench run measures, all on loopback and all children of the bench:
//! the API-server double (release build) and kgate in standalone mode with identity,
//! policy, masking and recording on. nginx is in [`super::nginx`].
//!
//! Each child dies with its [`Child`] handle; a bench that fails half-way leaves no
//! process behind.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kgate_tests::{harness::free_port, pki::Ca};

/// A child process, stopped and reaped on drop.
pub(super) struct Child {
    child: std::process::Child,
    /// Stop with SIGTERM first (nginx: a SIGKILLed master orphans its workers).
    graceful: bool,
    /// The child leads a process group, which is stopped as a whole (a profiler and
    /// the kgate it started).
    group: bool,
}

impl Child {
    pub(super) fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let log = fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self {
            child,
            graceful: false,
            group: false,
        })
    }

    /// Like [`Child::spawn`], as the leader of a new process group that is stopped
    /// gracefully as a whole.
    pub(super) fn spawn_group(cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut child = Self::spawn(cmd.process_group(0), log)?.graceful();
        child.group = true;
        Ok(child)
    }

    /// Stopped with SIGTERM (then SIGKILL after 5 s) rather than SIGKILL.
    pub(super) fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited (say, it refused its config).
    pub(super) fn check_running(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{what} exited: {status}");
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // `kill -TERM -- -PGID` signals the whole group.
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        if self.graceful
            && Command::new("kill")
                .args(["-TERM", "--", &target])
                .status()
                .is_ok_and(|s| s.success())
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if self.group {
            let _ = Command::new("kill").args(["-KILL", "--", &target]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
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

/// kgate's serving certificate (also nginx's): issued by a CA of the bench's own.
pub(super) struct Serving {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Serving {
    pub(super) fn issue(dir: &Path) -> anyhow::Result<Self> {
        let ca = Ca::new("kgate bench CA")?;
        ca.issue_kgate(&[])?.write(dir, "tls")?;
        Ok(Self {
            ca_pem: ca.cert_pem(),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        })
    }
}

/// How a kgate instance records: `strict` (the agent's default: a forwarded request's
/// record is fsynced first) or `batch` (synced every second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Durability {
    Strict,
    Batch,
}

impl Durability {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Batch => "batch",
        }
    }
}

/// `kgate agent` in standalone mode (no kernel programs: their cost is one map
/// lookup per connection, not per request) with every request stage on: identity
/// (the bot's projected token, verified locally), policy (a file allowing the bot's
/// reads), masking (defaults: Secret values) and recording (an on-disk log).
pub(super) fn start_kgate(
    dir: &Path,
    double: &Double,
    serving: &Serving,
    durability: Durability,
) -> anyhow::Result<(Child, SocketAddr)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let own = dir.join(format!("kgate-{}", durability.name()));
    fs::create_dir_all(&own)?;
    fs::write(
        dir.join("policy.yaml"),
        "apiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {name: bench}\n\
         spec:\n  subjects: {serviceAccounts: [demo/bot]}\n  defaultAction: deny\n  rules:\n\
         \x20   - {name: read, match: {verbs: [get, list, watch]}, action: allow}\n",
    )?;
    fs::write(
        own.join("agent.yaml"),
        format!(
            "listen: '{addr}'\nkernel: false\ndirectClients: allow\n\
             tls: {{certFile: {cert}, keyFile: {key}}}\n\
             upstream: {{server: 'https://{api}', caFile: {d}/api/ca.crt, tokenFile: {d}/api/token}}\n\
             identity: {{unboundSubjects: ['system:serviceaccount:demo:bot']}}\n\
             policy: {{files: ['{d}/policy.yaml']}}\n\
             record: {{dir: {own}/records, durability: {durability}}}\n",
            cert = serving.cert.display(),
            key = serving.key.display(),
            api = double.addr,
            d = dir.display(),
            own = own.display(),
            durability = durability.name(),
        ),
    )?;
    // A profiler to run kgate under (`heaptrack`, `perf record -g --`, `valgrind
    // --tool=massif`): its memory and CPU figures are then the profiler's too.
    let wrapper = std::env::var("KGATE_BENCH_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let (mut cmd, spawn): (_, fn(&mut Command, &Path) -> anyhow::Result<Child>) = match words.next()
    {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(release_bin("kgate"));
            (cmd, Child::spawn_group)
        }
        None => (Command::new(release_bin("kgate")), Child::spawn),
    };
    let mut child = spawn(
        cmd.args(["agent", "--config"])
            .arg(own.join("agent.yaml"))
            .env("RUST_LOG", "warn"),
        &own.join("kgate.log"),
    )?;
    wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .context("kgate did not start listening (see kgate.log)")?;
    child.check_running("kgate")?;
    Ok((child, addr))
}

/// The bot's projected service-account token, as TokenRequest issues it.
pub(super) fn bot_token(double: &Double, dir: &Path) -> anyhow::Result<String> {
    let kubeconfig = kgate_tests::harness::kubeconfig(
        &dir.join("kube"),
        &format!("https://{}", double.addr),
        &double.ca_pem,
        &double.admin_token,
    );
    let manifest = dir.join("cm.json");
    // The latency rows' object: a ConfigMap whose GET answer is about 1 KiB.
    fs::write(
        &manifest,
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"bench-1k"}},"data":{{"blob":"{}"}}}}"#,
            "x".repeat(800)
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

pub(super) fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
