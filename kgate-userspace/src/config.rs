//! The agent's configuration: one serde type, parsed from a `&str` so tests never touch
//! the environment, validated once at start-up with errors that name the field.
//!
//! Defaults are stated on each field. Unknown fields are errors: a misspelt key must not
//! silently leave enforcement at a default.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

pub mod authn;
mod notify;
mod record;
pub use authn::JwtAuthenticator;
pub(crate) use notify::is_target_name;
pub use notify::{Approval, Format, NotifyEvent, NotifyTarget, SecretRef, https_url};
pub use record::{Durability, Level, Record, Webhook};

/// The agent's config file (YAML; JSON is YAML too).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Address the agent listens on. Default `0.0.0.0:6443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Threads serving client connections, each with its own connections to the API
    /// server. Default: the CPUs the agent may use (a CPU limit counts), at most 4.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
    /// Where the kernel sends intercepted connections. Default: the listen address's IP
    /// when it is specific, and the listen port.
    #[serde(default)]
    pub redirect: Redirect,
    /// API server addresses to intercept (`ip:port`, `[v6]:port`). Default: none; the
    /// endpoint discovery adds the `kubernetes` Service and its endpoints.
    #[serde(default)]
    pub targets: Vec<SocketAddr>,
    /// The cgroup v2 directory whose subtree is intercepted: `auto` (the kubelet's
    /// kubepods cgroup, either driver) or a path. Default `auto`.
    #[serde(default)]
    pub cgroup: CgroupSetting,
    /// Further cgroups whose connections are never redirected, besides the agent's own.
    /// Default: none.
    #[serde(default)]
    pub exempt_cgroups: Vec<PathBuf>,
    /// Attach the kernel programs. Default `true`. With `false` kgate is a standalone
    /// proxy that clients must be pointed at (development, tests, gateway mode);
    /// nothing forces traffic through it, and `directClients` must be `allow`. Gateway
    /// mode (OIDC authenticators configured) needs `kernel: false` written out.
    #[serde(default = "default_true")]
    pub kernel: bool,
    /// Whether the document itself says `kernel:` (gateway mode must not rely on the
    /// default).
    #[serde(skip)]
    pub kernel_stated: bool,
    /// Connections that carry no kernel origin record (host processes dialling the
    /// agent, or every client in standalone mode): `refuse` or `allow`. Default
    /// `refuse`: a pod that found the agent's address cannot skip the redirect's
    /// attribution.
    #[serde(default)]
    pub direct_clients: DirectClients,
    /// API endpoint discovery: the `kubernetes` Service and its EndpointSlices. Default:
    /// on with the kernel programs; see [`Discovery`].
    #[serde(default)]
    pub discovery: Discovery,
    /// Heartbeats: a `coordination.k8s.io` Lease per node with this agent's status,
    /// which `kgate status` reads with an admin's kubeconfig. Default: on when
    /// `identity.nodeName` is known; see [`Heartbeat`].
    #[serde(default)]
    pub heartbeat: Heartbeat,
    /// The bpffs mount under which `kgate/v1` pins are kept. Default `/sys/fs/bpf`.
    #[serde(default = "default_bpffs")]
    pub bpffs: PathBuf,
    /// The serving certificate pods see.
    pub tls: Tls,
    /// The real API server.
    pub upstream: Upstream,
    /// How callers are identified and bound to pods. Default: see [`Identity`].
    #[serde(default)]
    pub identity: Identity,
    /// Where policies come from and what applies when none decides.
    #[serde(default)]
    pub policy: Policy,
    /// The admin endpoint (`/healthz`, `/readyz`, `/metrics`, `/status`) over HTTPS with
    /// the serving certificate. Default: off.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Response masking. Default: Secret values masked, no other rule; see
    /// [`crate::mask::MaskConfig`].
    #[serde(default)]
    pub mask: crate::mask::MaskConfig,
    /// Request recording. Default: a log line per request, nothing on disk; see
    /// [`Record`].
    #[serde(default)]
    pub record: Record,
    /// Held requests: webhooks that announce them and their decisions, and the
    /// console link. Default: no notifications; see [`Approval`].
    #[serde(default)]
    pub approval: Approval,
}

/// The admin endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Admin {
    /// Address to listen on, e.g. `0.0.0.0:9443`.
    pub listen: SocketAddr,
}

