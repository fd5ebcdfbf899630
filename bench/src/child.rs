//! The bench's child processes (kgate, nginx, the API-server double): each is stopped
//! and reaped when its [`Child`] handle drops, so a bench that fails half-way leaves
//! no process behind. And the small waits and ports that starting them needs.

use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A child process, stopped and reaped on drop.
pub struct Child {
    child: std::process::Child,
    /// Stop with SIGTERM first (nginx: a SIGKILLed master orphans its workers).
    graceful: bool,
    /// The child leads a process group, which is stopped as a whole (a profiler and
    /// the kgate it started).
    group: bool,
}

impl Child {
    pub fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
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
    pub fn spawn_group(cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut child = Self::spawn(cmd.process_group(0), log)?.graceful();
        child.group = true;
        Ok(child)
    }

    /// Stopped with SIGTERM (then SIGKILL after 5 s) rather than SIGKILL.
    pub fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited (say, it refused its config).
    pub fn check_running(&mut self, what: &str) -> anyhow::Result<()> {
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

/// A loopback port that was free a moment ago (the kernel's pick for port 0).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
