//! Commands run beside a test's async runtime: kubectl calls that block while kgate
//! holds them (a held delete), and blocking work moved off the runtime's threads.
//!
//! Not here: starting kubectl or the agents ([`crate::harness`]).

use std::process::{Child, Stdio};

use crate::harness::Kubectl;

/// `f` on a thread of its own (kubectl, `std::process`), awaited.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `kubectl delete KIND NAME -n demo` in the background (it waits while kgate holds
/// it); [`finish`] collects it.
pub fn delete(k: &Kubectl, kind: &str, name: &str) -> Child {
    k.command()
        .args(["delete", kind, name, "-n", "demo", "--wait=false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a background command: whether it succeeded, and its stdout then stderr.
pub fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
