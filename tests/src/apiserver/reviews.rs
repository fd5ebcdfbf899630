//! The self-review APIs that `kubectl auth whoami` and `kubectl auth can-i` call:
//! SelfSubjectReview (who am I, after impersonation), SelfSubjectAccessReview and
//! SelfSubjectRulesReview. The double authorizes everything, so every access review
//! is allowed and the rules are `*`; a real cluster's answers depend on its RBAC.
//!
//! SubjectAccessReview (for another user, as the kubelet and kgate's admin endpoint
//! ask): allowed, except for users a test said to refuse.
//!
//! Not here: LocalSubjectAccessReview.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Body, Req, json_response, resources::Resource};

/// Answers a review POSTed to `r`.
pub fn answer(r: &Resource, req: &Req) -> hyper::Response<Body> {
    let body = match req.decode_body() {
        Ok(body) => body,
        Err(response) => return response,
    };
    let answer = match r.name {
        "selfsubjectreviews" => json!({"userInfo": effective_user(req)}),
        "selfsubjectaccessreviews" => {
            json!({"allowed": true, "reason": "the API-server double authorizes every request"})
        }
        _ => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
    };
    let mut review = json!({
        "kind": r.kind, "apiVersion": r.api_version(),
        "metadata": {"creationTimestamp": super::store::now()},
        "status": answer,
    });
    if !body["spec"].is_null() {
        review["spec"] = body["spec"].clone();
    }
    json_response(StatusCode::CREATED, &review)
}

/// The requester, or whom it impersonates (`Impersonate-User`, `-Group`, `-Uid`,
/// `-Extra-*`): with no authorization, every impersonation is allowed.
fn effective_user(req: &Req) -> Value {
    let Some(name) = req.header("impersonate-user") else {
        return req.user.clone();
    };
    let mut groups: Vec<&str> = req
        .headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !groups.contains(&"system:authenticated") {
        groups.push("system:authenticated");
    }
    let mut extra = serde_json::Map::new();
    for (key, value) in &req.headers {
        if let Some(k) = key.as_str().strip_prefix("impersonate-extra-") {
            // Keys travel percent-encoded in header names (`%2f` for `/`).
            let k = form_urlencoded::parse(format!("k={k}").as_bytes())
                .next()
                .map_or_else(|| k.to_owned(), |(_, v)| v.into_owned());
            let values = extra.entry(k).or_insert_with(|| json!([]));
            if let (Some(list), Ok(v)) = (values.as_array_mut(), value.to_str()) {
                list.push(json!(v));
            }
        }
    }
    let mut user = json!({"username": name, "groups": groups});
    if let Some(uid) = req.header("impersonate-uid") {
        user["uid"] = json!(uid);
    }
    if !extra.is_empty() {
        user["extra"] = Value::Object(extra);
    }
    user
}

/// A SubjectAccessReview: allowed unless `spec.user` is in `denied`.
pub fn subject_access(
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
