//! A faithful Kubernetes API-server double: HTTPS (h2 and http/1.1), bearer-token
//! authentication, discovery, core/v1 namespaces, pods, secrets, configmaps,
//! serviceaccounts and apps/v1 deployments (with `scale`), apiextensions.k8s.io/v1
//! customresourcedefinitions (defaulted and validated as the real server does, for the
//! release `Config::version` names: crd.rs), watches (streaming lists included),
//! `as=Table`, pod logs and exec over WebSocket. The real `kubectl` and kube-rs work against it.
//!
//! It records every request it receives (method, path, user, notable headers) so that
//! proxy tests can assert what reached "the API server".
//!
//! Request bodies are read as JSON, YAML or Kubernetes protobuf; answers are JSON.
//! Validation is the server's (OpenAPI v3 says so, and `fieldValidation=Strict` is
//! honoured for top-level and metadata fields); strategic merge patches merge by
//! key; every write records its managed fields, and server-side apply owns, prunes
//! and conflicts by them (`managed`); service-account tokens are issued, reviewed and
//! published (OIDC, JWKS) with rotating keys.
//!
//! Impersonation is checked and applied as kube-apiserver's filter does it
//! (`impersonation`); a test can refuse a user `impersonate` on a resource.
//!
//! Not here: authorization (every authenticated user may do anything), admission and
//! defaulting (but for CRDs), protobuf answers, controllers (a Deployment never gets
//! pods).
//!
//! The crate does not depend on kgate: its fidelity tests (`tests/`) check it against
//! kubectl and kube-rs alone, and kgate-tests re-exports it as `kgate_tests::apiserver`.
//! The `apiserver-double` binary runs it for the demo, the bench and the kernel tests.
//! Layout: `server` (listener, TLS, HTTP connections, the [`Handle`]), `request`
//! (bounded reads, body decoding), `routing` (authentication, discovery, dispatch),
//! `api` (resource paths), `seed` (what a fresh double holds), `response` (bodies and
//! `Status`), `control` (what a test does without HTTP); [`client`] and [`pki`] serve
//! the tests that use it.

mod api;
mod authn;
pub mod client;
mod control;
pub mod crd;
mod delete;
mod impersonation;
mod managed;
mod openapi;
pub mod pki;
mod protobuf;
mod request;
mod resources;
mod response;
mod reviews;
mod routing;
mod scale;
mod seed;
mod selector;
mod server;
mod store;
mod strategic;
mod streams;
mod table;
mod tokens;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

pub use self::request::Req;
pub use self::resources::ServerVersion;
pub use self::response::{
    Body, BoxError, channel_body, empty, full, json_response, response, status,
};
pub use self::routing::Logged;
use self::server::State;
pub use self::server::{ApiServer, Handle, tls_acceptor};
pub use self::streams::LOG_INTERVAL;
pub use self::tokens::{DEFAULT_ISSUER, Subject};

/// The `kubernetes` Service's ClusterIP: the first address of kubeadm's default range.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Extra IP SANs for the serving certificate (the listen IP is always included).
    pub extra_ips: Vec<IpAddr>,
    /// The `iss` of issued service-account tokens (default: `DEFAULT_ISSUER`). As on
    /// kube-apiserver, OIDC discovery and the JWKS are served only when it is an
    /// `https` URL without query or fragment.
    pub issuer: String,
    /// `--service-account-jwks-uri`: the `jwks_uri` that OIDC discovery advertises
    /// (default: `https://<the double's address>/openid/v1/jwks`, as kube-apiserver
    /// builds it from its external address). The JWKS itself is served at
    /// `/openid/v1/jwks` either way.
    pub jwks_uri: Option<String>,
    /// The release `/version` reports and CRD admission follows (default 1.32.4).
    pub version: ServerVersion,
    /// `--token-success-cache-ttl`: how long a token that authenticated is taken
    /// without checking it again (default 10 s, kube-apiserver's; zero: no cache).
    pub token_success_cache_ttl: Duration,
    /// `--api-audiences`: a service-account token authenticates a request only if it
    /// carries one of them, and a TokenRequest or TokenReview that names none gets
    /// them. Empty (the default): the issuer, as kube-apiserver defaults it. Managed
    /// clusters set others (EKS: `https://kubernetes.default.svc` under an
    /// `oidc.eks` issuer).
    pub api_audiences: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            bookmark_interval: Duration::from_secs(1),
            extra_ips: Vec::new(),
            issuer: DEFAULT_ISSUER.to_owned(),
            jwks_uri: None,
            version: ServerVersion::default(),
            token_success_cache_ttl: Duration::from_secs(10),
            api_audiences: Vec::new(),
        }
    }
}

impl Config {
    /// A cluster whose API audience is not its issuer, shaped as EKS's: tokens for
    /// `https://kubernetes.default.svc` under an `oidc.eks` issuer.
    pub fn eks_shaped() -> Self {
        Self {
            issuer: "https://oidc.eks.test/id/0123".into(),
            api_audiences: vec!["https://kubernetes.default.svc".into()],
            ..Self::default()
        }
    }
}
