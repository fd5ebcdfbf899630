//! A node and a pod, built from network namespaces and a cgroup, per DESIGN.md's test
//! topology rules.
//!
//! ```text
//!  netns <name>-node                       netns <name>-pod (no default route)
//!  kg0 10.213.0.1/30, fd00:6b67::1/64 ──── eth0 10.213.0.2/30, fd00:6b67::2/64
//!  (agent, upstreams)                      (the "pod" processes)
//! ```
//!
//! cgroups live under `<cgroup2>/kgate-test-<name>/`: the kernel programs attach to that
//! directory, pods run in `pod/`, the agent in `agent/` (inside the attached subtree,
//! so its exemption is really exercised). Each topology mounts its own bpffs instance,
//! so pins never touch the host's /sys/fs/bpf. Nothing is assigned in the machine's own
//! network namespace. Drop kills the processes it started, deletes both namespaces,
//! removes the cgroups and unmounts the bpffs.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

pub const NODE_IP4: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const POD_IP4: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b67, 0, 0, 0, 0, 0, 1);
pub const POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b67, 0, 0, 0, 0, 0, 2);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Topology {
    pub name: String,
    pub node_ns: String,
    pub pod_ns: String,
    /// The cgroup the kernel programs attach to.
    pub cgroup_root: PathBuf,
    pub pod_cgroup: PathBuf,
    pub agent_cgroup: PathBuf,
    /// A private bpffs mount.
    pub bpffs: PathBuf,
    /// Scratch directory for configs and certificates.
    pub dir: PathBuf,
    children: Mutex<Vec<Child>>,
}

