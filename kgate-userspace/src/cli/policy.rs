//! `kgate policy check FILE…` validates policy files; `kgate policy explain` says which
//! rule decides a request described on the command line, and why.
//!
//! Not here: loading ([`crate::policy::file`]) and the evaluation with its reasoning
//! ([`crate::policy::explain`]), which the agent's own evaluation shares.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Subcommand;

use crate::policy::{PolicySet, explain, file, types::DefaultAction};

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Validate policy files (YAML streams of KgatePolicy); errors name their location.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Say which rule decides a request, and why.
    Explain(Box<ExplainArgs>),
}

#[derive(clap::Args)]
pub(super) struct ExplainArgs {
    /// Policy files to evaluate.
    #[arg(long = "file", short = 'f', required = true)]
    files: Vec<PathBuf>,
    /// The caller's username, e.g. system:serviceaccount:ci:deployer.
    #[arg(long = "as")]
    user: String,
    /// Extra groups of the caller (service-account groups are added).
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long)]
    verb: String,
    /// RESOURCE or RESOURCE/SUBRESOURCE (pods, pods/exec).
    #[arg(long, default_value = "")]
    resource: String,
    #[arg(long, default_value = "")]
    api_group: String,
    #[arg(long, short = 'n', default_value = "")]
    namespace: String,
    #[arg(long, default_value = "")]
    name: String,
    /// A non-resource path instead of a resource (/healthz).
    #[arg(long)]
    non_resource_url: Option<String>,
    /// Labels of the calling pod, KEY=VALUE.
    #[arg(long = "pod-label")]
    pod_labels: Vec<String>,
    #[arg(long)]
    container: Option<String>,
    /// The calling process's comm.
    #[arg(long)]
    process: Option<String>,
    /// The global default when no policy decides.
    #[arg(long, default_value = "deny")]
    default_action: String,
}

pub(super) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { files } => {
            for path in &files {
                let policies = file::load(path)?;
                println!("{}: ok ({} policies)", path.display(), policies.len());
            }
            Ok(())
        }
        PolicyCommand::Explain(args) => {
            let (set, question) = question(*args)?;
            print!("{}", explain::explain(&set, &question));
            Ok(())
        }
    }
}

/// The policies to ask and the request to ask about, from the command line.
fn question(args: ExplainArgs) -> anyhow::Result<(PolicySet, explain::Question)> {
    let ExplainArgs {
        files,
        user,
        groups,
        verb,
        resource,
        api_group,
        namespace,
        name,
        non_resource_url,
        pod_labels,
        container,
        process,
        default_action,
    } = args;
    let mut policies = Vec::new();
    for path in &files {
        policies.extend(file::load(path)?.into_iter().map(Arc::new));
    }
    let default_action = match default_action.as_str() {
        "deny" => DefaultAction::Deny,
        "allow" => DefaultAction::Allow,
        other => anyhow::bail!("--default-action {other:?}: deny or allow"),
    };
    let pod_labels = pod_labels
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--pod-label {kv:?} is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let set = PolicySet::new(policies, default_action, false, 0);
    let question = explain::Question {
        user,
        groups,
        verb,
        resource,
        api_group,
        namespace,
        name,
        non_resource_url,
        pod_labels,
        container,
        process,
    };
    Ok((set, question))
}
