use http::{Method, Uri};

use super::*;

fn info(method: &str, uri: &str) -> RequestInfo {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    RequestInfo::parse(&method, &uri.parse::<Uri>().unwrap()).unwrap()
}

#[test]
fn delete_options_are_shown_and_object_values_withheld() {
    const WITHHELD: &str = "(withheld: the object has fields kgate masks)";
    let secret = "/api/v1/namespaces/demo/secrets/db";
    let secrets = "/api/v1/namespaces/demo/secrets";
    let background =
        r#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}"#;
    let preconditions = r#"{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/v1","gracePeriodSeconds":0,"preconditions":{"uid":"u","resourceVersion":"7"},"dryRun":["All"]}"#;
    let cases = [
        // (method, path, masked, body, shown)
        ("DELETE", secret, true, background, Some(background)),
        ("DELETE", secret, true, preconditions, Some(preconditions)),
        (
            "DELETE",
            secrets,
            true,
            r#"{"orphanDependents":false}"#,
            Some(r#"{"orphanDependents":false}"#),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/demo/pods/web-0",
            false,
            background,
            Some(background),
        ),
        // anything else in a delete of a masked kind is withheld
        (
            "DELETE",
            secret,
            true,
            r#"{"kind":"DeleteOptions","data":{"k":"djE="}}"#,
            Some(WITHHELD),
        ),
        (
            "DELETE",
            secret,
            true,
            r#"{"kind":"Secret","apiVersion":"v1"}"#,
            Some(WITHHELD),
        ),
        (
            "DELETE",
            secret,
            true,
            r#"{"propagationPolicy":{"v":"x"}}"#,
            Some(WITHHELD),
        ),
        (
            "DELETE",
            secret,
            true,
            r#"{"preconditions":{"uid":"u","data":"x"}}"#,
            Some(WITHHELD),
        ),
        ("DELETE", secret, true, "k8s\0protobuf", Some(WITHHELD)),
        // a write of a masked kind, even one shaped like delete options
        (
            "POST",
            secrets,
            true,
            r#"{"kind":"Secret","data":{"k":"djE="}}"#,
            Some(WITHHELD),
        ),
        ("PATCH", secret, true, background, Some(WITHHELD)),
        (
            "PUT",
            "/api/v1/namespaces/demo/configmaps/c",
            true,
            r#"{"data":{}}"#,
            Some(WITHHELD),
        ),
        (
            "PUT",
            "/api/v1/namespaces/demo/configmaps/c",
            false,
            r#"{"data":{}}"#,
            Some(r#"{"data":{}}"#),
        ),
        ("DELETE", secret, true, "", None),
    ];
    for (method, path, masked, body, shown) in cases {
        assert_eq!(
            shown_body(body.as_bytes(), masked, &info(method, path)).as_deref(),
            shown,
            "{method} {path} {body}"
        );
    }
    let big = vec![b' '; MAX_SHOWN_BODY + 1];
    let configmap = info("PUT", "/api/v1/namespaces/demo/configmaps/c");
    assert_eq!(
        shown_body(&big, false, &configmap).as_deref(),
        Some("(65537 bytes, too large to show)")
    );
    assert_eq!(
        shown_body(&big, true, &configmap).as_deref(),
        Some(WITHHELD)
    );
}
