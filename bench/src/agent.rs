//! kgate as the bench runs it: `kgate agent` in standalone mode (`kernel: false`: the
//! kernel programs' cost is one map lookup per new connection, not per request;
//! `directClients: allow`) with every request stage on: identity (the bot's token,
//! an unbound subject), policy (a generated file allowing the bot's reads), masking
//! (the defaults: Secret values) and recording (an on-disk log, `strict` or `batch`).
//!
//! The config and the policy are generated here as JSON (which is YAML), so that
//! paths and user names need no quoting rules of their own.
//!
//! Not here: what the agent does with them (kgate-userspace/src/config.rs).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    child::{Child, free_port, wait_for},
    pki::Serving,
};

/// How a kgate instance records: `strict` (the agent's default: a forwarded request's
/// record is fsynced first) or `batch` (synced every second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Strict,
    Batch,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Batch => "batch",
        }
    }
}

/// The API server kgate forwards to, and the agent's own credential there.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `https://host:port`.
    pub server: String,
    pub ca_file: PathBuf,
    /// The agent's token for OIDC discovery and the JWKS (and TokenReview, for a
    /// token it cannot verify locally).
    pub token_file: PathBuf,
}

/// Who the bench's requests come from, as kgate must identify them.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The username the API server gives the token (`system:serviceaccount:NS:NAME`).
    pub user: String,
    /// Audiences kgate accepts; empty: kgate's default (the issuer).
    pub audiences: Vec<String>,
    /// A ConfigMap (namespace, name) the caller may also PATCH: the loopback write
    /// rows. `None` in front of a user's cluster, where the bench writes nothing.
    pub writable: Option<(String, String)>,
}

/// The agent's config: listen on `listen` with the bench's serving certificate,
/// forward to `upstream`, accept `caller`'s token without a pod binding, decide by
/// `policy_file`, record into `record_dir`.
pub fn config(
    listen: SocketAddr,
    serving: &Serving,
    upstream: &Upstream,
    caller: &Caller,
    policy_file: &Path,
    record_dir: &Path,
    durability: Durability,
) -> Value {
    let mut identity = json!({"unboundSubjects": [caller.user]});
    if !caller.audiences.is_empty() {
        identity["audiences"] = json!(caller.audiences);
    }
    json!({
        "listen": listen.to_string(),
        "kernel": false,
        "directClients": "allow",
        "tls": {"certFile": serving.cert, "keyFile": serving.key},
        "upstream": {
            "server": upstream.server,
            "caFile": upstream.ca_file,
            "tokenFile": upstream.token_file,
        },
        "identity": identity,
        "policy": {"files": [policy_file]},
        "record": {"dir": record_dir, "durability": durability.name()},
    })
}

/// A KgatePolicy allowing the caller to read: get, list and watch of every resource,
/// and GET of every non-resource path (`/version`, discovery); and to patch its
/// writable ConfigMap, if it has one. Everything else denied.
pub fn policy(caller: &Caller) -> Value {
    let mut rules = vec![
        json!({"name": "read", "match": {"verbs": ["get", "list", "watch"]}, "action": "allow"}),
        json!({"name": "read-paths", "match": {"verbs": ["get"], "nonResourceURLs": ["*"]}, "action": "allow"}),
    ];
    if let Some((namespace, name)) = &caller.writable {
        rules.push(json!({
            "name": "write",
            "match": {
                "verbs": ["patch"], "resources": ["configmaps"],
                "namespaces": [namespace], "resourceNames": [name],
            },
            "action": "allow",
        }));
    }
    json!({
        "apiVersion": "kgate.io/v1alpha1",
        "kind": "KgatePolicy",
        "metadata": {"name": "bench"},
        "spec": {
            "subjects": {"users": [caller.user]},
            "defaultAction": "deny",
            "rules": rules,
        },
    })
}

/// Starts `kgate agent` (the binary `kgate`) with a generated config in
/// `dir/kgate-<durability>`; returns it once it listens.
///
/// `KGATE_BENCH_WRAPPER` names a profiler to run kgate under (`heaptrack`, `perf
/// record -g --`, `valgrind --tool=massif`): its memory and CPU figures are then the
/// profiler's too.
pub fn start(
    kgate: &Path,
    dir: &Path,
    serving: &Serving,
    upstream: &Upstream,
    caller: &Caller,
    durability: Durability,
) -> anyhow::Result<(Child, SocketAddr)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let own = dir.join(format!("kgate-{}", durability.name()));
    fs::create_dir_all(&own)?;
    let policy_file = dir.join("policy.json");
    fs::write(&policy_file, policy(caller).to_string())?;
    let config = config(
        addr,
        serving,
        upstream,
        caller,
        &policy_file,
        &own.join("records"),
        durability,
    );
    fs::write(
        own.join("agent.yaml"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let wrapper = std::env::var("KGATE_BENCH_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let (mut cmd, spawn): (_, fn(&mut Command, &Path) -> anyhow::Result<Child>) = match words.next()
    {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(kgate);
            (cmd, Child::spawn_group)
        }
        None => (Command::new(kgate), Child::spawn),
    };
    let log = own.join("kgate.log");
    let mut child = spawn(
        cmd.args(["agent", "--config"])
            .arg(own.join("agent.yaml"))
            .env("RUST_LOG", "warn"),
        &log,
    )?;
    wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .with_context(|| format!("kgate did not start listening: {}", tail(&log)))?;
    child.check_running("kgate").with_context(|| tail(&log))?;
    Ok((child, addr))
}

/// The last lines of a log, for an error message.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{} says: {}",
        log.display(),
        lines[lines.len().saturating_sub(5)..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_the_caller_and_its_audiences_only_when_given() {
        let serving = Serving {
            ca_pem: String::new(),
            cert: "/d/tls.crt".into(),
            key: "/d/tls.key".into(),
        };
        let upstream = Upstream {
            server: "https://api.example:6443".into(),
            ca_file: "/etc/ca.crt".into(),
            token_file: "/t/token".into(),
        };
        for (audiences, want) in [
            (vec![], Value::Null),
            (
                vec!["https://kubernetes.default.svc".to_owned()],
                json!(["https://kubernetes.default.svc"]),
            ),
        ] {
            let caller = Caller {
                user: "system:serviceaccount:ci:bot".into(),
                audiences,
                writable: None,
            };
            let c = config(
                "127.0.0.1:1".parse().unwrap(),
                &serving,
                &upstream,
                &caller,
                Path::new("/d/policy.json"),
                Path::new("/d/records"),
                Durability::Batch,
            );
            assert_eq!(c["kernel"], json!(false));
            assert_eq!(c["directClients"], "allow");
            assert_eq!(c["upstream"]["server"], "https://api.example:6443");
            assert_eq!(c["upstream"]["tokenFile"], "/t/token");
            assert_eq!(
                c["identity"]["unboundSubjects"],
                json!(["system:serviceaccount:ci:bot"])
            );
            assert_eq!(c["identity"]["audiences"], want);
            assert_eq!(c["record"]["durability"], "batch");
        }
    }

    #[test]
    fn the_policy_allows_the_user_reads_and_nothing_else() {
        let p = policy(&Caller {
            user: "system:serviceaccount:ci:bot".into(),
            audiences: Vec::new(),
            writable: None,
        });
        assert_eq!(
            p["spec"]["subjects"],
            json!({"users": ["system:serviceaccount:ci:bot"]})
        );
        assert_eq!(p["spec"]["defaultAction"], "deny");
        let verbs: Vec<&Value> = p["spec"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["match"]["verbs"].as_array().unwrap())
            .collect();
        assert!(
            verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap()))
        );
    }
}
