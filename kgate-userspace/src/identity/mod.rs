//! Workload identity: who is calling, verified, and bound to the pod the kernel says
//! the connection came from.
//!
//! 1. The bearer token is verified: locally when it is a projected service-account
//!    token of the API server's issuer (signature against the JWKS, `iss`, `aud`,
//!    `exp`/`nbf`), by TokenReview through the upstream otherwise (legacy Secret
//!    tokens, other issuers). Results are cached by the token's SHA-256.
//! 2. The token's pod claim must name the pod that owns the connection's cgroup, and
//!    that pod must be on this node's pod list. A token used from another pod, or from
//!    a process outside any pod, is a stolen token.
//! 3. A token without a pod claim is accepted only for the users `unboundSubjects`
//!    names.
//!
//! In gateway mode ([`oidc`]), tokens of the configured OIDC issuers are verified
//! locally against their JWKS, and a JWT of any other issuer but the service-account
//! one is refused (401) rather than sent to TokenReview; its users are always forwarded
//! as the agent impersonating them, and `podBinding: false` skips steps 2 and 3.
//!
//! Every failure is an [`Unidentified`], which the client sees as a Kubernetes `Status`
//! ([`Unidentified::status`]): 401 for missing or invalid credentials, 403 for a binding
//! violation, 503 when kgate cannot decide (no JWKS and no TokenReview, pod index not
//! synced): nothing is forwarded unchecked. A refusal after the token verified
//! carries the user, and a stolen token's both pods, for the record.

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod impersonation;
pub mod jwt;
pub(crate) mod oidc;
pub mod pods;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, Request, header::AUTHORIZATION};
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};
use wildmatch::WildMatch;

use self::{
    jwt::{JwtError, Keys},
    oidc::{Authenticators, OidcRefusal},
    pods::{Lookup, PodIndex, PodInfo},
};
use crate::{api_status::Status, cgroup, config, connection::Connection};

pub(crate) const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub(crate) const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Where the API server serves its service-account issuer's OIDC discovery document
/// and JWKS (kubernetes pkg/serviceaccount/openidmetadata.go).
pub(crate) const OPENID_CONFIG_PATH: &str = "/.well-known/openid-configuration";
pub(crate) const JWKS_PATH: &str = "/openid/v1/jwks";

/// The most tokens kept verified at once.
const CACHE_CAPACITY: usize = 16 * 1024;
/// A locally verified token is re-verified at least this often, so that a key removed
/// from the JWKS stops verifying.
const MAX_LOCAL_CACHE: Duration = Duration::from_secs(300);
/// The JWKS is fetched again at most this often (on an unknown key id).
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// How long a request from a pod waits for the pod index to know it.
const POD_WAIT: Duration = Duration::from_secs(3);
/// Bound on each of kgate's own identity calls (TokenReview, discovery, JWKS): an API
/// server that takes them and never answers must give the caller a 503, not a wait as
/// long as the API client's read timeout (which is long, for the pod watch).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated user, as the API server's `UserInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Where a connection comes from, per the kernel and the pod index.
#[derive(Clone, Debug)]
pub(crate) enum Workload {
    /// A pod on this node, and the container when the cgroup names one.
    Pod {
        pod: Arc<PodInfo>,
        container: Option<String>,
    },
    /// A redirected connection from a cgroup that is not a pod's.
    Host { cgroup: Option<String> },
    /// A direct client (`directClients: allow`): no kernel record at all.
    Unattributed,
}

/// The identity every later stage sees.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub user: Arc<UserInfo>,
    pub workload: Workload,
    /// The request goes upstream as the agent impersonating `user`.
    pub impersonate: bool,
    /// The OIDC issuer that vouched for the caller (gateway mode); `None` for
    /// service-account and TokenReview users.
    pub issuer: Option<Arc<str>>,
    /// When the caller impersonates someone (`identity.clientImpersonation: policy`):
    /// who the caller is, and what it asked for; `user` is then whom it acts as.
    pub impersonation: Option<Impersonation>,
}

/// A client's impersonation that policy allowed.
#[derive(Clone, Debug)]
pub(crate) struct Impersonation {
    /// The verified caller.
    pub by: Arc<UserInfo>,
    /// What its `Impersonate-*` headers asked for.
    pub requested: Arc<UserInfo>,
}

