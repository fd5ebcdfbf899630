//! The `approval:` section: where the news of a held request goes (webhooks to Slack
//! or to any CloudEvents receiver) and the console link they carry. Validated with the
//! rest of the config; a target's URL read from a file or a Secret is checked when the
//! agent starts and at each send, never here, and never printed.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Settings of held requests.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approval {
    /// Base URL of the kgate console (`https://…`): notifications link to
    /// `CONSOLE/approvals/NAME`. Default: none, no link.
    pub console_url: Option<String>,
    /// Webhooks told of every held request (and of its decision) whose rule does not
    /// name its own (a rule's `approval.notify`, a list of these targets' names,
    /// replaces this set for its requests). Default: none.
    #[serde(default)]
    pub notify: Vec<NotifyTarget>,
    /// Notifications waiting to be sent, at most; one more is dropped (and counted),
    /// never waited for. Default 1024.
    #[serde(default = "default_queue")]
    pub notify_queue: usize,
}

impl Default for Approval {
    fn default() -> Self {
        Self {
            console_url: None,
            notify: Vec::new(),
            notify_queue: default_queue(),
        }
    }
}

/// One webhook that approvals are announced to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyTarget {
    /// What metrics, status, logs and rules call the target (a DNS label): never its
    /// URL, which is often a secret. Required.
    pub name: String,
    /// `https://host[:port]/path`. One of `url`, `urlFile` and `secretRef` is
    /// required; use `urlFile` or `secretRef` for a URL that is a credential (Slack's).
    pub url: Option<String>,
    /// A file holding the URL (a mounted Secret), re-read at each send.
    pub url_file: Option<PathBuf>,
    /// A Secret key holding the URL, read with the agent's credential at each send (the
    /// agent needs `get` on that Secret).
    pub secret_ref: Option<SecretRef>,
    /// `slack` (an incoming-webhook message) or `cloudevents` (a CloudEvents 1.0
    /// structured-mode JSON event whose data is the `KgateApproval`). Required.
    pub format: Format,
    /// CA bundle (PEM) that signs the receiver's certificate. Default: the host's roots.
    pub ca_file: Option<PathBuf>,
    /// Which events: `held`, `approved`, `denied`, `expired`. Default: all four.
    #[serde(default)]
    pub events: Vec<NotifyEvent>,
    /// The wait before the first retry, in milliseconds; it doubles (with jitter) up to
    /// `maxBackoffMillis`. Default 500.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_millis: u64,
    /// Default 30000.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_millis: u64,
    /// How long one POST may take, in seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// How long an `approved`, `denied` or `expired` notification is retried, in
    /// seconds (a `held` one is retried while the request is held). Default 600.
    #[serde(default = "default_decided_retry")]
    pub decided_retry_seconds: u64,
}

/// A key of a Secret.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    Slack,
    #[serde(rename = "cloudevents")]
    CloudEvents,
}

/// What happened to an approval.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    Held,
    Approved,
    Denied,
    Expired,
}

impl NotifyEvent {
    pub const ALL: [Self; 4] = [Self::Held, Self::Approved, Self::Denied, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

fn default_queue() -> usize {
    1024
}

fn default_initial_backoff() -> u64 {
    500
}

fn default_max_backoff() -> u64 {
    30_000
}

fn default_timeout() -> u64 {
    10
}

fn default_decided_retry() -> u64 {
    600
}

/// A name usable as a metric label and in a rule (a DNS label).
pub(crate) fn is_target_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a webhook URL: `https`, a host. The URL itself is never in the message: it
/// may be a credential.
pub fn https_url(url: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = url.trim().parse().map_err(|_| "is not a URL")?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err("must be https://host[:port][/path]");
    }
    Ok(uri)
}

// === impl Approval ===

impl Approval {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: &str| ConfigError::Authenticator {
            field,
            message: message.into(),
        };
        if let Some(console) = &self.console_url {
            https_url(console)
                .map_err(|m| invalid("approval.consoleUrl".into(), &format!("{console:?} {m}")))?;
        }
        if self.notify_queue == 0 {
            return Err(invalid("approval.notifyQueue".into(), "must be at least 1"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, target) in self.notify.iter().enumerate() {
            let at = |field: &str| format!("approval.notify[{i}].{field}");
            if !is_target_name(&target.name) {
                return Err(invalid(
                    at("name"),
                    &format!(
                        "{:?} must be a DNS label (lowercase letters, digits, '-')",
                        target.name
                    ),
                ));
            }
            if !seen.insert(target.name.as_str()) {
                return Err(invalid(
                    at("name"),
                    &format!("duplicate target name {:?}", target.name),
                ));
            }
            let sources = usize::from(target.url.is_some())
                + usize::from(target.url_file.is_some())
                + usize::from(target.secret_ref.is_some());
            if sources != 1 {
                return Err(invalid(
                    at("url"),
                    "give exactly one of url, urlFile and secretRef",
                ));
            }
            if let Some(url) = &target.url {
                // Not the URL in the message: an inline one may still be a secret.
                https_url(url).map_err(|m| invalid(at("url"), &format!("the URL {m}")))?;
            }
            if target.url_file.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(invalid(at("urlFile"), "must be an absolute path"));
            }
            if let Some(secret) = &target.secret_ref
                && [&secret.namespace, &secret.name, &secret.key]
                    .iter()
                    .any(|s| s.trim().is_empty())
            {
                return Err(invalid(at("secretRef"), "needs namespace, name and key"));
            }
            if target.initial_backoff_millis == 0 {
                return Err(invalid(at("initialBackoffMillis"), "must be at least 1"));
            }
            if target.max_backoff_millis < target.initial_backoff_millis {
                return Err(invalid(
                    at("maxBackoffMillis"),
                    "must be at least initialBackoffMillis",
                ));
            }
            if target.timeout_seconds == 0 {
                return Err(invalid(at("timeoutSeconds"), "must be at least 1"));
            }
            if target.decided_retry_seconds == 0 {
                return Err(invalid(at("decidedRetrySeconds"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

// === impl NotifyTarget ===

impl NotifyTarget {
    /// Whether the target takes `event` (`events`, default all).
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}
