//! OIDC ID tokens of issuers outside the cluster (gateway mode), verified locally as
//! the API server's JWT authenticator verifies them: the token's `iss` picks the
//! authenticator (exactly its `issuer.url`); the signature must verify with a key of
//! the issuer's JWKS for one of the algorithms the API server accepts with a structured
//! configuration (RS256/384/512, PS256/384/512, ES256, ES384); `aud` must hold one of
//! the audiences; `exp` must not have passed (no leeway) and `nbf`, when present, must
//! be at most five minutes ahead (go-oidc's leeway); then [`claims`] maps the user.
//!
//! Keys: the discovery document and JWKS are fetched at start and again when a token
//! names a key id the cache lacks, at most once per [`MIN_REFRESH`] per issuer, and in
//! the background when the cached set is older than [`MAX_KEY_AGE`] (so a key the
//! issuer withdrew stops verifying). An issuer outage keeps the cached keys working;
//! a token whose key cannot be fetched is [`OidcRefusal::Unavailable`] (a 503), never a
//! pass.
//!
//! Not here: ES512 (P-521), which jsonwebtoken does not implement; distributed claims
//! (`_claim_names`, which the API server resolves for the groups claim); CEL.

pub(crate) mod claims;
mod fetch;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::Algorithm;
#[cfg(any(test, feature = "bench"))]
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value};
use tracing::{info, warn};

pub(crate) use self::fetch::FetchError;
use self::fetch::Fetcher;
use super::{
    UserInfo,
    jwt::{JwtError, Keys},
};
use crate::config::JwtAuthenticator;

/// The algorithms kube-apiserver allows with `--authentication-config`
/// (`oidc.AllValidSigningAlgorithms()`), less ES512, which jsonwebtoken lacks.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// go-oidc's leeway on `nbf`, for clock skew ("what other OpenID Connect providers
/// do"); `exp` has none.
const NBF_LEEWAY_SECONDS: u64 = 300;
/// An issuer's keys are fetched again at most this often on unknown key ids.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Cached keys older than this are refreshed in the background.
const MAX_KEY_AGE: Duration = Duration::from_secs(300);

/// Why an OIDC token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OidcRefusal {
    /// The token is not valid: a 401 naming the reason.
    Invalid(String),
    /// kgate cannot check it now (no keys, or the key it names cannot be fetched): a
    /// 503.
    Unavailable(String),
}

/// A token an authenticator verified.
pub(crate) struct Verified {
    pub user: UserInfo,
    pub issuer: Arc<str>,
    pub exp: u64,
}

/// Every configured issuer.
pub(crate) struct Authenticators {
    issuers: Vec<Arc<Issuer>>,
}

/// One issuer: its config, its client, its cached keys.
struct Issuer {
    config: JwtAuthenticator,
    url: Arc<str>,
    fetcher: Option<Fetcher>,
    keys: RwLock<Option<Cached>>,
    refresh: tokio::sync::Mutex<Attempt>,
}

#[derive(Clone)]
struct Cached {
    keys: Arc<Keys>,
    fetched: Instant,
}

/// What asking for a fetch came to.
enum Refresh {
    /// The keys were fetched now.
    Fetched,
    /// The fetch failed now.
    Failed(String),
    /// A fetch was tried moments ago (rate limit): its error, if it failed.
    Recent(Option<String>),
}

/// The last fetch: when, and whether it failed.
#[derive(Default)]
struct Attempt {
    at: Option<Instant>,
    error: Option<String>,
}

// === impl Authenticators ===

impl Authenticators {
    /// One verifier per authenticator; an issuer whose TLS settings cannot be built is
    /// an error here, at start-up.
    pub(crate) fn new(config: &[JwtAuthenticator]) -> Result<Self, FetchError> {
        let issuers = config
            .iter()
            .map(|a| {
                Ok(Arc::new(Issuer {
                    url: a.issuer.url.as_str().into(),
                    fetcher: Some(Fetcher::new(a)?),
                    config: a.clone(),
                    keys: RwLock::new(None),
                    refresh: tokio::sync::Mutex::new(Attempt::default()),
                }))
            })
            .collect::<Result<_, FetchError>>()?;
        Ok(Self { issuers })
    }

    /// Authenticators whose keys are given, never fetched (tests, the benchmark).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn with_keys(config: &[JwtAuthenticator], jwks: &[JwkSet]) -> Self {
        Self {
            issuers: config
                .iter()
                .zip(jwks)
                .map(|(a, set)| {
                    Arc::new(Issuer {
                        url: a.issuer.url.as_str().into(),
                        fetcher: None,
                        config: a.clone(),
                        keys: RwLock::new(Some(Cached {
                            keys: Arc::new(Keys::new(a.issuer.url.clone(), set)),
                            fetched: Instant::now(),
                        })),
                        refresh: tokio::sync::Mutex::new(Attempt::default()),
                    })
                })
                .collect(),
        }
    }

    /// No issuers: gateway mode is off.
    pub(crate) fn with_none() -> Self {
        Self {
            issuers: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The configured issuer URLs.
    pub(crate) fn issuer_urls(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| &*i.url)
    }

    /// Fetches every issuer's keys (at start-up); failures are logged and retried when
    /// a token needs them.
    pub(crate) async fn load(&self) {
        for issuer in &self.issuers {
            if let Refresh::Failed(error) = issuer.refresh(true).await {
                warn!(issuer = &*issuer.url, %error, "cannot load the OIDC issuer's keys yet; its tokens get 503 until they load");
            }
        }
    }

    /// Whether every issuer's keys have loaded once (readiness).
    pub(crate) fn loaded(&self) -> bool {
        self.issuers
            .iter()
            .all(|i| i.keys.read().is_ok_and(|k| k.is_some()))
    }

    /// The verified user of `token`, when its `iss` is one of these issuers; `None`
    /// when it is not (another issuer's token, or not a JWT).
    pub(crate) async fn authenticate(
        &self,
        token: &str,
        iss: &str,
    ) -> Option<Result<Verified, OidcRefusal>> {
        let issuer = self.issuers.iter().find(|i| &*i.url == iss)?;
        issuer.refresh_if_old();
        Some(issuer.authenticate(token).await)
    }
}

