//! `cargo xtask fuzz [--seconds N]`: builds every cargo-fuzz target in `fuzz/` (its own
//! workspace, nightly, libFuzzer) and runs each for N seconds, starting from the
//! committed seeds in `fuzz/seeds/TARGET` and keeping what it learns in
//! `fuzz/corpus/TARGET` (not committed). A crash stops the run with libFuzzer's
//! reproducer in `fuzz/artifacts/TARGET`; `cargo +nightly fuzz run TARGET FILE`
//! replays it.
//!
//! Installs cargo-fuzz from crates.io when it is missing. The targets are built
//! without a sanitizer: the agent is safe Rust, so what the fuzzer looks for are
//! panics (overflow checks and debug assertions are on) and the targets' own oracles,
//! and AddressSanitizer would only halve the executions per second.
//!
//! Not here: the randomized kill -9 trials (`cargo xtask chaos`).

use std::{fs, path::Path, process::Command};

use anyhow::Context;

use crate::{cmd_output, run_cmd, step};

/// Seconds per target when `--seconds` is not given.
pub(crate) const DEFAULT_SECONDS: u64 = 300;

pub(crate) fn run(seconds: u64) -> anyhow::Result<()> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize()?;
    let root = root.as_path();
    let fuzz_dir = root.join("fuzz");
    install_cargo_fuzz()?;
    // The targets never load the kernel programs; an empty object stands in for them,
    // so that kgate's build.rs does not build kgate-ebpf under the fuzzer's flags.
    let target = fuzz_dir.join("target");
    fs::create_dir_all(&target)?;
    let placeholder = target.join("no-kernel-programs.o");
    // Written once: a new mtime (or another path) would rebuild the agent library.
    if !placeholder.exists() {
        fs::write(&placeholder, b"")?;
    }
    let fuzz = |args: &[&str]| {
        let mut cmd = nightly_cargo();
        cmd.arg("fuzz")
            .args(args)
            .arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .env("KGATE_EBPF_OBJ", &placeholder)
            .current_dir(root);
        cmd
    };
    step("building the fuzz targets (nightly, libFuzzer)");
    run_cmd(&mut fuzz(&["build", "--sanitizer", "none"]))?;
    let list = cmd_output(&mut fuzz(&["list"]))?;
    let targets: Vec<&str> = list.split_whitespace().collect();
    for name in &targets {
        let corpus = fuzz_dir.join("corpus").join(name);
        let seeds = fuzz_dir.join("seeds").join(name);
        fs::create_dir_all(&corpus)?;
        step(&format!("fuzzing {name} for {seconds} s"));
        let mut cmd = fuzz(&["run", "--sanitizer", "none", name]);
        cmd.arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args([
            "--",
            &format!("-max_total_time={seconds}"),
            // Masking and JWT inputs need room; the default 4 KiB cuts Table rows short.
            "-max_len=65536",
            "-print_final_stats=1",
        ]);
        run_cmd(&mut cmd).with_context(|| {
            format!(
                "fuzz target {name} failed: the reproducer is in {}",
                fuzz_dir.join("artifacts").join(name).display()
            )
        })?;
    }
    step(&format!(
        "fuzzed {} targets for {seconds} s each: no crash",
        targets.len()
    ));
    Ok(())
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    if nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    step("installing cargo-fuzz from crates.io");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `cargo` of the nightly toolchain, without the outer (stable) cargo's settings.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO") || key.starts_with("RUSTC") || key == "RUSTUP_TOOLCHAIN" {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}
