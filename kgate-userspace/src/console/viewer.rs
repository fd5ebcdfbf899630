//! Whose credentials a request uses. On loopback, the kubeconfig's (the console is as
//! private as the kubeconfig). Elsewhere (or with `--sign-in`), each viewer signs in with a bearer token of
//! their own; the API server must accept it (a SelfSubjectReview), and the viewer
//! gets an opaque cookie (HttpOnly, Secure, SameSite=Strict) that names it here, so
//! the token never returns to the page. Every API call for that viewer then uses
//! their token: RBAC and the decided-by field are theirs.
//!
//! Not here: the checks every request passes first ([`super::guard`]).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderMap, header};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The cookie naming a signed-in viewer.
const COOKIE: &str = "kgate_console";
/// How long a sign-in lasts.
const SIGN_IN_TTL: Duration = Duration::from_secs(12 * 3600);

/// A signed-in viewer.
struct Viewer {
    client: kube::Client,
    /// The bearer token, for the agents' admin endpoints (cluster-wide sessions).
    token: std::sync::Arc<str>,
    user: String,
    since: Instant,
}

/// Whose credentials the console's API calls use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// The kubeconfig's, for every request (a loopback console).
    Kubeconfig,
    /// Each signed-in viewer's own bearer token.
    ViewerToken,
}

impl Credentials {
    /// How the page names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kubeconfig => "kubeconfig",
            Self::ViewerToken => "viewer-token",
        }
    }
}

/// Whom a request acts as: the client, and the signed-in viewer's user and token
/// (none on a console using its kubeconfig).
pub(crate) struct Acting {
    pub client: kube::Client,
    pub user: Option<String>,
    pub token: Option<std::sync::Arc<str>>,
}

pub(crate) struct Viewers {
    pub(crate) credentials: Credentials,
    /// The kubeconfig's cluster (and, on loopback, its credentials).
    base: kube::Config,
    /// On loopback: the client every request uses.
    admin: Option<kube::Client>,
    signed_in: Mutex<HashMap<String, Viewer>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ViewerError {
    #[error("sign in with your bearer token")]
    SignInRequired,
    #[error("the API server did not accept this token: {0}")]
    TokenRefused(String),
    #[error("this console uses the kubeconfig's credentials: there is nothing to sign in to")]
    NotRemote,
    #[error("building a client: {0}")]
    ClientFailed(String),
}

impl Viewers {
    pub(crate) fn new(credentials: Credentials, base: kube::Config) -> Result<Self, kube::Error> {
        let admin = match credentials {
            Credentials::Kubeconfig => Some(kube::Client::try_from(base.clone())?),
            Credentials::ViewerToken => None,
        };
        Ok(Self {
            credentials,
            base,
            admin,
            signed_in: Mutex::new(HashMap::new()),
        })
    }

    /// The client this request acts with, and its user and token when signed in.
    pub(crate) fn client(&self, headers: &HeaderMap) -> Result<Acting, ViewerError> {
        if let Some(admin) = &self.admin {
            return Ok(Acting {
                client: admin.clone(),
                user: None,
                token: None,
            });
        }
        let id = cookie(headers).ok_or(ViewerError::SignInRequired)?;
        let mut signed_in = self
            .signed_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        signed_in.retain(|_, v| v.since.elapsed() < SIGN_IN_TTL);
        let viewer = signed_in.get(id).ok_or(ViewerError::SignInRequired)?;
        Ok(Acting {
            client: viewer.client.clone(),
            user: Some(viewer.user.clone()),
            token: Some(viewer.token.clone()),
        })
    }

    /// Checks `token` with the API server and remembers it; the cookie to set.
    pub(crate) async fn sign_in(&self, token: &str) -> Result<(String, String), ViewerError> {
        if self.credentials != Credentials::ViewerToken {
            return Err(ViewerError::NotRemote);
        }
        let mut config = self.base.clone();
        // Only the token: none of the kubeconfig's own credentials may come along.
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token.trim() }))
            .map_err(|e| ViewerError::ClientFailed(e.to_string()))?;
        let client =
            kube::Client::try_from(config).map_err(|e| ViewerError::ClientFailed(e.to_string()))?;
        let info = crate::decisions::self_subject(&client)
            .await
            .map_err(|e| ViewerError::TokenRefused(e.to_string()))?;
        let user = info["username"].as_str().unwrap_or("unknown").to_owned();
        let id = random_hex(32);
        self.signed_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id.clone(),
                Viewer {
                    client,
                    token: token.trim().into(),
                    user: user.clone(),
                    since: Instant::now(),
                },
            );
        let cookie = format!(
            "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            SIGN_IN_TTL.as_secs()
        );
        Ok((cookie, user))
    }

    /// Forgets the request's sign-in; the cookie that clears it.
    pub(crate) fn sign_out(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers) {
            self.signed_in
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(id);
        }
        format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
    }
}

/// The console's cookie in the request.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// `bytes` random bytes from the system's CSPRNG, in hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system's random source works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
