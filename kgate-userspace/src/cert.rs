//! `kgate cert issue`: the agent's serving certificate, signed by the cluster CA, with
//! the names in-cluster clients verify when they dial the `kubernetes` Service
//! (`kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
//! `kubernetes.default.svc.<cluster-domain>`, the ClusterIPs, optional node names),
//! written as files or as a `kubernetes.io/tls` Secret manifest.
//!
//! Also: what a PEM certificate names and when it expires ([`describe`]), for the
//! agent's status, its metrics and `kgate check`.

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

/// What the agent reports about its serving certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// The subject alternative names: DNS names as written, IP addresses in their
    /// usual text form (`10.96.0.1`, `fd00:96::1`).
    pub sans: Vec<String>,
    /// When the certificate expires (seconds since the epoch).
    pub not_after: i64,
    /// SHA-256 of the certificate's DER, in lowercase hex (what `openssl x509
    /// -fingerprint -sha256` prints, without the colons).
    pub sha256: String,
}

/// The names and expiry of the first certificate of `pem`.
pub(crate) fn describe(pem: &[u8]) -> Result<CertInfo, CertError> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let sans = names
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_from(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect();
    Ok(CertInfo {
        sans,
        not_after: cert.validity().not_after.timestamp(),
        sha256: sha256_hex(&pem.contents),
    })
}

/// An IP SAN's octets: 4 for IPv4, 16 for IPv6 (RFC 5280, 4.2.1.6).
fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// SHA-256 of `der`, lowercase hex: the fingerprint the heartbeat Lease publishes and
/// `kgate sessions` pins.
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_expiry_of_an_issued_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["kubernetes".to_owned()]).unwrap();
        params.subject_alt_names.extend([
            rcgen::SanType::IpAddress("10.96.0.1".parse().unwrap()),
            rcgen::SanType::IpAddress("fd00:96::1".parse().unwrap()),
        ]);
        let cert = params.self_signed(&key).unwrap();
        let info = super::describe(cert.pem().as_bytes()).unwrap();
        assert_eq!(info.sans, ["kubernetes", "10.96.0.1", "fd00:96::1"]);
        assert!(info.not_after > 1_700_000_000, "{info:?}");
        // The fingerprint is of the DER, as `openssl x509 -fingerprint -sha256` prints it.
        assert_eq!(info.sha256, super::sha256_hex(cert.der()));
        assert_eq!(info.sha256.len(), 64);
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(super::describe(b"garbage").is_err());
    }
}