// === impl Issuer ===

impl Issuer {
    async fn authenticate(&self, token: &str) -> Result<Verified, OidcRefusal> {
        let invalid = |e: String| OidcRefusal::Invalid(e);
        let mut result = match self.cached() {
            Some(keys) => self.verify(&keys, token),
            None => Err(JwtError::UnknownKey(String::new())),
        };
        if let Err(JwtError::UnknownKey(kid)) = &result {
            let key = if kid.is_empty() {
                format!("the keys of OIDC issuer {}", self.url)
            } else {
                format!("key {kid:?} of OIDC issuer {}", self.url)
            };
            // A key the cache lacks: fetch again (rate limited). What cannot be
            // checked now is a 503, never a pass; a key the issuer does not publish
            // after a fresh fetch is a 401 (below).
            match self.refresh(false).await {
                Refresh::Fetched => {}
                Refresh::Failed(why) => {
                    return Err(OidcRefusal::Unavailable(format!(
                        "{key} cannot be fetched: {why}"
                    )));
                }
                Refresh::Recent(Some(why)) => {
                    return Err(OidcRefusal::Unavailable(format!(
                        "{key} cannot be fetched: {why} (tried again at most every {} s)",
                        MIN_REFRESH.as_secs()
                    )));
                }
                Refresh::Recent(None) => {
                    return Err(OidcRefusal::Unavailable(format!(
                        "{key} is not among the keys fetched moments ago; they are fetched \
                         again at most every {} s",
                        MIN_REFRESH.as_secs()
                    )));
                }
            }
            let keys = self
                .cached()
                .ok_or_else(|| OidcRefusal::Unavailable("no keys".into()))?;
            result = self.verify(&keys, token);
        }
        let claims = result.map_err(|e| invalid(e.to_string()))?;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let user = claims::user_of(&self.config, &claims).map_err(|e| invalid(e.0))?;
        Ok(Verified {
            user,
            issuer: self.url.clone(),
            exp,
        })
    }

    fn cached(&self) -> Option<Arc<Keys>> {
        Some(self.keys.read().ok()?.as_ref()?.keys.clone())
    }

    /// Keys older than [`MAX_KEY_AGE`] are fetched again in the background; the old
    /// ones serve meanwhile, and keep serving if the issuer cannot be reached.
    fn refresh_if_old(self: &Arc<Self>) {
        let old = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|c| c.fetched.elapsed() > MAX_KEY_AGE))
            .unwrap_or(false);
        // One fetch at a time, at most one per MIN_REFRESH: a busy gateway does not
        // queue a task per request while the issuer is down.
        let due = self
            .refresh
            .try_lock()
            .is_ok_and(|last| last.at.is_none_or(|at| at.elapsed() >= MIN_REFRESH));
        if old && due && self.fetcher.is_some() {
            let issuer = self.clone();
            tokio::spawn(async move {
                if let Refresh::Failed(error) = issuer.refresh(false).await {
                    warn!(issuer = &*issuer.url, %error, "cannot refresh the OIDC issuer's keys; the cached ones stay in use");
                }
            });
        }
    }

    fn verify(&self, keys: &Keys, token: &str) -> Result<Map<String, Value>, JwtError> {
        let claims: Map<String, Value> = keys.decode(token, ALGORITHMS, |v| {
            v.set_issuer(&[&*self.url]);
            v.set_audience(&self.config.issuer.audiences);
            v.leeway = 0;
            // nbf has its own leeway, checked below.
            v.validate_nbf = false;
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
        })?;
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_u64()
                .ok_or_else(|| JwtError::Invalid("token nbf is not a number".into()))?;
            if unix_now() + NBF_LEEWAY_SECONDS < nbf {
                return Err(JwtError::Invalid("token is not valid yet (nbf)".into()));
            }
        }
        Ok(claims)
    }

    /// Fetches the keys, unless a fetch was tried moments ago (`force` at start-up).
    async fn refresh(&self, force: bool) -> Refresh {
        let mut last = self.refresh.lock().await;
        if !force
            && let Some(at) = last.at
            && at.elapsed() < MIN_REFRESH
        {
            return Refresh::Recent(last.error.clone());
        }
        let Some(fetcher) = &self.fetcher else {
            return Refresh::Failed("no fetcher".into());
        };
        last.at = Some(Instant::now());
        match fetcher.jwks().await {
            Ok(jwks) => {
                let keys = Keys::new(self.url.to_string(), &jwks);
                info!(
                    issuer = &*self.url,
                    keys = keys.count(),
                    "OIDC issuer keys loaded"
                );
                if let Ok(mut cached) = self.keys.write() {
                    *cached = Some(Cached {
                        keys: Arc::new(keys),
                        fetched: Instant::now(),
                    });
                }
                last.error = None;
                Refresh::Fetched
            }
            Err(error) => {
                let error = error.to_string();
                last.error = Some(error.clone());
                Refresh::Failed(error)
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
