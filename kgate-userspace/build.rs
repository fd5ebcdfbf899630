//! Builds the kernel programs (kgate-ebpf) with nightly for bpfel-unknown-none and hands
//! the object to the agent through `KGATE_EBPF_OBJ`. `cargo xtask setup` installs what
//! this needs (rust-src, bpf-linker); set `KGATE_EBPF_OBJ=/path` to use a prebuilt object.
//!
//! Also embeds the console's assets (`console_assets`), and names the commit the binary is built from (`KGATE_GIT_COMMIT`, for `kgate
//! version` and the image's labels): the env var of that name when set (a build from a
//! source tarball), else `git rev-parse HEAD`, else `unknown`.

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
    println!("cargo:rustc-env=KGATE_GIT_COMMIT={}", git_commit());
    console_assets(&out);
}

/// Embeds the console's built assets (`KGATE_CONSOLE_DIST`, else
/// `<workspace>/target/console/dist`, which `cargo xtask console` writes) as
/// `console_assets.rs` in OUT_DIR: `BUILT` and `FILES`, each file by `include_bytes!`.
/// Without them kgate still builds; `kgate console` then says how to build them.
fn console_assets(out: &Path) {
    println!("cargo:rerun-if-env-changed=KGATE_CONSOLE_DIST");
    let dist = env::var_os("KGATE_CONSOLE_DIST").map_or_else(
        || {
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../target/console/dist")
        },
        PathBuf::from,
    );
    // Watched even while absent (created empty): a path that does not exist would rerun
    // this script on every build; a directory is scanned for changes.
    let _ = std::fs::create_dir_all(&dist);
    let dist = dist.canonicalize().unwrap_or(dist);
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let built = files.iter().any(|(name, _)| name == "index.html");
    if !built {
        println!(
            "cargo:warning=kgate is built without the console's assets ({}): `kgate console` will serve its API but no page; `cargo xtask console` builds them",
            dist.display()
        );
    }
    let mut code =
        format!("/// The console's assets were built.\npub(super) const BUILT: bool = {built};\n");
    code.push_str("/// Every asset, by its path in the dist directory.\npub(super) static FILES: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("console_assets.rs"), code).expect("OUT_DIR is writable");
}

/// Every file under `dir`, by its path relative to `root`.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            files.push((
                rel.to_string_lossy().into_owned(),
                path.canonicalize().unwrap_or(path),
            ));
        }
    }
}

/// The commit being built, or `unknown` outside a git checkout.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=KGATE_GIT_COMMIT");
    if let Some(commit) = env::var_os("KGATE_GIT_COMMIT") {
        return commit.to_string_lossy().into_owned();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    // Rerun when HEAD moves: HEAD itself (a checkout), the branch it names (a commit),
    // and packed-refs. In a worktree, --git-path finds each where git keeps it.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path =
                Path::new(&env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join(path);
            // A path that does not exist would rerun this script on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    commit
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
