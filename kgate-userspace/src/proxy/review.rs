//! Access reviews told the truth: the answer to a `SelfSubjectAccessReview`
//! (`kubectl auth can-i`) or a `SelfSubjectRulesReview` (`kubectl auth can-i --list`)
//! comes from the API server, which knows RBAC and nothing of kgate. The review goes
//! upstream as any request (kgate's policy decides whether the caller may ask at
//! all); its answer is then read and kgate's own policy folded into it, for the same
//! caller (user, groups, pod labels, container, process) as a real request.
//!
//! A SelfSubjectAccessReview's `status`, when the API server allowed:
//!
//! - policy denies: `allowed: false`, `denied: true` (kgate's deny is an explicit
//!   deny, what `denied` means), `reason: "kgate: denied by policy RULE: …"`;
//! - policy holds for approval: still `allowed: true` (the request can be made), the
//!   reason saying that a human must approve it, then the API server's reason;
//! - shadow mode: `allowed` unchanged, the reason saying what enforce would do;
//! - policy allows: unchanged.
//!
//! When the API server did not allow, the answer is unchanged: kgate cannot grant
//! what RBAC refuses. The spec the API server echoes (what it evaluated) is the
//! question kgate answers; see [`crate::policy::review`] for wildcards.
//!
//! A SelfSubjectRulesReview lists what RBAC grants. kgate cannot subtract its policy
//! from those rules in general (a deny of one name, of one process, or a default deny
//! under an RBAC `*` has no RBAC rule form), and listing them unchanged would claim
//! more than the caller can do. So when policy may refuse or hold any of the caller's
//! requests, the answer says so where the API has room for it: `incomplete: true`
//! (the API's doc: "the rules returned by this call are incomplete. This is most
//! commonly encountered when an authorizer, such as an external authorizer, doesn't
//! support rules evaluation", which is kgate's case) and an `evaluationError` naming
//! kgate's deny and approve rules and default, which `kubectl auth can-i --list`
//! prints as a warning ("the list may be incomplete: …"). The rules stay the API
//! server's: they are still all that RBAC grants, and no more than that is possible.
//! A caller that policy refuses nothing gets the answer as is.
//!
//! Every answer kgate reads is JSON (the upstream is asked for it; a client that
//! accepts no JSON gets a 406). An answer that does not read as the review asked for
//! (not JSON, compressed, another kind, no `status.allowed`) is refused with a 502
//! Status, never passed on unmodified. Error answers (a Status: 4xx, 5xx) pass as they
//! are: they grant nothing.
//!
//! Not here: SubjectAccessReview and LocalSubjectAccessReview (questions about other
//! users, whose workloads and processes kgate cannot know).

#[cfg(test)]
mod tests;

use http::{
    HeaderMap, HeaderValue, Response,
    header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::record::Pending;
use crate::body::{self, Body};
use crate::{
    api_status::Status,
    mask,
    policy::{
        Caller, PolicySet,
        review::{self, Question},
        types::Action,
    },
    request_info::RequestInfo,
};

const GROUP: &str = "authorization.k8s.io";
/// The largest answer read; a rules review of a very privileged user is the largest.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// A self review whose answer kgate rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Review {
    Access,
    Rules,
}

/// Why an answer could not be read as the review asked for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("it is {0:?}, not JSON")]
    NotJson(String),
    #[error("it is compressed ({0})")]
    Compressed(String),
    #[error("reading it failed: {0}")]
    Read(String),
    #[error("it is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("it is a {found:?} of {api_version:?}, not a {expected}")]
    WrongKind {
        found: String,
        api_version: String,
        expected: &'static str,
    },
    #[error("it has no status.allowed")]
    NoAllowed,
    #[error("its status is not an object")]
    NoStatus,
    #[error("its spec has neither resourceAttributes nor nonResourceAttributes")]
    NoAttributes,
}

// === impl Review ===

impl Review {
    /// The review that `info` creates, if it is one kgate answers for.
    pub(crate) fn of(info: &RequestInfo) -> Option<Self> {
        if !info.is_resource_request
            || info.verb != "create"
            || info.api_group != GROUP
            || !info.subresource.is_empty()
        {
            return None;
        }
        match info.resource.as_str() {
            "selfsubjectaccessreviews" => Some(Self::Access),
            "selfsubjectrulesreviews" => Some(Self::Rules),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Access => "SelfSubjectAccessReview",
            Self::Rules => "SelfSubjectRulesReview",
        }
    }

    /// Asks the upstream for JSON (dropping `Accept-Encoding`), or refuses with a 406.
    pub(crate) fn negotiate(self, headers: &mut HeaderMap) -> Result<(), Status> {
        mask::accept_json(headers, |accept| {
            Status::not_acceptable(format!(
                "kgate: kgate adds its policy to the answers of {}s and reads them only as JSON, \
                 but this request accepts only {accept:?}; accept application/json (kubectl and client-go do)",
                self.kind()
            ))
        })
    }

