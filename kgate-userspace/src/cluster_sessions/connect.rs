//! One request to an agent's admin endpoint through the API server: a port-forward to
//! the agent's pod (kube-rs, the WebSocket channel protocol), TLS inside it pinned to
//! the certificate the agent's Lease names (or chained to a CA file), then HTTP/1.1
//! with the caller's bearer token. And where that token comes from: the kubeconfig's
//! user, as kube-rs would authenticate it (token, tokenFile, exec plugin).
//!
//! Not here: which agents to ask ([`super::Cluster::agents`]).

use std::{future::Ready, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, header::AUTHORIZATION};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, client::ConfigExt as _};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use super::{Agent, ClusterError};

/// How long the kubelet's error for a port-forward that failed may take to arrive.
const ERROR_WAIT: Duration = Duration::from_secs(2);

/// The bearer token kube-rs would send for the kubeconfig's user (its AuthLayer
/// applied to a request that goes nowhere); refreshed from an exec plugin if it has one.
pub(crate) async fn bearer_token(config: &kube::Config) -> Result<String, ClusterError> {
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    /// A service that answers with the headers of the request it got.
    #[derive(Clone)]
    struct Headers;
    impl tower_service::Service<Request<Empty<Bytes>>> for Headers {
        type Response = http::Response<()>;
        // The filter's error type, which `Either` needs on both sides.
        type Error = crate::body::BoxError;
        type Future = Ready<Result<http::Response<()>, crate::body::BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), crate::body::BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<Empty<Bytes>>) -> Self::Future {
            let mut response = http::Response::new(());
            *response.headers_mut() = req.headers().clone();
            std::future::ready(Ok(response))
        }
    }

    let layer = config
        .auth_layer()
        .map_err(|e| ClusterError::TokenFailed(e.to_string()))?
        .ok_or(ClusterError::NoBearerToken)?;
    let mut service = layer.layer(Headers);
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| ClusterError::TokenFailed(e.to_string()))?;
    let answer = service
        .call(Request::new(Empty::new()))
        .await
        .map_err(|e| ClusterError::TokenFailed(e.to_string()))?;
    answer
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or(ClusterError::NoBearerToken)
}

/// The CAs in a PEM file.
pub(super) fn roots(path: &Path) -> Result<RootCertStore, ClusterError> {
    let failed = |e: String| ClusterError::FileFailed(path.to_owned(), e);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
        roots
            .add(cert.map_err(|e| failed(e.to_string()))?)
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(roots)
}

/// `GET path` with `token` on `agent`'s admin endpoint, through a port-forward.
pub(super) async fn get(
    client: &kube::Client,
    agent: &Agent,
    ca: Option<&RootCertStore>,
    token: &str,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &agent.namespace);
    let mut forward = pods
        .portforward(&agent.pod, &[agent.port])
        .await
        .map_err(|e| format!("port-forward to pod {}/{}: {e}", agent.namespace, agent.pod))?;
    let (Some(stream), Some(error)) = (
        forward.take_stream(agent.port),
        forward.take_error(agent.port),
    ) else {
        return Err("port-forward: no stream for the admin port".into());
    };
    let (config, name) = tls_config(agent, ca)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = match connector.connect(name, stream).await {
        Ok(tls) => tls,
        Err(e) => {
            // Nothing listening: the kubelet says why on the error channel.
            let why = tokio::time::timeout(ERROR_WAIT, error).await.ok().flatten();
            return Err(why.map_or_else(
                || format!("TLS to the admin endpoint (port {}): {e}", agent.port),
                |why| {
                    format!(
                        "port-forward to pod {}/{}: {why}",
                        agent.namespace, agent.pod
                    )
                },
            ));
        }
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP to the admin endpoint: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
        // The tunnel lives as long as the connection.
        forward.abort();
    });
    let req = Request::get(path)
        .header("host", "kgate-admin")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP to the admin endpoint: {e}"))
}

/// The TLS client for `agent`: its certificate pinned to the Lease's fingerprint, or
/// with `ca` chained to it under one of the names the Lease lists.
fn tls_config(
    agent: &Agent,
    ca: Option<&RootCertStore>,
) -> Result<(ClientConfig, ServerName<'static>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let Some(ca) = ca else {
        let verifier = Pinned {
            sha256: agent.fingerprint.to_ascii_lowercase(),
            provider,
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let name = ServerName::try_from("kgate-admin").map_err(|e| e.to_string())?;
        return Ok((config, name));
    };
    let name = agent
        .sans
        .iter()
        .find_map(|s| ServerName::try_from(s.clone()).ok())
        .ok_or_else(|| "the agent's Lease names no certificate name to verify".to_owned())?;
    let config = builder
        .with_root_certificates(ca.clone())
        .with_no_client_auth();
    Ok((config, name))
}

/// Accepts exactly the certificate whose SHA-256 is `sha256` (the handshake's
/// signature still checked against it).
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = crate::cert::sha256_hex(end_entity);
        if got == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the agent's certificate (SHA-256 {got}) is not the one its heartbeat Lease names ({})",
                self.sha256
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