/// Policy sources and global settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Policy files: YAML streams of `KgatePolicy` documents, re-read when they change.
    /// Default: none.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Watch the cluster's `KgatePolicy` objects (the CRDs must be installed). Until
    /// they are listed once, requests get a 503. Default `false`.
    #[serde(default)]
    pub cluster: bool,
    /// What happens to a request that no policy decides: `deny` (default) or `allow`.
    #[serde(default = "default_deny")]
    pub default_action: crate::policy::types::DefaultAction,
    /// Every decision in shadow mode: would-deny and would-hold are recorded, and the
    /// requests pass. Default `false`.
    #[serde(default)]
    pub shadow: bool,
    /// How often policy files are checked for changes, in seconds. Default 2.
    #[serde(default = "default_policy_reload")]
    pub reload_seconds: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            cluster: false,
            default_action: default_deny(),
            shadow: false,
            reload_seconds: default_policy_reload(),
        }
    }
}

fn default_deny() -> crate::policy::types::DefaultAction {
    crate::policy::types::DefaultAction::Deny
}

fn default_policy_reload() -> u64 {
    2
}

/// Workload identity: which tokens are accepted, and how they must be bound.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    /// This node's name: the pod index watches the pods scheduled here. Required with
    /// the kernel programs (`--node-name` / `NODE_NAME` set it in the DaemonSet).
    pub node_name: Option<String>,
    /// The service-account token issuer. Default: the API server's OIDC discovery.
    pub issuer: Option<String>,
    /// Token audiences kgate accepts. Default: the issuer (the API server's own
    /// default `--api-audiences`). Add e.g. `kgate` for bots whose tokens only kgate
    /// may accept (with `impersonate`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds. Default 60.
    pub clock_skew_seconds: Option<u64>,
    /// How long a TokenReview answer is reused, in seconds. Default 10.
    pub token_review_cache_seconds: Option<u64>,
    /// Users (globs over `system:serviceaccount:NS:NAME` or any username) whose tokens
    /// may carry no pod claim: legacy Secret tokens, TokenRequest tokens without a
    /// bound object, non-service-account users. Default: none (every token must be
    /// bound to the pod it is used from).
    #[serde(default)]
    pub unbound_subjects: Vec<String>,
    /// Users (globs) whose requests reach the API server as the agent impersonating
    /// them (`Impersonate-User/Uid/Group/Extra`), instead of with their own token.
    /// Needs `upstream.tokenFile` or a client certificate. Default: none.
    #[serde(default)]
    pub impersonate: Vec<String>,
    /// OIDC authenticators for clients outside the cluster (gateway mode), in the shape
    /// of the API server's `AuthenticationConfiguration` `jwt` list; see
    /// [`authn`]. Their users always reach the API server as the agent impersonating
    /// them. Default: none.
    #[serde(default)]
    pub jwt: Vec<JwtAuthenticator>,
    /// An `AuthenticationConfiguration` file (the one written for the API server's
    /// `--authentication-config`) whose `jwt` authenticators are used after `jwt`'s,
    /// read and validated at start-up. Default: none.
    pub authentication_config_file: Option<PathBuf>,
    /// Whether tokens must be bound to the pod the connection comes from (see
    /// `unboundSubjects`). Default `true`. Gateway mode has no pods to bind to and
    /// must say `podBinding: false`.
    pub pod_binding: Option<bool>,
    /// Requests with `Impersonate-*` headers (`kubectl --as`): `refuse` (default: bots
    /// keep acting as themselves) or `policy`: the caller needs a policy allow for verb
    /// `impersonate` on `users`, `groups`, `serviceaccounts`, `uids` or `userextras`
    /// (with `resourceNames`), and the request is then decided as the impersonated
    /// identity, both identities recorded.
    #[serde(default)]
    pub client_impersonation: ClientImpersonation,
}

/// What kgate does with a client's `Impersonate-*` headers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ClientImpersonation {
    #[default]
    Refuse,
    Policy,
}

// === impl Identity ===

impl Identity {
    /// Gateway mode: OIDC authenticators are configured.
    pub fn gateway(&self) -> bool {
        !self.jwt.is_empty() || self.authentication_config_file.is_some()
    }

    /// Whether tokens are bound to pods (`podBinding`, default `true`).
    pub fn pod_binding(&self) -> bool {
        self.pod_binding.unwrap_or(true)
    }

