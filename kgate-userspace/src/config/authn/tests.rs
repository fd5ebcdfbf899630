use super::*;

/// A valid authenticator, as YAML, with `patch` lines replacing the defaults.
fn authenticator(issuer: &str, mappings: &str, rules: &str) -> String {
    format!("- issuer:\n{issuer}\n  claimMappings:\n{mappings}\n{rules}")
}

const ISSUER: &str = "    url: https://idp.example\n    audiences: [kgate]";
const MAPPINGS: &str =
    "    username: {claim: sub, prefix: 'oidc:'}\n    groups: {claim: groups, prefix: 'oidc:'}";

fn check(jwt_yaml: &str) -> Result<(), ConfigError> {
    let jwt: Vec<JwtAuthenticator> = serde_yaml::from_str(jwt_yaml).map_err(ConfigError::Parse)?;
    validate(&jwt, "identity.jwt", Some("https://kubernetes.default.svc"))
}

#[test]
fn a_valid_authenticator_loads() {
    check(&authenticator(ISSUER, MAPPINGS, "")).unwrap();
    // The API server's own example shape: email username without prefix, a required
    // claim, a uid claim, several audiences with MatchAny, a discovery URL.
    check(&authenticator(
        "    url: https://idp.example/realms/a\n    discoveryURL: https://idp.internal/realms/a/.well-known/openid-configuration\n    audiences: [kgate, kubernetes]\n    audienceMatchPolicy: MatchAny",
        "    username: {claim: email, prefix: ''}\n    uid: {claim: sub}",
        "  claimValidationRules:\n  - {claim: hd, requiredValue: example.com}",
    ))
    .unwrap();
}

#[test]
fn each_rule_of_the_api_servers_validation_names_its_field() {
    let cases: &[(String, &str, &str)] = &[
        (
            authenticator(
                "    url: http://idp.example\n    audiences: [a]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.url",
            "https",
        ),
        (
            authenticator(
                "    url: https://idp.example?x=1\n    audiences: [a]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.url",
            "query",
        ),
        (
            authenticator(
                "    url: https://u:p@idp.example\n    audiences: [a]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.url",
            "username or password",
        ),
        (
            authenticator(
                "    url: https://kubernetes.default.svc\n    audiences: [a]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.url",
            "service-account issuer",
        ),
        (
            authenticator(
                "    url: https://idp.example\n    discoveryURL: https://idp.example/\n    audiences: [a]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.discoveryURL",
            "different from URL",
        ),
        (
            authenticator(
                "    url: https://idp.example\n    audiences: []",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.audiences",
            "at least one",
        ),
        (
            authenticator(
                "    url: https://idp.example\n    audiences: [a, a]\n    audienceMatchPolicy: MatchAny",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.audiences[1]",
            "duplicate",
        ),
        (
            authenticator(
                "    url: https://idp.example\n    audiences: [a, b]",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.audienceMatchPolicy",
            "MatchAny for multiple",
        ),
        (
            authenticator(
                "    url: https://idp.example\n    audiences: [a]\n    certificateAuthority: not pem",
                MAPPINGS,
                "",
            ),
            "identity.jwt[0].issuer.certificateAuthority",
            "certificates",
        ),
        (
            authenticator(ISSUER, "    username: {claim: sub}", ""),
            "identity.jwt[0].claimMappings.username.prefix",
            "prefix is required when claim is set",
        ),
        (
            authenticator(
                ISSUER,
                "    username: {claim: sub, prefix: ''}\n    groups: {claim: groups}",
                "",
            ),
            "identity.jwt[0].claimMappings.groups.prefix",
            "prefix is required",
        ),
        (
            authenticator(ISSUER, "    username: {prefix: ''}", ""),
            "identity.jwt[0].claimMappings.username",
            "claim or expression is required",
        ),
        (
            authenticator(
                ISSUER,
                MAPPINGS,
                "  claimValidationRules:\n  - {claim: hd, requiredValue: x, message: m}",
            ),
            "identity.jwt[0].claimValidationRules[0].message",
            "may not be specified",
        ),
        (
            authenticator(
                ISSUER,
                MAPPINGS,
                "  claimValidationRules:\n  - {claim: hd, requiredValue: x}\n  - {claim: hd, requiredValue: y}",
            ),
            "identity.jwt[0].claimValidationRules[1].claim",
            "duplicate",
        ),
    ];
    for (yaml, field, needle) in cases {
        let error = check(yaml).expect_err(yaml).to_string();
        assert!(
            error.contains(&format!("`{field}`")) && error.contains(needle),
            "{yaml}\n-> {error}\n(expected field {field}, {needle:?})"
        );
    }
}

#[test]
fn cel_forms_are_refused_naming_the_field() {
    let cases = [
        (
            authenticator(ISSUER, "    username: {expression: claims.sub}", ""),
            "claimMappings.username.expression",
        ),
        (
            authenticator(
                ISSUER,
                "    username: {claim: sub, prefix: ''}\n    groups: {expression: claims.roles}",
                "",
            ),
            "claimMappings.groups.expression",
        ),
        (
            authenticator(
                ISSUER,
                "    username: {claim: sub, prefix: ''}\n    uid: {expression: claims.oid}",
                "",
            ),
            "claimMappings.uid.expression",
        ),
        (
            authenticator(
                ISSUER,
                "    username: {claim: sub, prefix: ''}\n    extra:\n    - {key: example.com/t, valueExpression: claims.t}",
                "",
            ),
            "claimMappings.extra[0].valueExpression",
        ),
        (
            authenticator(
                ISSUER,
                MAPPINGS,
                "  claimValidationRules:\n  - {expression: 'claims.hd == \"x\"', message: m}",
            ),
            "claimValidationRules[0].expression",
        ),
        (
            authenticator(
                ISSUER,
                MAPPINGS,
                "  userValidationRules:\n  - {expression: \"!user.username.startsWith('system:')\"}",
            ),
            "userValidationRules[0].expression",
        ),
    ];
    for (yaml, field) in cases {
        let error = check(&yaml).expect_err(&yaml).to_string();
        assert!(
            error.contains(&format!("`identity.jwt[0].{field}`")) && error.contains("CEL"),
            "{error}"
        );
    }
}

#[test]
fn duplicate_issuers_are_refused() {
    let one = authenticator(ISSUER, MAPPINGS, "");
    let error = check(&format!("{one}{one}")).unwrap_err().to_string();
    assert!(error.contains("`identity.jwt[1].issuer.url`"), "{error}");
}

#[test]
fn the_api_servers_file_loads_as_it_is() {
    let file = "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\n\
                anonymous: {enabled: false}\njwt:\n- issuer:\n    url: https://idp.example\n    \
                audiences: [kubernetes]\n    egressSelectorType: controlplane\n  claimMappings:\n    \
                username: {claim: email, prefix: ''}\n";
    let jwt = parse_authentication_configuration(file, "f", None).unwrap();
    assert_eq!(jwt[0].issuer.url, "https://idp.example");
    assert_eq!(
        jwt[0].discovery_url(),
        "https://idp.example/.well-known/openid-configuration"
    );
    let wrong = file.replace("v1beta1", "v1alpha9");
    let error = parse_authentication_configuration(&wrong, "f", None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`f: apiVersion`"), "{error}");
}
