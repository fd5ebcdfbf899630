use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{EncodingKey, Header, jwk::JwkSet};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};

use super::*;

const ISSUER: &str = "https://idp.example";

struct Signer {
    pkcs8: Vec<u8>,
    kid: &'static str,
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &SystemRandom::new(),
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn authenticator(extra: &str) -> JwtAuthenticator {
    serde_yaml::from_str(&format!(
        "issuer: {{url: '{ISSUER}', audiences: [kgate, other], audienceMatchPolicy: MatchAny}}\n\
         claimMappings:\n  username: {{claim: email, prefix: ''}}\n  groups: {{claim: groups, prefix: 'oidc:'}}\n  uid: {{claim: sub}}\n{extra}"
    ))
    .unwrap()
}

fn claims(patch: &Value) -> Value {
    let now = unix_now();
    let mut c = json!({
        "iss": ISSUER, "aud": "kgate", "sub": "u-1", "exp": now + 600, "iat": now,
        "email": "ada@example.com", "email_verified": true, "groups": ["ci-deployers", "devs"],
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn set(signers: &[&Signer]) -> JwkSet {
    serde_json::from_value(json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}))
        .unwrap()
}

#[tokio::test]
async fn a_valid_token_maps_to_the_prefixed_user() {
    let signer = Signer::new("k1");
    let auth = Authenticators::with_keys(&[authenticator("")], &[set(&[&signer])]);
    let token = signer.sign(&claims(&json!({})));
    let verified = auth.authenticate(&token, ISSUER).await.unwrap().unwrap();
    assert_eq!(verified.user.username, "ada@example.com");
    assert_eq!(verified.user.uid, "u-1");
    assert_eq!(
        verified.user.groups,
        ["oidc:ci-deployers", "oidc:devs", "system:authenticated"]
    );
    assert_eq!(&*verified.issuer, ISSUER);
    // Another issuer's token is not for these authenticators at all.
    assert!(auth.authenticate(&token, "https://other").await.is_none());
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_reason() {
    let signer = Signer::new("k1");
    let auth = Authenticators::with_keys(
        &[authenticator(
            "claimValidationRules:\n- {claim: hd, requiredValue: example.com}\n",
        )],
        &[set(&[&signer])],
    );
    let now = unix_now();
    let ok = json!({"hd": "example.com"});
    let merged = |patch: Value| {
        let mut p = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let cases = [
        (merged(json!({"aud": "someone-else"})), "audience"),
        (merged(json!({"exp": now - 1})), "expired"),
        (merged(json!({"nbf": now + 400})), "not valid yet"),
        (
            merged(json!({"email": null})),
            "username claim \"email\" is missing",
        ),
        (merged(json!({"email_verified": false})), "not verified"),
        (
            merged(json!({"hd": "evil.example"})),
            "required claim \"hd\"",
        ),
        (
            merged(json!({"hd": null})),
            "required claim \"hd\" is missing",
        ),
        (merged(json!({"groups": [1]})), "not a list of strings"),
        (merged(json!({"email": "system:admin"})), "reserved"),
        (merged(json!({"sub": null})), "uid claim \"sub\" is missing"),
    ];
    for (patch, needle) in cases {
        let token = signer.sign(&claims(&patch));
        let got = auth.authenticate(&token, ISSUER).await.unwrap();
        match got {
            Err(OidcRefusal::Invalid(why)) => {
                assert!(why.contains(needle), "{patch}: {why:?} lacks {needle:?}");
            }
            Err(other) => panic!("{patch}: {other:?}"),
            Ok(v) => panic!("{patch}: accepted as {:?}", v.user),
        }
    }
    // nbf within go-oidc's five minutes of leeway, and a single-string groups claim.
    let token = signer.sign(&claims(&merged(json!({"nbf": now + 200, "groups": "ops"}))));
    let user = auth
        .authenticate(&token, ISSUER)
        .await
        .unwrap()
        .unwrap()
        .user;
    assert_eq!(user.groups, ["oidc:ops", "system:authenticated"]);
}

#[tokio::test]
async fn a_forged_signature_or_a_foreign_key_is_invalid_and_an_unfetchable_key_unavailable() {
    let signer = Signer::new("k1");
    let auth = Authenticators::with_keys(&[authenticator("")], &[set(&[&signer])]);
    // Same kid, another key: the signature does not verify.
    let forger = Signer::new("k1");
    let got = auth
        .authenticate(&forger.sign(&claims(&json!({}))), ISSUER)
        .await
        .unwrap();
    assert!(
        matches!(&got, Err(OidcRefusal::Invalid(w)) if w.contains("signature")),
        "{:?}",
        got.err()
    );
    // A kid the cache lacks and that cannot be fetched: kgate cannot decide (503).
    let rotated = Signer::new("k2");
    let got = auth
        .authenticate(&rotated.sign(&claims(&json!({}))), ISSUER)
        .await
        .unwrap();
    assert!(
        matches!(&got, Err(OidcRefusal::Unavailable(w)) if w.contains("\"k2\"")),
        "{:?}",
        got.err()
    );
    // HMAC with the issuer's public key is never accepted.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&json!({})),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    let got = auth.authenticate(&hs, ISSUER).await.unwrap();
    assert!(
        matches!(&got, Err(OidcRefusal::Invalid(w)) if w.contains("HS256")),
        "{:?}",
        got.err()
    );
}
