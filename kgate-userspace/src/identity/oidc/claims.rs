//! Verified claims to a user, as the API server's JWT authenticator maps them
//! (k8s.io/apiserver `plugin/pkg/authenticator/token/oidc/oidc.go`, `AuthenticateToken`):
//!
//! - username: the claim's string, prefixed; with claim `email`, an `email_verified`
//!   claim, when present, must be `true`;
//! - groups: the claim's string or list of strings, each prefixed; absent, none;
//! - uid: the claim's string, when a uid claim is configured (then required);
//! - then every `claimValidationRules` claim must be present as a string equal to its
//!   `requiredValue`;
//! - `system:authenticated` is added to the groups, as the API server's authenticator
//!   union does for every authenticated user.
//!
//! One rule of kgate's own: a username or group beginning with `system:` is refused.
//! The API server leaves that to a CEL `userValidationRules` entry (its documented
//! example), which kgate cannot run; a gateway that impersonates with its own
//! credential must never act as a system identity because a token said so.
//!
//! Pure functions: tests call them with claims, no keys or network.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{config::JwtAuthenticator, identity::UserInfo};

/// The group every authenticated user is in.
const AUTHENTICATED: &str = "system:authenticated";
/// Names kgate never lets a token claim.
const RESERVED_PREFIX: &str = "system:";

/// Why verified claims do not make a user; the message the client reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ClaimError(pub String);

/// The user `claims` stand for under `authenticator`'s mappings and rules.
pub(crate) fn user_of(
    authenticator: &JwtAuthenticator,
    claims: &Map<String, Value>,
) -> Result<UserInfo, ClaimError> {
    let mappings = &authenticator.claim_mappings;
    let fail = |m: String| Err(ClaimError(m));

    let username_claim = mappings.username.claim.as_deref().unwrap_or_default();
    let Some(name) = claims.get(username_claim) else {
        return fail(format!("the username claim {username_claim:?} is missing"));
    };
    let Some(name) = name.as_str() else {
        return fail(format!(
            "the username claim {username_claim:?} is not a string"
        ));
    };
    if username_claim == "email"
        && let Some(verified) = claims.get("email_verified")
    {
        match verified.as_bool() {
            Some(true) => {}
            Some(false) => {
                return fail("the email is not verified (email_verified is false)".into());
            }
            None => return fail("the email_verified claim is not a boolean".into()),
        }
    }
    let username = format!(
        "{}{name}",
        mappings.username.prefix.as_deref().unwrap_or_default()
    );

    let mut groups = Vec::new();
    if let Some(claim) = mappings.groups.claim.as_deref().filter(|c| !c.is_empty())
        && let Some(value) = claims.get(claim)
    {
        let prefix = mappings.groups.prefix.as_deref().unwrap_or_default();
        let names: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ClaimError(format!(
                        "the groups claim {claim:?} is not a list of strings"
                    ))
                })?,
            _ => {
                return fail(format!(
                    "the groups claim {claim:?} is not a string or a list of strings"
                ));
            }
        };
        groups.extend(names.into_iter().map(|g| format!("{prefix}{g}")));
    }

    let mut uid = String::new();
    if let Some(claim) = mappings.uid.claim.as_deref().filter(|c| !c.is_empty()) {
        match claims.get(claim).map(Value::as_str) {
            Some(Some(value)) => value.clone_into(&mut uid),
            Some(None) => return fail(format!("the uid claim {claim:?} is not a string")),
            None => return fail(format!("the uid claim {claim:?} is missing")),
        }
    }

    for rule in &authenticator.claim_validation_rules {
        let Some(claim) = rule.claim.as_deref() else {
            continue;
        };
        let wanted = rule.required_value.as_deref().unwrap_or_default();
        match claims.get(claim) {
            None => return fail(format!("the required claim {claim:?} is missing")),
            Some(Value::String(value)) if value == wanted => {}
            Some(Value::String(value)) => {
                return fail(format!(
                    "the required claim {claim:?} is {value:?}, not {wanted:?}"
                ));
            }
            Some(_) => return fail(format!("the required claim {claim:?} is not a string")),
        }
    }

    if username.starts_with(RESERVED_PREFIX) {
        return fail(format!(
            "the username {username:?} uses the reserved {RESERVED_PREFIX:?} prefix"
        ));
    }
    if let Some(group) = groups.iter().find(|g| g.starts_with(RESERVED_PREFIX)) {
        return fail(format!(
            "the group {group:?} uses the reserved {RESERVED_PREFIX:?} prefix"
        ));
    }
    groups.push(AUTHENTICATED.to_owned());
    Ok(UserInfo {
        username,
        uid,
        groups,
        extra: BTreeMap::new(),
    })
}
