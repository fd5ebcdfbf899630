//! The **mask** stage: hides sensitive values in API responses before the client
//! sees them.
//!
//! - Secrets, always: every `data` and `stringData` value becomes a placeholder
//!   (valid base64 in `data`), keys kept. The `last-applied-configuration`
//!   annotation embeds the object: its values are masked inside by the same rules,
//!   its keys kept, so `kubectl apply` still prunes.
//! - Configured rules: ConfigMap keys, container `env` values by name, annotations
//!   by name (see [`MaskConfig`]).
//! - Every response shape: single objects (answers to get, create, update, patch,
//!   delete), lists (streamed item by item), `as=Table` (rows' objects), watch
//!   streams (every event's object; BOOKMARK and ERROR events keep their content),
//!   errors (Status objects pass through). Everything is re-serialized, so key order
//!   and whitespace may differ from the API server's.
//! - Fail closed: a response that cannot be masked (not JSON, compressed, malformed,
//!   truncated, a unit over `maxObjectBytes`) is refused with a 502 Status, or, once
//!   masked bytes have gone out, cut off with an error. Never forwarded raw.
//!
//! - Writes: a placeholder a client sends back where kgate masks is restored to the
//!   stored value ([`Plan::restore_object`], [`Plan::restore_json_patch`]), so masking
//!   never changes what is stored.
//!
//! How it plugs into the request path:
//! [`Masker::plan`] → [`negotiate()`] and the write's restore (before forward) →
//! [`mask_response`] (after).
//!
//! Not here: reading request bodies or the stored object (the proxy's restore stage),
//! protobuf or YAML (the upstream is asked for JSON; a client that accepts only
//! those gets a 406), Table cells (the built-in printers of the masked kinds show no
//! masked values), logs, exec and other subresource streams, and custom resources
//! other than through the annotation rules.

mod config;
mod negotiate;
mod response;
mod restore;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use regex::RegexSet;
use wildmatch::WildMatch;

use self::rules::{Rules, Target};
pub use self::{
    config::MaskConfig,
    rules::{LAST_APPLIED, MASKED_BASE64, MASKED_TEXT},
};
pub(crate) use self::{
    negotiate::{accept_json, negotiate},
    response::mask_response,
    restore::{RestoreError, Restored, guard, has_placeholder, patch_reads},
    scanner::Scanner,
};
// Every resource verb's response carries objects (`delete` answers with the object or
// a Status); `proxy` and non-resource requests are not objects kgate knows.
use crate::request_info::{RESOURCE_VERBS, RequestInfo};

/// Why a response could not be masked. Each is reported as a 502 (the API server
/// answered something kgate will not pass on); `TooLarge` is kgate's own limit.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("the response is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("re-serializing a masked object failed: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("unexpected byte {:?} in the response", char::from(*.0))]
    Unexpected(u8),
    #[error("the response ended inside a JSON value")]
    Truncated,
    #[error("a single object exceeds mask.maxObjectBytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the response has a second `items` or `rows` member")]
    DuplicateArray,
    #[error("the response's list repeats its member {0:?} after its items")]
    DuplicateMember(String),
    #[error("the response already failed to mask")]
    AlreadyFailed,
}

/// A [`MaskConfig`] that does not compile; `field` names the config field.
#[derive(Debug, thiserror::Error)]
#[error("config field `{field}`: {message}")]
pub struct MaskConfigError {
    pub field: &'static str,
    pub message: String,
}

/// The masking rules, compiled once at start-up.
#[derive(Debug)]
pub struct Masker {
    rules: Arc<Rules>,
    unmasked_subjects: Vec<WildMatch>,
    max_object_bytes: usize,
}

/// How one request's response is masked.
#[derive(Clone, Debug)]
pub struct Plan {
    rules: Arc<Rules>,
    target: Target,
    /// A watch: the response is a stream of events.
    watch: bool,
    /// The resource, for messages.
    resource: String,
    max_object_bytes: usize,
}

// === impl Masker ===