    /// Every authenticator: `jwt`'s, then the file's (read now), validated together.
    pub fn authenticators(&self) -> Result<Vec<JwtAuthenticator>, ConfigError> {
        let mut all = self.jwt.clone();
        if let Some(path) = &self.authentication_config_file {
            let at = "identity.authenticationConfigFile";
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Authenticator {
                field: at.to_owned(),
                message: format!("reading {}: {e}", path.display()),
            })?;
            all.extend(authn::parse_authentication_configuration(
                &text,
                at,
                self.issuer.as_deref(),
            )?);
        }
        authn::validate(&all, "identity.jwt", self.issuer.as_deref())?;
        Ok(all)
    }
}

/// The agent's serving certificate: signed by the cluster CA, with the SANs of the
/// `kubernetes` Service (`kgate cert issue` makes one).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// PEM certificate chain. Re-read when it changes, without dropping connections.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often to check the files for a new certificate, in seconds. Default 10.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
}

/// The address intercepted connections are rewritten to.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Redirect {
    /// IPv4 address for IPv4 (and IPv4-mapped) connects. Default: the listen IP if IPv4.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address for IPv6 connects. Default: the listen IP if IPv6. Without one,
    /// IPv6 connects to targets are refused.
    pub ipv6: Option<Ipv6Addr>,
    /// Port. Default: the listen port.
    pub port: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DirectClients {
    #[default]
    Refuse,
    Allow,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CgroupSetting {
    /// Detect the kubelet's pod cgroup.
    #[default]
    Auto,
    Path(PathBuf),
}

impl<'de> Deserialize<'de> for CgroupSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s == "auto" {
            Self::Auto
        } else {
            Self::Path(s.into())
        })
    }
}

/// The agent's heartbeat Lease, `kgate-<node>` in `namespace`, renewed every
/// `intervalSeconds` with the agent's `/status` in the `kgate.io/status` annotation. It
/// lasts three intervals: a Lease not renewed for that long means the agent is down.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Heartbeat {
    /// Default: `true` when `identity.nodeName` is set.
    pub enabled: Option<bool>,
    /// Namespace of the Leases (the DaemonSet's). Default `kgate-system`.
    #[serde(default = "default_heartbeat_namespace")]
    pub namespace: String,
    /// Seconds between renewals. Default 10.
    #[serde(default = "default_heartbeat_seconds")]
    pub interval_seconds: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            enabled: None,
            namespace: default_heartbeat_namespace(),
            interval_seconds: default_heartbeat_seconds(),
        }
    }
}

fn default_heartbeat_namespace() -> String {
    "kgate-system".to_owned()
}

fn default_heartbeat_seconds() -> u64 {
    10
}

/// Where the API server's addresses come from besides `targets`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Discovery {
    /// Watch the Service and its EndpointSlices, and keep the kernel's targets equal
    /// to their ClusterIPs, endpoints and ports plus `targets` (a watch outage keeps
    /// the last known set). Default: `true` when `kernel` is, else `false`.
    pub enabled: Option<bool>,
    /// `NAMESPACE/NAME` of the API server's Service. Default `default/kubernetes`.
    #[serde(default = "default_api_service")]
    pub service: String,
    /// Forward to the Service's ready endpoints, round robin, instead of
    /// `upstream.server`'s address (TLS still checks `upstream.server`'s name, or
    /// `upstream.serverName`). Default `true`.
    #[serde(default = "default_true")]
    pub upstream: bool,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            enabled: None,
            service: default_api_service(),
            upstream: true,
        }
    }
}

impl Discovery {
    pub fn enabled(&self, kernel: bool) -> bool {
        self.enabled.unwrap_or(kernel)
    }

    /// The Service's namespace and name.
    pub fn service(&self) -> (&str, &str) {
        self.service
            .split_once('/')
            .unwrap_or(("default", &self.service))
    }
}

fn default_api_service() -> String {
    "default/kubernetes".to_owned()
}

