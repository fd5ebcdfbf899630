//! Local token verification on hostile tokens: never a panic, and never an accepted
//! token that the issuer's key did not sign. The oracle is exact: one token is signed
//! here, and a token verifies only if its signed part (header and claims) is that
//! token's. Inputs are arbitrary strings, byte edits of the signed token, other
//! headers and claims under its signature, and algorithm-confusion forgeries (`none`,
//! HMAC keyed with the public key, other algorithms and key ids).

#![no_main]

use std::sync::LazyLock;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use kgate::internal::identity::jwt::{Keys, peek_audiences, peek_issuer};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

struct Fixture {
    keys: Keys,
    token: String,
    public: Vec<u8>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let public = key.public_key_raw().to_vec();
    // An uncompressed point: 0x04, x, y.
    let (x, y) = public[1..].split_at(32);
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    }]}))
    .expect("a JWKS");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({
        "iss": ISSUER, "aud": [AUDIENCE], "sub": "system:serviceaccount:demo:bot",
        "exp": 4_102_444_800_u64, "iat": 1_700_000_000_u64, "nbf": 1_700_000_000_u64,
        "kubernetes.io": {
            "namespace": "demo",
            "serviceaccount": {"name": "bot", "uid": "u-1"},
            "pod": {"name": "bot-0", "uid": "p-1"},
        },
    });
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC key");
    let token = jsonwebtoken::encode(&header, &claims, &signing).expect("a signed token");
    let keys = Keys::new(ISSUER.into(), &jwks);
    assert!(
        keys.verify(&token, &[AUDIENCE.into()], 0).is_ok(),
        "the fixture verifies"
    );
    Fixture {
        keys,
        token,
        public,
    }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => edited(&fixture.token, rest),
        2 => resigned(&fixture.token, rest),
        _ => confused(fixture, rest),
    };
    check(fixture, &token);
});

fn check(fixture: &Fixture, token: &str) {
    let _ = peek_issuer(token);
    // The agent reads its own token's audiences this way: never a panic, never an
    // empty list.
    assert_ne!(peek_audiences(token), Some(Vec::new()));
    let Ok(claims) = fixture.keys.verify(token, &[AUDIENCE.into()], 0) else {
        return;
    };
    assert_eq!(
        signed_part(token),
        signed_part(&fixture.token),
        "a token the key never signed verified: {token:?}"
    );
    assert_eq!(peek_issuer(token).as_deref(), Some(ISSUER));
    let user = claims
        .user()
        .expect("the signed claims name a service account");
    assert_eq!(user.username, "system:serviceaccount:demo:bot");
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

/// The signed token with bytes replaced: `(position, byte)` pairs.
fn edited(token: &str, edits: &[u8]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for pair in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
        bytes[at] = pair[2];
    }
    if let Some(&extra) = edits.last().filter(|_| edits.len() % 3 == 1) {
        bytes.truncate(usize::from(extra) % (bytes.len() + 1));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Another header and claims (split at the first NUL) under the real signature.
fn resigned(token: &str, input: &[u8]) -> String {
    let signature = token.rsplit_once('.').map_or("", |(_, s)| s);
    let (header, claims) = match input.iter().position(|&b| b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&br#"{"alg":"ES256","kid":"k1"}"#[..], input),
    };
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// A forgery: the real claims under another algorithm and key id, signed with what an
/// attacker has (nothing, or the public key as an HMAC secret).
fn confused(fixture: &Fixture, input: &[u8]) -> String {
    const ALGS: [&str; 9] = [
        "none", "HS256", "HS384", "HS512", "RS256", "ES384", "PS256", "EdDSA", "ES256",
    ];
    let alg = ALGS[usize::from(input.first().copied().unwrap_or(0)) % ALGS.len()];
    let kid = match input.get(1).copied().unwrap_or(0) % 4 {
        0 => json!("k1"),
        1 => json!("k2"),
        2 => json!(null),
        _ => json!(String::from_utf8_lossy(input.get(2..).unwrap_or_default())),
    };
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if !kid.is_null() {
        header["kid"] = kid;
    }
    let claims = fixture.token.split('.').nth(1).unwrap_or_default();
    let signed = format!(
        "{}.{claims}",
        URL_SAFE_NO_PAD.encode(header.to_string().as_bytes())
    );
    let signature = match alg {
        "HS256" | "HS384" | "HS512" => {
            let algorithm = match alg {
                "HS256" => Algorithm::HS256,
                "HS384" => Algorithm::HS384,
                _ => Algorithm::HS512,
            };
            jsonwebtoken::crypto::sign(
                signed.as_bytes(),
                &EncodingKey::from_secret(&fixture.public),
                algorithm,
            )
            .unwrap_or_default()
        }
        "none" => String::new(),
        _ => URL_SAFE_NO_PAD.encode(input),
    };
    format!("{signed}.{signature}")
}
