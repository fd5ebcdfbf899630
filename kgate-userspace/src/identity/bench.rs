//! The cost of the identity check, measured in-process for `cargo xtask bench`
//! (`kgate bench-identity`, hidden): a request whose token is cached (hit) and one
//! whose ES256 token must be verified against the JWKS (miss), for a service-account
//! token and for a gateway's OIDC ID token (its claims mapped too).
//!
//! Only with the `bench` feature: the agent people run ships no benchmark code.

use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::json;

use super::{Identifier, Identity, jwt::Keys, oidc::Authenticators};
use crate::{config, connection::Connection};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Mean time per identity check, (cache hit, cache miss), for service-account tokens
/// and for OIDC ID tokens.
pub(crate) struct Costs {
    pub service_account: (Duration, Duration),
    pub oidc: (Duration, Duration),
}

/// Measures both kinds of token.
pub(crate) async fn measure(misses: usize, hits: usize) -> anyhow::Result<Costs> {
    Ok(Costs {
        service_account: measure_service_account(misses, hits).await?,
        oidc: measure_oidc(misses, hits).await?,
    })
}

async fn measure_service_account(
    misses: usize,
    hits: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let key = SigningKey::es256("bench")?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    // Distinct tokens (one service account each), so every miss verifies a signature.
    let tokens = (0..misses)
        .map(|i| {
            let claims = json!({
                "iss": ISSUER, "aud": [ISSUER], "exp": exp, "iat": exp - 3600, "nbf": exp - 3600,
                "sub": format!("system:serviceaccount:bench:bot-{i}"),
                "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": format!("bot-{i}"), "uid": "u"}},
            });
            key.bearer(&claims)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = config::Identity {
        unbound_subjects: vec!["system:serviceaccount:bench:*".into()],
        ..Default::default()
    };
    let identifier =
        Identifier::new(&cfg, None, None).with_keys(Keys::new(ISSUER.into(), &key.jwks));
    time(&identifier, &tokens, hits, |_| Ok(())).await
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert(AUTHORIZATION, v);
    }
    h
}

const OIDC_ISSUER: &str = "https://idp.example.com";

/// A gateway's check: an ES256 ID token of an OIDC issuer, its claims mapped (email
/// username, prefixed groups, uid, one required claim).
async fn measure_oidc(misses: usize, hits: usize) -> anyhow::Result<(Duration, Duration)> {
    let key = SigningKey::es256("idp")?;
    let authenticator: config::JwtAuthenticator = serde_yaml::from_str(&format!(
        "issuer: {{url: '{OIDC_ISSUER}', audiences: [kgate]}}\n\
         claimMappings:\n  username: {{claim: email, prefix: 'oidc:'}}\n  \
         groups: {{claim: groups, prefix: 'oidc:'}}\n  uid: {{claim: sub}}\n\
         claimValidationRules:\n- {{claim: tenant, requiredValue: acme}}\n"
    ))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let tokens = (0..misses)
        .map(|i| {
            let claims = json!({
                "iss": OIDC_ISSUER, "aud": "kgate", "exp": now + 3600, "iat": now, "nbf": now,
                "sub": format!("u-{i}"), "email": format!("user-{i}@example.com"),
                "email_verified": true, "groups": ["ci-deployers", "devs"], "tenant": "acme",
            });
            key.bearer(&claims)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = config::Identity {
        pod_binding: Some(false),
        ..Default::default()
    };
    let identifier = Identifier::new(&cfg, None, None)
        .with_keys(Keys::new(ISSUER.into(), &JwkSet { keys: Vec::new() }))
        .with_oidc(Authenticators::with_keys(&[authenticator], &[key.jwks]));
    time(&identifier, &tokens, hits, |identity| {
        anyhow::ensure!(identity.issuer.is_some(), "not verified as an OIDC token");
        Ok(())
    })
    .await
}

/// An ES256 key (P-256) named `kid`: its JWKS, and what signs tokens with it.
struct SigningKey {
    jwks: JwkSet,
    encoding: EncodingKey,
    header: Header,
}

impl SigningKey {
    fn es256(kid: &str) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("key parse failed"))?;
        let point = pair.public_key().as_ref();
        let jwks = serde_json::from_value(json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]}))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        Ok(Self {
            jwks,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            header,
        })
    }

    /// The `Authorization` header of a token with `claims`, signed with this key.
    fn bearer(&self, claims: &serde_json::Value) -> jsonwebtoken::errors::Result<HeaderMap> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding).map(|t| bearer(&t))
    }
}

/// Mean time per check, (hit, miss): each of `tokens` once (every one a miss, checked
/// by `verified`), then the first `hits` times (cached).
async fn time(
    identifier: &Identifier,
    tokens: &[HeaderMap],
    hits: usize,
    verified: impl Fn(&Identity) -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, Duration)> {
    let conn = Connection {
        peer: ([127, 0, 0, 1], 1).into(),
        origin: None,
        cgroup: None,
        exe: None,
    };
    let started = Instant::now();
    for headers in tokens {
        verified(&identifier.identify(&conn, headers).await?)?;
    }
    let miss = started.elapsed() / u32::try_from(tokens.len().max(1))?;
    let started = Instant::now();
    for _ in 0..hits {
        identifier.identify(&conn, &tokens[0]).await?;
    }
    let hit = started.elapsed() / u32::try_from(hits.max(1))?;
    Ok((hit, miss))
}