/// A verified bearer token: its user, and the OIDC issuer when one vouched for it.
#[derive(Clone, Debug)]
pub(crate) struct Authenticated {
    pub user: Arc<UserInfo>,
    pub issuer: Option<Arc<str>>,
}

/// The pod a service-account token is bound to: its `kubernetes.io` pod claim, as the
/// user's extra `authentication.kubernetes.io/pod-name` and `-uid` carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BoundPod {
    /// The service account's namespace, which is the pod's; `?` if the username is
    /// not a service account's.
    pub namespace: String,
    /// `?` when the claim has a UID only.
    pub name: String,
    pub uid: String,
}

/// Why the identify stage refused a request. Metrics and records read the variant;
/// [`Unidentified::status`] is what the client gets.
#[derive(Clone, Debug)]
pub(crate) enum Unidentified {
    /// No verified caller: no or an invalid token (401), or kgate cannot verify it
    /// now (503).
    Unverified(Status),
    /// The token verified, but the connection's pod cannot be established: no pod
    /// index, or not synced yet (503), or a pod not on this node (403).
    NoWorkload { user: Arc<UserInfo>, status: Status },
    /// The token is bound to a pod, and the connection is not that pod's (another
    /// pod, a host process, or a client kgate cannot attribute).
    StolenToken {
        user: Arc<UserInfo>,
        token_pod: BoundPod,
        workload: Workload,
    },
    /// The token is bound to no pod, and `identity.unboundSubjects` does not name its
    /// user.
    Unbound {
        user: Arc<UserInfo>,
        workload: Workload,
    },
}

