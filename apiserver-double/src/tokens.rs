//! Service-account tokens as the API server issues them: ES256 JWTs shaped like
//! projected tokens (iss, aud, exp, iat, nbf, sub and the `kubernetes.io` claims), the
//! OIDC discovery document and JWKS that verify them, TokenRequest and TokenReview.
//!
//! Keys rotate as on a real server whose `--service-account-key-file` lists several
//! keys: the newest signs, every listed key verifies and is published in the JWKS,
//! until the old ones are retired.
//!
//! Not here: legacy Secret-based tokens, RS256 keys. Whether the objects a token is
//! bound to still exist, and the cache of tokens that authenticated, are
//! `authn`'s.

use std::{
    sync::RwLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    },
};
use serde_json::{Value, json};

pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The `jwks_uri` OIDC discovery advertises, or `None` when the issuer is not one that
/// kube-apiserver serves discovery for. As `NewOpenIDMetadataProvider`
/// (kubernetes pkg/serviceaccount/openidmetadata.go): the issuer must be an `https`
/// URL with no query and no fragment, else the server logs the error and installs no
/// discovery endpoints; `jwks_uri` is `--service-account-jwks-uri` when set, else
/// `https://` + the external address + `/openid/v1/jwks`.
pub(crate) fn discovery_jwks_uri(
    issuer: &str,
    jwks_uri: Option<&str>,
    external_address: &str,
) -> Option<String> {
    let uri: http::Uri = issuer.parse().ok()?;
    if uri.scheme_str() != Some("https") || uri.query().is_some() || issuer.contains('#') {
        return None;
    }
    Some(jwks_uri.map_or_else(
        || format!("https://{external_address}/openid/v1/jwks"),
        str::to_owned,
    ))
}

/// The signing keys and issuer of a double.
pub(crate) struct Signer {
    /// Oldest first; the last one signs.
    keys: RwLock<Vec<Key>>,
    pub issuer: String,
    rng: SystemRandom,
}

struct Key {
    pair: EcdsaKeyPair,
    kid: String,
}

/// Who a token is for.
#[derive(Clone, Debug)]
pub struct Subject {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// (name, uid, node name) of the pod the token is bound to.
    pub pod: Option<(String, String, Option<String>)>,
}

impl Signer {
    pub(crate) fn new(issuer: &str) -> Self {
        let rng = SystemRandom::new();
        Self {
            keys: RwLock::new(vec![Key::generate(&rng)]),
            issuer: issuer.to_owned(),
            rng,
        }
    }

    /// A new signing key; the old ones still verify until `retire_old_keys`.
    pub(crate) fn rotate(&self) {
        let key = Key::generate(&self.rng);
        self.keys.write().unwrap().push(key);
    }

    /// Forgets every key but the signing one.
    pub(crate) fn retire_old_keys(&self) {
        let mut keys = self.keys.write().unwrap();
        let newest = keys.len() - 1;
        keys.drain(..newest);
    }

    /// Signs arbitrary claims (tests use this for broken tokens too).
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let keys = self.keys.read().unwrap();
        let key = keys.last().expect("a signer always has a key");
        let header = json!({"alg": "ES256", "kid": key.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = key.pair.sign(&self.rng, input.as_bytes()).expect("signing");
        format!("{input}.{}", B64.encode(signature.as_ref()))
    }

    /// A projected-token-shaped JWT.
    pub(crate) fn mint(
        &self,
        subject: &Subject,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> (String, u64) {
        let now = now();
        let exp = now + expiration_seconds;
        let mut k8s = json!({
            "namespace": subject.namespace,
            "serviceaccount": {"name": subject.service_account, "uid": subject.service_account_uid},
        });
        if let Some((name, uid, node)) = &subject.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
            if let Some(node) = node {
                k8s["node"] = json!({"name": node, "uid": format!("node-uid-{node}")});
            }
        }
        let claims = json!({
            "iss": self.issuer, "aud": audiences, "exp": exp, "iat": now, "nbf": now,
            "sub": format!("system:serviceaccount:{}:{}", subject.namespace, subject.service_account),
            "jti": format!("{:x}", now ^ 0x5eed), "kubernetes.io": k8s,
        });
        (self.sign(&claims), exp)
    }

    /// The claims of a token this signer issued and that is valid now, or why not.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, &'static str> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT");
        };
        let signature = B64.decode(sig).map_err(|_| "bad signature encoding")?;
        let signed = format!("{header}.{claims}");
        // Like the real authenticator, try every key: a kid is a hint, not a promise.
        let verified = self.keys.read().unwrap().iter().any(|key| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.pair.public_key().as_ref())
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        });
        if !verified {
            return Err("invalid signature");
        }
        let claims: Value = serde_json::from_slice(&B64.decode(claims).map_err(|_| "bad claims")?)
            .map_err(|_| "bad claims")?;
        let now = now();
        if claims["iss"] != self.issuer {
            return Err("wrong issuer");
        }
        if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
            return Err("token has expired");
        }
        if claims["nbf"].as_u64().is_some_and(|nbf| nbf > now + 60) {
            return Err("token not yet valid");
        }
        Ok(claims)
    }

    /// The discovery document advertising `jwks_uri`.
    pub(crate) fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    pub(crate) fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .unwrap()
            .iter()
            .map(|key| {
                // An uncompressed P-256 point: 0x04 || x (32) || y (32).
                let point = key.pair.public_key().as_ref();
                json!({
                    "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": key.kid,
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                })
            })
            .collect();
        json!({"keys": keys})
    }
}

impl Key {
    fn generate(rng: &SystemRandom) -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .expect("key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng)
            .expect("fresh key");
        // The real server's kid is a hash of the public key too (of its DER form).
        let kid = B64.encode(
            &ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref()).as_ref()[..16],
        );
        Self { pair, kid }
    }
}

/// The TokenReview user of verified claims, as the API server reports it.
pub(crate) fn review_user(claims: &Value) -> Value {
    let k8s = &claims["kubernetes.io"];
    let ns = k8s["namespace"].as_str().unwrap_or_default();
    let mut extra = serde_json::Map::new();
    if let Some(pod) = k8s["pod"].as_object() {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([pod["name"]]),
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            json!([pod["uid"]]),
        );
    }
    if let Some(node) = k8s["node"].as_object() {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            json!([node["name"]]),
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            json!([node["uid"]]),
        );
    }
    if let Some(jti) = claims["jti"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            json!([format!("JTI={jti}")]),
        );
    }
    json!({
        "username": claims["sub"],
        "uid": k8s["serviceaccount"]["uid"],
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
        "extra": extra,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn discovery_is_served_for_https_issuers_only() {
        let addr = "10.0.0.1:6443";
        let cases = [
            (DEFAULT, None, Some("https://10.0.0.1:6443/openid/v1/jwks")),
            (
                DEFAULT,
                Some("https://oidc.example/keys"),
                Some("https://oidc.example/keys"),
            ),
            (
                "https://issuer.test/path",
                None,
                Some("https://10.0.0.1:6443/openid/v1/jwks"),
            ),
            // Legacy issuers (`--service-account-issuer=kubernetes/serviceaccount`).
            ("kubernetes/serviceaccount", None, None),
            ("http://issuer.test", None, None),
            ("https://issuer.test?x=1", None, None),
            ("https://issuer.test#frag", None, None),
        ];
        for (issuer, flag, want) in cases {
            assert_eq!(
                super::discovery_jwks_uri(issuer, flag, addr).as_deref(),
                want,
                "{issuer} {flag:?}"
            );
        }
    }

    const DEFAULT: &str = super::DEFAULT_ISSUER;
}
