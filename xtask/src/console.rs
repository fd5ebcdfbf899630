//! `cargo xtask console`: builds the console's front end (console/, bundled by esbuild)
//! into `target/console/dist`, which kgate's build.rs embeds; and, for the tests, what
//! the browser test needs (Debian's Chromium, tests/browser's npm packages). Node and
//! npm come from Debian when missing; npm packages from the npm registry with `npm ci`
//! (the committed lock files), skipped when node_modules is already up to date.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::{image::workspace_root, run_cmd, step, toolchain};

/// Builds the console's assets into `KGATE_CONSOLE_DIST`, else `target/console/dist`
/// (where kgate-userspace/build.rs looks).
pub(crate) fn build() -> anyhow::Result<()> {
    toolchain::commands(&[("node", "nodejs"), ("npm", "npm")])?;
    let root = workspace_root();
    let dir = root.join("console");
    npm_ci(&dir)?;
    let dist = std::env::var_os("KGATE_CONSOLE_DIST")
        .map_or_else(|| root.join("target/console/dist"), Into::into);
    step(&format!(
        "building the console's assets into {}",
        dist.display()
    ));
    run_cmd(
        Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(&dir)
            .env("KGATE_CONSOLE_DIST", &dist),
    )
}

/// What tests/tests/console.rs drives: Chromium and playwright-core.
pub(crate) fn browser_test_deps() -> anyhow::Result<()> {
    toolchain::commands(&[("node", "nodejs"), ("npm", "npm"), ("chromium", "chromium")])?;
    npm_ci(&workspace_root().join("tests/browser"))
}

/// `npm ci` in `dir`, unless its node_modules matches its lock file already.
fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock_time = modified(&lock).with_context(|| format!("{} is missing", lock.display()))?;
    if modified(&installed).is_some_and(|t| t >= lock_time) {
        return Ok(());
    }
    step(&format!("npm ci in {}", dir.display()));
    run_cmd(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
    )
}
