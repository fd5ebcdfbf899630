//! `kgate bench`: what kgate costs in front of the user's own API server, measured
//! direct vs nginx vs kgate (strict and batch recording) with a bot's token; the
//! harness is the `kgate-bench` crate's upstream mode, which `cargo xtask bench
//! --upstream` runs too. docs/bench.md ("On your own cluster") says how to read it.
//!
//! And `kgate bench-identity` and `kgate bench-record` (hidden, only with the `bench`
//! feature that `cargo xtask bench` builds with): the identity check's cost and what
//! making a record durable costs, each as one JSON line.
//!
//! Not here: the measurements ([`kgate_bench`]; the identity check's, in
//! `identity::bench`, built with the feature).

use std::path::PathBuf;

use anyhow::Context as _;
use kgate_bench::{Part, upstream};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The API server: `https://HOST[:PORT]` (port 443 when left out).
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// CA bundle (PEM) that signs the API server's certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,
    /// A file holding the token the requests are sent with: a bot's service-account
    /// token (`kubectl create token NAME -n NAMESPACE`), which must be allowed to GET
    /// `--path`.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The GET every row sends; it must answer 200 directly.
    #[arg(long, default_value = upstream::DEFAULT_PATH)]
    path: String,
    /// Seconds per load point. Default 10 (1 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// A short run: 1 s per point, one rate, fewer idle connections.
    #[arg(long)]
    quick: bool,
    /// Only these parts, comma-separated (latency, saturation, connections). Default:
    /// latency, and saturation and connections with --yes.
    #[arg(long, value_enum, value_delimiter = ',', hide_possible_values = true)]
    only: Vec<Part>,
    /// Run saturation and connections too: they send requests as fast as the API
    /// server answers them.
    #[arg(long)]
    yes: bool,
    /// The nginx binary; without it, nginx's rows are left out (nothing is
    /// installed).
    #[arg(long, value_name = "PATH", default_value = kgate_bench::nginx::DEFAULT_PATH)]
    nginx: PathBuf,
    /// Directory for the report (`bench-<time>.md` and `.json`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

/// Runs the bench with this binary as the agent.
pub(super) fn run(args: Args) -> anyhow::Result<()> {
    let options = upstream::Options {
        server: args.upstream,
        ca_file: args.ca_file,
        token_file: args.token_file,
        path: args.path,
        seconds: args.seconds,
        quick: args.quick,
        only: args.only,
        nginx: args.nginx,
        yes: args.yes,
        kgate: std::env::current_exe().context("the kgate binary's path")?,
        out: args.out,
        build: format!(
            "kgate {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            super::version::COMMIT
        ),
    };
    upstream::run(&options)?;
    Ok(())
}

/// Prints `{"hit_ns": …, "miss_ns": …, "oidc_hit_ns": …, "oidc_miss_ns": …}`.
#[cfg(feature = "bench")]
pub(super) fn identity() -> anyhow::Result<()> {
    let costs = super::runtime()?.block_on(crate::identity::bench::measure(2000, 200_000))?;
    let (hit, miss) = costs.service_account;
    let (oidc_hit, oidc_miss) = costs.oidc;
    println!(
        "{}",
        serde_json::json!({
            "hit_ns": hit.as_nanos(), "miss_ns": miss.as_nanos(),
            "oidc_hit_ns": oidc_hit.as_nanos(), "oidc_miss_ns": oidc_miss.as_nanos(),
        })
    );
    Ok(())
}

