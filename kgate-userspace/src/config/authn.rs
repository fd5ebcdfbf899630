//! OIDC authenticators for clients outside the cluster (gateway mode): the `jwt` list of
//! the API server's structured authentication configuration
//! (`apiserver.config.k8s.io/v1beta1` and `v1` `AuthenticationConfiguration`), so an
//! admin can point kgate at the very file they wrote for the API server, or write the
//! same list inline under `identity.jwt`.
//!
//! Validated as the API server validates it (k8s.io/apiserver
//! `pkg/apis/apiserver/validation/validation.go`, `validateJWTAuthenticator`): at most
//! 64 authenticators; `issuer.url` https, without user, query or fragment, unique, and
//! not the service-account issuer; `discoveryURL` https and not the issuer URL; at least
//! one audience, none empty or repeated, `audienceMatchPolicy` `MatchAny` when there are
//! several; `certificateAuthority` PEM that holds a certificate; a username claim, and a
//! `prefix` whenever a username or groups `claim` is set (`""` disables prefixing);
//! claim validation rules with a claim each, unique, without `message`.
//!
//! Not here: CEL. Every `expression` form (`claimMappings.*.expression`,
//! `claimMappings.extra[*].valueExpression`, `claimValidationRules[*].expression`,
//! `userValidationRules`) is refused at load, naming the field, rather than ignored: a
//! rule the admin wrote must never be skipped. Nor the verification itself
//! ([`crate::identity::oidc`]).

use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;

use super::ConfigError;

/// The most authenticators, as the API server allows.
const MAX_AUTHENTICATORS: usize = 64;
/// `audienceMatchPolicy`'s one value.
const MATCH_ANY: &str = "MatchAny";

/// An `AuthenticationConfiguration` file as the API server reads it. Only `jwt` is used
/// by kgate; `anonymous` concerns the API server's own anonymous requests, which kgate
/// never forwards (every request through kgate needs a verified caller).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthenticationConfiguration {
    /// `apiserver.config.k8s.io/v1beta1` or `apiserver.config.k8s.io/v1`.
    pub api_version: String,
    /// `AuthenticationConfiguration`.
    pub kind: String,
    #[serde(default)]
    pub jwt: Vec<JwtAuthenticator>,
    /// Accepted so that the API server's file loads; not used by kgate.
    #[serde(default)]
    pub anonymous: Option<serde_yaml::Value>,
}

/// One OIDC issuer whose ID tokens kgate verifies itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtAuthenticator {
    pub issuer: Issuer,
    /// Required claims and the values they must have. Default: none.
    #[serde(default)]
    pub claim_validation_rules: Vec<ClaimValidationRule>,
    pub claim_mappings: ClaimMappings,
    /// CEL rules over the mapped user: refused (kgate has no CEL).
    #[serde(default)]
    pub user_validation_rules: Vec<UserValidationRule>,
}

/// Where the issuer is and which tokens of it are accepted.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Issuer {
    /// Must equal the tokens' `iss`; `{url}/.well-known/openid-configuration` is the
    /// discovery document unless `discoveryURL` says otherwise.
    pub url: String,
    /// Where to fetch the discovery document instead, used exactly as written (for an
    /// issuer reached at another address, e.g. inside the cluster). Default: none.
    #[serde(default, rename = "discoveryURL")]
    pub discovery_url: Option<String>,
    /// PEM CA bundle for the TLS connection to the issuer (the text itself, as in the
    /// API server's file). Default: the host's trusted roots.
    #[serde(default)]
    pub certificate_authority: Option<String>,
    /// At least one of these must be in the token's `aud`.
    pub audiences: Vec<String>,
    /// `MatchAny` (the only policy), required with several audiences.
    #[serde(default)]
    pub audience_match_policy: Option<String>,
    /// Which of the API server's egress paths reaches the issuer. kgate dials the
    /// issuer directly; the field is accepted so the API server's file loads.
    #[serde(default)]
    pub egress_selector_type: Option<String>,
}

/// A claim, optionally prefixed, or a CEL expression (refused).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrefixedClaimOrExpression {
    #[serde(default)]
    pub claim: Option<String>,
    /// Required when `claim` is set; `""` for none.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
}

/// A claim or a CEL expression (refused).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimOrExpression {
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
}

/// How the token's claims become the user.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimMappings {
    /// The username's claim (a string) and prefix. Required.
    pub username: PrefixedClaimOrExpression,
    /// The groups' claim (a string or a list of strings) and prefix. Default: no
    /// groups from the token.
    #[serde(default)]
    pub groups: PrefixedClaimOrExpression,
    /// The UID's claim. Default: none.
    #[serde(default)]
    pub uid: ClaimOrExpression,
    /// Extra attributes from CEL expressions: refused.
    #[serde(default)]
    pub extra: Vec<ExtraMapping>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtraMapping {
    pub key: String,
    #[serde(default)]
    pub value_expression: Option<String>,
}

