//! Client impersonation (`kubectl --as`, `--as-group`, `--as-uid`, `Impersonate-Extra-*`)
//! read as the API server reads it (k8s.io/apiserver
//! `pkg/endpoints/filters/impersonation/impersonation.go`, `WithImpersonation` and
//! `buildImpersonationRequests`):
//!
//! - `Impersonate-User` names a user, or a service account when it is
//!   `system:serviceaccount:NS:NAME`; groups, extras and a UID need a user (400);
//! - each thing impersonated is one authorization question for verb `impersonate`:
//!   `users`/NAME, `serviceaccounts`/NAME in NS, `groups`/NAME (core group),
//!   `uids`/UID and `userextras`/VALUE with the key as subresource (group
//!   `authentication.k8s.io`);
//! - the identity acted as: the user, the groups asked for (for a service account
//!   without groups, `system:serviceaccounts` and `system:serviceaccounts:NS`), plus
//!   `system:authenticated` unless `system:authenticated` or `system:unauthenticated`
//!   is among them, the extras and the UID.
//!
//! Pure functions; the authorize stage asks policy the questions and the forward stage
//! writes the headers back ([`crate::proxy::forward`]): a client's own impersonation
//! headers are never passed on as they came.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::UserInfo;
use crate::request_info::RequestInfo;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// Why impersonation headers cannot be read: a 400, as the API server answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImpersonationError {
    #[error("requested {0} without impersonating a user")]
    NoUser(String),
    #[error("the {0} header is not valid UTF-8")]
    NotText(String),
}

/// What the client asked to act as, as its headers said it (the `requested` user of
/// the record; never with groups the API server would add).
pub(crate) fn requested(headers: &HeaderMap) -> Result<Option<UserInfo>, ImpersonationError> {
    let text = |name: &str, v: &http::HeaderValue| {
        v.to_str()
            .map(str::to_owned)
            .map_err(|_| ImpersonationError::NotText(name.to_owned()))
    };
    let username = match headers.get(USER) {
        Some(v) => text(USER, v)?,
        None => String::new(),
    };
    let groups = headers
        .get_all(GROUP)
        .iter()
        .map(|v| text(GROUP, v))
        .collect::<Result<Vec<_>, _>>()?;
    let uid = match headers.get(UID) {
        Some(v) => text(UID, v)?,
        None => String::new(),
    };
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            extra
                .entry(unescape_extra_key(key))
                .or_default()
                .push(text(name.as_str(), value)?);
        }
    }
    if username.is_empty() {
        let mut asked = Vec::new();
        if !groups.is_empty() {
            asked.push(format!("groups {groups:?}"));
        }
        if !extra.is_empty() {
            asked.push(format!("extra {extra:?}"));
        }
        if !uid.is_empty() {
            asked.push(format!("uid {uid:?}"));
        }
        return if asked.is_empty() {
            Ok(None)
        } else {
            Err(ImpersonationError::NoUser(asked.join(", ")))
        };
    }
    Ok(Some(UserInfo {
        username,
        uid,
        groups,
        extra,
    }))
}

/// The authorization questions `requested` makes: one `impersonate` request each.
pub(crate) fn questions(requested: &UserInfo) -> Vec<RequestInfo> {
    let ask =
        |api_group: &str, resource: &str, namespace: &str, name: &str, sub: &str| RequestInfo {
            is_resource_request: true,
            path: String::new(),
            verb: "impersonate".into(),
            api_prefix: if api_group.is_empty() { "api" } else { "apis" }.into(),
            api_group: api_group.into(),
            api_version: "v1".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..RequestInfo::default()
        };
    let mut out = vec![match service_account(&requested.username) {
        Some((ns, name)) => ask("", "serviceaccounts", ns, name, ""),
        None => ask("", "users", "", &requested.username, ""),
    }];
    out.extend(
        requested
            .groups
            .iter()
            .map(|g| ask("", "groups", "", g, "")),
    );
    for (key, values) in &requested.extra {
        out.extend(
            values
                .iter()
                .map(|v| ask(AUTHENTICATION_GROUP, "userextras", "", v, key)),
        );
    }
    if !requested.uid.is_empty() {
        out.push(ask(AUTHENTICATION_GROUP, "uids", "", &requested.uid, ""));
    }
    out
}

/// The identity the request is then handled as.
pub(crate) fn acting_as(requested: &UserInfo) -> UserInfo {
    let mut groups = requested.groups.clone();
    if groups.is_empty()
        && let Some((ns, _)) = service_account(&requested.username)
    {
        groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if !groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        groups.push(AUTHENTICATED.to_owned());
    }
    UserInfo {
        username: requested.username.clone(),
        uid: requested.uid.clone(),
        groups,
        extra: requested.extra.clone(),
    }
}

/// `system:serviceaccount:NS:NAME` as (NS, NAME), as `serviceaccount.SplitUsername`.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let (ns, name) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// An extra key from its header name: lowercase, percent-decoded (`url.PathUnescape`),
/// or as it is when it does not decode.
fn unescape_extra_key(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return encoded.to_owned(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| encoded.to_owned())
}

#[cfg(test)]
mod tests;
