//! The impersonation filter, as kube-apiserver's (k8s.io/apiserver
//! `pkg/endpoints/filters/impersonation/impersonation.go`, `WithImpersonation`):
//!
//! - `Impersonate-User` names a user, or a service account when it is
//!   `system:serviceaccount:NS:NAME`; `Impersonate-Group`, `-Uid` or `-Extra-*` without
//!   it is a 400 (`requested … without impersonating a user`);
//! - each part is authorized for the requester with verb `impersonate`: `users`,
//!   `serviceaccounts` (in NS), `groups` (core group), `userextras` with the key as
//!   subresource and `uids` (group `authentication.k8s.io`); the first refusal is a 403
//!   in `responsewriters.Forbidden`'s words;
//! - the request is then handled as the impersonated user: the groups asked for (a
//!   service account's own without any), `system:authenticated` added unless
//!   `system:authenticated` or `system:unauthenticated` is among them, the extras
//!   (keys percent-decoded) and the UID; the impersonation headers are removed.
//!
//! The double's RBAC grants every user everything, so every impersonation is allowed,
//! except what a test refused a requester with [`crate::Handle::refuse_access`] (verb
//! `impersonate` on a resource).

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::{Body, Req, reviews, status};

const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// One thing impersonated: the authorization question it makes.
struct Part {
    api_group: &'static str,
    resource: &'static str,
    subresource: String,
    namespace: String,
    name: String,
}

/// Applies the filter: `Ok` with the user the request is handled as (the requester's
/// own when it impersonates no one), or the 400/403 answer.
pub(crate) fn apply(
    refusals: &[reviews::Refusal],
    req: &mut Req,
    requester: Value,
) -> Result<Value, hyper::Response<Body>> {
    let header = |name: &str| req.header(name).map(str::to_owned);
    let username = header("impersonate-user").unwrap_or_default();
    let groups: Vec<String> = req
        .headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let uid = header("impersonate-uid").unwrap_or_default();
    let mut extra: Vec<(String, String)> = Vec::new();
    for (name, value) in &req.headers {
        if let (Some(key), Ok(value)) = (
            name.as_str().strip_prefix("impersonate-extra-"),
            value.to_str(),
        ) {
            extra.push((unescape(key), value.to_owned()));
        }
    }
    if username.is_empty() {
        if groups.is_empty() && extra.is_empty() && uid.is_empty() {
            return Ok(requester);
        }
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "requested groups {groups:?}, extra {extra:?}, uid {uid:?} without impersonating a user"
            ),
        ));
    }

    let service_account = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
    let mut parts = vec![match service_account {
        Some((ns, name)) => Part::core("serviceaccounts", ns, name),
        None => Part::core("users", "", &username),
    }];
    parts.extend(groups.iter().map(|g| Part::core("groups", "", g)));
    parts.extend(extra.iter().map(|(key, value)| Part {
        api_group: AUTHENTICATION_GROUP,
        resource: "userextras",
        subresource: key.clone(),
        namespace: String::new(),
        name: value.clone(),
    }));
    if !uid.is_empty() {
        parts.push(Part {
            api_group: AUTHENTICATION_GROUP,
            resource: "uids",
            subresource: String::new(),
            namespace: String::new(),
            name: uid.clone(),
        });
    }
    let who = requester["username"].as_str().unwrap_or_default();
    for part in &parts {
        let refused = refusals
            .iter()
            .any(|r| r.user == who && r.verb == "impersonate" && r.resource == part.resource);
        if refused {
            return Err(part.forbidden(who));
        }
    }

    let mut acting_groups = groups.clone();
    if acting_groups.is_empty()
        && let Some((ns, _)) = service_account
    {
        acting_groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if !acting_groups
        .iter()
        .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
    {
        acting_groups.push("system:authenticated".to_owned());
    }
    let mut user = json!({"username": username, "groups": acting_groups});
    if !uid.is_empty() {
        user["uid"] = json!(uid);
    }
    if !extra.is_empty() {
        let mut map = Map::new();
        for (key, value) in extra {
            let values = map.entry(key).or_insert_with(|| json!([]));
            if let Some(list) = values.as_array_mut() {
                list.push(json!(value));
            }
        }
        user["extra"] = Value::Object(map);
    }
    // The handlers after the filter never see the headers.
    let names: Vec<_> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in names {
        req.headers.remove(name);
    }
    Ok(user)
}

impl Part {
    fn core(resource: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            api_group: "",
            resource,
            subresource: String::new(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `responsewriters.Forbidden` with `forbiddenMessage` and no reason (RBAC gives
    /// none for what it does not grant).
    fn forbidden(&self, user: &str) -> hyper::Response<Body> {
        let mut resource = self.resource.to_owned();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        let qualified = if self.api_group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        };
        status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{qualified} {:?} is forbidden: User {user:?} cannot impersonate resource {resource:?} in API group {:?} {scope}",
                self.name, self.api_group
            ),
        )
    }
}

/// A header's extra key, percent-decoded (`url.PathUnescape`), or as it is when it does
/// not decode.
fn unescape(key: &str) -> String {
    form_urlencoded::parse(format!("k={}", key.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| key.to_owned(), |(_, v)| v.into_owned())
}