/// A claim that must be present with a value (`claim` + `requiredValue`), or a CEL
/// expression (refused).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimValidationRule {
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub required_value: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserValidationRule {
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Reads an `AuthenticationConfiguration` document (YAML or JSON) and validates its
/// `jwt` list; `at` names it in errors (`identity.authenticationConfigFile`).
pub fn parse_authentication_configuration(
    text: &str,
    at: &str,
    service_account_issuer: Option<&str>,
) -> Result<Vec<JwtAuthenticator>, ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Authenticator { field, message };
    let doc: AuthenticationConfiguration = serde_yaml::from_str(text).map_err(|e| {
        invalid(
            at.to_owned(),
            format!("not an AuthenticationConfiguration: {e}"),
        )
    })?;
    if !matches!(
        doc.api_version.as_str(),
        "apiserver.config.k8s.io/v1beta1" | "apiserver.config.k8s.io/v1"
    ) {
        return Err(invalid(
            format!("{at}: apiVersion"),
            format!(
                "{:?} is not apiserver.config.k8s.io/v1beta1 or /v1",
                doc.api_version
            ),
        ));
    }
    if doc.kind != "AuthenticationConfiguration" {
        return Err(invalid(
            format!("{at}: kind"),
            format!("{:?} is not AuthenticationConfiguration", doc.kind),
        ));
    }
    validate(&doc.jwt, &format!("{at}: jwt"), service_account_issuer)?;
    Ok(doc.jwt)
}

/// Validates authenticators as the API server does (see the module docs); `root` is
/// where the list is (`identity.jwt`).
pub fn validate(
    jwt: &[JwtAuthenticator],
    root: &str,
    service_account_issuer: Option<&str>,
) -> Result<(), ConfigError> {
    if jwt.len() > MAX_AUTHENTICATORS {
        return Err(ConfigError::Authenticator {
            field: root.to_owned(),
            message: format!("{} authenticators: at most {MAX_AUTHENTICATORS}", jwt.len()),
        });
    }
    let mut issuers = Vec::new();
    let mut discovery = Vec::new();
    for (i, a) in jwt.iter().enumerate() {
        let at = format!("{root}[{i}]");
        validate_one(a, &at, service_account_issuer)?;
        if issuers.contains(&&a.issuer.url) {
            return Err(duplicate(&format!("{at}.issuer.url"), &a.issuer.url));
        }
        issuers.push(&a.issuer.url);
        if let Some(url) = &a.issuer.discovery_url {
            if discovery.contains(&url) {
                return Err(duplicate(&format!("{at}.issuer.discoveryURL"), url));
            }
            discovery.push(url);
        }
    }
    Ok(())
}

fn duplicate(field: &str, value: &str) -> ConfigError {
    ConfigError::Authenticator {
        field: field.to_owned(),
        message: format!("duplicate value {value:?}"),
    }
}

