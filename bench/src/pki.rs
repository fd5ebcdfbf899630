//! The serving certificate kgate and nginx present to the load generator: issued at
//! run time by a CA of the bench's own (rcgen), for `localhost` and `127.0.0.1`, the
//! only names the bench dials them by. Written into the bench's temp dir; never a key
//! in the repo.

use std::{fs, path::Path, path::PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// The bench CA's certificate and the serving pair's files.
pub struct Serving {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Serving {
    /// A new CA and a certificate it signs, written as `tls.crt` and `tls.key` in `dir`.
    pub fn issue(dir: &Path) -> anyhow::Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "kgate bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        fs::create_dir_all(dir)?;
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        fs::write(&cert_path, cert.pem())?;
        fs::write(&key_path, key.serialize_pem())?;
        Ok(Self {
            ca_pem: issuer.pem(),
            cert: cert_path,
            key: key_path,
        })
    }
}
