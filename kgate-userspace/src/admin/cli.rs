//! `kgate status`: asks each agent's admin endpoint for `/status` and prints one
//! row per node; exits non-zero when any agent is unreachable or not enforcing.

use std::{fmt::Write as _, path::Path, sync::Arc, time::Duration};

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

/// One agent's answer, or why there is none.
pub struct Row {
    pub agent: String,
    pub status: Result<Value, String>,
}

impl Row {
    /// Reachable and enforcing (or a standalone agent that says so).
    pub fn healthy(&self) -> bool {
        self.status
            .as_ref()
            .is_ok_and(|s| s["enforcing"] == true && s["ready"] == true)
    }
}

/// Queries every agent URL (`https://HOST:PORT`) with `token`, trusting `ca_file`.
pub async fn query(agents: &[String], ca_file: &Path, token: &str) -> anyhow::Result<Vec<Row>> {
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
pub fn table(rows: &[Row]) -> String {
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
                s["policyGeneration"],
                s["approvalsHeld"],
                s["version"].as_str().unwrap_or("?"),
                s["targets"]
                    .as_array()
                    .map(|t| t
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
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
pub fn json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| match &r.status {
                Ok(s) => json!({"agent": r.agent, "status": s}),
                Err(e) => json!({"agent": r.agent, "error": e}),
            })
            .collect(),
    )
}

fn yes(v: &Value) -> &'static str {
    if v == true { "yes" } else { "no" }
}