/// Prints, per way (`disk`, `inline`, `writer`), `{"p50_us": …, "p99_us": …}` of
/// making one record durable.
#[cfg(feature = "bench")]
pub(super) fn record(dir: &std::path::Path) -> anyhow::Result<()> {
    let costs = crate::record::bench::measure(dir, 3000)?;
    let way = |s: &crate::record::bench::Samples| serde_json::json!({"p50_us": s.us(50.0), "p90_us": s.us(90.0), "p99_us": s.us(99.0)});
    println!(
        "{}",
        serde_json::json!({
            "disk": way(&costs.disk), "inline": way(&costs.inline), "writer": way(&costs.writer),
            "busy_records_per_s": {
                "inline": costs.throughput.inline, "writer": costs.throughput.writer,
            },
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path, sync::Arc};

    use http::{Method, Uri};
    use kgate_bench::{
        agent::{self, Caller, Durability, Upstream},
        pki::Serving,
    };

    use crate::{
        config::Config,
        identity::UserInfo,
        policy::{
            self, PolicySet, file,
            types::{Action, DefaultAction},
        },
        request_info::RequestInfo,
    };

    /// What `kgate bench` hands the agent is a config the agent accepts, standalone,
    /// and a policy that allows the caller's reads and nothing else.
    #[test]
    fn bench_config_and_policy_are_what_the_agent_accepts() {
        let serving = Serving {
            ca_pem: String::new(),
            cert: "/b/tls.crt".into(),
            key: "/b/tls.key".into(),
        };
        let upstream = Upstream {
            server: "https://api.example.com:443".into(),
            ca_file: "/etc/k/ca.crt".into(),
            token_file: "/etc/k/token".into(),
        };
        let caller = Caller {
            user: "system:serviceaccount:ci:bot".into(),
            audiences: vec!["https://kubernetes.default.svc".into()],
            writable: None,
        };
        let json = agent::config(
            "127.0.0.1:7443".parse().unwrap(),
            &serving,
            &upstream,
            &caller,
            Path::new("/b/policy.json"),
            Path::new("/b/records"),
            Durability::Strict,
        );
        let config = Config::parse(&json.to_string()).expect("the agent accepts the config");
        assert!(!config.kernel);
        assert_eq!(
            config.identity.unbound_subjects,
            ["system:serviceaccount:ci:bot"]
        );
        assert_eq!(
            config.identity.audiences,
            ["https://kubernetes.default.svc"]
        );
        assert_eq!(
            config.upstream.token_file.as_deref(),
            Some(Path::new("/etc/k/token"))
        );
        assert_eq!(config.policy.files, [Path::new("/b/policy.json")]);

        let other = "system:serviceaccount:ci:other";
        assert_decisions(
            &caller,
            config.policy.default_action,
            &[
                (&caller.user, "GET", "/version", Action::Allow),
                (
                    &caller.user,
                    "GET",
                    "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
                    Action::Allow,
                ),
                (
                    &caller.user,
                    "GET",
                    "/api/v1/pods?watch=true",
                    Action::Allow,
                ),
                (
                    &caller.user,
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    Action::Deny,
                ),
                (
                    &caller.user,
                    "DELETE",
                    "/api/v1/namespaces/default/pods/x",
                    Action::Deny,
                ),
                (other, "GET", "/version", Action::Deny),
            ],
        );
    }

    /// Evaluates each (user, method, URI) case against the bench's policy for
    /// `caller`, as the agent would load it.
    fn assert_decisions(
        caller: &Caller,
        default_action: DefaultAction,
        cases: &[(&str, &str, &str, Action)],
    ) {
        let policies = file::parse(&agent::policy(caller).to_string(), "policy.json")
            .expect("the agent accepts the policy");
        let set = PolicySet::new(
            policies.into_iter().map(Arc::new).collect(),
            default_action,
            false,
            1,
        );
        for &(name, method, uri, want) in cases {
            let who = UserInfo {
                username: name.to_owned(),
                uid: String::new(),
                groups: vec!["system:authenticated".into()],
                extra: BTreeMap::new(),
            };
            let req = RequestInfo::parse(
                &Method::from_bytes(method.as_bytes()).unwrap(),
                &uri.parse::<Uri>().unwrap(),
            )
            .unwrap();
            let caller = policy::Caller {
                user: Some(&who),
                ..policy::Caller::default()
            };
            let decision = set.evaluate(&caller, &req);
            assert_eq!(decision.action, want, "{name} {method} {uri}");
        }
    }

    /// The loopback bench's write rows: the bot may patch its one ConfigMap, and
    /// nothing else is writable.
    #[test]
    fn a_writable_configmap_is_patchable_and_nothing_more() {
        let caller = Caller {
            user: "system:serviceaccount:demo:bot".into(),
            audiences: Vec::new(),
            writable: Some(("demo".into(), "bench-write".into())),
        };
        let bot = caller.user.as_str();
        assert_decisions(
            &caller,
            DefaultAction::Deny,
            &[
                (
                    bot,
                    "PATCH",
                    "/api/v1/namespaces/demo/configmaps/bench-write",
                    Action::Allow,
                ),
                (
                    bot,
                    "GET",
                    "/api/v1/namespaces/demo/configmaps/bench-1k",
                    Action::Allow,
                ),
                (
                    bot,
                    "PATCH",
                    "/api/v1/namespaces/demo/configmaps/bench-1k",
                    Action::Deny,
                ),
                (
                    bot,
                    "PATCH",
                    "/api/v1/namespaces/other/configmaps/bench-write",
                    Action::Deny,
                ),
                (
                    bot,
                    "DELETE",
                    "/api/v1/namespaces/demo/configmaps/bench-write",
                    Action::Deny,
                ),
                (
                    bot,
                    "PUT",
                    "/api/v1/namespaces/demo/configmaps/bench-write",
                    Action::Deny,
                ),
            ],
        );
    }
}
