//! `kgate check`: every requirement of kgate, item by item, ok / warn / fail with a
//! hint for what is not ok, from the admin's kubeconfig; exits non-zero on any fail.
//! With `--pre`, only what a cluster must offer before kgate is installed: the API
//! server and its release, the `kubernetes` Service and its EndpointSlices, the
//! service-account issuer's discovery and JWKS, and each node's kernel and kubelet
//! cgroup driver. Without, also kgate's CRDs, the agents' permissions, and every
//! node's agent from its heartbeat Lease.
//!
//! The groups: [`cluster`] (API server, Service, issuer), [`install`] (CRDs, RBAC),
//! [`nodes`] (kernels, cgroup drivers, agents, each judged by [`agent`]); [`report`]
//! prints them.
//!
//! Not here: fixing anything. Every check reads; the hints say what to run.

mod agent;
mod cluster;
mod install;
mod nodes;
mod report;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Context as _;

use self::report::{Outcome, Report};

#[derive(clap::Args)]
pub(super) struct Args {
    /// Before installing kgate: only what the cluster itself must offer.
    #[arg(long)]
    pre: bool,
    /// kgate's namespace: the agents' Leases and ServiceAccount.
    #[arg(long, short = 'n', default_value = "kgate-system")]
    namespace: String,
    /// The agents' ServiceAccount, whose permissions are checked.
    #[arg(long, default_value = "kgate-agent")]
    service_account: String,
    /// The cluster's DNS domain, which the serving certificate's names end with.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// `json` or `yaml` for the results.
    #[arg(long, short = 'o')]
    output: Option<String>,
}

/// Prints the report; an error (exit code 1) when any check failed.
pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let report = runtime.block_on(check(args))?;
    match args.output.as_deref() {
        None => print!("{}", report.text()),
        Some("json") => println!("{:#}", report.json()),
        Some("yaml") => print!("{}", serde_yaml::to_string(&report.json())?),
        Some(other) => anyhow::bail!("-o {other:?}: json or yaml"),
    }
    match report.count(Outcome::Fail) {
        0 => Ok(()),
        failed => anyhow::bail!("{failed} check(s) failed"),
    }
}

async fn check(args: &Args) -> anyhow::Result<Report> {
    let mut config = kube::Config::infer()
        .await
        .context("no usable kubeconfig (KUBECONFIG or ~/.kube/config)")?;
    // A check reports the answer it gets: no retries (kube's default retries a 503 with
    // backoff for minutes), and a server that takes a connection and never answers
    // must not hold the check for the client's default five minutes.
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(20));
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the API client")?;

    let mut report = Report::default();
    if !cluster::api_server(&client, url.trim_end_matches('/'), &mut report).await {
        return Ok(report);
    }
    let service = cluster::kubernetes_service(&client, &mut report).await;
    cluster::issuer(&client, &mut report).await;
    if args.pre {
        nodes::pre(&client, &mut report).await;
        return Ok(report);
    }
    install::crds(&client, &mut report).await;
    install::rbac(&client, &args.namespace, &args.service_account, &mut report).await;
    nodes::post(
        &client,
        &args.namespace,
        &args.cluster_domain,
        &service,
        &mut report,
    )
    .await;
    Ok(report)
}