/// Verifies callers. Shared by every connection.
pub(crate) struct Identifier {
    client: Option<kube::Client>,
    pods: Option<PodIndex>,
    issuer: Option<String>,
    audiences: Vec<String>,
    /// The API server's audiences, from the agent's own token, for when
    /// `identity.audiences` names none.
    api_audiences: Option<Vec<String>>,
    skew_seconds: u64,
    review_ttl: Duration,
    unbound: Vec<WildMatch>,
    impersonate: Vec<WildMatch>,
    pod_binding: bool,
    client_impersonation: config::ClientImpersonation,
    oidc: Authenticators,
    keys: RwLock<Option<Arc<Keys>>>,
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

#[derive(Clone)]
struct Cached {
    /// The user, or the 401 message of a token TokenReview rejected.
    verdict: Result<Authenticated, String>,
    until: Instant,
}

// === impl Identifier ===

impl Identifier {
    /// `client` is the agent's own API client (`None`: tokens cannot be checked, every
    /// request gets a 503); `pods` the node's pod index (`None` without the kernel
    /// programs, when no connection can be attributed to a pod).
    pub(crate) fn new(
        cfg: &config::Identity,
        client: Option<kube::Client>,
        pods: Option<PodIndex>,
    ) -> Self {
        let globs = |v: &[String]| v.iter().map(|g| WildMatch::new(g)).collect();
        Self {
            client,
            pods,
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            api_audiences: None,
            skew_seconds: cfg.clock_skew_seconds.unwrap_or(60),
            review_ttl: Duration::from_secs(cfg.token_review_cache_seconds.unwrap_or(10)),
            unbound: globs(&cfg.unbound_subjects),
            impersonate: globs(&cfg.impersonate),
            pod_binding: cfg.pod_binding(),
            client_impersonation: cfg.client_impersonation,
            oidc: Authenticators::with_none(),
            keys: RwLock::new(None),
            refreshed: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `keys` instead of fetching them (tests, the benchmark).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn with_keys(self, keys: Keys) -> Self {
        *self.keys.write().unwrap() = Some(Arc::new(keys));
        self
    }

    /// Accepts tokens for `audiences` (the API server's, as the agent's own token
    /// names them: [`api_audiences_of_token_file`]) when `identity.audiences` names
    /// none, rather than for the issuer.
    pub(crate) fn with_api_audiences(mut self, audiences: Vec<String>) -> Self {
        self.api_audiences = Some(audiences);
        self
    }

    /// Verifies the tokens of these OIDC issuers too (gateway mode).
    pub(crate) fn with_oidc(mut self, oidc: Authenticators) -> Self {
        self.oidc = oidc;
        self
    }

    /// Fetches the issuers' keys now (at start-up); failures are logged and retried on
    /// demand, TokenReview covering the gap for service-account tokens.
    pub(crate) async fn load_keys(&self) {
        if let Err(error) = self.refresh_keys().await {
            warn!(%error, "cannot load the service-account JWKS yet; tokens go to TokenReview until it loads");
        }
        self.oidc.load().await;
    }

    /// What a client's `Impersonate-*` headers get.
    pub(crate) fn client_impersonation(&self) -> config::ClientImpersonation {
        self.client_impersonation
    }

    /// Whether every OIDC issuer's keys have loaded (true without any).
    pub(crate) fn oidc_keys_loaded(&self) -> bool {
        self.oidc.loaded()
    }

    /// Who sent `headers` over `conn`, verified and bound, or why not.
    pub(crate) async fn identify(
        &self,
        conn: &Connection,
        headers: &HeaderMap,
    ) -> Result<Identity, Unidentified> {
        let token = bearer_token(headers).map_err(Unidentified::Unverified)?;
        let Authenticated { user, issuer } = self
            .authenticate(token)
            .await
            .map_err(Unidentified::Unverified)?;
        let workload = match self.workload(conn).await {
            Ok(workload) => workload,
            Err(status) => return Err(Unidentified::NoWorkload { user, status }),
        };
        if self.pod_binding {
            check_binding(&user, &workload, &self.unbound)?;
        }
        // The API server may not trust an OIDC issuer kgate does: its users always go
        // upstream as the agent impersonating them.
        let impersonate =
            issuer.is_some() || self.impersonate.iter().any(|g| g.matches(&user.username));
        Ok(Identity {
            user,
            workload,
            impersonate,
            issuer,
            impersonation: None,
        })
    }

    /// The user of `headers`' bearer token, without pod binding: for callers that are
    /// not workloads (the admin endpoint).
    pub(crate) async fn authenticate_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<Arc<UserInfo>, Status> {
        Ok(self.authenticate(bearer_token(headers)?).await?.user)
    }

    /// Whether the node's pod index has loaded (true when there is none).
    pub(crate) fn pods_synced(&self) -> bool {
        self.pods.as_ref().is_none_or(PodIndex::is_synced)
    }

    /// The user a bearer token stands for.
    async fn authenticate(&self, token: &str) -> Result<Authenticated, Status> {
        let key = token_hash(token);
        let now = Instant::now();
        if let Some(hit) = self.cache_get(&key, now) {
            return hit.map_err(Status::unauthorized);
        }
        let issuer = (!self.oidc.is_empty())
            .then(|| jwt::peek_issuer(token))
            .flatten();
        if let Some(iss) = &issuer
            && let Some(verified) = self.oidc.authenticate(token, iss).await
        {
            let verified = verified.map_err(|refusal| match refusal {
                OidcRefusal::Invalid(why) => Status::unauthorized(format!(
                    "kgate: invalid bearer token: {why} (OIDC issuer {iss})"
                )),
                OidcRefusal::Unavailable(why) => Status::service_unavailable(format!(
                    "kgate: cannot verify the bearer token: {why}"
                ))
                .with_retry_after(1),
            })?;
            let left = Duration::from_secs(verified.exp.saturating_sub(unix_now()));
            let verdict = Authenticated {
                user: Arc::new(verified.user),
                issuer: Some(verified.issuer),
            };
            self.cache_put(key, Ok(verdict.clone()), now + left.min(MAX_LOCAL_CACHE));
            return Ok(verdict);
        }
        let (verdict, ttl) = match self.verify_locally(token).await {
            Some(Ok((user, exp))) => {
                let left = Duration::from_secs(exp.saturating_sub(unix_now()));
                let user = Arc::new(user);
                let verdict = Authenticated { user, issuer: None };
                (Ok(verdict), left.min(MAX_LOCAL_CACHE))
            }
            // A token of our issuer that does not verify is refused here: it is not
            // worth an upstream round trip.
            Some(Err(error)) => {
                return Err(Status::unauthorized(format!(
                    "kgate: invalid bearer token: {error}"
                )));
            }
            None => {
                if let Some(iss) = &issuer
                    && let Some(why) = self.foreign_issuer(iss)
                {
                    return Err(Status::unauthorized(format!(
                        "kgate: invalid bearer token: {why}"
                    )));
                }
                let verdict = self
                    .review(token)
                    .await?
                    .map(|user| Authenticated { user, issuer: None });
                (verdict, self.review_ttl)
            }
        };
        self.cache_put(key, verdict.clone(), now + ttl);
        verdict.map_err(Status::unauthorized)
    }

    /// In gateway mode, why a JWT of issuer `iss` is refused without asking the API
    /// server: it is neither an OIDC issuer's nor the service-account issuer's. `None`
    /// while the service-account issuer is not known yet (TokenReview decides).
    fn foreign_issuer(&self, iss: &str) -> Option<String> {
        let sa_issuer = self.issuer.clone().or_else(|| {
            let keys = self.keys.read().ok()?;
            Some(keys.as_ref()?.issuer.clone())
        })?;
        (iss != sa_issuer).then(|| {
            let oidc: Vec<&str> = self.oidc.issuer_urls().collect();
            format!(
                "the token's issuer {iss:?} is not one kgate accepts (OIDC issuers {oidc:?}, \
                 service-account issuer {sa_issuer:?})"
            )
        })
    }

    /// `None` when the token is not for local verification (not a JWT, another
    /// issuer, no keys loaded); otherwise the verified user and `exp`.
    async fn verify_locally(&self, token: &str) -> Option<Result<(UserInfo, u64), JwtError>> {
        let issuer = jwt::peek_issuer(token)?;
        let mut keys = self.keys.read().ok()?.clone();
        if keys.is_none() {
            let _ = self.refresh_keys().await;
            keys = self.keys.read().ok()?.clone();
        }
        let keys = keys?;
        if issuer != keys.issuer {
            return None;
        }
        let audiences = self.audiences_for(&keys);
        let mut result = keys.verify(token, &audiences, self.skew_seconds);
        if matches!(result, Err(JwtError::UnknownKey(_))) && self.refresh_keys().await.is_ok() {
            let keys = self.keys.read().ok()?.clone()?;
            result = keys.verify(token, &audiences, self.skew_seconds);
        }
        // A key kgate has not seen even after a refresh (or while refreshes are rate
        // limited) is for the API server to judge: TokenReview.
        if matches!(result, Err(JwtError::UnknownKey(_))) {
            return None;
        }
        Some(result.and_then(|claims| Ok((claims.user()?, claims.exp))))
    }

    /// The audiences a service-account token must carry one of: `identity.audiences`,
    /// else the API server's (from the agent's own token), else the issuer (what
    /// `--api-audiences` defaults to).
    fn audiences_for(&self, keys: &Keys) -> Vec<String> {
        if !self.audiences.is_empty() {
            self.audiences.clone()
        } else if let Some(api) = &self.api_audiences {
            api.clone()
        } else {
            vec![keys.issuer.clone()]
        }
    }

    /// Fetches OIDC discovery and the JWKS through the upstream, at most once per
    /// [`JWKS_MIN_REFRESH`].
    async fn refresh_keys(&self) -> Result<(), String> {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH) {
            return Err("JWKS fetched moments ago".into());
        }
        *last = Some(Instant::now());
        let client = self.client.as_ref().ok_or("no API client")?;
        let discovery: serde_json::Value = get_json(client, OPENID_CONFIG_PATH).await?;
        let issuer = discovery["issuer"]
            .as_str()
            .ok_or("OIDC discovery has no issuer")?
            .to_owned();
        if let Some(expected) = &self.issuer
            && *expected != issuer
        {
            return Err(format!(
                "the API server's issuer {issuer:?} is not the configured identity.issuer {expected:?}"
            ));
        }
        // Always the API server's own path, never `jwks_uri`'s: the API server serves
        // the keys at /openid/v1/jwks whatever `jwks_uri` says, and `jwks_uri` names
        // where relying parties outside fetch them, which is the API server's external
        // address by default and anything with --service-account-jwks-uri (an object
        // store, an OIDC front) whose path the API server does not serve
        // (kubernetes pkg/serviceaccount/openidmetadata.go, `JWKSPath`).
        let jwks: JwkSet = get_json(client, JWKS_PATH).await?;
        let keys = Keys::new(issuer.clone(), &jwks);
        info!(issuer, keys = keys.count(), "service-account JWKS loaded");
        *self.keys.write().map_err(|_| "poisoned")? = Some(Arc::new(keys));
        Ok(())
    }

    /// TokenReview through the upstream: `Ok(Err(message))` when the API server says
    /// the token is not valid, `Err(503)` when it cannot be asked.
    async fn review(&self, token: &str) -> Result<Result<Arc<UserInfo>, String>, Status> {
        let unavailable = |why: String| {
            Status::service_unavailable(format!("kgate: cannot verify the bearer token: {why}"))
        };
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| unavailable("no API client".into()))?;
        let mut spec = json!({ "token": token });
        if !self.audiences.is_empty() {
            spec["audiences"] = json!(self.audiences);
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
        });
        let req = Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| unavailable(e.to_string()))?;
        let review: serde_json::Value = tokio::time::timeout(CALL_TIMEOUT, client.request(req))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "TokenReview failed: no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| unavailable(format!("TokenReview failed: {e}")))?;
        let status = &review["status"];
        if status["authenticated"].as_bool() != Some(true) {
            let why = status["error"]
                .as_str()
                .unwrap_or("the API server rejected it");
            return Ok(Err(format!("kgate: invalid bearer token: {why}")));
        }
        let user: UserInfo = serde_json::from_value(status["user"].clone())
            .map_err(|e| unavailable(format!("TokenReview answer: {e}")))?;
        Ok(Ok(Arc::new(user)))
    }

    /// The connection's workload: its pod (from the cgroup, confirmed by the pod
    /// index), a host process, or a direct client.
    async fn workload(&self, conn: &Connection) -> Result<Workload, Status> {
        if conn.origin.is_none() {
            return Ok(Workload::Unattributed);
        }
        let Some(pod_cgroup) = conn
            .cgroup
            .as_deref()
            .and_then(cgroup::pod_uid_from_cgroup_path)
        else {
            return Ok(Workload::Host {
                cgroup: conn.cgroup.clone(),
            });
        };
        let Some(index) = &self.pods else {
            return Err(Status::service_unavailable(
                "kgate: no pod index: cannot attribute a pod's connection",
            ));
        };
        match index.get(&pod_cgroup.pod_uid, POD_WAIT).await {
            Lookup::Found(pod) => {
                let container = pod_cgroup
                    .container_id
                    .as_deref()
                    .and_then(|id| pod.container_named_by_id(id))
                    .map(str::to_owned);
                Ok(Workload::Pod { pod, container })
            }
            Lookup::Missing => Err(Status::forbidden(format!(
                "kgate: the connection comes from pod UID {}, which is not on this node's pod list",
                pod_cgroup.pod_uid
            ))),
            Lookup::NotSynced => Err(Status::service_unavailable(
                "kgate: the node's pod list has not loaded yet",
            )
            .with_retry_after(1)),
        }
    }

    fn cache_get(&self, key: &[u8; 32], now: Instant) -> Option<Result<Authenticated, String>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|c| c.until > now)
            .map(|c| c.verdict.clone())
    }

    fn cache_put(&self, key: [u8; 32], verdict: Result<Authenticated, String>, until: Instant) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_CAPACITY {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, Cached { verdict, until });
    }
}

