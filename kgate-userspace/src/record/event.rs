//! The record itself: a Kubernetes `audit.k8s.io/v1` `Event`, so that tools that read
//! API-server audit logs read kgate's, with kgate's own facts as `kgate.io/*`
//! annotations.
//!
//! Levels `Metadata` and `Request` (the request's body as `requestObject`, see
//! [`super::request_object`]), and the response body at `RequestResponse`.

use std::{borrow::Cow, collections::BTreeMap, fmt, net::IpAddr};

use jiff::{
    Timestamp,
    fmt::{StdFmtWrite, temporal::DateTimePrinter},
};
use serde::{Deserialize, Serialize, Serializer};

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
    MicroTime(ts).to_string()
}

/// A timestamp that prints as a `MicroTime` ([`micro_time`]) without a `String` of
/// its own.
#[derive(Clone, Copy, Debug)]
pub struct MicroTime(pub Timestamp);

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DateTimePrinter::new()
            .precision(Some(6))
            .print_timestamp(&self.0, StdFmtWrite(f))
            .map_err(|_| fmt::Error)
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The user of an event whose caller is unknown (a request refused before identify).
static NOBODY: UserInfo = UserInfo {
    username: String::new(),
    uid: String::new(),
    groups: Vec::new(),
    extra: BTreeMap::new(),
};

/// An [`Event`] that borrows what the request path already holds, for writing it:
/// a request's records are serialized from this, without copying the user, the URI
/// or the attributes into an `Event` first. It serializes exactly as the `Event`
/// [`EventRef::to_owned`] makes of it (`kind` first too, for [`is_audit_event`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRef<'a> {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub level: &'static str,
    #[serde(rename = "auditID")]
    pub audit_id: &'a str,
    pub stage: &'static str,
    #[serde(rename = "requestURI")]
    pub request_uri: &'a str,
    pub verb: &'a str,
    pub user: &'a UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<&'a UserInfo>,
    #[serde(rename = "sourceIPs")]
    pub source_ips: [IpAddr; 1],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRefRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatusRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
    pub request_received_timestamp: MicroTime,
    pub stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<&'static str, Cow<'a, str>>,
}

/// [`ObjectRef`], borrowed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRefRef<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub api_group: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub api_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub subresource: &'a str,
}

/// [`ResponseStatus`], borrowed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatusRef<'a> {
    pub code: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub message: &'a str,
}

// === impl EventRef ===

impl<'a> EventRef<'a> {
    /// The user of the event: the caller, or no one.
    pub fn user_or_nobody(user: Option<&'a UserInfo>) -> &'a UserInfo {
        user.unwrap_or(&NOBODY)
    }

    /// The owned `Event` that serializes as this does.
    pub fn to_owned(&self) -> Event {
        Event {
            kind: self.kind.to_owned(),
            api_version: self.api_version.to_owned(),
            level: self.level.to_owned(),
            audit_id: self.audit_id.to_owned(),
            stage: self.stage.to_owned(),
            request_uri: self.request_uri.to_owned(),
            verb: self.verb.to_owned(),
            user: self.user.clone(),
            impersonated_user: self.impersonated_user.cloned(),
            source_ips: self.source_ips.iter().map(ToString::to_string).collect(),
            user_agent: self.user_agent.to_owned(),
            object_ref: self.object_ref.as_ref().map(|o| ObjectRef {
                resource: o.resource.to_owned(),
                namespace: o.namespace.to_owned(),
                name: o.name.to_owned(),
                api_group: o.api_group.to_owned(),
                api_version: o.api_version.to_owned(),
                subresource: o.subresource.to_owned(),
            }),
            response_status: self.response_status.as_ref().map(|s| ResponseStatus {
                code: s.code,
                status: s.status.to_owned(),
                reason: s.reason.to_owned(),
                message: s.message.to_owned(),
            }),
            request_object: self.request_object.clone(),
            response_object: None,
            request_received_timestamp: self.request_received_timestamp.to_string(),
            stage_timestamp: self.stage_timestamp.to_string(),
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone().into_owned()))
                .collect(),
        }
    }

    /// The event as a log record.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// An event (owned or borrowed) as a log record.
fn to_json(event: &impl Serialize) -> Vec<u8> {
    // The size of a typical event, so that the buffer grows once at most.
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, event).expect("an event always serializes");
    out
}

// === impl Event ===

impl Event {
    /// The event as a log record.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

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
    fn an_event_ref_serializes_as_the_event_made_of_it() {
        let user = UserInfo {
            username: "system:serviceaccount:ci:bot".into(),
            uid: "u-1".into(),
            groups: vec!["system:authenticated".into(), "a\"quoted\"group".into()],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/pod-uid".into(),
                vec!["p".into()],
            )]),
        };
        let acting = UserInfo {
            username: "jane".into(),
            ..UserInfo::default()
        };
        let at: Timestamp = "2026-12-05T20:01:02.003004Z".parse().unwrap();
        let full = EventRef {
            kind: "Event",
            api_version: API_VERSION,
            level: LEVEL_REQUEST,
            audit_id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            stage: STAGE_COMPLETE,
            request_uri: "/api/v1/namespaces/ci/pods?labelSelector=a%3Db",
            verb: "list",
            user: &user,
            impersonated_user: Some(&acting),
            source_ips: ["fd00::1".parse().unwrap()],
            user_agent: "kubectl/v1.34 (linux/amd64)",
            object_ref: Some(ObjectRefRef {
                resource: "pods",
                namespace: "ci",
                name: "",
                api_group: "",
                api_version: "v1",
                subresource: "",
            }),
            response_status: Some(ResponseStatusRef {
                code: 403,
                status: "Failure",
                reason: "Forbidden",
                message: "kgate: no \"rule\"\n",
            }),
            request_object: Some(serde_json::json!({"a": [1, "b"]})),
            request_received_timestamp: MicroTime(at),
            stage_timestamp: MicroTime(at),
            annotations: BTreeMap::from([
                (RULE, Cow::Borrowed("policy/ci-bot#2")),
                (LATENCY_US, Cow::Owned("123".to_owned())),
                (CONNECTION, Cow::Borrowed("c-1")),
            ]),
        };
        let minimal = EventRef {
            user: EventRef::user_or_nobody(None),
            impersonated_user: None,
            source_ips: ["127.0.0.1".parse().unwrap()],
            user_agent: "",
            object_ref: None,
            response_status: None,
            request_object: None,
            annotations: BTreeMap::new(),
            ..full
        };
        for event in [&full, &minimal] {
            let owned = event.to_owned();
            assert_eq!(event.to_json(), serde_json::to_vec(&owned).unwrap());
            assert!(is_audit_event(&event.to_json()));
        }
        assert_eq!(
            full.to_owned().request_received_timestamp,
            "2026-12-05T20:01:02.003004Z"
        );
        assert_eq!(full.to_owned().source_ips, ["fd00::1"]);
    }

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
