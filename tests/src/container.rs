//! The agent's image under podman, run the way deploy/daemonset.yaml runs it on a
//! node: [`PodSpec`] reads the DaemonSet's agent container (image, args, env,
//! capabilities, host namespaces, read-only root, volumes) and [`Podman::run`] turns it
//! into `podman run` flags against a test [`Topology`], whose node network namespace
//! stands for the host network and whose bpffs and cgroups for the node's.
//!
//! Podman runs with a storage, run and state directory of its own under the test's
//! scratch directory (vfs: no mounts to undo), runc and cgroupfs (the only pair that
//! runs containers on hybrid cgroup hosts), and the shell's hard limits as ulimits.
//! Drop removes every container, image and cgroup it made, and that directory.
//!
//! Not here: building the image (`cargo xtask image`, see [`image_archive`]).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};
use serde_yaml::Value;

use crate::topology::{NODE_IP4, Process, Topology, cgroup2_mount};

/// Where the DaemonSet mounts each volume's content from, on the test node.
pub struct Volumes {
    /// By volume name: a directory of files the test wrote (config, certificates,
    /// token) or a host path.
    pub sources: BTreeMap<String, PathBuf>,
}

/// The DaemonSet's agent container, as podman needs it.
#[derive(Debug)]
pub struct PodSpec {
    pub image: String,
    pub args: Vec<String>,
    pub host_network: bool,
    pub host_pid: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub read_only_root: bool,
    /// (name, value or the fieldRef path)
    pub env: Vec<(String, EnvValue)>,
    /// (volume name, mount path, read only, what the volume is)
    pub mounts: Vec<(String, String, bool, Value)>,
}

#[derive(Debug)]
pub enum EnvValue {
    Literal(String),
    Field(String),
}