/// The token of `Authorization: Bearer …`, or a 401.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Status> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Status::unauthorized(
            "kgate: a bearer token is required: every request through kgate must carry the caller's own credentials",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::unauthorized("kgate: the Authorization header is not a bearer token")
        })
}

/// The token ↔ pod binding rules (see the module docs).
pub(crate) fn check_binding(
    user: &Arc<UserInfo>,
    workload: &Workload,
    unbound: &[WildMatch],
) -> Result<(), Unidentified> {
    let Some(token_pod) = BoundPod::of(user) else {
        if unbound.iter().any(|g| g.matches(&user.username)) {
            return Ok(());
        }
        return Err(Unidentified::Unbound {
            user: user.clone(),
            workload: workload.clone(),
        });
    };
    match workload {
        Workload::Pod { pod, .. } if pod.uid == token_pod.uid => Ok(()),
        _ => Err(Unidentified::StolenToken {
            user: user.clone(),
            token_pod,
            workload: workload.clone(),
        }),
    }
}

fn namespace_of(username: &str) -> Option<&str> {
    username
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')
        .map(|(ns, _)| ns)
}

fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    path: &str,
) -> Result<T, String> {
    let req = Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(CALL_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("GET {path}: no answer within {} s", CALL_TIMEOUT.as_secs()))?
        .map_err(|e| format!("GET {path}: {e}"))
}