fn validate_one(
    a: &JwtAuthenticator,
    at: &str,
    service_account_issuer: Option<&str>,
) -> Result<(), ConfigError> {
    let err = |field: &str, message: &str| ConfigError::Authenticator {
        field: format!("{at}.{field}"),
        message: message.to_owned(),
    };
    let cel = |field: &str| {
        err(
            field,
            "CEL expressions are not supported by kgate; use `claim` (and `prefix`, \
             `requiredValue`) forms, or leave this rule to the API server",
        )
    };
    let issuer = &a.issuer;
    if issuer.url.is_empty() {
        return Err(err("issuer.url", "required"));
    }
    check_url(&issuer.url).map_err(|m| err("issuer.url", &m))?;
    if service_account_issuer.is_some_and(|sa| sa == issuer.url) {
        return Err(err(
            "issuer.url",
            "must not be the service-account issuer (identity.issuer): its tokens are \
             verified as service-account tokens",
        ));
    }
    if let Some(d) = &issuer.discovery_url {
        if d.trim_end_matches('/') == issuer.url.trim_end_matches('/') {
            return Err(err(
                "issuer.discoveryURL",
                "discoveryURL must be different from URL",
            ));
        }
        check_url(d).map_err(|m| err("issuer.discoveryURL", &m))?;
    }
    if issuer.audiences.is_empty() {
        return Err(err("issuer.audiences", "at least one audience is required"));
    }
    for (i, aud) in issuer.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err(err(&format!("issuer.audiences[{i}]"), "required"));
        }
        if issuer.audiences[..i].contains(aud) {
            return Err(err(
                &format!("issuer.audiences[{i}]"),
                &format!("duplicate value {aud:?}"),
            ));
        }
    }
    let policy = issuer.audience_match_policy.as_deref().unwrap_or("");
    if issuer.audiences.len() > 1 && policy != MATCH_ANY {
        return Err(err(
            "issuer.audienceMatchPolicy",
            "audienceMatchPolicy must be MatchAny for multiple audiences",
        ));
    }
    if issuer.audiences.len() == 1 && !policy.is_empty() && policy != MATCH_ANY {
        return Err(err(
            "issuer.audienceMatchPolicy",
            "audienceMatchPolicy must be empty or MatchAny for single audience",
        ));
    }
    if let Some(pem) = issuer
        .certificate_authority
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        ca_certificates(pem).map_err(|m| err("issuer.certificateAuthority", &m))?;
    }
    if let Some(egress) = &issuer.egress_selector_type
        && !matches!(egress.as_str(), "controlplane" | "cluster")
    {
        return Err(err(
            "issuer.egressSelectorType",
            "egress selector must be either controlplane or cluster",
        ));
    }

    let mut claims = Vec::new();
    for (i, rule) in a.claim_validation_rules.iter().enumerate() {
        let field = format!("claimValidationRules[{i}]");
        match (nonempty(&rule.claim), nonempty(&rule.expression)) {
            (Some(_), Some(_)) => {
                return Err(err(&field, "claim and expression can't both be set"));
            }
            (None, None) => return Err(err(&field, "claim or expression is required")),
            (None, Some(_)) => return Err(cel(&format!("{field}.expression"))),
            (Some(claim), None) => {
                if nonempty(&rule.message).is_some() {
                    return Err(err(
                        &format!("{field}.message"),
                        "may not be specified when claim is set",
                    ));
                }
                if claims.contains(&claim) {
                    return Err(err(
                        &format!("{field}.claim"),
                        &format!("duplicate value {claim:?}"),
                    ));
                }
                claims.push(claim);
            }
        }
    }

    let m = &a.claim_mappings;
    prefixed(&m.username, "claimMappings.username", true).map_err(
        |(f, message)| match message {
            Refusal::Cel => cel(&f),
            Refusal::Invalid(message) => err(&f, &message),
        },
    )?;
    prefixed(&m.groups, "claimMappings.groups", false).map_err(|(f, message)| match message {
        Refusal::Cel => cel(&f),
        Refusal::Invalid(message) => err(&f, &message),
    })?;
    match (nonempty(&m.uid.claim), nonempty(&m.uid.expression)) {
        (Some(_), Some(_)) => {
            return Err(err(
                "claimMappings.uid",
                "claim and expression can't both be set",
            ));
        }
        (None, Some(_)) => return Err(cel("claimMappings.uid.expression")),
        _ => {}
    }
    if !m.extra.is_empty() {
        return Err(cel("claimMappings.extra[0].valueExpression"));
    }
    if !a.user_validation_rules.is_empty() {
        return Err(cel("userValidationRules[0].expression"));
    }
    Ok(())
}

enum Refusal {
    Cel,
    Invalid(String),
}

/// `validatePrefixClaimOrExpression`: claim XOR expression, and a prefix with a claim.
fn prefixed(
    m: &PrefixedClaimOrExpression,
    at: &str,
    required: bool,
) -> Result<(), (String, Refusal)> {
    match (nonempty(&m.claim), nonempty(&m.expression)) {
        (Some(_), Some(_)) => Err((
            at.to_owned(),
            Refusal::Invalid("claim and expression can't both be set".into()),
        )),
        (None, None) if required => Err((
            at.to_owned(),
            Refusal::Invalid("claim or expression is required".into()),
        )),
        (None, Some(_)) => Err((format!("{at}.expression"), Refusal::Cel)),
        (Some(_), None) if m.prefix.is_none() => Err((
            format!("{at}.prefix"),
            Refusal::Invalid(
                "prefix is required when claim is set. It can be set to an empty string to \
                 disable prefixing"
                    .into(),
            ),
        )),
        _ => Ok(()),
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The API server's `validateURL`: https, no user info, query or fragment.
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("URL scheme must be https".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("URL must not contain a username or password".into());
    }
    if uri.query().is_some() {
        return Err("URL must not contain a query".into());
    }
    // http::Uri refuses a fragment outright; say so in the API server's words.
    if url.contains('#') {
        return Err("URL must not contain a fragment".into());
    }
    Ok(())
}

/// The certificates of a PEM bundle, at least one (as `cert.NewPoolFromBytes`).
pub(crate) fn ca_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("data does not contain any valid RSA or ECDSA certificates".into());
    }
    Ok(certs)
}

// === impl JwtAuthenticator ===

impl JwtAuthenticator {
    /// Where the discovery document is.
    pub fn discovery_url(&self) -> String {
        self.issuer.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.issuer.url.trim_end_matches('/')
            )
        })
    }
}

#[cfg(test)]
mod tests;
