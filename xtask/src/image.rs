//! `cargo xtask image`: the agent's container image, built with no engine and no
//! registry. The release `kgate` binary (the kernel programs are inside it), the shared
//! libraries it loads (found with `ldd`, copied from this machine at the same paths),
//! `/etc/passwd` and `/etc/group` with `root` and `nonroot` (65532), `/tmp`; no shell,
//! no package manager, no CA bundle (every TLS peer of kgate is checked against a CA
//! file its config names).
//!
//! The image runs as the DaemonSet does: the entrypoint is `/kgate`, the default
//! arguments are the DaemonSet's `args`, the name is the DaemonSet's `image`, which
//! must be `ghcr.io/kgate/kgate:<crate version>`. Labels per the OCI annotations
//! (source, version, revision, created = the commit's time) and the kernel programs'
//! hash.
//!
//! Reproducible: the archive is assembled twice from fresh reads of its inputs and the
//! digests compared before it is written (see `oci` for why the bytes cannot differ).
//!
//! Not here: loading the image anywhere (docs/image.md shows each engine's command).

mod oci;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};

use crate::{cargo, cmd_output, run_cmd, step};

/// Where the project's source lives; the image's `org.opencontainers.image.source`.
const SOURCE: &str = "https://github.com/kgate/kgate";
/// The nonroot user and group of distroless images, for whoever runs the image
/// without the agent's capabilities (the CLI, say).
const NONROOT: u64 = 65532;
/// The most the image may weigh, compressed.
const MAX_COMPRESSED: u64 = 40_000_000;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where to write the archive. Default: target/image/kgate-VERSION.oci.tar.
    #[arg(long)]
    output: Option<PathBuf>,
}

impl Args {
    /// The archive written to `path`.
    pub(crate) fn output(path: PathBuf) -> Self {
        Self { output: Some(path) }
    }
}

/// What `kgate version` says about the binary.
struct About {
    version: String,
    commit: String,
    kernel_programs: String,
}

/// Builds the image archive; prints its name, digest and size.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    crate::toolchain::commands(&[("objcopy", "binutils"), ("ldd", "libc-bin")])?;
    step("building the release binary (the kernel programs are inside it)");
    run_cmd(cargo().args(["build", "--release", "--package", "kgate"]))?;
    let binary = target_dir(&root).join("release/kgate");
    let about = about(&binary)?;
    let created = created(&root, &about.commit)?;
    let (name, cmd) = daemonset_image(&root.join("deploy/daemonset.yaml"))?;
    let expected = format!("ghcr.io/kgate/kgate:{}", about.version);
    if name != expected {
        bail!(
            "deploy/daemonset.yaml names {name}, but this build is {expected}: update the DaemonSet"
        );
    }
    if about.commit != "unknown" && !git(&root, &["status", "--porcelain"])?.trim().is_empty() {
        eprintln!(
            "xtask: warning: uncommitted changes; the image's revision label names {} all the same",
            about.commit
        );
    }

    let labels = BTreeMap::from([
        ("org.opencontainers.image.title".into(), "kgate".into()),
        (
            "org.opencontainers.image.description".into(),
            "kgate node agent and admin CLI: a policy gateway in front of the Kubernetes API server".into(),
        ),
        ("org.opencontainers.image.source".into(), SOURCE.into()),
        ("org.opencontainers.image.version".into(), about.version.clone()),
        ("org.opencontainers.image.revision".into(), about.commit.clone()),
        (
            "org.opencontainers.image.created".into(),
            jiff::Timestamp::from_second(created)?.to_string(),
        ),
        ("org.opencontainers.image.licenses".into(), "Apache-2.0".into()),
        ("io.kgate.kernel-programs".into(), about.kernel_programs.clone()),
    ]);
    let spec = oci::Spec {
        name,
        created,
        architecture: oci_architecture().into(),
        entrypoint: vec!["/kgate".into()],
        cmd,
        // `kubectl exec … -- kgate version` finds the binary.
        env: vec!["PATH=/".into()],
        // The agent needs its capabilities, which Kubernetes grants only to root.
        user: "0:0".into(),
        labels,
    };
    step("assembling the image");
    let work = target_dir(&root).join("image");
    fs::create_dir_all(&work)?;
    let built = oci::archive(&rootfs(&binary, &work)?, &spec)?;
    // The self-check: everything read again (the binary stripped again), assembled again.
    let again = oci::archive(&rootfs(&binary, &work)?, &spec)?;
    if again.digest != built.digest || again.bytes != built.bytes {
        bail!(
            "two assemblies of the same inputs differ ({} and {}): the image is not reproducible",
            built.digest,
            again.digest
        );
    }
    // The budget issue 19 set; today's image is about a quarter of it.
    if built.layer_size > MAX_COMPRESSED {
        bail!(
            "the image is {} bytes compressed, over the {MAX_COMPRESSED} budget",
            built.layer_size
        );
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| work.join(format!("kgate-{}.oci.tar", about.version)));
    if let Some(dir) = output.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&output, &built.bytes).with_context(|| format!("writing {}", output.display()))?;

    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    println!("image      {}", spec.name);
    println!("archive    {}", output.display());
    println!("digest     {}", built.digest);
    println!("id         {}", built.config_digest);
    println!(
        "size       {} compressed ({} archive)",
        mb(built.layer_size),
        mb(built.bytes.len() as u64)
    );
    println!(
        "revision   {} ({})",
        about.commit,
        jiff::Timestamp::from_second(created)?
    );
    println!("kernel     {}", about.kernel_programs);
    println!("reproducible: assembled twice from the same inputs, same digest");
    println!("built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The image's files: the binary, what it loads, the users, /tmp.
fn rootfs(binary: &Path, work: &Path) -> anyhow::Result<Vec<oci::Entry>> {
    let read = |path: &Path| fs::read(path).with_context(|| format!("reading {}", path.display()));
    // The release profile keeps line tables (`debug = 1`): 146 MB, 38 MB gzipped. The
    // image takes the binary without them (27 MB, 9 MB gzipped); symbols stay, so a
    // backtrace still names functions. The GNU build ID goes too: the linker hashes it
    // over the debug info, which holds the build directory's path, and it was the only
    // difference between two builds of one commit in two target directories.
    let stripped = work.join("kgate.stripped");
    run_cmd(
        Command::new("objcopy")
            .args(["--strip-debug", "--remove-section=.note.gnu.build-id"])
            .arg(binary)
            .arg(&stripped),
    )?;
    let mut entries = vec![
        oci::Entry::file("/kgate", 0o755, read(&stripped)?),
        oci::Entry::file(
            "/etc/passwd",
            0o644,
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\n\
                 nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
            )
            .into_bytes(),
        ),
        oci::Entry::file(
            "/etc/group",
            0o644,
            format!("root:x:0:\nnonroot:x:{NONROOT}:\n").into_bytes(),
        ),
        // glibc's own default, written down: files (the /etc/hosts the runtime mounts),
        // then DNS (its /etc/resolv.conf).
        oci::Entry::file("/etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec()),
        oci::Entry::dir("/tmp", 0o1777),
        oci::Entry::dir("/root", 0o700),
        oci::Entry {
            uid: NONROOT,
            gid: NONROOT,
            ..oci::Entry::dir("/home/nonroot", 0o700)
        },
    ];
    let ldd = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&ldd.stdout);
    for library in shared_libraries(&text)? {
        let path = library.to_string_lossy();
        entries.push(oci::Entry::file(&path, 0o755, read(&library)?));
    }
    Ok(entries)
}

