//! Certificates made at test time (never keys in the repo): a cluster CA and the
//! serving certificate kgate presents to pods, with the SANs of the `kubernetes`
//! Service.

use std::{fs, net::IpAddr, path::Path};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// A certificate authority that can issue server certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and key.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `dns` names and `ips`.
    pub fn issue(&self, dns: &[&str], ips: &[IpAddr]) -> anyhow::Result<Pair> {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, dns.first().copied().unwrap_or("kgate"));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// kgate's serving certificate: what in-cluster clients verify when they dial the
    /// `kubernetes` Service.
    pub fn issue_kgate(&self, extra_ips: &[IpAddr]) -> anyhow::Result<Pair> {
        let mut ips: Vec<IpAddr> = vec![
            "10.96.0.1".parse()?,
            "fd00:96::1".parse()?,
            "127.0.0.1".parse()?,
        ];
        ips.extend_from_slice(extra_ips);
        self.issue(
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
            &ips,
        )
    }
}

impl Pair {
    /// Writes `<prefix>.crt` and `<prefix>.key` into `dir`.
    pub fn write(&self, dir: &Path, prefix: &str) -> anyhow::Result<()> {
        fs::create_dir_all(dir)?;
        fs::write(dir.join(format!("{prefix}.crt")), &self.cert_pem)?;
        fs::write(dir.join(format!("{prefix}.key")), &self.key_pem)?;
        Ok(())
    }
}
