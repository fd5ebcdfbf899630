//! A local OIDC issuer for the gateway tests: HTTPS on loopback with a certificate of
//! its own CA, a discovery document at `{url}/.well-known/openid-configuration`, a
//! JWKS with RSA and P-256 keys, tokens signed RS256 or ES256, key rotation (a new
//! key per algorithm, published beside the old ones), retirement, unpublished keys,
//! and an outage (every connection dropped) that a test switches on and off.
//!
//! Keys are generated at start (RSA with the `rsa` crate, as ring cannot generate
//! RSA keys; P-256 with ring), never stored.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::{
    rand::SystemRandom,
    signature::{self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{apiserver::tls_acceptor, pki::Ca};

/// The signing algorithm of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

/// A running issuer; stops when dropped.
pub struct Issuer {
    /// The issuer URL, `https://127.0.0.1:PORT/idp` (what tokens carry as `iss`).
    pub url: String,
    /// The CA that signed its serving certificate.
    pub ca_pem: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    url: String,
    /// Published keys, oldest first; the newest of an algorithm signs.
    keys: Mutex<Vec<Key>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    serial: AtomicUsize,
    rng: SystemRandom,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Key {
    kid: String,
    pair: Pair,
    jwk: Value,
}

impl Issuer {
    /// Starts an issuer with one RSA and one P-256 key.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let url = format!("https://{addr}/idp");
        let ca = Ca::new("test OIDC issuer CA")?;
        let pair = ca.issue(&["localhost"], &[addr.ip()])?;
        let tls = tls_acceptor(&pair.cert_pem, &pair.key_pem)?;
        let state = Arc::new(State {
            url: url.clone(),
            keys: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            serial: AtomicUsize::new(0),
            rng: SystemRandom::new(),
        });
        for alg in [Alg::Rs256, Alg::Es256] {
            let key = state.generate(alg)?;
            state.keys.lock().unwrap().push(key);
        }
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // An outage: the issuer cannot be reached at all.
                if serving.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let (tls, state) = (tls.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.serve(req.uri().path())) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            ca_pem: ca.cert_pem(),
            state,
            task,
        })
    }

    /// Signs `claims` with the newest published key of `alg`.
    pub fn sign(&self, alg: Alg, claims: &Value) -> String {
        let keys = self.state.keys.lock().unwrap();
        let key = keys
            .iter()
            .rev()
            .find(|k| k.alg() == alg)
            .expect("a key of every algorithm");
        self.state.sign(key, claims)
    }

    /// Signs with a key of `alg` that the JWKS does not publish (a kid kgate cannot
    /// fetch).
    pub fn sign_unpublished(&self, alg: Alg, claims: &Value) -> String {
        let key = self.state.generate(alg).expect("key generation");
        self.state.sign(&key, claims)
    }

    /// A new key of `alg`, published beside the old ones, signs from now on.
    pub fn rotate(&self, alg: Alg) {
        let key = self.state.generate(alg).expect("key generation");
        self.state.keys.lock().unwrap().push(key);
    }

    /// While down, new connections are dropped and requests on open ones get a 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims of a valid ID token for audience `kgate`, valid for ten minutes, with
    /// `patch` merged in (a `null` removes a claim).
    pub fn claims(&self, patch: &Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": self.url, "aud": "kgate", "exp": now + 600, "iat": now, "nbf": now,
            "sub": "user-1", "email": "ada@example.com", "email_verified": true,
        });
        for (k, v) in patch.as_object().into_iter().flatten() {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    fn generate(&self, alg: Alg) -> anyhow::Result<Key> {
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        Ok(match alg {
            Alg::Rs256 => {
                let kid = format!("rsa-{n}");
                let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
                let jwk = json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": B64.encode(private.n().to_bytes_be()),
                    "e": B64.encode(private.e().to_bytes_be()),
                });
                let der = private.to_pkcs1_der()?;
                let pair = RsaKeyPair::from_der(der.as_bytes())
                    .map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
                Key {
                    kid,
                    pair: Pair::Rsa(pair),
                    jwk,
                }
            }
            Alg::Es256 => {
                let kid = format!("ec-{n}");
                let pkcs8 =
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.rng)
                        .map_err(|_| anyhow::anyhow!("EC key generation"))?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &self.rng,
                )
                .map_err(|e| anyhow::anyhow!("EC key: {e}"))?;
                let point = pair.public_key().as_ref();
                let jwk = json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                });
                Key {
                    kid,
                    pair: Pair::Ec(pair),
                    jwk,
                }
            }
        })
    }

    fn sign(&self, key: &Key, claims: &Value) -> String {
        let alg = match key.alg() {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        };
        let header = json!({"alg": alg, "kid": key.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = match &key.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signing");
                sig
            }
            Pair::Ec(pair) => pair
                .sign(&self.rng, input.as_bytes())
                .expect("EC signing")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", B64.encode(signature))
    }

    fn serve(&self, path: &str) -> Response<Full<Bytes>> {
        // A connection kept alive from before the outage gets what a load balancer in
        // front of a dead issuer answers.
        if self.down.load(Ordering::SeqCst) {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Full::new(Bytes::new()))
                .expect("response");
        }
        let json = |v: Value| {
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(v.to_string())))
                .expect("response")
        };
        match path {
            "/idp/.well-known/openid-configuration" => json(json!({
                "issuer": self.url,
                "jwks_uri": format!("{}/keys", self.url),
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            })),
            "/idp/keys" => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                let keys = self.keys.lock().unwrap();
                json(json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}))
            }
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::new()))
                .expect("response"),
        }
    }
}

impl Key {
    fn alg(&self) -> Alg {
        match self.pair {
            Pair::Rsa(_) => Alg::Rs256,
            Pair::Ec(_) => Alg::Es256,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
