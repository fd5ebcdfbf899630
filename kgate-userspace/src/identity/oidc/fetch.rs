//! An OIDC issuer's discovery document and JWKS, over HTTPS: the issuer's certificate
//! checked against `issuer.certificateAuthority` (or the host's roots without one), the
//! discovery document's `issuer` equal to the configured URL (as go-oidc's
//! `NewProvider` requires), bodies bounded, each call bounded in time.
//!
//! Not here: when to fetch (the rate limit and the cache are [`super`]'s).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header::ACCEPT};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::jwk::JwkSet;
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

use crate::config::{JwtAuthenticator, authn::ca_certificates};

/// The largest discovery document or JWKS read.
const MAX_BODY: usize = 1 << 20;
/// Bound on each fetch: an issuer that takes the connection and never answers must
/// not hold the requests waiting for its keys.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("issuer TLS configuration: {0}")]
    TlsConfigFailed(String),
    #[error("GET {0}: {1}")]
    RequestFailed(String, String),
    #[error("GET {0}: no answer within {1} s")]
    Timeout(String, u64),
    #[error("GET {0}: HTTP {1}")]
    Status(String, StatusCode),
    #[error("GET {0}: {1}")]
    BadBody(String, String),
    #[error("the discovery document's issuer {found:?} is not {expected:?}")]
    IssuerMismatch { found: String, expected: String },
}

/// The HTTPS client of one issuer.
pub(crate) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    issuer: String,
    discovery_url: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

// === impl Fetcher ===

impl Fetcher {
    pub(crate) fn new(authenticator: &JwtAuthenticator) -> Result<Self, FetchError> {
        let mut roots = RootCertStore::empty();
        match authenticator
            .issuer
            .certificate_authority
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            Some(pem) => {
                for cert in ca_certificates(pem).map_err(FetchError::TlsConfigFailed)? {
                    roots
                        .add(cert)
                        .map_err(|e| FetchError::TlsConfigFailed(e.to_string()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| FetchError::TlsConfigFailed(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            issuer: authenticator.issuer.url.clone(),
            discovery_url: authenticator.discovery_url(),
        })
    }

    /// The discovery document, then the JWKS it names.
    pub(crate) async fn jwks(&self) -> Result<JwkSet, FetchError> {
        let discovery: Discovery = self.get(&self.discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                found: discovery.issuer,
                expected: self.issuer.clone(),
            });
        }
        self.get(&discovery.jwks_uri).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let failed = |e: String| FetchError::RequestFailed(url.to_owned(), e);
        let req = Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| failed(error_chain(&e)))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(FetchError::Status(url.to_owned(), status));
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| FetchError::BadBody(url.to_owned(), e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body)
                .map_err(|e| FetchError::BadBody(url.to_owned(), e.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout(url.to_owned(), FETCH_TIMEOUT.as_secs()))?
    }
}

/// An error and its causes, which hyper's own message leaves out (`client error
/// (Connect)` says nothing of the refused connection or the bad certificate).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