    /// The API server's answer with kgate's policy for `caller` folded in (noted on
    /// `pending` for the record), or the 502 that refuses an unreadable one.
    pub(crate) async fn answer(
        self,
        policy: &PolicySet,
        caller: &Caller<'_>,
        pending: &Pending,
        response: Response<Body>,
    ) -> Result<Response<Body>, Status> {
        if !response.status().is_success() {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        let unreadable = |error: AnswerError| {
            Status::bad_gateway(format!(
                "kgate: the API server's answer to a {} cannot be read, so it is not passed on: {error}",
                self.kind()
            ))
        };
        let header = |name| {
            parts
                .headers
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let media = header(CONTENT_TYPE).unwrap_or_default();
        if !media
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        {
            return Err(unreadable(AnswerError::NotJson(media)));
        }
        if let Some(encoding) = header(CONTENT_ENCODING).filter(|e| e != "identity") {
            return Err(unreadable(AnswerError::Compressed(encoding)));
        }
        let bytes = read(body).await.map_err(unreadable)?;
        let mut review: Value =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(AnswerError::Malformed(e)))?;
        let note = self.fold(&mut review, policy, caller).map_err(unreadable)?;
        pending.reviewed(note);
        let bytes = serde_json::to_vec(&review).expect("a JSON value serializes");
        parts.headers.insert(CONTENT_LENGTH, bytes.len().into());
        Ok(Response::from_parts(parts, body::full(bytes)))
    }

    /// Rewrites the answer `review` in place; what kgate made of it, for the record.
    pub(crate) fn fold(
        self,
        review: &mut Value,
        policy: &PolicySet,
        caller: &Caller<'_>,
    ) -> Result<String, AnswerError> {
        let (kind, api_version) = (
            review["kind"].as_str().unwrap_or_default(),
            review["apiVersion"].as_str().unwrap_or_default(),
        );
        if kind != self.kind() || !api_version.starts_with("authorization.k8s.io/") {
            return Err(AnswerError::WrongKind {
                found: kind.to_owned(),
                api_version: api_version.to_owned(),
                expected: self.kind(),
            });
        }
        if !review["status"].is_object() {
            return Err(AnswerError::NoStatus);
        }
        match self {
            Self::Access => fold_access(review, policy, caller),
            Self::Rules => Ok(fold_rules(review, policy, caller)),
        }
    }
}

/// The whole answer, up to [`MAX_ANSWER_BYTES`].
async fn read(mut body: Body) -> Result<Vec<u8>, AnswerError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AnswerError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_ANSWER_BYTES {
                return Err(AnswerError::Read(format!(
                    "it is over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn fold_access(
    review: &mut Value,
    policy: &PolicySet,
    caller: &Caller<'_>,
) -> Result<String, AnswerError> {
    let allowed = review["status"]["allowed"]
        .as_bool()
        .ok_or(AnswerError::NoAllowed)?;
    let question = question(&review["spec"])?;
    if !allowed {
        return Ok("unchanged: the API server does not allow it".to_owned());
    }
    let decision = review::decide(policy, caller, &question);
    let source = &decision.source;
    let status = &mut review["status"];
    let upstream = status["reason"].as_str().unwrap_or_default().to_owned();
    let then_upstream = |kgate: String| {
        if upstream.is_empty() {
            kgate
        } else {
            format!("{kgate}; {upstream}")
        }
    };
    let because = |message: &Option<String>| match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    };
    Ok(match (decision.action, decision.shadowed) {
        (Action::Deny, _) => {
            let why = decision.message.clone().unwrap_or_else(|| {
                let user = caller.user.map_or("", |u| u.username.as_str());
                format!("{user} may not {}", question.describe())
            });
            status["allowed"] = json!(false);
            status["denied"] = json!(true);
            status["reason"] = json!(format!("kgate: denied by policy {source}: {why}"));
            format!("allowed -> denied by {source}")
        }
        (Action::Approve, _) => {
            status["reason"] = json!(then_upstream(format!(
                "kgate: held for approval by policy {source}: each such request waits until a human approves it"
            )));
            format!("allowed, held for approval by {source}")
        }
        (Action::Allow, Some(would)) => {
            let (what, verb) = if would == Action::Deny {
                ("would deny this", "deny")
            } else {
                ("would hold this for approval", "hold")
            };
            status["reason"] = json!(then_upstream(format!(
                "kgate (shadow mode): policy {source} {what}{}; shadow mode lets it pass",
                because(&decision.message)
            )));
            format!("allowed, shadow: would {verb} by {source}")
        }
        (Action::Allow, None) => format!("unchanged: allowed by {source}"),
    })
}

/// See the module docs for why a rules review is marked incomplete rather than cut.
fn fold_rules(review: &mut Value, policy: &PolicySet, caller: &Caller<'_>) -> String {
    let found = review::restrictions(policy, caller);
    if found.is_empty() {
        return "unchanged: kgate's policy refuses this caller nothing".to_owned();
    }
    let note = format!(
        "kgate: these rules are the API server's alone; kgate's policy also decides every request \
         and may refuse or hold what they allow ({}); `kubectl auth can-i VERB RESOURCE` answers with both",
        found.join(", ")
    );
    let status = &mut review["status"];
    let error = match status["evaluationError"].as_str() {
        Some(e) if !e.is_empty() => format!("{e}; {note}"),
        _ => note,
    };
    status["evaluationError"] = json!(error);
    status["incomplete"] = json!(true);
    format!("incomplete: {} kgate restrictions noted", found.len())
}

/// The question a review's spec asks, as the API server read it.
fn question(spec: &Value) -> Result<Question, AnswerError> {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let object = |key| spec.get(key).filter(|v| v.is_object());
    if let Some(r) = object("resourceAttributes") {
        Ok(Question::resource(
            &text(r, "verb"),
            &text(r, "group"),
            &text(r, "resource"),
            &text(r, "subresource"),
            &text(r, "namespace"),
            &text(r, "name"),
        ))
    } else if let Some(n) = object("nonResourceAttributes") {
        Ok(Question::non_resource(&text(n, "verb"), &text(n, "path")))
    } else {
        Err(AnswerError::NoAttributes)
    }
}
