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
//! ask): allowed, except for users a test said to refuse.
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

/// A SubjectAccessReview: allowed unless `spec.user` is in `denied`.
pub(crate) fn subject_access(
    denied: &std::collections::HashSet<String>,
    r: &Resource,
    req: &Req,
) -> hyper::Response<Body> {
    let body = match req.decode_body() {
        Ok(body) => body,
        Err(response) => return response,
    };
    let user = body["spec"]["user"].as_str().unwrap_or_default();
    let status = if denied.contains(user) {
        json!({"allowed": false, "reason": format!("the double denies {user}")})
    } else {
        json!({"allowed": true, "reason": "the API-server double authorizes every request"})
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"creationTimestamp": super::store::now()},
                "spec": body["spec"], "status": status}),
    )
}
