//! Who is asking, and the APIs that issue and check identities: bearer tokens (the
//! admin token, or a service-account token this double issued, still bound to live
//! objects and carrying one of the API audiences), TokenRequest
//! (`serviceaccounts/NAME/token`) and TokenReview, both defaulting to the API
//! audiences (`Config::api_audiences`, kube-apiserver's `--api-audiences`).
//!
//! Not here: client certificates, OIDC issuers other than the double itself,
//! webhook authentication.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::StatusCode;
use ring::digest::{Context, SHA256};
use serde_json::{Value, json};

use super::{Body, Req, State, api::not_found, json_response, resources, status, store, tokens};

/// `Ok(Some(user))` (a UserInfo) for a valid token, `Ok(None)` for no credentials
/// (anonymous), `Err(401)` for a token that is not valid.
pub(crate) fn authenticate(
    state: &State,
    req: &Req,
) -> Result<Option<Value>, hyper::Response<Body>> {
    let Some(auth) = req.header("authorization") else {
        return Ok(None);
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or_default().trim();
    if let Some(user) = static_token_user(state, token) {
        return Ok(Some(user));
    }
    // A service-account token authenticates a request only for the API audiences.
    match verified(state, token, &[]) {
        Ok(claims) if !audiences_matched(state, &claims, &[]).is_empty() => {
            Ok(Some(tokens::review_user(&claims)))
        }
        _ => Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        )),
    }
}

/// Which of `wanted` (none: the API audiences) the token's `aud` claim carries.
fn audiences_matched<'a>(state: &'a State, claims: &'a Value, wanted: &[&'a str]) -> Vec<&'a str> {
    let token_aud = strings(&claims["aud"]);
    let wanted: Vec<&str> = if wanted.is_empty() {
        state.api_audiences.iter().map(String::as_str).collect()
    } else {
        wanted.to_vec()
    };
    wanted
        .into_iter()
        .filter(|a| token_aud.contains(a))
        .collect()
}

/// The strings of a JSON list (an `aud` claim, a TokenReview's audiences); none for
/// anything else.
fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The user of a static token (the API server's `--token-auth-file`), if `token` is one.
fn static_token_user(state: &State, token: &str) -> Option<Value> {
    if !state.tokens.lock().unwrap().contains(token) {
        return None;
    }
    // The identity kubeadm gives its admin kubeconfig.
    Some(if token.starts_with("admin-") {
        json!({"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]})
    } else {
        let name = format!("token:{}", &token[..token.len().min(12)]);
        json!({"username": name, "groups": ["system:authenticated"]})
    })
}

/// The claims of a service-account token that is valid, through kube-apiserver's
/// token cache: a token that authenticated for these audiences (none: the API
/// server's own) is taken again without a check until the cache's TTL passes, even if
/// it has since expired, its key was retired or its pod deleted
/// (`k8s.io/apiserver/pkg/authentication/token/cache`). Failures are not cached
/// (`--token-failure-cache-ttl` is 0 by default).
fn verified(state: &State, token: &str, audiences: &[&str]) -> Result<Value, &'static str> {
    let key = TokenCache::key(token, audiences);
    if let Some(claims) = state.token_cache.get(&key) {
        return Ok(claims);
    }
    let claims = state
        .signer
        .verify(token)
        .and_then(|c| still_bound(state, c))?;
    state.token_cache.put(key, &claims);
    Ok(claims)
}

/// kube-apiserver's cache of successful token authentications, keyed by a hash of
/// the token and the audiences asked for.
pub(crate) struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Instant, Value)>>,
}

impl TokenCache {
    /// More entries than this and expired ones are dropped; the real cache is a
    /// striped LRU of about 32,000.
    const MAX_ENTRIES: usize = 4096;

    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn key(token: &str, audiences: &[&str]) -> [u8; 32] {
        // Length-prefixed, so that no two token and audience lists hash alike.
        let mut hash = Context::new(&SHA256);
        for part in std::iter::once(token).chain(audiences.iter().copied()) {
            hash.update(&(part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let mut key = [0; 32];
        key.copy_from_slice(hash.finish().as_ref());
        key
    }

    fn get(&self, key: &[u8; 32]) -> Option<Value> {
        let entries = self.entries.lock().unwrap();
        let (until, claims) = entries.get(key)?;
        (Instant::now() < *until).then(|| claims.clone())
    }

    fn put(&self, key: [u8; 32], claims: &Value) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, claims.clone()));
    }
}

