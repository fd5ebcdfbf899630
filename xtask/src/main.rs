//! `cargo xtask …`: kgate's project commands. `setup` installs the toolchain pieces,
//! `console` builds the web console's assets, `test` runs every test (the kernel tests
//! too, as root), `demo` shows the main job, `fuzz` and `chaos` run the long
//! hostile-input and kill -9 campaigns, `image` builds the agent's container image.

mod bench;
mod console;
mod demo;
mod fuzz;
mod image;
mod toolchain;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install rust-src, bpf-linker and Debian packages (idempotent).
    Setup,
    /// Build everything, including the kernel programs and the console's assets.
    Build,
    /// Run all tests; the kernel tests run when root (CI is root).
    Test {
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the demo: a pod's connection to the API server lands in kgate.
    Demo,
    /// Benchmark kgate against direct access and nginx, in one run (docs/bench.md).
    Bench(bench::Args),
    /// Fuzz every target in fuzz/ (cargo-fuzz, nightly) for a bounded time each.
    Fuzz {
        /// Seconds per target (CI's smoke run uses 10).
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
    },
    /// Kill a strict-mode agent with SIGKILL under load in randomized trials, and find
    /// a durable record for every request the API server saw.
    Chaos {
        /// Trials (CI's test run does a few).
        #[arg(long, default_value_t = 1000)]
        trials: u32,
    },
    /// Regenerate deploy/crds.yaml from the Rust types (a test fails when it drifts).
    Crds,
    /// Build the console's front end (console/, npm and esbuild) into
    /// target/console/dist, which the kgate binary embeds.
    Console,
    /// Build the agent's OCI image archive (no engine, no registry; docs/image.md).
    Image(image::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => toolchain::setup(),
        Cmd::Build => {
            toolchain::setup()?;
            console::build()?;
            build()
        }
        Cmd::Test { args } => {
            toolchain::setup()?;
            console::build()?;
            console::browser_test_deps()?;
            test(&args)
        }
        Cmd::Console => console::build(),
        Cmd::Bench(args) => {
            toolchain::setup()?;
            bench::run(&args)
        }
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
        Cmd::Chaos { trials } => {
            toolchain::setup()?;
            build()?;
            step(&format!("{trials} kill -9 trials of a strict-mode agent"));
            run_cmd(
                cargo()
                    .args(["test", "-p", "kgate-tests", "--test", "recording", "--"])
                    // Each trial prints its seed and what it saw.
                    .args(["--include-ignored", "--exact", "--nocapture"])
                    .arg("strict_records_survive_sigkills_under_load")
                    .env("KGATE_KILL_TRIALS", trials.to_string()),
            )
        }
        Cmd::Crds => {
            toolchain::setup()?;
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
            let yaml = cmd_output(cargo().args(["run", "-q", "-p", "kgate", "--", "crds"]))?;
            std::fs::write(format!("{root}/deploy/crds.yaml"), yaml)?;
            step("wrote deploy/crds.yaml");
            Ok(())
        }
        Cmd::Image(args) => {
            toolchain::setup()?;
            console::build()?;
            image::run(&args)
        }
        Cmd::Demo => {
            toolchain::setup()?;
            console::build()?;
            build()?;
            demo::run()
        }
    }
}

fn build() -> anyhow::Result<()> {
    step("building kgate (kernel programs and agent) and the test tools");
    run_cmd(cargo().args([
        "build",
        "--package",
        "kgate",
        "--package",
        "kgate-tests",
        "--package",
        "kgate-apiserver-double",
        "--bins",
    ]))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    build()?;
    let root = kgate_tests::topology::is_root();
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--"]);
    // The console's browser test must run, not skip (its packages are installed above).
    cmd.env("KGATE_REQUIRE_BROWSER", "1");
    if root {
        // The container test (tests/tests/container.rs) runs the image under podman.
        toolchain::commands(&[("podman", "podman"), ("runc", "runc")])?;
        let archive = image::target_dir(&image::workspace_root()).join("image/kgate-test.oci.tar");
        image::run(&image::Args::output(archive.clone()))?;
        cmd.env("KGATE_IMAGE", archive);
        cmd.arg("--include-ignored");
    } else {
        eprintln!("xtask: not root: the kernel tests are skipped (they run in CI, which is root)");
    }
    cmd.args(args);
    step("running the tests");
    run_cmd(&mut cmd)
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Progress for the slow steps, on stderr.
pub fn step(what: &str) {
    eprintln!("\x1b[1mxtask:\x1b[0m {what}");
}

pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cmd_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
