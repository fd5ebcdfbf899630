//! Installs what building kgate needs, idempotently: rust-src for the nightly (for
//! `-Z build-std=core`), bpf-linker built against the nightly's own libLLVM, and the
//! Debian packages the tests and demo use. Quick when everything is already there.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{cmd_output, run_cmd, step};

/// Where bpf-linker and the libLLVM links live; durable, since bpf-linker keeps an rpath
/// to it. Kept in sync with kgate-userspace/build.rs.
pub(crate) fn toolchain_dir() -> PathBuf {
    if let Some(dir) = env::var_os("KGATE_TOOLCHAIN_DIR") {
        return dir.into();
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("kgate")
}

pub(crate) fn setup() -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let installed = cmd_output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is needed for the kernel programs (`rustup toolchain list`)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step("installing rust-src for the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let dir = toolchain_dir();
    let bin = dir.join("bpf-linker/bin/bpf-linker");
    if works_standalone(&bin) {
        return Ok(());
    }
    let sysroot =
        cmd_output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("libLLVM.so.") && n.contains("-rust-")
            })
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))?;
    let name = lib.file_name().unwrap().to_string_lossy().into_owned();
    let major = name
        .strip_prefix("libLLVM.so.")
        .and_then(|v| v.split('.').next())
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM major version from {name}"))?;

    step(&format!(
        "building bpf-linker against the nightly's libLLVM {major} (once, about a minute)"
    ));
    let prefix = dir.join("llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    // libLLVM.so is what the build links against; the versioned name is the soname the
    // binary loads at run time, through its rpath to this prefix.
    for link in [
        prefix.join("lib/libLLVM.so"),
        prefix.join("lib").join(&name),
    ] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    run_cmd(
        Command::new("cargo")
            .args(["install", "--root"])
            .arg(dir.join("bpf-linker"))
            // The version verified with this nightly's LLVM (shared/TOOLCHAIN.md).
            .args(["bpf-linker@0.13.0", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    if !works_standalone(&bin) {
        bail!(
            "{} was built but does not run on its own (libLLVM not found through its rpath?)",
            bin.display()
        );
    }
    Ok(())
}

/// rustup puts the sysroot's lib/ on LD_LIBRARY_PATH for what it starts, which would
/// hide a missing rpath: check without it.
fn works_standalone(bin: &Path) -> bool {
    bin.exists()
        && Command::new(bin)
            .arg("--version")
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn debian_packages() -> anyhow::Result<()> {
    commands(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("mount", "mount"),
    ])
}

/// Installs the Debian packages of whichever of these commands (command → package)
/// are not on PATH.
pub(crate) fn commands(needed: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn on_path(cmd: &str) -> bool {
    env::var_os("PATH").is_some_and(|path| env::split_paths(&path).any(|d| d.join(cmd).is_file()))
}