// === impl BoundPod ===

impl BoundPod {
    /// The pod `user`'s token is bound to; `None` for a token bound to no pod.
    pub(crate) fn of(user: &UserInfo) -> Option<Self> {
        let first = |key| user.extra.get(key).and_then(|v| v.first());
        Some(Self {
            uid: first(EXTRA_POD_UID)?.clone(),
            namespace: namespace_of(&user.username).unwrap_or("?").to_owned(),
            name: first(EXTRA_POD_NAME).map_or("?", String::as_str).to_owned(),
        })
    }
}

impl std::fmt::Display for BoundPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

// === impl Unidentified ===

impl Unidentified {
    /// The Status the client gets.
    pub(crate) fn status(&self) -> Status {
        match self {
            Self::Unverified(status) | Self::NoWorkload { status, .. } => status.clone(),
            Self::StolenToken {
                token_pod,
                workload,
                ..
            } => Status::forbidden(match workload {
                Workload::Pod { pod, .. } => format!(
                    "kgate: token bound to pod {token_pod} used from pod {}/{} ({})",
                    pod.namespace, pod.name, pod.uid
                ),
                Workload::Host { cgroup } => format!(
                    "kgate: token bound to pod {token_pod} used from a process outside any pod (cgroup {})",
                    cgroup.as_deref().unwrap_or("unknown")
                ),
                Workload::Unattributed => format!(
                    "kgate: token bound to pod {token_pod} used by a client kgate cannot attribute to that pod"
                ),
            }),
            Self::Unbound { user, .. } => Status::forbidden(format!(
                "kgate: the token of {} is not bound to a pod, and identity.unboundSubjects does not allow that user unbound tokens",
                user.username
            )),
        }
    }

