//! `kgate version`: what this binary is, in `key: value` lines that people and scripts
//! read alike (`cargo xtask image` takes its labels from them): the crate version, the
//! git commit it was built from (build.rs; `unknown` outside a checkout) and the
//! SHA-256 of the kernel programs it carries, which tells whether two binaries would
//! load the same programs.
//!
//! Not here: `--version`, which clap answers with the version alone.

/// The commit build.rs found (`KGATE_GIT_COMMIT`, `git rev-parse HEAD` or `unknown`).
pub(crate) const COMMIT: &str = env!("KGATE_GIT_COMMIT");

/// The lines `kgate version` prints.
pub(super) fn text() -> String {
    format!(
        "version: {}\ncommit: {COMMIT}\nkernel programs: sha256:{}\n",
        env!("CARGO_PKG_VERSION"),
        crate::ebpf::object_sha256()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_lines() {
        let text = super::text();
        let lines: Vec<(&str, &str)> = text
            .lines()
            .map(|l| l.split_once(": ").expect("key: value"))
            .collect();
        let keys: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["version", "commit", "kernel programs"]);
        assert_eq!(lines[0].1, env!("CARGO_PKG_VERSION"));
        let commit = lines[1].1;
        assert!(
            commit == "unknown"
                || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{commit}"
        );
        let hash = lines[2].1.strip_prefix("sha256:").unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
