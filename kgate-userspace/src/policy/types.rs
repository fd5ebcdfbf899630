//! The policy as users write it: the `KgatePolicy` custom resource (cluster-scoped,
//! group `kgate.io`), also the document format of a policy file. The CRD YAML in
//! deploy/ is generated from these types (`cargo xtask crds`).
//!
//! Everything here is plain data; [`super::compile`] validates it and builds matchers.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Ordered rules for a set of subjects, a default action for the requests of those
/// subjects that no rule matches, and a mode.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "kgate.io",
    version = "v1alpha1",
    kind = "KgatePolicy",
    doc = "A kgate policy: for these subjects, these rules, a default action and a mode. The most specific matching rule of every policy decides.",
    plural = "kgatepolicies",
    shortname = "kgp",
    status = "KgatePolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Default","type":"string","jsonPath":".spec.defaultAction"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.valid"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct KgatePolicySpec {
    /// `enforce` (default) or `shadow`: decisions are recorded as "would deny" /
    /// "would hold" and the requests pass.
    #[serde(default)]
    pub mode: Mode,
    /// Whom the policy is about. Empty: everyone kgate sees.
    #[serde(default)]
    pub subjects: Subjects,
    /// What happens to the subjects' requests that no rule of any policy matches.
    /// Default: none (the next policy's default, then the agent's global default,
    /// deny).
    #[serde(default)]
    pub default_action: Option<DefaultAction>,
    /// The rules. Precedence across every policy: the most specific matching rule
    /// decides; among equally specific ones, deny wins over approve over allow.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Mode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DefaultAction {
    Allow,
    Deny,
}

/// One rule: for these subjects (narrowing the policy's), these requests, this action.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Rule {
    /// Unique within the policy; named in denials, approvals and records.
    pub name: String,
    #[serde(default)]
    pub subjects: Subjects,
    #[serde(rename = "match", default)]
    pub matches: RequestMatch,
    pub action: Action,
    /// For `deny`: the message the client sees (after "kgate: denied by …").
    #[serde(default)]
    pub message: Option<String>,
    /// For `approve`: who may decide and how long the request is held.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// For `allow` and `approve`: the responses of the matched requests are not
    /// masked (an unmasked read granted to these subjects for these resources).
    /// Default `false`: Secret values and the agent's mask rules apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmasked: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Action {
    #[default]
    Allow,
    Deny,
    Approve,
}

impl Action {
    /// The action as policies spell it (`allow`, `deny`, `approve`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Approve => "approve",
        }
    }
}

/// Who a policy or rule is about. Each non-empty field must match (AND); within a
/// field any entry may (OR). Globs use `*` and `?`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Subjects {
    /// Usernames, e.g. `system:serviceaccount:ci:*` or `kubernetes-admin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Service accounts as `NAMESPACE/NAME` globs, e.g. `ci/deployer-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Groups of the user, e.g. `system:serviceaccounts:ci`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Labels of the calling pod (only pod clients match a selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Names of the calling container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// `comm` of the calling process, as the kernel saw it, e.g. `kubectl`, `python3`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Which requests a rule is about, in the API server's authorization attributes.
/// Empty fields match anything; globs use `*`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestMatch {
    /// Kubernetes verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`, plus the lowercase HTTP methods of non-resource
    /// requests) or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, with subresources as `pods/exec`; `pods/*` is every subresource of
    /// pods, `*/scale` the scale subresource of anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/version`, `/apis*`). A rule with these
    /// matches only non-resource requests; one without, only resource requests.
    #[serde(
        rename = "nonResourceURLs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// How a held request is decided.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Approval {
    /// Users or groups (informational for `kgate approvals list`; RBAC on
    /// `kgateapprovals` decides who can approve).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// How long the request is held before it is refused. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Names of the agent's notification targets (`approval.notify` in its config) to
    /// tell of this rule's held requests, instead of all of them; `[]` for none.
    /// Default: every configured target. Names, never URLs: a policy is readable by
    /// more people than the webhooks' secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
}

/// What the agent reports about a policy object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KgatePolicyStatus {
    /// `True` when the last seen generation compiled, `False` when it was rejected
    /// (the previous good version stays in force).
    pub valid: String,
    /// The rejection, with its location, when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
