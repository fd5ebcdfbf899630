use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use super::{AnswerError, Review};
use crate::{
    identity::UserInfo,
    policy::{Caller, PolicySet, file, types::DefaultAction},
    request_info::RequestInfo,
};

const POLICIES: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {users: [bot]}
  rules:
    - {name: read, match: {verbs: [get, list]}, action: allow}
    - {name: no-secrets, match: {resources: [secrets]}, action: deny, message: not secrets}
    - {name: hold-deletes, match: {verbs: [delete]}, action: approve}
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: trial}
spec:
  mode: shadow
  subjects: {users: [trial]}
  defaultAction: deny
"#;

const RBAC: &str = "RBAC: allowed by ClusterRoleBinding \"x\" of ClusterRole \"y\" to User \"bot\"";

fn access(allowed: bool, attributes: &Value) -> Value {
    let mut status = json!({"allowed": allowed});
    if allowed {
        status["reason"] = json!(RBAC);
    }
    json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
           "metadata": {"creationTimestamp": null}, "spec": attributes, "status": status})
}

fn fold(review: Review, name: &str, answer: &mut Value) -> Result<String, AnswerError> {
    let policies = file::parse(POLICIES, "test.yaml")
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let set = PolicySet::new(policies, DefaultAction::Allow, false, 1);
    let user = UserInfo {
        username: name.to_owned(),
        uid: String::new(),
        groups: Vec::new(),
        extra: BTreeMap::new(),
    };
    let caller = Caller {
        user: Some(&user),
        ..Caller::default()
    };
    review.fold(answer, &set, &caller)
}

