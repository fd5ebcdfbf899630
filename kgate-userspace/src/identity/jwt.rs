//! Local verification of JWTs against an issuer's JWKS: projected service-account
//! tokens (`iss`, `aud`, `exp`, `nbf` as the API server's own service-account
//! authenticator checks them) and, through [`Keys::decode`], the OIDC ID tokens of
//! [`super::oidc`].
//!
//! Only asymmetric algorithms are accepted, each with a key of its family: for
//! service-account tokens those the API server signs with (RS256 for RSA keys,
//! ES256/ES384 for P-256/P-384 keys); the caller names the set. `none` and HMAC never
//! verify.

use std::collections::{BTreeMap, HashMap};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use serde::{Deserialize, de::DeserializeOwned};

use super::UserInfo;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("signing algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no key with id {0:?} in the issuer's JWKS")]
    UnknownKey(String),
    #[error("{0}")]
    Invalid(String),
}

/// The verification keys of one issuer, from its JWKS.
pub struct Keys {
    pub issuer: String,
    by_kid: HashMap<String, Key>,
    all: Vec<Key>,
}

/// The algorithms of service-account tokens.
const SERVICE_ACCOUNT_ALGORITHMS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::ES256, Algorithm::ES384];

/// One usable key of a JWKS.
#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    family: Family,
    /// The JWK's own `alg`, when it names one: then only that algorithm verifies.
    alg: Option<Algorithm>,
}

/// Which algorithms a key can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
}

/// The claims kgate reads from a projected service-account token.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Option<KubernetesClaims>,
}

#[derive(Debug, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default)]
    pub pod: Option<ObjectRef>,
    #[serde(default)]
    pub node: Option<ObjectRef>,
}

#[derive(Debug, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

// === impl Keys ===

impl Keys {
    /// The usable keys of `jwks`: keys of other types or algorithms are skipped, as
    /// the API server never signs with them.
    pub fn new(issuer: String, jwks: &JwkSet) -> Self {
        let mut keys = Self {
            issuer,
            by_kid: HashMap::new(),
            all: Vec::new(),
        };
        for jwk in &jwks.keys {
            let Some(family) = family_of(jwk) else {
                continue;
            };
            // A key for encryption, or whose stated algorithm is not a signature's,
            // never verifies a token.
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let alg = match jwk
                .common
                .key_algorithm
                .map(|a| a.to_string().parse::<Algorithm>())
            {
                None => None,
                Some(Ok(alg)) => Some(alg),
                Some(Err(_)) => continue,
            };
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Key {
                decoding,
                family,
                alg,
            };
            if let Some(kid) = &jwk.common.key_id {
                keys.by_kid.insert(kid.clone(), key.clone());
            }
            keys.all.push(key);
        }
        keys
    }

    /// How many usable keys the JWKS had.
    pub fn count(&self) -> usize {
        self.all.len()
    }

    /// Verifies a service-account `token` and returns its claims. `audiences` are the
    /// accepted ones (any one of them must be in `aud`); `skew_seconds` applies to
    /// `exp` and `nbf`.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        skew_seconds: u64,
    ) -> Result<Claims, JwtError> {
        self.decode(token, SERVICE_ACCOUNT_ALGORITHMS, |validation| {
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(audiences);
            validation.leeway = skew_seconds;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        })
    }

    /// Verifies `token`'s signature with a key of this JWKS, for one of `algorithms`,
    /// and its claims as `configure` sets up the validation (issuer, audiences,
    /// times); returns the claims.
    pub fn decode<T: DeserializeOwned>(
        &self,
        token: &str,
        algorithms: &[Algorithm],
        configure: impl FnOnce(&mut Validation),
    ) -> Result<T, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if !algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        configure(&mut validation);
        // The kid is a hint, as for the API server: without one, every key of the
        // algorithm is tried.
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let key = self
                    .by_kid
                    .get(kid)
                    .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?;
                if !key.verifies(header.alg) {
                    return Err(JwtError::Algorithm(format!(
                        "{:?} with a {:?} key",
                        header.alg, key.family
                    )));
                }
                vec![key]
            }
            None => self.all.iter().filter(|k| k.verifies(header.alg)).collect(),
        };
        let mut last = JwtError::Invalid("no key for the token's algorithm".into());
        for key in candidates {
            match jsonwebtoken::decode::<T>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => last = JwtError::Invalid(describe(&error)),
            }
        }
        Err(last)
    }
}

// === impl Key ===

impl Key {
    fn verifies(&self, alg: Algorithm) -> bool {
        let family = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            Algorithm::ES256 => Family::P256,
            Algorithm::ES384 => Family::P384,
            _ => return false,
        };
        family == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// The `iss` claim of a JWT, unverified: only to choose between local verification
/// and TokenReview.
pub fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    peek::<Iss>(token)?.iss
}

/// The `aud` claim of a JWT (a string or a list), unverified: only for the agent's
/// own token, whose audiences are the API server's. `None` without one.
pub fn peek_audiences(token: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    #[derive(Deserialize)]
    struct Claims {
        aud: Option<Aud>,
    }
    let audiences = match peek::<Claims>(token)?.aud? {
        Aud::One(a) => vec![a],
        Aud::Many(a) => a,
    };
    (!audiences.is_empty()).then_some(audiences)
}

/// A JWT's claims, unverified.
fn peek<T: serde::de::DeserializeOwned>(token: &str) -> Option<T> {
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn family_of(jwk: &Jwk) -> Option<Family> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Family::Rsa),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Family::P256),
            EllipticCurve::P384 => Some(Family::P384),
            _ => None,
        },
        _ => None,
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "token audience is not accepted".into(),
        ErrorKind::InvalidIssuer => "token issuer is not the API server's".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim:?} claim"),
        _ => error.to_string(),
    }
}

// === impl Claims ===

impl Claims {
    /// The user the API server's authenticator makes of these claims.
    pub fn user(&self) -> Result<UserInfo, JwtError> {
        let k8s = self.kubernetes.as_ref().ok_or_else(|| {
            JwtError::Invalid(
                "token has no kubernetes.io claims: not a service-account token".into(),
            )
        })?;
        let username = format!(
            "system:serviceaccount:{}:{}",
            k8s.namespace, k8s.serviceaccount.name
        );
        if self.sub != username {
            return Err(JwtError::Invalid(format!(
                "sub {:?} does not name the token's service account",
                self.sub
            )));
        }
        let mut extra = BTreeMap::new();
        if let Some(pod) = &k8s.pod {
            extra.insert(super::EXTRA_POD_NAME.to_owned(), vec![pod.name.clone()]);
            extra.insert(super::EXTRA_POD_UID.to_owned(), vec![pod.uid.clone()]);
        }
        if let Some(node) = &k8s.node {
            extra.insert(
                "authentication.kubernetes.io/node-name".to_owned(),
                vec![node.name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/node-uid".to_owned(),
                vec![node.uid.clone()],
            );
        }
        if let Some(jti) = &self.jti {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_owned(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(UserInfo {
            username,
            uid: k8s.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{}", k8s.namespace),
                "system:authenticated".to_owned(),
            ],
            extra,
        })
    }
}
