//! The self-review APIs that `kubectl auth whoami` and `kubectl auth can-i` call:
//! SelfSubjectReview (who am I, after impersonation), SelfSubjectAccessReview and
//! SelfSubjectRulesReview.
//!
//! The double's RBAC grants every user everything (one `cluster-admin` binding to
//! `system:authenticated`), except what a test refused a user
//! ([`super::Handle::refuse_access`]). A SelfSubjectAccessReview answers as
//! kube-apiserver's `selfsubjectaccessreview` REST storage does with the RBAC
//! authorizer behind it (pkg/registry/authorization/selfsubjectaccessreview/rest.go,
//! plugin/pkg/auth/authorizer/rbac/rbac.go): 201 Created, the spec echoed,
//! `metadata.creationTimestamp` null (the review is never stored), and a status of
//! `allowed: true` with RBAC's reason (`RBAC: allowed by ClusterRoleBinding …`), or
//! `allowed: false` alone: RBAC has no deny, so a refusal is "no opinion" (no
//! `denied`, and no reason). A spec with neither or both attribute kinds is a 422, as
//! `ValidateSelfSubjectAccessReviewSpec` says. A question with `*` (every verb, every
//! resource) is refused when any refusal falls inside it, as RBAC grants `*` only to
//! a rule that says `*`.
//!
//! SelfSubjectRulesReview lists the one `*` rule (refusals cannot be written as RBAC
//! rules, which only grant); its answer carries no spec, as the REST storage builds a
//! new object with only a status, and it needs `spec.namespace` (400 without).
//!
//! SubjectAccessReview (for another user, as the kubelet and kgate's admin endpoint
//! ask): validated, then answered by the same RBAC for `spec.user` ([`subject_access`]).
//!
//! Not here: LocalSubjectAccessReview, selector attributes.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Body, Req, json_response, resources::Resource, status};

/// RBAC's reason for everything the double allows: the binding that grants it.
const RBAC_ALLOWED: &str = "RBAC: allowed by ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to Group \"system:authenticated\"";

/// What RBAC does not grant one user: `verb` on `resource` (any group, namespace and
/// name).
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub user: String,
    pub verb: String,
    pub resource: String,
}

/// Answers a review POSTed to `r`.
pub(crate) fn answer(refused: &[Refusal], r: &Resource, req: &Req) -> hyper::Response<Body> {
    let body = match req.decode_body() {
        Ok(body) => body,
        Err(response) => return response,
    };
    let spec = &body["spec"];
    let answer = match r.name {
        "selfsubjectreviews" => json!({"userInfo": req.user}),
        "selfsubjectaccessreviews" => match access(refused, req, spec) {
            Ok(status) => status,
            Err(response) => return response,
        },
        _ => {
            if spec["namespace"].as_str().is_none_or(str::is_empty) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "no namespace on request",
                );
            }
            json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            })
        }
    };
    // Reviews are not stored: the zero creationTimestamp serializes as null.
    let mut review = json!({
        "kind": r.kind, "apiVersion": r.api_version(),
        "metadata": {"creationTimestamp": null},
        "spec": {},
        "status": answer,
    });
    if r.name != "selfsubjectrulesreviews" && !spec.is_null() {
        review["spec"] = spec.clone();
    }
    json_response(StatusCode::CREATED, &review)
}