    /// The user the token verified as, when it did.
    pub(crate) fn user(&self) -> Option<&Arc<UserInfo>> {
        match self {
            Self::Unverified(_) => None,
            Self::NoWorkload { user, .. }
            | Self::StolenToken { user, .. }
            | Self::Unbound { user, .. } => Some(user),
        }
    }

    /// Where the connection comes from, when that was established.
    pub(crate) fn workload(&self) -> Option<&Workload> {
        match self {
            Self::Unverified(_) | Self::NoWorkload { .. } => None,
            Self::StolenToken { workload, .. } | Self::Unbound { workload, .. } => Some(workload),
        }
    }
}

impl std::fmt::Display for Unidentified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.status().message)
    }
}

impl std::error::Error for Unidentified {}

// === impl Workload ===

impl Workload {
    /// For logs and records: `pod ns/name[/container]`, `host <cgroup>`, `direct`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Pod { pod, container } => match container {
                Some(c) => format!("pod {}/{}/{c}", pod.namespace, pod.name),
                None => format!("pod {}/{}", pod.namespace, pod.name),
            },
            Self::Host { cgroup } => format!("host {}", cgroup.as_deref().unwrap_or("?")),
            Self::Unattributed => "direct".to_owned(),
        }
    }
}

/// The API server's audiences as the agent's own token (`upstream.tokenFile`) carries
/// them: a projected service-account token issued without an explicit audience, as
/// the DaemonSet's is, names exactly the API server's `--api-audiences` (the issuer
/// unless the cluster sets others: EKS's tokens are for `https://kubernetes.default.svc`
/// under an `oidc.eks` issuer). `None` when the file cannot be read or holds no JWT
/// with an `aud` (a static token).
pub(crate) fn api_audiences_of_token_file(path: &std::path::Path) -> Option<Vec<String>> {
    let token = std::fs::read_to_string(path).ok()?;
    jwt::peek_audiences(&token)
}