impl PodSpec {
    /// Reads deploy/daemonset.yaml.
    pub fn from_deploy() -> anyhow::Result<Self> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/daemonset.yaml");
        Self::parse(&fs::read_to_string(path)?)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let yaml: Value = serde_yaml::from_str(text)?;
        let pod = &yaml["spec"]["template"]["spec"];
        let agent = pod["containers"]
            .as_sequence()
            .and_then(|c| c.iter().find(|c| c["name"].as_str() == Some("agent")))
            .context("no agent container")?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let security = &agent["securityContext"];
        let env = agent["env"]
            .as_sequence()
            .map(|vars| {
                vars.iter()
                    .map(|var| {
                        let name = var["name"].as_str().context("env without a name")?;
                        let value = if let Some(v) = var["value"].as_str() {
                            EnvValue::Literal(v.into())
                        } else {
                            let field = var["valueFrom"]["fieldRef"]["fieldPath"]
                                .as_str()
                                .with_context(|| {
                                    format!("env {name}: neither value nor fieldRef")
                                })?;
                            EnvValue::Field(field.into())
                        };
                        Ok((name.to_owned(), value))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let volumes = pod["volumes"].as_sequence().context("no volumes")?;
        let mounts = agent["volumeMounts"]
            .as_sequence()
            .context("no volumeMounts")?
            .iter()
            .map(|m| {
                let name = m["name"].as_str().context("mount without a name")?;
                let path = m["mountPath"].as_str().context("mount without a path")?;
                let volume = volumes
                    .iter()
                    .find(|v| v["name"].as_str() == Some(name))
                    .with_context(|| format!("no volume {name}"))?;
                Ok((
                    name.to_owned(),
                    path.to_owned(),
                    m["readOnly"].as_bool().unwrap_or(false),
                    volume.clone(),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            image: agent["image"].as_str().context("no image")?.to_owned(),
            args: strings(&agent["args"]),
            host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
            host_pid: pod["hostPID"].as_bool().unwrap_or(false),
            cap_drop: strings(&security["capabilities"]["drop"]),
            cap_add: strings(&security["capabilities"]["add"]),
            read_only_root: security["readOnlyRootFilesystem"]
                .as_bool()
                .unwrap_or(false),
            env,
            mounts,
        })
    }
}

/// Podman with state of its own; see the module doc.
pub struct Podman {
    dir: PathBuf,
    /// v1 controller hierarchies (hybrid hosts) where runc made cgroups for us.
    cgroup_parents: std::sync::Mutex<Vec<PathBuf>>,
}

/// The archive `cargo xtask image` writes: `KGATE_IMAGE` (`cargo xtask test` builds
/// the image first and sets it), else built now into `dir` (a release build: slow the
/// first time).
pub fn image_archive(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KGATE_IMAGE") {
        return Ok(path.into());
    }
    let output = dir.join("kgate.oci.tar");
    eprintln!("KGATE_IMAGE is not set: building the image (cargo xtask image)");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "image",
            "--output",
        ])
        .arg(&output)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(Stdio::null())
        .status()
        .context("running cargo xtask image")?;
    if !status.success() {
        bail!("cargo xtask image failed: {status}");
    }
    Ok(output)
}

impl Podman {
    /// Podman with its state under `dir`, or why it cannot run containers here.
    pub fn new(dir: &Path) -> Result<Self, String> {
        let podman = Self {
            dir: dir.join("podman"),
            cgroup_parents: std::sync::Mutex::default(),
        };
        match podman.command().arg("info").output() {
            Err(error) => Err(format!("podman cannot be run: {error}")),
            Ok(out) if !out.status.success() => Err(format!(
                "podman info failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => Ok(podman),
        }
    }

    /// `podman` with this instance's state and this machine's runtime settings.
    pub fn command(&self) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver=vfs",
                "--runtime=runc",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
            ]);
        cmd
    }

    /// Runs podman to completion; fails with its stderr.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .context("running podman")?;
        if !out.status.success() {
            bail!(
                "podman {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman load`: returns the names it gave the image.
    pub fn load(&self, archive: &Path) -> anyhow::Result<Vec<String>> {
        let out = self.output(&["load", "--input", &archive.to_string_lossy()])?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .map(str::to_owned)
            .collect())
    }

    /// Runs `image` as the DaemonSet's pod `spec` on `topo`'s node, attached (its output
    /// is the process's), named `name`, in `cgroupns` (`private` as on a cgroup v2
    /// node, `host` as on a v1 one). The pod's cgroup is `topo`'s agent cgroup, inside
    /// the intercepted subtree, as a DaemonSet pod is inside kubepods.
    pub fn run(
        &self,
        topo: &Topology,
        spec: &PodSpec,
        image: &str,
        name: &str,
        cgroupns: &str,
        volumes: &Volumes,
    ) -> anyhow::Result<Process> {
        let mut cmd = self.command();
        cmd.args(["run", "--rm", "--name", name, "--cgroups=no-conmon"]);
        cmd.arg(format!("--cgroupns={cgroupns}"));
        cmd.arg(self.cgroup_parent(topo)?);
        // The node's host network is the topology's node namespace.
        if !spec.host_network {
            bail!("the DaemonSet is not hostNetwork: the test has no pod network to offer");
        }
        cmd.arg(format!("--network=ns:/run/netns/{}", topo.node_ns));
        if spec.host_pid {
            cmd.arg("--pid=host");
        }
        for cap in &spec.cap_drop {
            cmd.arg(format!("--cap-drop={cap}"));
        }
        for cap in &spec.cap_add {
            cmd.arg(format!("--cap-add={cap}"));
        }
        if spec.read_only_root {
            cmd.arg("--read-only");
        }
        cmd.args(ulimits());
        for (var, value) in &spec.env {
            let value = match value {
                EnvValue::Literal(v) => v.clone(),
                EnvValue::Field(f) if f == "status.hostIP" => NODE_IP4.to_string(),
                EnvValue::Field(f) if f == "spec.nodeName" => "node-1".into(),
                // The pod's names: the container stands for the pod.
                EnvValue::Field(f) if f == "metadata.name" => name.to_owned(),
                EnvValue::Field(f) if f == "metadata.namespace" => "kgate-system".into(),
                EnvValue::Field(f) => bail!("env {var}: no test value for fieldRef {f}"),
            };
            cmd.arg(format!("--env={var}={value}"));
        }
        for (volume, path, read_only, _) in &spec.mounts {
            let source = volumes
                .sources
                .get(volume)
                .with_context(|| format!("the test provides no volume {volume}"))?;
            let ro = if *read_only { ":ro" } else { "" };
            cmd.arg(format!("--volume={}:{path}{ro}", source.display()));
        }
        cmd.arg(image).args(&spec.args);
        topo.spawn(cmd)
    }

    /// Runs `image` with `args` to completion, with no network, in `topo`'s agent
    /// cgroup; returns what it printed.
    pub fn run_once(&self, topo: &Topology, image: &str, args: &[&str]) -> anyhow::Result<String> {
        let parent = self.cgroup_parent(topo)?;
        let mut all = vec![
            "run",
            "--rm",
            "--network=none",
            "--cgroups=no-conmon",
            &parent,
        ];
        let limits = ulimits();
        all.extend(limits.iter().map(String::as_str));
        all.push(image);
        all.extend(args);
        self.output(&all)
    }

    /// `--cgroup-parent` for a container in `topo`'s agent cgroup (podman's default,
    /// /libpod_parent, would be left behind).
    fn cgroup_parent(&self, topo: &Topology) -> anyhow::Result<String> {
        let mount = cgroup2_mount()?;
        let parent = topo
            .agent_cgroup
            .strip_prefix(&mount)
            .context("agent cgroup outside the cgroup2 mount")?;
        self.note_cgroup_parent(parent);
        Ok(format!("--cgroup-parent=/{}", parent.display()))
    }

    /// Stops a container as the kubelet does (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&self, name: &str) -> anyhow::Result<()> {
        self.output(&["stop", "--time", "10", name]).map(drop)
    }

    /// runc makes the pod cgroup's parents in every v1 hierarchy of a hybrid host too;
    /// remember them for Drop.
    fn note_cgroup_parent(&self, parent: &Path) {
        let Some(top) = parent.components().next() else {
            return;
        };
        let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut parents = self.cgroup_parents.lock().unwrap();
        for entry in entries.flatten() {
            let dir = entry.path().join(top);
            if !parents.contains(&dir) {
                parents.push(dir);
            }
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.command().args(["rmi", "--all", "--force"]).output();
        let _ = fs::remove_dir_all(&self.dir);
        let mount = cgroup2_mount().ok();
        for dir in self.cgroup_parents.lock().unwrap().iter() {
            // The unified hierarchy's is the topology's to remove.
            if mount.as_deref().is_some_and(|m| dir.starts_with(m)) || !dir.exists() {
                continue;
            }
            remove_tree(dir);
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// `podman run`'s `--ulimit` flags: the defaults ask for more than a shell here may
/// have, and runc fails with "setrlimit … operation not permitted". Open files: the
/// hard limit (the agent raises its soft limit to it). Processes: at most 4096, enough
/// for the agent's threads; a value near the hard limit was refused all the same (runc
/// sets it from conmon, whose limit podman lowers).
pub fn ulimits() -> Vec<String> {
    let nproc = match hard_limit("Max processes").parse::<i64>() {
        Ok(n) if (0..4096).contains(&n) => n,
        _ => 4096,
    };
    let nofile = hard_limit("Max open files");
    vec![
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// The hard limit on a resource, as podman's `--ulimit` takes it (`-1`: unlimited),
/// from /proc/self/limits (`Max open files  1024  20000  files`).
fn hard_limit(name: &str) -> String {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits.lines().find_map(|l| {
                let hard = l.strip_prefix(name)?.split_whitespace().nth(1)?;
                Some(if hard == "unlimited" {
                    "-1".to_owned()
                } else {
                    hard.to_owned()
                })
            })
        })
        .unwrap_or_else(|| "1024".into())
}
