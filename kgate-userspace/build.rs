//! Builds the kernel programs (kgate-ebpf) with nightly for bpfel-unknown-none and hands
//! the object to the agent through `KGATE_EBPF_OBJ`. `cargo xtask setup` installs what
//! this needs (rust-src, bpf-linker); set `KGATE_EBPF_OBJ=/path` to use a prebuilt object.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-env-changed=KGATE_EBPF_OBJ");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let obj = if let Some(prebuilt) = env::var_os("KGATE_EBPF_OBJ") {
        PathBuf::from(prebuilt)
    } else {
        build_ebpf(&out)
    };
    println!("cargo:rustc-env=KGATE_EBPF_OBJ={}", obj.display());
}

fn build_ebpf(out: &Path) -> PathBuf {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ebpf_dir = manifest
        .parent()
        .expect("workspace root")
        .join("kgate-ebpf");
    for watched in [
        "src",
        "common/src",
        "Cargo.toml",
        "common/Cargo.toml",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            ebpf_dir.join(watched).display()
        );
    }
    let target_dir = out.join("kgate-ebpf-target");

    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&ebpf_dir);
    // The outer cargo's settings (RUSTC, wrappers, flags, target) would leak into the
    // nested build for another target: drop them all.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO") || key.starts_with("RUSTC") || key == "RUSTUP_TOOLCHAIN" {
            cmd.env_remove(key.as_ref());
        }
    }
    if let Some(linker_dir) = bpf_linker_dir() {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![linker_dir];
        dirs.extend(env::split_paths(&path));
        cmd.env(
            "PATH",
            env::join_paths(dirs).expect("PATH entries are valid"),
        );
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("kgate: cannot run `rustup run nightly cargo` to build kgate-ebpf: {e}")
    });
    assert!(
        status.success(),
        "kgate: building kgate-ebpf failed ({status}); run `cargo xtask setup` to install \
         rust-src and bpf-linker, or set KGATE_EBPF_OBJ to a prebuilt object"
    );
    target_dir.join("bpfel-unknown-none/release/kgate")
}

/// Where `cargo xtask setup` installs bpf-linker (kept in sync with xtask::toolchain).
fn bpf_linker_dir() -> Option<PathBuf> {
    let root = env::var_os("KGATE_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|cache| cache.join("kgate"))
        })?;
    Some(root.join("bpf-linker/bin"))
}