/// The upstream API server.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    /// `https://host:port` of the API server: an endpoint address, not the Service IP
    /// (which the agent could reach too, since its cgroup is exempt, but an endpoint
    /// saves a kube-proxy hop).
    pub server: String,
    /// CA bundle that signs the API server's certificate. Default: the pod's
    /// service-account CA, `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Name to verify the API server's certificate against. Default: the host of
    /// `server`.
    pub server_name: Option<String>,
    /// Client certificate and key for the agent's own requests. Default: none.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Bearer token for the agent's own requests (OIDC discovery, JWKS, TokenReview,
    /// the pod watch) and for impersonation. Re-read when it changes, as projected
    /// tokens rotate. Default: none.
    pub token_file: Option<PathBuf>,
    /// How long a request that is not long-running (not a watch, exec, attach,
    /// port-forward, proxy or `logs`) waits for the API server's response head
    /// before the client gets a 504 Status. Default: 70, just above the API
    /// server's own 60 s request timeout, so that its 504 normally comes first and
    /// this only fires when the API server hangs.
    #[serde(default = "default_response_timeout_seconds")]
    pub response_timeout_seconds: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6443))
}

fn default_response_timeout_seconds() -> u64 {
    70
}

fn default_true() -> bool {
    true
}

fn default_reload_seconds() -> u64 {
    10
}

fn default_ca_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
}

fn default_bpffs() -> PathBuf {
    PathBuf::from("/sys/fs/bpf")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("config field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A field of an OIDC authenticator, with its index (`identity.jwt[0].issuer.url`).
    #[error("config field `{field}`: {message}")]
    Authenticator { field: String, message: String },
}

/// The resolved redirect address that the kernel programs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectTo {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub port: u16,
}

// === impl Config ===