/// The files an `ldd` listing names: each `=> /path` and the loader's own line; the
/// vDSO has no file. A library ldd cannot find is an error.
fn shared_libraries(ldd: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for line in ldd.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        let file = match line.split_once("=>") {
            Some((name, _)) if line.contains("not found") => {
                bail!("ldd: {} not found", name.trim())
            }
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = file.split(" (").next().unwrap_or(file).trim();
        if path.starts_with('/') {
            found.push(PathBuf::from(path));
        }
    }
    Ok(found)
}

/// Reads `kgate version`.
fn about(binary: &Path) -> anyhow::Result<About> {
    let text = cmd_output(Command::new(binary).arg("version"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::to_owned)
            .with_context(|| format!("`kgate version` printed no {key}: {text}"))
    };
    Ok(About {
        version: field("version")?,
        commit: field("commit")?,
        kernel_programs: field("kernel programs")?,
    })
}

/// The image's time: `SOURCE_DATE_EPOCH` when set (reproducible-builds.org), else the
/// commit's, else the epoch.
fn created(root: &Path, commit: &str) -> anyhow::Result<i64> {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={epoch}"));
    }
    if commit == "unknown" {
        return Ok(0);
    }
    let time = git(root, &["log", "-1", "--format=%ct", commit])?;
    time.trim()
        .parse()
        .with_context(|| format!("the commit time of {commit}: {time}"))
}

/// The DaemonSet's agent container: its image and its arguments.
fn daemonset_image(path: &Path) -> anyhow::Result<(String, Vec<String>)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let container = yaml["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"].as_str() == Some("agent")))
        .with_context(|| format!("{}: no container named agent", path.display()))?;
    let image = container["image"]
        .as_str()
        .with_context(|| format!("{}: the agent has no image", path.display()))?;
    let args = container["args"]
        .as_sequence()
        .map(|args| {
            args.iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .with_context(|| format!("{}: the agent has no args", path.display()))?
        .with_context(|| format!("{}: the agent's args are not strings", path.display()))?;
    Ok((image.to_owned(), args))
}

fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    cmd_output(Command::new("git").arg("-C").arg(root).args(args))
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_owned()
}

/// cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::shared_libraries;

    #[test]
    fn libraries_from_ldd() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd5f1f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c8e0000)\n\
            \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1c801000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1c620000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1ea4b000)\n";
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        for (ldd, want) in [
            (
                debian,
                paths(&[
                    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                    "/lib/x86_64-linux-gnu/libm.so.6",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib64/ld-linux-x86-64.so.2",
                ]),
            ),
            ("\tstatically linked\n", vec![]),
            ("", vec![]),
        ] {
            assert_eq!(shared_libraries(ldd).unwrap(), want, "{ldd}");
        }
        let missing = "\tlibfoo.so.1 => not found\n";
        let error = shared_libraries(missing).unwrap_err().to_string();
        assert!(error.contains("libfoo.so.1 not found"), "{error}");
    }
}
