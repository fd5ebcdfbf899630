//! `kgate approvals list`, `kgate approve NAME [--for 10m]`, `kgate deny NAME
//! --reason …`: the admin's side of approvals, with the admin's own kubeconfig (RBAC
//! on `kgateapprovals` decides who may decide).
//!
//! Not here: holding requests and acting on the decision ([`crate::approval`]).

use std::future::Future;

use super::table::Table;
use crate::decisions::{self, DecideError, Decided, Verdict};
use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum ApprovalsCommand {
    /// Every approval, oldest first.
    List {
        /// `json` for the objects.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

#[derive(clap::Args)]
pub(super) struct ApproveArgs {
    name: String,
    /// Let repeats of the same user, verb and resource pass for this long (10m).
    #[arg(long = "for")]
    grant_for: Option<String>,
    #[arg(long)]
    reason: Option<String>,
}

#[derive(clap::Args)]
pub(super) struct DenyArgs {
    name: String,
    #[arg(long)]
    reason: Option<String>,
}

/// `kgate approvals list`.
pub(super) fn list(command: ApprovalsCommand) -> anyhow::Result<()> {
    let ApprovalsCommand::List { output } = command;
    with_kube(|client| async move { table(client, output.as_deref() == Some("json")).await })
}

/// `kgate approve`.
pub(super) fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let ApproveArgs {
        name,
        grant_for,
        reason,
    } = args;
    with_kube(|client| async move {
        decide(client, &name, true, grant_for.as_deref(), reason.as_deref()).await
    })
}

/// `kgate deny`.
pub(super) fn deny(args: DenyArgs) -> anyhow::Result<()> {
    let DenyArgs { name, reason } = args;
    with_kube(|client| async move { decide(client, &name, false, None, reason.as_deref()).await })
}

/// Runs `f` with the admin's kubeconfig and prints what it returns.
fn with_kube<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = Result<String, CliError>>,
{
    let out = super::runtime()?.block_on(async {
        let client = super::kube_client().await?;
        f(client).await.map_err(anyhow::Error::from)
    })?;
    println!("{}", out.trim_end());
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Decide(#[from] DecideError),
}

/// The table `kgate approvals list` prints.
async fn table(client: kube::Client, json_output: bool) -> Result<String, CliError> {
    let items = decisions::list(client).await?;
    if json_output {
        return Ok(serde_json::to_string_pretty(&items).unwrap_or_default());
    }
    let mut table = Table::new(vec![
        "NAME", "PHASE", "USER", "WORKLOAD", "VERB", "RESOURCE", "RULE",
    ]);
    for a in &items {
        let r = &a.spec.request;
        let target = match (r.namespace.as_str(), r.name.as_str()) {
            ("", "") => r.resource.clone(),
            ("", name) => format!("{}/{name}", r.resource),
            (ns, name) => format!("{}/{name} -n {ns}", r.resource),
        };
        table.row(vec![
            a.metadata.name.clone().unwrap_or_default(),
            a.status
                .as_ref()
                .map_or("Pending", |s| s.phase.as_str())
                .to_owned(),
            a.spec.user.clone(),
            a.spec.workload.clone(),
            r.verb.clone(),
            target,
            a.spec.rule.clone(),
        ]);
    }
    Ok(table.render())
}

/// Approves (with an optional grant window) or denies a pending approval.
async fn decide(
    client: kube::Client,
    name: &str,
    approve: bool,
    grant_for: Option<&str>,
    reason: Option<&str>,
) -> Result<String, CliError> {
    let verdict = if approve {
        Verdict::Approve { grant_for }
    } else {
        Verdict::Deny
    };
    let Decided { by } = decisions::decide(client, name, verdict, reason).await?;
    Ok(match (approve, grant_for) {
        (true, Some(window)) => format!("{name} approved by {by}; repeats pass for {window}"),
        (true, None) => format!("{name} approved by {by}"),
        (false, _) => format!("{name} denied by {by}"),
    })
}