impl Config {
    /// The number of worker threads: `workers`, or the default.
    pub fn worker_count(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            std::num::NonZeroUsize::get,
        )
    }

    /// Parses and validates a config document.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, |_| {})
    }

    /// Parses, applies command-line overrides, then validates the result.
    pub fn parse_with(text: &str, overrides: impl FnOnce(&mut Self)) -> Result<Self, ConfigError> {
        let mut config: Self = serde_yaml::from_str(text)?;
        config.kernel_stated = serde_yaml::from_str::<serde_yaml::Value>(text)?
            .get("kernel")
            .is_some();
        overrides(&mut config);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        // First: a gateway config without `kernel: false` would fail on the kernel's
        // settings, naming fields that are beside the point.
        self.validate_gateway()?;
        if self.listen.port() == 0 {
            return Err(invalid(
                "listen",
                "needs a fixed port: the kernel redirects to it",
            ));
        }
        if !self.kernel && self.direct_clients == DirectClients::Refuse {
            return Err(invalid(
                "directClients",
                "must be `allow` when `kernel` is false: no client would have an origin record",
            ));
        }
        let to = self.redirect_to();
        if self.kernel && to.ipv4.is_none() && to.ipv6.is_none() {
            return Err(invalid(
                "redirect",
                "set redirect.ipv4 or redirect.ipv6 (the listen address is unspecified, so \
                 the node address pods can reach must be given)",
            ));
        }
        if to.ipv4.is_some_and(|ip| ip.is_unspecified())
            || to.ipv6.is_some_and(|ip| ip.is_unspecified())
        {
            return Err(invalid(
                "redirect",
                "must be a specific address, not 0.0.0.0 or ::",
            ));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.port() == 0 || t.ip().is_unspecified())
        {
            return Err(invalid(
                "targets",
                &format!("{t} is not a connectable address"),
            ));
        }
        self.upstream_uri()?;
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        match self.discovery.service.split_once('/') {
            Some((ns, name)) if dns_label(ns) && dns_label(name) => {}
            _ => {
                return Err(invalid(
                    "discovery.service",
                    &format!(
                        "{:?} must be NAMESPACE/NAME of a Service",
                        self.discovery.service
                    ),
                ));
            }
        }
        if self.heartbeat.interval_seconds == 0 {
            return Err(invalid("heartbeat.intervalSeconds", "must be at least 1"));
        }
        if self.heartbeat.enabled == Some(true) && self.identity.node_name.is_none() {
            return Err(invalid(
                "heartbeat.enabled",
                "needs identity.nodeName: the Lease is named after the node",
            ));
        }
        if !dns_label(&self.heartbeat.namespace) {
            return Err(invalid(
                "heartbeat.namespace",
                &format!("{:?} is not a namespace name", self.heartbeat.namespace),
            ));
        }
        if self.upstream.client_cert_file.is_some() != self.upstream.client_key_file.is_some() {
            return Err(invalid(
                "upstream.clientCertFile",
                "clientCertFile and clientKeyFile go together",
            ));
        }
        if self.kernel && self.identity.node_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "identity.nodeName",
                "is needed with the kernel programs, to bind tokens to this node's pods \
                 (set it, or pass --node-name / NODE_NAME)",
            ));
        }
        if !self.identity.impersonate.is_empty()
            && self.upstream.token_file.is_none()
            && self.upstream.client_cert_file.is_none()
        {
            return Err(invalid(
                "identity.impersonate",
                "needs the agent's own credential: upstream.tokenFile or upstream.clientCertFile",
            ));
        }
        if let Some(bad) = self
            .identity
            .unbound_subjects
            .iter()
            .chain(&self.identity.impersonate)
            .find(|g| g.trim().is_empty())
        {
            return Err(invalid(
                "identity",
                &format!("empty subject pattern {bad:?} in unboundSubjects or impersonate"),
            ));
        }
        if self.policy.reload_seconds == 0 {
            return Err(invalid("policy.reloadSeconds", "must be at least 1"));
        }
        crate::mask::Masker::new(&self.mask).map_err(|e| ConfigError::Invalid {
            field: e.field,
            message: e.message,
        })?;
        self.record.validate()?;
        self.approval.validate()?;
        if self.tls.reload_seconds == 0 {
            return Err(invalid("tls.reloadSeconds", "must be at least 1"));
        }
        if self.upstream.response_timeout_seconds == 0 {
            return Err(invalid(
                "upstream.responseTimeoutSeconds",
                "must be at least 1",
            ));
        }
        if let CgroupSetting::Path(p) = &self.cgroup
            && !p.is_absolute()
        {
            return Err(invalid("cgroup", "must be `auto` or an absolute path"));
        }
        Ok(())
    }

    /// Gateway mode states what it gives up: no kernel programs, no pod binding, and the
    /// agent's own credential for impersonating its OIDC users. Inline authenticators
    /// are validated here; a file's at start-up ([`Identity::authenticators`]).
    fn validate_gateway(&self) -> Result<(), ConfigError> {
        let identity = &self.identity;
        authn::validate(&identity.jwt, "identity.jwt", identity.issuer.as_deref())?;
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        if !identity.gateway() {
            if self.kernel && identity.pod_binding == Some(false) {
                return Err(invalid(
                    "identity.podBinding",
                    "`false` is for gateway mode (`kernel: false`): with the kernel \
                     programs, a token is always bound to the pod it is used from",
                ));
            }
            return Ok(());
        }
        if self.kernel || !self.kernel_stated {
            return Err(invalid(
                "kernel",
                "gateway mode (OIDC authenticators in identity.jwt or                  identity.authenticationConfigFile) needs `kernel: false` written in the                  config: its clients are outside the cluster",
            ));
        }
        if identity.pod_binding != Some(false) {
            return Err(invalid(
                "identity.podBinding",
                "gateway mode needs `podBinding: false` written in the config: no                  connection comes from a pod, so no token can be bound to one",
            ));
        }
        if self.upstream.token_file.is_none() && self.upstream.client_cert_file.is_none() {
            return Err(invalid(
                "upstream.tokenFile",
                "gateway mode forwards OIDC users as the agent impersonating them: it needs                  the agent's own credential (upstream.tokenFile or upstream.clientCertFile)",
            ));
        }
        Ok(())
    }

    /// The upstream server as a URI: `https`, a host, no path.
    pub fn upstream_uri(&self) -> Result<http::Uri, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "upstream.server",
            message,
        };
        let uri: http::Uri = self
            .upstream
            .server
            .parse()
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", self.upstream.server)))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(invalid(format!(
                "{:?} must be https://host[:port]",
                self.upstream.server
            )));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid(format!(
                "{:?} must not have a path",
                self.upstream.server
            )));
        }
        Ok(uri)
    }

    /// The redirect address with defaults filled in from the listen address.
    pub fn redirect_to(&self) -> RedirectTo {
        let listen_ip = self.listen.ip();
        let from_listen_v4 = match listen_ip {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let from_listen_v6 = match listen_ip {
            IpAddr::V6(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        RedirectTo {
            ipv4: self.redirect.ipv4.or(from_listen_v4),
            ipv6: self.redirect.ipv6.or(from_listen_v6),
            port: self.redirect.port.unwrap_or(self.listen.port()),
        }
    }
}

#[cfg(test)]
mod tests;
