//! The record itself: a Kubernetes `audit.k8s.io/v1` `Event`, so that tools that read
//! API-server audit logs read kgate's, with kgate's own facts as `kgate.io/*`
//! annotations.
//!
//! Levels `Metadata` and `Request` (the request's body as `requestObject`, see
//! [`super::request_object`]), and the response body at `RequestResponse`.

use std::collections::BTreeMap;

use jiff::{Timestamp, fmt::temporal::DateTimePrinter};
use serde::{Deserialize, Serialize};

use crate::identity::UserInfo;

pub const API_VERSION: &str = "audit.k8s.io/v1";
pub const LEVEL_METADATA: &str = "Metadata";
pub const LEVEL_REQUEST: &str = "Request";
pub const LEVEL_REQUEST_RESPONSE: &str = "RequestResponse";
pub const STAGE_RECEIVED: &str = "RequestReceived";
pub const STAGE_STARTED: &str = "ResponseStarted";
pub const STAGE_COMPLETE: &str = "ResponseComplete";

/// Annotation keys.
pub const POD: &str = "kgate.io/pod";
pub const CONTAINER: &str = "kgate.io/container";
pub const PROCESS: &str = "kgate.io/process";
pub const EXE: &str = "kgate.io/exe";
pub const WORKLOAD: &str = "kgate.io/workload";
pub const DECISION: &str = "kgate.io/decision";
pub const RULE: &str = "kgate.io/rule";
pub const WOULD: &str = "kgate.io/would";
pub const APPROVAL: &str = "kgate.io/approval";
pub const LATENCY_US: &str = "kgate.io/latency-us";
pub const BINDING: &str = "kgate.io/binding";
/// On a refusal of a pod-bound token's binding (a stolen token): the pod the token is
/// bound to (`ns/name`) and its UID, beside the connection's own (`kgate.io/pod`).
pub const TOKEN_POD: &str = "kgate.io/token-pod";
pub const TOKEN_POD_UID: &str = "kgate.io/token-pod-uid";
pub const CONNECTION: &str = "kgate.io/connection";
/// The OIDC issuer that vouched for the caller (gateway mode).
pub const ISSUER: &str = "kgate.io/issuer";
/// The masked fields of a write whose placeholders kgate replaced by the stored values
/// (JSON pointers, comma-separated; values are never recorded).
pub const RESTORED: &str = "kgate.io/restored";
/// What kgate changed in an access review's answer (`allowed -> denied by RULE`).
pub const REVIEW: &str = "kgate.io/review";
/// At level `Request`, why an event of a request with a body has no `requestObject`.
pub const REQUEST_OBJECT: &str = "kgate.io/request-object";
/// Why an event at level `RequestResponse` has no `responseObject`.
pub const RESPONSE_OBJECT: &str = "kgate.io/response-object";

/// Whether a serialized log record is an audit [`Event`] (the log holds other kinds
/// too, such as captured stream frames, which audit consumers must not get). Exact for
/// the records kgate writes: an `Event` serializes `kind` first.
pub fn is_audit_event(record: &[u8]) -> bool {
    record.starts_with(br#"{"kind":"Event","#)
}

/// An `audit.k8s.io/v1` `Event`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    /// The verified caller.
    pub user: UserInfo,
    /// Whom the caller acted as through `Impersonate-*` headers, as the API server's
    /// audit events record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", default)]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// At level `Request`: the request's body, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
    /// At level `RequestResponse`: the response's body as the client got it, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<serde_json::Value>,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The part of a `meta/v1` `Status` an audit event carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    pub code: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `MicroTime`: RFC 3339 in UTC with microseconds, as the API server writes it.
pub fn micro_time(ts: Timestamp) -> String {
    DateTimePrinter::new()
        .precision(Some(6))
        .timestamp_to_string(&ts)
}

// === impl Event ===

impl Event {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// When the request was received, parsed back.
    pub fn received(&self) -> Option<Timestamp> {
        self.request_received_timestamp.parse().ok()
    }

    /// What the request was about, as a timeline shows it: `pods/web -n demo`,
    /// `secrets -n demo`, `deployments.apps/web/scale -n demo`, `/version`.
    pub fn what(&self) -> String {
        use std::fmt::Write as _;
        let Some(o) = &self.object_ref else {
            return self.request_uri.split('?').next().unwrap_or("").to_owned();
        };
        let mut s = o.resource.clone();
        if !o.api_group.is_empty() {
            let _ = write!(s, ".{}", o.api_group);
        }
        if !o.name.is_empty() {
            let _ = write!(s, "/{}", o.name);
        }
        if !o.subresource.is_empty() {
            let _ = write!(s, "/{}", o.subresource);
        }
        if !o.namespace.is_empty() {
            let _ = write!(s, " -n {}", o.namespace);
        }
        s
    }

    pub fn code(&self) -> Option<u16> {
        self.response_status.as_ref().map(|s| s.code)
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;
    use crate::record::stream::StreamChunk;

    #[test]
    fn audit_events_are_told_from_other_records() {
        let event = Event {
            kind: "Event".to_owned(),
            api_version: API_VERSION.to_owned(),
            ..Event::default()
        };
        assert!(is_audit_event(&serde_json::to_vec(&event).unwrap()));
        let chunk = StreamChunk {
            kind: crate::record::stream::KIND.to_owned(),
            ..StreamChunk::default()
        };
        assert!(!is_audit_event(&serde_json::to_vec(&chunk).unwrap()));
        assert!(!is_audit_event(b"not json"));
    }
}
