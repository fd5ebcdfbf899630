//! The **tls** stage: terminates TLS with the serving certificate that pods already
//! trust, offering h2 and http/1.1 by ALPN.
//!
//! The certificate and key are re-read when their files change (a Secret volume update
//! swaps them in place); a new handshake gets the new pair, open connections keep
//! theirs. A changed pair that does not parse is logged and the old one kept: a bad
//! rotation never takes the node's API access down. What the served certificate
//! names and when it expires are read once per (re)load, for the agent's status.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    ServerConfig,
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::cert::CertInfo;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("reading {0}: {1}")]
    ReadFailed(PathBuf, #[source] io::Error),
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no usable PEM private key: {1}")]
    BadKey(PathBuf, String),
    #[error("{0}: the key does not match the certificate: {1}")]
    KeyMismatch(PathBuf, String),
    #[error("TLS configuration: {0}")]
    ConfigFailed(#[source] rustls::Error),
}

/// The serving certificate, reloadable.
pub(crate) struct ServingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    pem: (Vec<u8>, Vec<u8>),
    /// Its names and expiry (`None` if x509-parser cannot read what rustls took).
    info: Option<CertInfo>,
}

impl ServingCert {
    pub(crate) fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let pem = read_pair(cert_file, key_file)?;
        let key = Arc::new(certified_key(cert_file, key_file, &pem)?);
        let info = crate::cert::describe(&pem.0).ok();
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Loaded { key, pem, info }),
        }))
    }

    /// The names and expiry of the certificate served now.
    pub(crate) fn info(&self) -> Option<CertInfo> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .info
            .clone()
    }

    /// A TLS acceptor that always serves the current certificate.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::ConfigFailed)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the files; swaps the certificate in when they changed and parse.
    /// Returns whether a new certificate is now served.
    pub(crate) fn reload(&self) -> Result<bool, TlsError> {
        let pem = read_pair(&self.cert_file, &self.key_file)?;
        if self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pem
            == pem
        {
            return Ok(false);
        }
        let key = Arc::new(certified_key(&self.cert_file, &self.key_file, &pem)?);
        let info = crate::cert::describe(&pem.0).ok();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded { key, pem, info };
        Ok(true)
    }

    /// Checks the files every `interval` for the life of the runtime.
    pub(crate) fn spawn_reloader(self: &Arc<Self>, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => {
                        info!(cert = %this.cert_file.display(), "serving certificate reloaded");
                    }
                    Ok(false) => {}
                    Err(error) => {
                        warn!(%error, "serving certificate changed but cannot be used; keeping the old one");
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .key
                .clone(),
        )
    }
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| fs::read(p).map_err(|e| TlsError::ReadFailed(p.to_owned(), e));
    Ok((read(cert_file)?, read(key_file)?))
}

fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    (cert, key): &(Vec<u8>, Vec<u8>),
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::BadKey(key_file.to_owned(), e.to_string()))?;
    let signing = any_supported_type(&key)
        .map_err(|e| TlsError::BadKey(key_file.to_owned(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::KeyMismatch(key_file.to_owned(), e.to_string()))?;
    Ok(certified)
}