/// A verified token is only valid while what it names exists: its service account
/// and the pod it is bound to, with the UIDs of the claims (the real server's
/// service-account token validator). A token for a deleted or recreated pod fails.
pub(crate) fn still_bound(state: &State, claims: Value) -> Result<Value, &'static str> {
    let k8s = &claims["kubernetes.io"];
    let ns = k8s["namespace"].as_str().unwrap_or_default();
    let same = |resource, claim: &Value| {
        let name = claim["name"].as_str().unwrap_or_default();
        state
            .store
            .get(resource, ns, name)
            .is_some_and(|o| o["metadata"]["uid"] == claim["uid"])
    };
    if k8s.is_object() && !same("serviceaccounts", &k8s["serviceaccount"]) {
        return Err("service account token has been invalidated");
    }
    if k8s["pod"].is_object() && !same("pods", &k8s["pod"]) {
        return Err("service account token has been invalidated");
    }
    Ok(claims)
}

pub(crate) fn token_request(
    state: &State,
    namespace: &str,
    name: &str,
    req: &Req,
) -> hyper::Response<Body> {
    let Some(sa) = state.store.get("serviceaccounts", namespace, name) else {
        return not_found(
            resources::find("", "v1", "serviceaccounts").expect("served"),
            name,
        );
    };
    let body = match req.decode_body() {
        Ok(v) => v,
        Err(response) => return response,
    };
    let spec = &body["spec"];
    let expiration = spec["expirationSeconds"].as_u64().unwrap_or(3600);
    if expiration < 600 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        );
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences.clone_from(&state.api_audiences);
    }
    let bound = &spec["boundObjectRef"];
    let pod = match bound["kind"].as_str() {
        None => None,
        Some("Pod") => {
            let pod_name = bound["name"].as_str().unwrap_or_default();
            let Some(pod) = state.store.get("pods", namespace, pod_name) else {
                return not_found(resources::find("", "v1", "pods").expect("served"), pod_name);
            };
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((
                pod_name.to_owned(),
                uid,
                pod["spec"]["nodeName"].as_str().map(str::to_owned),
            ))
        }
        Some(other) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("cannot bind token to object of kind {other}"),
            );
        }
    };
    let subject = tokens::Subject {
        namespace: namespace.to_owned(),
        service_account: name.to_owned(),
        service_account_uid: sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod,
    };
    let (token, exp) = state.signer.mint(&subject, &audiences, expiration);
    let exp = store::rfc3339(exp);
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": store::now()},
            "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": spec["boundObjectRef"]},
            "status": {"token": token, "expirationTimestamp": exp},
        }),
    )
}

pub(crate) fn token_review(state: &State, req: &Req) -> hyper::Response<Body> {
    let body = match req.decode_body() {
        Ok(v) => v,
        Err(response) => return response,
    };
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let wanted = strings(&body["spec"]["audiences"]);
    // A static token is not audience-aware: it authenticates for the API audiences,
    // as the real server's authenticator wrapper decides.
    if let Some(user) = static_token_user(state, token) {
        let ours: Vec<&str> = state
            .api_audiences
            .iter()
            .map(String::as_str)
            .filter(|a| wanted.is_empty() || wanted.contains(a))
            .collect();
        let status_body = if !ours.is_empty() {
            json!({"authenticated": true, "user": user, "audiences": ours})
        } else {
            json!({"authenticated": false, "error": "token audiences do not match the requested audiences"})
        };
        return json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status_body,
            }),
        );
    }
    let status_body = match verified(state, token, &wanted) {
        Ok(claims) => {
            // No audiences asked for: the API audiences (kube-apiserver's
            // TokenReview REST handler fills them in).
            let audiences = audiences_matched(state, &claims, &wanted);
            if audiences.is_empty() {
                json!({"authenticated": false, "error": "token audiences do not match the requested audiences"})
            } else {
                json!({"authenticated": true, "user": tokens::review_user(&claims), "audiences": audiences})
            }
        }
        Err(why) => {
            json!({"authenticated": false, "error": format!("[invalid bearer token, {why}]")})
        }
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status_body,
        }),
    )
}
