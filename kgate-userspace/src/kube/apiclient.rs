//! The agent's own client to the API server (kube-rs), for what kgate itself asks:
//! OIDC discovery and JWKS, TokenReview, approvals, the heartbeat Lease and the watches
//! beside this file. It uses the upstream config: the same endpoint and CA, the agent's
//! own credential (`tokenFile`, which kube-rs re-reads as it rotates, or a client
//! certificate), never a caller's token.

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::config;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiClientError {
    #[error("the agent's API client: {0}")]
    ClientFailed(#[source] kube::Error),
    #[error("the agent's API client: reading the CA file {0}: {1}")]
    CaFileUnreadable(PathBuf, String),
}

pub(crate) fn client(
    cfg: &config::Upstream,
    base: &http::Uri,
) -> Result<kube::Client, ApiClientError> {
    let mut config = kube::Config::new(base.clone());
    // Both: kube-rs verifies against the file, re-read as the CA rotates, but builds
    // its TLS config from `root_cert` first; without it, that build asks the system's
    // trust store, which a minimal image has none of ("No CA certificates were loaded
    // from the system"), and fails.
    let unreadable = |e: &dyn std::fmt::Display| {
        ApiClientError::CaFileUnreadable(cfg.ca_file.clone(), e.to_string())
    };
    let roots = CertificateDer::pem_file_iter(&cfg.ca_file)
        .map_err(|e| unreadable(&e))?
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    config.root_cert = Some(roots);
    config.root_cert_file = Some(cfg.ca_file.clone());
    config.tls_server_name.clone_from(&cfg.server_name);
    config.auth_info.token_file = cfg.token_file.as_ref().map(|p| p.display().to_string());
    config.auth_info.client_certificate = cfg
        .client_cert_file
        .as_ref()
        .map(|p| p.display().to_string());
    config.auth_info.client_key = cfg
        .client_key_file
        .as_ref()
        .map(|p| p.display().to_string());
    // A watch's own timeoutSeconds ends it; the read timeout only catches dead peers.
    config.read_timeout = Some(std::time::Duration::from_secs(330));
    kube::Client::try_from(config).map_err(ApiClientError::ClientFailed)
}