#[test]
fn access_answers_get_kgates_decision() {
    let secrets =
        json!({"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "demo"}});
    let pods =
        json!({"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "demo"}});
    let read =
        json!({"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "demo"}});
    let path = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
    // (user, spec, API server allowed, note, status after)
    let cases = [
        (
            "bot",
            &secrets,
            true,
            "allowed -> denied by bots/no-secrets",
            json!({"allowed": false, "denied": true, "reason": "kgate: denied by policy bots/no-secrets: not secrets"}),
        ),
        (
            "bot",
            &secrets,
            false,
            "unchanged: the API server does not allow it",
            json!({"allowed": false}),
        ),
        (
            "bot",
            &pods,
            true,
            "allowed, held for approval by bots/hold-deletes",
            json!({"allowed": true, "reason": format!(
                "kgate: held for approval by policy bots/hold-deletes: each such request waits until a human approves it; {RBAC}")}),
        ),
        (
            "bot",
            &read,
            true,
            "unchanged: allowed by bots/read",
            json!({"allowed": true, "reason": RBAC}),
        ),
        (
            "bot",
            &path,
            true,
            "unchanged: allowed by global default",
            json!({"allowed": true, "reason": RBAC}),
        ),
        (
            "trial",
            &pods,
            true,
            "allowed, shadow: would deny by trial (default)",
            json!({"allowed": true, "reason": format!(
                "kgate (shadow mode): policy trial (default) would deny this; shadow mode lets it pass; {RBAC}")}),
        ),
    ];
    for (user, spec, allowed, note, status) in cases {
        let mut answer = access(allowed, spec);
        assert_eq!(
            fold(Review::Access, user, &mut answer).unwrap(),
            note,
            "{user} {spec}"
        );
        assert_eq!(answer["status"], status, "{user} {spec}");
        assert_eq!(answer["spec"], *spec, "the spec stays");
        assert_eq!(answer["kind"], "SelfSubjectAccessReview");
    }
}

#[test]
fn unreadable_answers_are_errors() {
    let spec = json!({"resourceAttributes": {"verb": "get", "resource": "pods"}});
    let mut no_allowed = access(true, &spec);
    no_allowed["status"] = json!({"reason": "?"});
    let mut other_kind = access(true, &spec);
    other_kind["kind"] = json!("Status");
    let mut no_spec = access(true, &spec);
    no_spec["spec"] = json!({});
    let mut no_status = access(true, &spec);
    no_status["status"] = json!("yes");
    for (mut answer, error) in [
        (no_allowed, "it has no status.allowed"),
        (
            other_kind,
            "it is a \"Status\" of \"authorization.k8s.io/v1\", not a SelfSubjectAccessReview",
        ),
        (
            no_spec,
            "its spec has neither resourceAttributes nor nonResourceAttributes",
        ),
        (no_status, "its status is not an object"),
    ] {
        let got = fold(Review::Access, "bot", &mut answer).unwrap_err();
        assert_eq!(got.to_string(), error);
    }
}

#[test]
fn rules_answers_say_what_policy_may_refuse() {
    let rules = |error: Option<&str>| {
        let mut status = json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                                "nonResourceRules": [], "incomplete": false});
        if let Some(e) = error {
            status["evaluationError"] = json!(e);
        }
        json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": null}, "spec": {}, "status": status})
    };
    let mut answer = rules(Some(
        "node authorizer does not support user rule resolution",
    ));
    let note = fold(Review::Rules, "bot", &mut answer).unwrap();
    assert_eq!(note, "incomplete: 2 kgate restrictions noted");
    assert_eq!(answer["status"]["incomplete"], true);
    assert_eq!(
        answer["status"]["evaluationError"],
        "node authorizer does not support user rule resolution; kgate: these rules are the API \
         server's alone; kgate's policy also decides every request and may refuse or hold what they \
         allow (bots/no-secrets (deny), bots/hold-deletes (approve)); `kubectl auth can-i VERB \
         RESOURCE` answers with both"
    );
    assert_eq!(
        answer["status"]["resourceRules"],
        rules(None)["status"]["resourceRules"],
        "the rules stay"
    );
    for user in ["trial", "someone"] {
        let mut answer = rules(None);
        let note = fold(Review::Rules, user, &mut answer).unwrap();
        assert_eq!(
            note,
            "unchanged: kgate's policy refuses this caller nothing"
        );
        assert_eq!(answer, rules(None));
    }
}

#[test]
fn only_self_reviews_are_rewritten() {
    let info = |method: &str, path: &str| {
        RequestInfo::parse(&method.parse().unwrap(), &path.parse().unwrap()).unwrap()
    };
    let base = "/apis/authorization.k8s.io/v1";
    for (method, path, review) in [
        (
            "POST",
            format!("{base}/selfsubjectaccessreviews"),
            Some(Review::Access),
        ),
        (
            "POST",
            format!("{base}/selfsubjectrulesreviews"),
            Some(Review::Rules),
        ),
        ("POST", format!("{base}/subjectaccessreviews"), None),
        (
            "POST",
            format!("{base}/namespaces/demo/localsubjectaccessreviews"),
            None,
        ),
        ("GET", format!("{base}/selfsubjectaccessreviews"), None),
        (
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews".to_owned(),
            None,
        ),
    ] {
        assert_eq!(Review::of(&info(method, &path)), review, "{method} {path}");
    }
}

#[tokio::test]
async fn answers_that_cannot_be_read_are_refused_never_passed_on() {
    use http::{
        Response, StatusCode,
        header::{CONTENT_LENGTH, CONTENT_TYPE},
    };
    use http_body_util::BodyExt;

    use crate::proxy::{body, record::Pending};

    let set = PolicySet::new(Vec::new(), DefaultAction::Deny, false, 1);
    let user = UserInfo {
        username: "bot".to_owned(),
        uid: String::new(),
        groups: Vec::new(),
        extra: BTreeMap::new(),
    };
    let caller = Caller {
        user: Some(&user),
        ..Caller::default()
    };
    let request = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .body(())
        .unwrap();
    let pending = Pending::new(&Arc::from("c"), ([127, 0, 0, 1], 1).into(), &request);
    let good = access(
        true,
        &json!({"resourceAttributes": {"verb": "get", "resource": "pods"}}),
    )
    .to_string();
    let answer = |code: StatusCode, media: &str, text: &str| {
        Response::builder()
            .status(code)
            .header(CONTENT_TYPE, media)
            .body(body::full(text.to_owned()))
            .unwrap()
    };
    let json = "application/json";
    for (response, refused) in [
        (answer(StatusCode::CREATED, json, "{\"kind\": "), true),
        (
            answer(
                StatusCode::CREATED,
                "application/vnd.kubernetes.protobuf",
                &good,
            ),
            true,
        ),
        (
            answer(StatusCode::CREATED, json, "{\"kind\": \"Status\"}"),
            true,
        ),
        (
            answer(StatusCode::FORBIDDEN, json, "{\"kind\": \"Status\"}"),
            false,
        ),
        (answer(StatusCode::CREATED, json, &good), false),
    ] {
        let code = response.status();
        match Review::Access
            .answer(&set, &caller, &pending, response)
            .await
        {
            Err(status) => {
                assert!(refused, "{status:?}");
                assert_eq!(status.code, 502);
                assert!(
                    status.message.starts_with(
                        "kgate: the API server's answer to a SelfSubjectAccessReview cannot be read"
                    ),
                    "{}",
                    status.message
                );
            }
            Ok(response) => {
                assert!(!refused, "{code}");
                assert_eq!(response.status(), code);
                let length = response.headers().get(CONTENT_LENGTH).cloned();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                if code == StatusCode::CREATED {
                    assert_eq!(length, Some(bytes.len().into()), "the new length");
                    // The global default denies: the answer is rewritten.
                    let answer: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(answer["status"]["allowed"], false, "{answer}");
                }
            }
        }
    }
}
