//! `kgate status`: one row per node, from the agents' heartbeat Leases read with the
//! admin's kubeconfig ([`crate::nodes::from_leases`]), or from each agent's admin endpoint asked
//! directly ([`query`]); exits non-zero when any agent is down or not enforcing.
//!
//! Not here: what an agent reports ([`crate::admin`]) or how it publishes it
//! ([`crate::admin::heartbeat`]).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};
use serde_json::{Value, json};

use crate::nodes::{NodeRow, from_leases, node_json};

#[derive(clap::Args)]
pub(super) struct Args {
    /// Namespace of the agents' Leases (the DaemonSet's).
    #[arg(long, short = 'n', default_value = "kgate-system")]
    namespace: String,
    /// An agent's admin endpoint, `https://NODE:9443` (repeat for every node).
    #[arg(long = "agent", requires_all = ["ca_file", "token_file"])]
    agents: Vec<String>,
    /// With `--agent`: the CA that signed the agents' serving certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// With `--agent`: a bearer token the API server vouches for (TokenReview +
    /// SubjectAccessReview).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `json` or `yaml` for the raw statuses.
    #[arg(long, short = 'o')]
    output: Option<String>,
}

/// Prints the table (or `-o json`/`yaml`); an error when not every agent enforces.
pub(super) fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        namespace,
        agents,
        ca_file,
        token_file,
        output,
    } = args;
    let runtime = super::runtime()?;
    let (healthy, json, table) = if let (Some(ca_file), Some(token_file)) = (ca_file, token_file)
        && !agents.is_empty()
    {
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let rows = runtime.block_on(query(&agents, &ca_file, &token))?;
        (rows.iter().all(Row::healthy), json(&rows), table(&rows))
    } else {
        let rows = runtime.block_on(async {
            let client = super::kube_client().await?;
            from_leases(client, &namespace).await
        })?;
        if rows.is_empty() {
            anyhow::bail!("no nodes and no kgate heartbeats in namespace {namespace}");
        }
        (
            rows.iter().all(NodeRow::healthy),
            node_json(&rows),
            node_table(&rows),
        )
    };
    match output.as_deref() {
        Some("json") => println!("{json:#}"),
        Some("yaml") => print!("{}", serde_yaml::to_string(&json)?),
        None => print!("{table}"),
        Some(other) => anyhow::bail!("-o {other:?}: json or yaml"),
    }
    if healthy {
        Ok(())
    } else {
        anyhow::bail!("not every agent is enforcing")
    }
}

/// One agent's answer, or why there is none.
struct Row {
    agent: String,
    status: Result<Value, String>,
}

impl Row {
    /// Reachable and enforcing (or a standalone agent that says so).
    fn healthy(&self) -> bool {
        self.status
            .as_ref()
            .is_ok_and(|s| s["enforcing"] == true && s["ready"] == true)
    }
}

/// Queries every agent URL (`https://HOST:PORT`) with `token`, trusting `ca_file`.
async fn query(agents: &[String], ca_file: &Path, token: &str) -> anyhow::Result<Vec<Row>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut rows = Vec::new();
    for agent in agents {
        let req = Request::get(format!("{}/status", agent.trim_end_matches('/')))
            .header("authorization", format!("Bearer {}", token.trim()))
            .body(Full::new(Bytes::new()))?;
        let status = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Err(_) => Err("no answer within 5s".to_owned()),
            Ok(Err(e)) => Err(format!("unreachable: {e}")),
            Ok(Ok(response)) => {
                let code = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes);
                match (code.is_success(), body) {
                    (true, Ok(body)) => serde_json::from_slice(&body).map_err(|e| e.to_string()),
                    (false, Ok(body)) => {
                        let status: Value = serde_json::from_slice(&body).unwrap_or_default();
                        Err(format!(
                            "{code}: {}",
                            status["message"].as_str().unwrap_or("no message")
                        ))
                    }
                    (_, Err(e)) => Err(e.to_string()),
                }
            }
        };
        rows.push(Row {
            agent: agent.clone(),
            status,
        });
    }
    Ok(rows)
}

/// The kubectl-style table.
fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<32} {:<12} {:<9} {:<6} {:<7} {:<9} {:<8} {}\n",
        "AGENT", "NODE", "ENFORCING", "READY", "POLICY", "APPROVALS", "VERSION", "TARGETS / ERROR"
    );
    for row in rows {
        let _ = match &row.status {
            Ok(s) => writeln!(
                out,
                "{:<32} {:<12} {:<9} {:<6} {:<7} {:<9} {:<8} {}",
                row.agent,
                s["node"].as_str().unwrap_or("?"),
                yes(&s["enforcing"]),
                yes(&s["ready"]),
                s["policyGeneration"].to_string(),
                s["approvalsHeld"].to_string(),
                s["version"].as_str().unwrap_or("?"),
                [
                    s["targets"]
                        .as_array()
                        .map(|t| t
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default(),
                    failing_notifications(s)
                ]
                .join(" ")
                .trim_end()
            ),
            Err(e) => writeln!(
                out,
                "{:<32} {:<12} {:<9} {:<6} {:<7} {:<9} {:<8} {e}",
                row.agent, "?", "no", "no", "-", "-", "-"
            ),
        };
    }
    out
}

/// The rows as JSON.
fn json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| match &r.status {
                Ok(s) => json!({"agent": r.agent, "status": s}),
                Err(e) => json!({"agent": r.agent, "error": e}),
            })
            .collect(),
    )
}

/// `notifications failing: NAME, …` when an approval notification target's last
/// attempt failed; empty otherwise.
fn failing_notifications(status: &Value) -> String {
    let failing: Vec<&str> = status["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["failing"] == true)
        .filter_map(|t| t["target"].as_str())
        .collect();
    if failing.is_empty() {
        String::new()
    } else {
        format!("notifications failing: {}", failing.join(", "))
    }
}

fn yes(v: &Value) -> &'static str {
    if v == true { "yes" } else { "no" }
}

// === from heartbeat Leases ===

/// The kubectl-style table of the rows [`from_leases`] read.
fn node_table(rows: &[NodeRow]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:<6} {:<7} {:<7} {:<9} {:<12} {:<8} {:<5} {}\n",
        "NODE",
        "ENFORCING",
        "READY",
        "TARGETS",
        "POLICY",
        "APPROVALS",
        "CERT-EXPIRY",
        "VERSION",
        "SEEN",
        "ERROR"
    );
    for row in rows {
        let seen = row
            .seen_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
        let _ = match &row.status {
            Ok(s) => writeln!(
                out,
                "{:<20} {:<9} {:<6} {:<7} {:<7} {:<9} {:<12} {:<8} {:<5} {}",
                row.node,
                yes(&s["enforcing"]),
                yes(&s["ready"]),
                s["targets"].as_array().map_or(0, Vec::len),
                s["policyGeneration"].to_string(),
                s["approvalsHeld"].to_string(),
                s["certNotAfter"]
                    .as_i64()
                    .and_then(|t| jiff::Timestamp::from_second(t).ok())
                    .map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%d").to_string()),
                s["version"].as_str().unwrap_or("?"),
                seen,
                failing_notifications(s),
            ),
            Err(e) => writeln!(
                out,
                "{:<20} {:<9} {:<6} {:<7} {:<7} {:<9} {:<12} {:<8} {:<5} {e}",
                row.node, "no", "no", "-", "-", "-", "-", "-", seen
            ),
        };
    }
    out
}
