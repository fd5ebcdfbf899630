//! `kgate kubeconfig`: a kubeconfig for a user or CI job that points at the gateway
//! (server, CA data) and gets its OIDC token one of three ways:
//!
//! - `--oidc-issuer-url` and `--oidc-client-id`: an exec credential plugin entry for
//!   `kubectl oidc-login get-token` (int128/kubelogin), which logs the user in with
//!   the browser and caches and refreshes the ID token;
//! - `--token-file`: a file the job keeps fresh (a CI runner's ID token, written by a
//!   step before kubectl runs), which client-go re-reads;
//! - `--exec` (and `--exec-arg`): any other exec credential plugin.
//!
//! Users switch with one command: `kgate kubeconfig … > ~/.kube/kgate && export
//! KUBECONFIG=~/.kube/kgate`. Not here: logging in (the plugin does), or the gateway.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use clap::Args as ClapArgs;
use serde_json::{Value, json};

#[derive(ClapArgs)]
pub(super) struct Args {
    /// The gateway's address, e.g. `https://kgate.example.com`.
    #[arg(long)]
    server: String,
    /// PEM CA bundle that signs the gateway's serving certificate (embedded as
    /// certificate-authority-data).
    #[arg(long)]
    ca_file: PathBuf,
    /// Name of the cluster, user and context entries.
    #[arg(long, default_value = "kgate")]
    name: String,
    /// The context's default namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// The IdP's issuer URL (the authenticator's issuer.url): use kubelogin.
    #[arg(long, requires = "oidc_client_id", conflicts_with_all = ["token_file", "exec"])]
    oidc_issuer_url: Option<String>,
    /// The OIDC client the user logs in with; its ID is the token's audience, so it
    /// must be among the authenticator's issuer.audiences.
    #[arg(long)]
    oidc_client_id: Option<String>,
    /// Client secret, for IdPs whose client is confidential.
    #[arg(long, requires = "oidc_issuer_url")]
    oidc_client_secret: Option<String>,
    /// Extra scopes to ask for (e.g. `groups`, for the groups claim).
    #[arg(long = "oidc-extra-scope", requires = "oidc_issuer_url")]
    oidc_extra_scopes: Vec<String>,
    /// A file holding the ID token, re-read as it changes (CI jobs).
    #[arg(long, conflicts_with = "exec")]
    token_file: Option<PathBuf>,
    /// Another exec credential plugin's command.
    #[arg(long)]
    exec: Option<String>,
    /// An argument of `--exec`'s command (repeat, in order).
    #[arg(long = "exec-arg", requires = "exec", allow_hyphen_values = true)]
    exec_args: Vec<String>,
}

/// Prints the kubeconfig as YAML.
pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    let ca = std::fs::read(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    print!("{}", serde_yaml::to_string(&kubeconfig(args, &ca)?)?);
    Ok(())
}

fn kubeconfig(args: &Args, ca_pem: &[u8]) -> anyhow::Result<Value> {
    if !args.server.starts_with("https://") {
        anyhow::bail!("--server {:?} must be an https:// URL", args.server);
    }
    let user = match (&args.oidc_issuer_url, &args.token_file, &args.exec) {
        (Some(issuer), _, _) => {
            let mut plugin = vec![
                "oidc-login".to_owned(),
                "get-token".to_owned(),
                format!("--oidc-issuer-url={issuer}"),
                format!(
                    "--oidc-client-id={}",
                    args.oidc_client_id.as_deref().unwrap_or_default()
                ),
            ];
            if let Some(secret) = &args.oidc_client_secret {
                plugin.push(format!("--oidc-client-secret={secret}"));
            }
            plugin.extend(
                args.oidc_extra_scopes
                    .iter()
                    .map(|s| format!("--oidc-extra-scope={s}")),
            );
            exec("kubectl", &plugin)
        }
        (None, Some(file), _) => json!({"tokenFile": file.display().to_string()}),
        (None, None, Some(command)) => exec(command, &args.exec_args),
        (None, None, None) => anyhow::bail!(
            "say how the user gets a token: --oidc-issuer-url and --oidc-client-id \
             (kubelogin), --token-file, or --exec"
        ),
    };
    let mut context = json!({"cluster": args.name, "user": args.name});
    if let Some(ns) = &args.namespace {
        context["namespace"] = json!(ns);
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": args.name, "cluster": {
            "server": args.server,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": args.name, "user": user}],
        "contexts": [{"name": args.name, "context": context}],
        "current-context": args.name,
    }))
}

/// A client.authentication.k8s.io/v1 exec credential plugin entry.
fn exec(command: &str, args: &[String]) -> Value {
    json!({"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": command,
        "args": args,
        // kubelogin opens a browser or asks on the terminal when it has no token.
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": false,
    }})
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(
            [
                "kgate",
                "--server",
                "https://kgate.example.com",
                "--ca-file",
                "ca.crt",
            ]
            .iter()
            .chain(argv),
        )
        .map(|c| c.args)
    }

    #[test]
    fn each_way_of_getting_a_token_makes_its_user_entry() {
        let cases = [
            (
                &[
                    "--oidc-issuer-url",
                    "https://idp.example.com",
                    "--oidc-client-id",
                    "kgate",
                    "--oidc-extra-scope",
                    "groups",
                ][..],
                json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "kubectl",
                    "args": ["oidc-login", "get-token", "--oidc-issuer-url=https://idp.example.com",
                             "--oidc-client-id=kgate", "--oidc-extra-scope=groups"],
                    "interactiveMode": "IfAvailable", "provideClusterInfo": false}}),
            ),
            (
                &["--token-file", "/var/run/ci/token"][..],
                json!({"tokenFile": "/var/run/ci/token"}),
            ),
            (
                &[
                    "--exec",
                    "gh-oidc",
                    "--exec-arg",
                    "--audience",
                    "--exec-arg",
                    "kgate",
                ][..],
                json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "gh-oidc",
                    "args": ["--audience", "kgate"], "interactiveMode": "IfAvailable",
                    "provideClusterInfo": false}}),
            ),
        ];
        for (argv, user) in cases {
            let config = kubeconfig(&parse(argv).unwrap(), b"PEM").unwrap();
            assert_eq!(config["users"][0]["user"], user, "{argv:?}");
            assert_eq!(
                config["clusters"][0]["cluster"]["certificate-authority-data"],
                "UEVN"
            );
            assert_eq!(config["current-context"], "kgate");
        }
    }

    #[test]
    fn a_kubeconfig_without_a_token_source_or_with_two_is_refused() {
        assert!(kubeconfig(&parse(&[]).unwrap(), b"PEM").is_err());
        assert!(
            parse(&[
                "--token-file",
                "t",
                "--oidc-issuer-url",
                "https://i",
                "--oidc-client-id",
                "c"
            ])
            .is_err()
        );
        assert!(
            parse(&["--oidc-issuer-url", "https://i"]).is_err(),
            "client id required"
        );
    }
}