impl Topology {
    /// Builds the namespaces, veth pair, cgroups and bpffs. Needs root.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("kgt-{tag}-{}-{n}", std::process::id());
        let mount = cgroup2_mount()?;
        let dir = std::env::temp_dir().join(&name);
        let cgroup_root = mount.join(format!("kgate-test-{name}"));
        let topo = Self {
            node_ns: format!("{name}-node"),
            pod_ns: format!("{name}-pod"),
            pod_cgroup: cgroup_root.join("pod"),
            agent_cgroup: cgroup_root.join("agent"),
            cgroup_root,
            bpffs: dir.join("bpffs"),
            dir,
            name,
            children: Mutex::default(),
        };
        // On any failure, Drop removes what was made so far.
        topo.build()
            .with_context(|| format!("building test topology {}", topo.name))?;
        Ok(topo)
    }

    fn build(&self) -> anyhow::Result<()> {
        let (node, pod) = (self.node_ns.as_str(), self.pod_ns.as_str());
        run("ip", &["netns", "add", node])?;
        run("ip", &["netns", "add", pod])?;
        run(
            "ip",
            &[
                "link", "add", "kg0", "netns", node, "type", "veth", "peer", "name", "eth0",
                "netns", pod,
            ],
        )?;
        for (ns, dev, v4, v6) in [
            (node, "kg0", NODE_IP4, NODE_IP6),
            (pod, "eth0", POD_IP4, POD_IP6),
        ] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", dev],
            )?;
            // nodad: the address is usable at once instead of after duplicate detection.
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        for cg in [&self.cgroup_root, &self.pod_cgroup, &self.agent_cgroup] {
            fs::create_dir_all(cg).with_context(|| format!("mkdir {}", cg.display()))?;
        }
        fs::create_dir_all(&self.bpffs)?;
        run(
            "mount",
            &["-t", "bpf", "bpf", &self.bpffs.to_string_lossy()],
        )?;
        Ok(())
    }

    /// A command that runs in the pod: its cgroup and network namespace.
    pub fn pod_command(&self, program: impl AsRef<Path>) -> Command {
        self.command_in(&self.pod_cgroup, &self.pod_ns, program.as_ref())
    }

    /// A `hostNetwork: true` pod's process: in the pod cgroup, in the node's network
    /// namespace.
    pub fn host_network_pod_command(&self, program: impl AsRef<Path>) -> Command {
        self.command_in(&self.pod_cgroup, &self.node_ns, program.as_ref())
    }

    /// A kubelet-style cgroup for a container of pod `uid` (cgroupfs driver layout:
    /// `kubepods/besteffort/pod<uid>/<container id>`) under the intercepted cgroup.
    pub fn kubelet_pod_cgroup(&self, uid: &str, container_id: &str) -> anyhow::Result<PathBuf> {
        let dir = self
            .cgroup_root
            .join("kubepods/besteffort")
            .join(format!("pod{uid}"))
            .join(container_id);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Pod `namespace/name` on node-1 as the kubelet runs it: the Pod object
    /// ([`running_pod`]) created with `kubectl` (`kubectl` runs `kubectl ARGS` as the
    /// admin and returns its output) and its container's cgroup
    /// ([`Topology::kubelet_pod_cgroup`]). Returns the pod's UID and the cgroup.
    pub fn kubelet_pod(
        &self,
        namespace: &str,
        name: &str,
        container_id: &str,
        kubectl: impl FnOnce(&[&str]) -> anyhow::Result<String>,
    ) -> anyhow::Result<(String, PathBuf)> {
        let manifest = self.dir.join(format!("pod-{namespace}-{name}.json"));
        let pod = running_pod(namespace, name, "node-1", container_id);
        fs::write(&manifest, pod.to_string())
            .with_context(|| format!("writing {}", manifest.display()))?;
        let uid = kubectl(&[
            "create",
            "--validate=false",
            "-o",
            "jsonpath={.metadata.uid}",
            "-f",
            manifest.to_str().context("manifest path")?,
        ])?;
        let uid = uid.trim().to_owned();
        let cgroup = self.kubelet_pod_cgroup(&uid, container_id)?;
        Ok((uid, cgroup))
    }

    /// A command in the pod's network namespace, in `cgroup` (e.g. one made by
    /// [`Topology::kubelet_pod_cgroup`]).
    pub fn pod_command_in(&self, cgroup: &Path, program: impl AsRef<Path>) -> Command {
        self.command_in(cgroup, &self.pod_ns, program.as_ref())
    }

    /// A command that runs on the node side, in the agent's cgroup.
    pub fn agent_command(&self, program: impl AsRef<Path>) -> Command {
        self.command_in(&self.agent_cgroup, &self.node_ns, program.as_ref())
    }

    /// A command on the node side outside the intercepted cgroup subtree.
    pub fn node_command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("--")
            .arg(program.as_ref());
        cmd
    }

    fn command_in(&self, cgroup: &Path, netns: &str, program: &Path) -> Command {
        // Join the cgroup first, then the netns: nsenter (unlike `ip netns exec`) does not
        // remount /sys, so the cgroup and bpffs mounts stay visible to the program.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="$ns" -- "$@""#,
            "sh",
        ])
        .arg(cgroup)
        .arg(format!("/run/netns/{netns}"))
        .arg(program);
        cmd
    }

    /// Spawns a long-running process, owned by the topology (killed on drop), with its
    /// stdout and stderr lines collected.
    pub fn spawn(&self, mut cmd: Command) -> anyhow::Result<Process> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let output = Output::default();
        output.collect(child.stdout.take());
        output.collect(child.stderr.take());
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        Ok(Process { pid, output })
    }

    /// Waits for a process spawned here to exit; returns its exit code.
    pub fn wait(&self, process: &Process, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut children = self.children.lock().unwrap();
                if let Some(child) = children.iter_mut().find(|c| c.id() == process.pid) {
                    if let Some(status) = child.try_wait()? {
                        return Ok(status.code());
                    }
                } else {
                    bail!("process {} was not spawned by this topology", process.pid);
                }
            }
            if Instant::now() > deadline {
                bail!("process {} still running after {timeout:?}", process.pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to a process spawned here and waits for it.
    pub fn stop(&self, process: &Process) -> anyhow::Result<Option<i32>> {
        run("kill", &["-TERM", &process.pid.to_string()])?;
        self.wait(process, Duration::from_secs(10))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything those processes left in our cgroups was started by this topology too.
        let _ = fs::write(self.cgroup_root.join("cgroup.kill"), "1");
        for ns in [&self.node_ns, &self.pod_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.bpffs.exists() {
            let _ = Command::new("umount").arg(&self.bpffs).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        // cgroup directories go with rmdir, deepest first, once their processes are gone.
        remove_cgroup_tree(&self.cgroup_root);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    for _ in 0..50 {
        if !dir.exists() || fs::remove_dir(dir).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process spawned by a [`Topology`].
pub struct Process {
    pub pid: u32,
    pub output: Output,
}

/// The lines a process printed (stdout and stderr interleaved), shared with reader threads.
#[derive(Clone, Default)]
pub struct Output {
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Output {
    fn collect(&self, stream: Option<impl std::io::Read + Send + 'static>) {
        let Some(stream) = stream else { return };
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let (lock, cvar) = &*lines;
                lock.lock().unwrap().push(line);
                cvar.notify_all();
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no line containing {needle:?} within {timeout:?}; got:\n{}",
                    lines.join("\n")
                );
            }
            lines = cvar.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

/// Runs a command to completion; fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cgroup2 mount point from /proc/self/mountinfo.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup2 mount: the kernel tests need cgroup v2")
}

/// Whether this process can run the kernel tests.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Pod `namespace/name` on `node`, running one container `main` as service account
/// `bot`, with the container ID a kubelet reports in its status: the manifest for
/// `kubectl create --validate=false` (a pod whose cgroup
/// [`Topology::kubelet_pod_cgroup`] lays out).
pub fn running_pod(
    namespace: &str,
    name: &str,
    node: &str,
    container_id: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "serviceAccountName": "bot",
                 "containers": [{"name": "main", "image": "bot:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "main", "ready": true,
            "restartCount": 0, "image": "bot:1", "imageID": "",
            "containerID": format!("containerd://{container_id}")}]},
    })
}
