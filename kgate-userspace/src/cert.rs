//! `kgate cert issue`: the agent's serving certificate, signed by the cluster CA, with
//! the names in-cluster clients verify when they dial the `kubernetes` Service
//! (`kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
//! `kubernetes.default.svc.<cluster-domain>`, the ClusterIPs, optional node names),
//! written as files or as a `kubernetes.io/tls` Secret manifest.
//!
//! Also: the expiry of a PEM certificate, for status and metrics.

use std::net::IpAddr;

use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("the CA certificate or key: {0}")]
    BadCa(String),
    #[error("issuing: {0}")]
    IssueFailed(#[from] rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    BadCertificate(String),
}

/// What the serving certificate must cover.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub cluster_domain: String,
    /// The `kubernetes` Service's ClusterIPs (IPv4 and/or IPv6).
    pub cluster_ips: Vec<IpAddr>,
    /// Further DNS names (node names, an external load balancer's name).
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

/// A new key and certificate (PEM) for `names`, signed by the CA.
pub(crate) fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &Names,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| CertError::BadCa(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| CertError::BadCa(e.to_string()))?;
    let mut dns = vec![
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{}", names.cluster_domain),
    ];
    dns.extend(names.dns.iter().cloned());
    let mut params = CertificateParams::new(dns)?;
    params.subject_alt_names.extend(
        names
            .cluster_ips
            .iter()
            .chain(&names.ips)
            .map(|ip| SanType::IpAddress(*ip)),
    );
    params
        .distinguished_name
        .push(DnType::CommonName, "kgate-agent");
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for nodes whose clocks run a little behind.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(i64::from(names.days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A `kubernetes.io/tls` Secret manifest holding the pair.
pub(crate) fn secret_manifest(
    name: &str,
    namespace: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        STANDARD.encode(cert_pem),
        STANDARD.encode(key_pem)
    )
}

/// Seconds since the epoch at which the first certificate of `pem` expires.
pub(crate) fn not_after(pem: &[u8]) -> Result<i64, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry_of_an_issued_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let at = super::not_after(cert.pem().as_bytes()).unwrap();
        assert!(at > 1_700_000_000, "{at}");
        assert!(super::not_after(b"garbage").is_err());
    }
}
