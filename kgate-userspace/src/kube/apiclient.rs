//! The agent's own client to the API server (kube-rs), for what kgate itself asks:
//! OIDC discovery and JWKS, TokenReview, approvals, the heartbeat Lease and the watches
//! beside this file. It uses the upstream config: the same endpoint and CA, the agent's
//! own credential (`tokenFile`, which kube-rs re-reads as it rotates, or a client
//! certificate), never a caller's token.

use crate::config;

#[derive(Debug, thiserror::Error)]
#[error("the agent's API client: {0}")]
pub(crate) struct ApiClientError(#[source] kube::Error);

pub(crate) fn client(
    cfg: &config::Upstream,
    base: &http::Uri,
) -> Result<kube::Client, ApiClientError> {
    let mut config = kube::Config::new(base.clone());
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
    kube::Client::try_from(config).map_err(ApiClientError)
}
