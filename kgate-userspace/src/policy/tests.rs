use std::collections::BTreeMap;

use http::{Method, Uri};

use super::{
    Caller, Decision, PolicySet, file,
    types::{Action, DefaultAction},
};
use crate::{identity::UserInfo, request_info::RequestInfo};

const POLICIES: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: ci-bots}
spec:
  subjects: {serviceAccounts: ["ci/*"]}
  defaultAction: deny
  rules:
    - name: read
      match: {verbs: [get, list, watch]}
      action: allow
    - name: no-secrets
      match: {verbs: [get, list, watch], resources: [secrets]}
      action: deny
      message: bots do not read secrets
    - name: delete-pods-needs-a-human
      match: {verbs: [delete], resources: [pods], namespaces: [demo]}
      action: approve
      approval: {approvers: [sre], timeoutSeconds: 60}
    - name: exec-from-kubectl
      subjects: {processes: [kubectl]}
      match: {verbs: [create, get], resources: ["pods/exec"]}
      action: allow
    - name: scale-web
      match: {verbs: [patch, update], apiGroups: [apps], resources: ["deployments/scale"], resourceNames: [web]}
      action: allow
    - name: health
      match: {verbs: [get], nonResourceURLs: ["/healthz*", /version]}
      action: allow
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: labelled}
spec:
  subjects: {podSelector: {matchLabels: {team: data}, matchExpressions: [{key: tier, operator: NotIn, values: [prod]}]}}
  rules:
    - name: configmaps
      match: {resources: [configmaps]}
      action: allow
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: trial}
spec:
  mode: shadow
  subjects: {users: ["system:serviceaccount:trial:*"]}
  defaultAction: deny
"#;

fn user(name: &str) -> UserInfo {
    let ns = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split(':').next())
        .unwrap_or("");
    UserInfo {
        username: name.to_owned(),
        uid: String::new(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra: BTreeMap::new(),
    }
}

fn request(method: &str, uri: &str) -> RequestInfo {
    RequestInfo::parse(
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &uri.parse::<Uri>().unwrap(),
    )
    .unwrap()
}

fn set(default: DefaultAction) -> PolicySet {
    let policies = file::parse(POLICIES, "test.yaml")
        .unwrap()
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    PolicySet::new(policies, default, false, 1)
}

