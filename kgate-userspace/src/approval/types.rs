//! `KgateApproval`: one held request, written by the agent, decided by a human
//! (`kgate approve NAME`, `kgate deny NAME`, or `kubectl patch` of `spec.decision`).
//! The object is the state: an agent that restarts reads grants back from it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "kgate.io",
    version = "v1alpha1",
    kind = "KgateApproval",
    doc = "One request a kgate agent holds for a human decision: set spec.decision to approve or deny (kgate approve NAME, kgate deny NAME).",
    plural = "kgateapprovals",
    shortname = "kga",
    status = "KgateApprovalStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Verb","type":"string","jsonPath":".spec.request.verb"}"#,
    printcolumn = r#"{"name":"Resource","type":"string","jsonPath":".spec.request.resource"}"#,
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.request.name"}"#,
    printcolumn = r#"{"name":"Rule","type":"string","jsonPath":".spec.rule"}"#
)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KgateApprovalSpec {
    /// The verified caller.
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `pod NS/NAME/CONTAINER`, `host CGROUP` or `direct`.
    pub workload: String,
    /// The calling process: `comm (pid N, EXE)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The node whose agent holds the request.
    pub node: String,
    pub request: HeldRequest,
    /// The request body of a write (JSON/YAML as sent, up to 64 KiB; withheld for
    /// Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `policy/rule` that holds it.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// When the held request is refused if nobody decided (RFC 3339).
    pub expires_at: String,
    /// Set by a human: `approve` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// With `approve`: repeats of the same user, verb and resource pass for this long
    /// (`30s`, `10m`, `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// The request attributes of a held request.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeldRequest {
    pub verb: String,
    pub path: String,
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KgateApprovalStatus {
    /// `Pending`, `Approved`, `Denied`, `Expired` (nobody decided in time) or
    /// `Abandoned` (the client or the agent went away while it was held).
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Until when an approve-for grant lets repeats pass (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<String>,
}