/// A SelfSubjectAccessReview's status for the (effective) requester, or the 422.
fn access(refused: &[Refusal], req: &Req, spec: &Value) -> Result<Value, hyper::Response<Body>> {
    let (resource, non_resource) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let invalid = |field: &str, why: &str| {
        status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.{field}: Invalid value: \"null\": {why}"
            ),
        )
    };
    if !resource.is_null() && !non_resource.is_null() {
        return Err(invalid(
            "nonResourceAttributes",
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if resource.is_null() && non_resource.is_null() {
        return Err(invalid(
            "resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    // The impersonation filter has already made the requester whom it acts as.
    let user = req.user["username"].as_str().unwrap_or_default();
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let (verb, asked) = if resource.is_null() {
        (field(non_resource, "verb"), None)
    } else {
        (field(resource, "verb"), Some(field(resource, "resource")))
    };
    // RBAC matches `*` in a question only to a rule that grants `*`: a question about
    // every verb (or resource) is refused when any one of them is.
    let covers = |asked: &str, refused: &str| asked == refused || asked == "*";
    let no = refused.iter().any(|r| {
        r.user == user
            && covers(&verb, &r.verb)
            && asked.as_deref().is_some_and(|a| covers(a, &r.resource))
    });
    Ok(if no {
        json!({"allowed": false})
    } else {
        json!({"allowed": true, "reason": RBAC_ALLOWED})
    })
}

/// A SubjectAccessReview, the question asked for another user (the kubelet's and
/// kgate's admin endpoints ask it for their callers, `kgate check` for kgate's own
/// service account). As kube-apiserver's `subjectaccessreview` REST storage
/// (pkg/registry/authorization/subjectaccessreview/rest.go): the spec validated as
/// `ValidateSubjectAccessReviewSpec` says (exactly one of the attribute kinds; a user
/// or a group; else a 422 `Invalid`), then the authorizer asked about `spec.user`,
/// and the review returned with its status, 201, never stored (a null
/// `creationTimestamp`). The double's RBAC answers as for a SelfSubjectAccessReview:
/// allowed but for what a test refused that user ([`super::Handle::refuse_access`]);
/// users a test denies outright ([`super::Handle::deny_access_reviews_for`]) get
/// nothing.
pub(crate) fn subject_access(
    denied: &std::collections::HashSet<String>,
    refused: &[Refusal],
    r: &Resource,
    req: &Req,
) -> hyper::Response<Body> {
    let body = match req.decode_body() {
        Ok(body) => body,
        Err(response) => return response,
    };
    let spec = &body["spec"];
    let (resource, non_resource) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    // (field, the value as Go's field.Invalid prints it, why). Both attribute errors
    // pass the NonResourceAttributes pointer: a struct prints as `%#v`, nil as "null".
    let mut causes = Vec::new();
    if !resource.is_null() && !non_resource.is_null() {
        causes.push((
            "spec.nonResourceAttributes",
            format!(
                "authorization.NonResourceAttributes{{Path:{:?}, Verb:{:?}}}",
                non_resource["path"].as_str().unwrap_or_default(),
                non_resource["verb"].as_str().unwrap_or_default()
            ),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if resource.is_null() && non_resource.is_null() {
        causes.push((
            "spec.resourceAttributes",
            "\"null\"".to_owned(),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let user = spec["user"].as_str().unwrap_or_default();
    let no_groups = spec["groups"].as_array().is_none_or(Vec::is_empty);
    if user.is_empty() && no_groups {
        causes.push((
            "spec.user",
            "\"\"".to_owned(),
            "at least one of user or group must be specified",
        ));
    }
    if !causes.is_empty() {
        let message = causes
            .iter()
            .map(|(field, value, why)| format!("{field}: Invalid value: {value}: {why}"))
            .collect::<Vec<_>>();
        let message = if message.len() == 1 {
            message[0].clone()
        } else {
            format!("[{}]", message.join(", "))
        };
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("SubjectAccessReview.authorization.k8s.io \"\" is invalid: {message}"),
        );
    }
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    // A non-resource question is refused by a refusal naming its path.
    let (verb, asked) = if resource.is_null() {
        (field(non_resource, "verb"), field(non_resource, "path"))
    } else {
        let sub = field(resource, "subresource");
        let name = field(resource, "resource");
        let asked = if sub.is_empty() {
            name
        } else {
            format!("{name}/{sub}")
        };
        (field(resource, "verb"), asked)
    };
    let covers = |asked: &str, refused: &str| asked == refused || asked == "*";
    let no = denied.contains(user)
        || refused
            .iter()
            .any(|r| r.user == user && covers(&verb, &r.verb) && covers(&asked, &r.resource));
    let status = if no {
        json!({"allowed": false})
    } else {
        json!({"allowed": true, "reason": RBAC_ALLOWED})
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"creationTimestamp": null},
                "spec": spec, "status": status}),
    )
}