#[test]
fn decisions_follow_specificity_then_strictness() {
    let set = set(DefaultAction::Deny);
    let ci = user("system:serviceaccount:ci:deployer");
    let trial = user("system:serviceaccount:trial:bot");
    let admin = user("kubernetes-admin");
    let data_labels: BTreeMap<String, String> = [
        ("team".into(), "data".into()),
        ("tier".into(), "dev".into()),
    ]
    .into();
    let prod_labels: BTreeMap<String, String> = [
        ("team".into(), "data".into()),
        ("tier".into(), "prod".into()),
    ]
    .into();
    let caller = |u| Caller {
        user: Some(u),
        ..Caller::default()
    };
    let cases: Vec<(&str, Caller<'_>, &str, &str, Action, &str)> = vec![
        (
            "reads are allowed",
            caller(&ci),
            "GET",
            "/api/v1/namespaces/demo/pods",
            Action::Allow,
            "ci-bots/read",
        ),
        (
            "watch too",
            caller(&ci),
            "GET",
            "/api/v1/pods?watch=true",
            Action::Allow,
            "ci-bots/read",
        ),
        (
            "secrets: the narrower deny wins",
            caller(&ci),
            "GET",
            "/api/v1/namespaces/demo/secrets/db",
            Action::Deny,
            "ci-bots/no-secrets",
        ),
        (
            "delete pods in demo is held",
            caller(&ci),
            "DELETE",
            "/api/v1/namespaces/demo/pods/web-0",
            Action::Approve,
            "ci-bots/delete-pods-needs-a-human",
        ),
        (
            "delete pods elsewhere: the policy default",
            caller(&ci),
            "DELETE",
            "/api/v1/namespaces/prod/pods/web-0",
            Action::Deny,
            "ci-bots (default)",
        ),
        (
            "exec needs kubectl as the process",
            caller(&ci),
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/exec?command=ls",
            Action::Deny,
            "ci-bots (default)",
        ),
        (
            "exec from kubectl",
            Caller {
                process: Some("kubectl"),
                ..caller(&ci)
            },
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/exec?command=ls",
            Action::Allow,
            "ci-bots/exec-from-kubectl",
        ),
        (
            "pods/exec is not pods",
            caller(&ci),
            "DELETE",
            "/api/v1/namespaces/demo/pods/web-0/exec",
            Action::Deny,
            "ci-bots (default)",
        ),
        (
            "scale of the named deployment",
            caller(&ci),
            "PATCH",
            "/apis/apps/v1/namespaces/demo/deployments/web/scale",
            Action::Allow,
            "ci-bots/scale-web",
        ),
        (
            "scale of another one",
            caller(&ci),
            "PATCH",
            "/apis/apps/v1/namespaces/demo/deployments/api/scale",
            Action::Deny,
            "ci-bots (default)",
        ),
        (
            "non-resource path",
            caller(&ci),
            "GET",
            "/healthz/ready",
            Action::Allow,
            "ci-bots/health",
        ),
        (
            "a resource rule never matches a path",
            caller(&ci),
            "GET",
            "/openapi/v3",
            Action::Deny,
            "ci-bots (default)",
        ),
        (
            "others fall to the global default",
            caller(&admin),
            "GET",
            "/api/v1/pods",
            Action::Deny,
            "global default",
        ),
        (
            "pod labels select",
            Caller {
                pod_labels: Some(&data_labels),
                ..caller(&admin)
            },
            "GET",
            "/api/v1/namespaces/x/configmaps",
            Action::Allow,
            "labelled/configmaps",
        ),
        (
            "NotIn excludes prod",
            Caller {
                pod_labels: Some(&prod_labels),
                ..caller(&admin)
            },
            "GET",
            "/api/v1/namespaces/x/configmaps",
            Action::Deny,
            "global default",
        ),
        (
            "no pod, no selector match",
            caller(&admin),
            "GET",
            "/api/v1/namespaces/x/configmaps",
            Action::Deny,
            "global default",
        ),
        (
            "shadow mode lets it pass",
            caller(&trial),
            "DELETE",
            "/api/v1/namespaces/trial/pods/x",
            Action::Allow,
            "trial (default)",
        ),
    ];
    for (what, caller, method, uri, action, source) in cases {
        let d = set.evaluate(&caller, &request(method, uri));
        assert_eq!((d.action, &*d.source), (action, source), "{what}");
    }
    let d = set.evaluate(
        &caller(&trial),
        &request("DELETE", "/api/v1/namespaces/trial/pods/x"),
    );
    assert_eq!(d.shadowed, Some(Action::Deny), "recorded as would-deny");
    let d = set.evaluate(
        &caller(&ci),
        &request("GET", "/api/v1/namespaces/demo/secrets"),
    );
    assert_eq!(d.message.as_deref(), Some("bots do not read secrets"));
    let d = set.evaluate(
        &caller(&ci),
        &request("DELETE", "/api/v1/namespaces/demo/pods/a"),
    );
    assert_eq!(
        (d.approvers.as_slice(), d.approval_timeout_seconds),
        (&["sre".to_owned()][..], 60)
    );
    assert_eq!(d.notify, None, "no notify: the agent's every target");

    // The global default and global shadow mode.
    let open = self::set(DefaultAction::Allow);
    assert_eq!(
        open.evaluate(&caller(&admin), &request("GET", "/api/v1/pods"))
            .action,
        Action::Allow
    );
    let mut shadow = self::set(DefaultAction::Deny);
    shadow.shadow = true;
    let d = shadow.evaluate(
        &caller(&ci),
        &request("GET", "/api/v1/namespaces/demo/secrets/db"),
    );
    assert_eq!((d.action, d.shadowed), (Action::Allow, Some(Action::Deny)));
}

#[test]
fn ties_go_to_the_stricter_action() {
    let text = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: a}
spec:
  rules:
    - {name: allow-pods, match: {resources: [pods]}, action: allow}
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: b}
spec:
  rules:
    - {name: deny-pods, match: {resources: [pods]}, action: deny}
    - {name: hold-pods, match: {resources: [pods]}, action: approve}
"#;
    let d = anonymous_get_of_pods(text);
    assert_eq!((d.action, &*d.source), (Action::Deny, "b/deny-pods"));
}

/// What `text`'s policies, under a global default of allow, decide for an anonymous
/// GET of `/api/v1/pods`.
fn anonymous_get_of_pods(text: &str) -> Decision {
    let policies = file::parse(text, "t")
        .unwrap()
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    PolicySet::new(policies, DefaultAction::Allow, false, 1)
        .evaluate(&Caller::default(), &request("GET", "/api/v1/pods"))
}

#[test]
fn a_policy_default_of_deny_wins_over_earlier_and_later_allows() {
    let doc = |name: &str, default: &str| {
        format!(
            "apiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  defaultAction: {default}\n  \
             rules:\n    - {{name: nodes, match: {{resources: [nodes]}}, action: allow}}\n"
        )
    };
    let decide = |defaults: &[(&str, &str)]| {
        let text: Vec<String> = defaults.iter().map(|(n, d)| doc(n, d)).collect();
        let d = anonymous_get_of_pods(&text.join("---\n"));
        (d.action, d.source.to_string())
    };
    assert_eq!(
        decide(&[("a", "allow"), ("b", "deny"), ("c", "deny"), ("d", "allow")]),
        (Action::Deny, "b (default)".to_owned())
    );
    assert_eq!(
        decide(&[("a", "allow"), ("b", "allow")]),
        (Action::Allow, "a (default)".to_owned())
    );
    assert_eq!(
        decide(&[("a", "deny"), ("b", "allow")]),
        (Action::Deny, "a (default)".to_owned())
    );
}