impl Masker {
    pub fn new(config: &MaskConfig) -> Result<Self, MaskConfigError> {
        let patterns = |field: &'static str, patterns: &[String]| {
            if patterns.is_empty() {
                return Ok(None);
            }
            if let Some(empty) = patterns.iter().find(|p| p.is_empty()) {
                return Err(MaskConfigError {
                    field,
                    message: format!("empty pattern {empty:?} would match everything"),
                });
            }
            RegexSet::new(patterns)
                .map(Some)
                .map_err(|e| MaskConfigError {
                    field,
                    message: e.to_string(),
                })
        };
        if config.unmasked_subjects.iter().any(|s| s.trim().is_empty()) {
            return Err(MaskConfigError {
                field: "mask.unmaskedSubjects",
                message: "empty subject pattern".into(),
            });
        }
        if config.max_object_bytes == 0 {
            return Err(MaskConfigError {
                field: "mask.maxObjectBytes",
                message: "must be at least 1".into(),
            });
        }
        Ok(Self {
            rules: Arc::new(Rules {
                config_map_keys: patterns("mask.configMapKeys", &config.config_map_keys)?,
                env_names: patterns("mask.envNames", &config.env_names)?,
                annotations: config.annotations.clone(),
            }),
            unmasked_subjects: config
                .unmasked_subjects
                .iter()
                .map(|s| WildMatch::new(s))
                .collect(),
            max_object_bytes: config.max_object_bytes,
        })
    }

    /// How to mask the response to this request for this user; `None` when it needs
    /// no masking (no rule covers the resource, the verb returns no objects, a
    /// subresource such as `log` or `exec`, or the user is in `unmaskedSubjects`).
    pub fn plan(&self, info: &RequestInfo, username: &str) -> Option<Plan> {
        if !info.is_resource_request || !RESOURCE_VERBS.contains(&info.verb.as_str()) {
            return None;
        }
        let target = self.target(info)?;
        if self.unmasked_subjects.iter().any(|g| g.matches(username)) {
            return None;
        }
        Some(Plan {
            rules: self.rules.clone(),
            target,
            watch: info.verb == "watch",
            resource: info.resource.to_string(),
            max_object_bytes: self.max_object_bytes,
        })
    }

    /// How to mask this request's body for the record: the same rules as responses,
    /// whoever the caller is, since records hold masked data only. `None` when no
    /// rule covers the resource.
    pub fn record_plan(&self, info: &RequestInfo) -> Option<Plan> {
        if !info.is_resource_request {
            return None;
        }
        Some(Plan {
            rules: self.rules.clone(),
            target: self.target(info)?,
            watch: false,
            resource: info.resource.to_string(),
            max_object_bytes: self.max_object_bytes,
        })
    }

    fn target(&self, info: &RequestInfo) -> Option<Target> {
        let (group, resource, sub) = (
            info.api_group.as_str(),
            info.resource.as_str(),
            info.subresource.as_str(),
        );
        // Secrets have no subresources; whatever the path, their answers are masked.
        if (group, resource) == ("", "secrets") {
            return Some(Target::Secret);
        }
        let whole_object = matches!(sub, "" | "status")
            || (resource == "pods" && matches!(sub, "ephemeralcontainers" | "resize"));
        if !whole_object {
            return None;
        }
        let rules = &self.rules;
        match ((group, resource), pod_spec_path(group, resource)) {
            (("", "configmaps"), _) if rules.config_map_keys.is_some() => Some(Target::ConfigMap),
            (_, Some(path)) if rules.env_names.is_some() => Some(Target::PodSpec(path)),
            _ if !rules.annotations.is_empty() => Some(Target::Other),
            _ => None,
        }
    }
}

/// Where a kind keeps its pod spec.
fn pod_spec_path(group: &str, resource: &str) -> Option<&'static [&'static str]> {
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    Some(match (group, resource) {
        ("", "pods") => &["spec"],
        ("", "podtemplates") => &["template", "spec"],
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("batch", "jobs") => TEMPLATE,
        ("batch", "cronjobs") => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

// === impl Plan ===

impl Plan {
    /// Whether the response is a watch stream.
    pub fn is_watch(&self) -> bool {
        self.watch
    }

    /// Masks one parsed object (a request body, say) in place. `false` when `value`
    /// is not an object (a JSON patch's array of operations): its values cannot be
    /// found by field, so it must not be kept.
    pub fn mask_object(&self, value: &mut serde_json::Value) -> bool {
        if !value.is_object() {
            return false;
        }
        rules::mask_value(&self.rules, self.target, value);
        true
    }

    /// Puts the stored values back where an object body (create, update, merge or
    /// strategic merge patch, server-side apply) carries kgate's placeholders.
    /// `stored`: the object as stored, `None` for one that does not exist yet.
    pub fn restore_object(
        &self,
        body: &mut serde_json::Value,
        stored: Option<&serde_json::Value>,
    ) -> Result<Restored, RestoreError> {
        restore::restore_object(&self.rules, self.target, body, stored)
    }

    /// The same for a JSON patch's values; also refuses operations that read masked
    /// fields (`test`, `copy`, `move`).
    pub fn restore_json_patch(
        &self,
        ops: &mut serde_json::Value,
        stored: &serde_json::Value,
    ) -> Result<Restored, RestoreError> {
        restore::restore_json_patch(&self.rules, self.target, ops, stored)
    }

    /// A scanner for this plan's response body (`watch`: an event stream).
    pub fn scanner(&self, watch: bool) -> Scanner {
        Scanner::new(
            self.rules.clone(),
            self.target,
            watch,
            self.max_object_bytes,
        )
    }
}
