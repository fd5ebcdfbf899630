use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// `(verb resource[/sub] name [in ns] [group])` of each question, for compact tables.
fn asked(requested: &UserInfo) -> Vec<String> {
    questions(requested)
        .iter()
        .map(|q| {
            let mut s = format!("{} {}", q.verb, q.resource);
            if !q.subresource.is_empty() {
                s = format!("{s}/{}", q.subresource);
            }
            s = format!("{s} {}", q.name);
            if !q.namespace.is_empty() {
                s = format!("{s} in {}", q.namespace);
            }
            if !q.api_group.is_empty() {
                s = format!("{s} ({})", q.api_group);
            }
            s
        })
        .collect()
}

#[test]
fn headers_become_the_api_servers_questions_and_identity() {
    struct Case {
        headers: &'static [(&'static str, &'static str)],
        questions: &'static [&'static str],
        groups: &'static [&'static str],
    }
    let cases = [
        Case {
            headers: &[("impersonate-user", "jane")],
            questions: &["impersonate users jane"],
            groups: &["system:authenticated"],
        },
        Case {
            headers: &[
                ("impersonate-user", "jane"),
                ("impersonate-group", "devs"),
                ("impersonate-group", "ops"),
                ("impersonate-uid", "u-7"),
                ("impersonate-extra-example.com%2fteam", "blue"),
            ],
            questions: &[
                "impersonate users jane",
                "impersonate groups devs",
                "impersonate groups ops",
                "impersonate userextras/example.com/team blue (authentication.k8s.io)",
                "impersonate uids u-7 (authentication.k8s.io)",
            ],
            groups: &["devs", "ops", "system:authenticated"],
        },
        // A service account: asked as one, with its groups when none are given.
        Case {
            headers: &[("impersonate-user", "system:serviceaccount:ci:deployer")],
            questions: &["impersonate serviceaccounts deployer in ci"],
            groups: &[
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated",
            ],
        },
        // system:unauthenticated asked for: system:authenticated is not added.
        Case {
            headers: &[
                ("impersonate-user", "jane"),
                ("impersonate-group", "system:unauthenticated"),
            ],
            questions: &[
                "impersonate users jane",
                "impersonate groups system:unauthenticated",
            ],
            groups: &["system:unauthenticated"],
        },
    ];
    for case in cases {
        let requested = requested(&headers(case.headers)).unwrap().unwrap();
        assert_eq!(asked(&requested), case.questions, "{:?}", case.headers);
        assert_eq!(
            acting_as(&requested).groups,
            case.groups,
            "{:?}",
            case.headers
        );
    }
    let extra = requested(&headers(&[
        ("impersonate-user", "jane"),
        ("impersonate-extra-example.com%2fteam", "blue"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(extra.extra["example.com/team"], ["blue"]);
}

#[test]
fn no_headers_is_no_impersonation_and_parts_without_a_user_are_refused() {
    assert_eq!(requested(&headers(&[("accept", "x")])).unwrap(), None);
    for h in [
        &[("impersonate-group", "devs")][..],
        &[("impersonate-uid", "u")][..],
        &[("impersonate-extra-k", "v")][..],
    ] {
        let error = requested(&headers(h)).unwrap_err().to_string();
        assert!(error.contains("without impersonating a user"), "{error}");
    }
}