#[test]
fn invalid_policies_are_rejected_with_their_location() {
    let doc = |spec: &str| {
        format!(
            "apiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {{name: p}}\nspec:\n{spec}"
        )
    };
    let cases = [
        (doc("  rules: [{name: r, match: {verbs: [delet]}, action: deny}]\n"), "spec.rules[0].match.verbs[0]: unknown verb \"delet\""),
        (doc("  rules: [{name: r, action: allow}, {name: r, action: deny}]\n"), "spec.rules[1].name: duplicate rule name \"r\""),
        (doc("  subjects: {podSelector: {matchLabels: {'bad key!': x}}}\n"), "spec.subjects.podSelector.matchLabels: invalid label key"),
        (doc("  subjects: {podSelector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}}\n"), "spec.subjects.podSelector.matchExpressions[0].operator: unknown operator"),
        (doc("  subjects: {podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}\n"), "matchExpressions[0].values: operator Exists takes no values"),
        (doc("  rules: [{name: r, match: {resources: ['pods[0]']}, action: allow}]\n"), "spec.rules[0].match.resources[0]: bad glob"),
        (doc("  rules: [{name: r, match: {resources: [Pods]}, action: allow}]\n"), "lowercase plurals"),
        (doc("  subjects: {serviceAccounts: [deployer]}\n"), "spec.subjects.serviceAccounts[0]: \"deployer\" is not NAMESPACE/NAME"),
        (doc("  rules: [{name: r, match: {resources: [pods], nonResourceURLs: [/x]}, action: allow}]\n"), "either resources or non-resource URLs"),
        (doc("  rules: [{name: r, action: allow, message: hi}]\n"), "only a `deny` rule takes a message"),
        (doc("  rules: [{name: r, action: approve, approval: {notify: [sre, 'https://hooks.example.com/x']}}]\n"), "spec.rules[0].approval.notify[1]: \"https://hooks.example.com/x\" is not a notification target's name"),
        (doc("  rules: [{name: r, action: maybe}]\n"), "unknown variant `maybe`"),
        (doc("  rulez: []\n"), "unknown field `rulez`"),
        (format!("{}---\n{}", doc("  {}\n"), doc("  {}\n")), "document 2: duplicate policy name \"p\""),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".to_owned(), "expected apiVersion kgate.io/v1alpha1, kind KgatePolicy"),
        ("apiVersion: kgate.io/v1alpha1\nkind: KgatePolicy\nmetadata: {name: p}\nspec: {rules: [\n".to_owned(), "line"),
    ];
    for (text, needle) in cases {
        let err = file::parse(&text, "policy.yaml").unwrap_err().to_string();
        assert!(err.starts_with("policy.yaml: document "), "{err}");
        assert!(
            err.contains(needle),
            "{text}\n=> {err}\n(wanted {needle:?})"
        );
    }
}

/// The digest says whether two agents enforce the same thing: the order policies
/// arrive in and the generation counter do not matter; a spec, the global default or
/// the global mode does.
#[test]
fn the_digest_follows_what_is_in_force() {
    let compiled = |text: &str| -> Vec<std::sync::Arc<_>> {
        file::parse(text, "test.yaml")
            .unwrap()
            .into_iter()
            .map(std::sync::Arc::new)
            .collect()
    };
    let base = set(DefaultAction::Deny);
    assert_eq!(base.digest.len(), 16, "{}", base.digest);
    let mut reversed = compiled(POLICIES);
    reversed.reverse();
    let cases = [
        (
            "same policies, other order, other generation",
            PolicySet::new(reversed, DefaultAction::Deny, false, 9),
            true,
        ),
        (
            "one rule changed",
            PolicySet::new(
                compiled(&POLICIES.replace("timeoutSeconds: 60", "timeoutSeconds: 61")),
                DefaultAction::Deny,
                false,
                1,
            ),
            false,
        ),
        (
            "a policy renamed",
            PolicySet::new(
                compiled(&POLICIES.replace("name: trial", "name: trial-2")),
                DefaultAction::Deny,
                false,
                1,
            ),
            false,
        ),
        ("global default", set(DefaultAction::Allow), false),
        (
            "global shadow mode",
            PolicySet::new(compiled(POLICIES), DefaultAction::Deny, true, 1),
            false,
        ),
    ];
    for (name, other, same) in cases {
        assert_eq!(other.digest == base.digest, same, "{name}");
    }
}
