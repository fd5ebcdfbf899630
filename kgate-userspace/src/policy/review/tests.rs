use std::{collections::BTreeMap, sync::Arc};

use super::{Question, decide, restrictions};
use crate::{
    identity::UserInfo,
    policy::{
        Caller, PolicySet, file,
        types::{Action, DefaultAction},
    },
    request_info::RequestInfo,
};

const POLICIES: &str = r#"
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: bots}
spec:
  subjects: {serviceAccounts: ["demo/bot"]}
  defaultAction: deny
  rules:
    - name: read
      match: {verbs: [get, list, watch]}
      action: allow
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
    - name: no-exec
      match: {resources: ["pods/exec"]}
      action: deny
    - name: delete-pods
      match: {verbs: [delete], resources: [pods], namespaces: [demo]}
      action: approve
    - name: scale-web
      match: {verbs: [patch, update], apiGroups: [apps], resources: ["deployments/scale"], resourceNames: [web]}
      action: allow
    - name: sandbox
      match: {namespaces: [sandbox]}
      action: allow
    - name: no-prod-db
      match: {verbs: [get, list], resources: [configmaps], resourceNames: [prod-db]}
      action: deny
    - name: health
      match: {verbs: [get], nonResourceURLs: ["/healthz*", /version]}
      action: allow
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: trial}
spec:
  mode: shadow
  subjects: {serviceAccounts: ["demo/trial"]}
  defaultAction: deny
  rules:
    - name: read
      match: {verbs: [get, list]}
      action: allow
    - name: no-secrets
      match: {resources: [secrets]}
      action: deny
---
apiVersion: kgate.io/v1alpha1
kind: KgatePolicy
metadata: {name: open}
spec:
  subjects: {users: [admin]}
  defaultAction: allow
"#;

fn set(shadow: bool) -> PolicySet {
    let policies = file::parse(POLICIES, "test.yaml")
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    PolicySet::new(policies, DefaultAction::Deny, shadow, 1)
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.to_owned(),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
        extra: BTreeMap::new(),
    }
}

const BOT: &str = "system:serviceaccount:demo:bot";
const TRIAL: &str = "system:serviceaccount:demo:trial";

/// One case a line: `user | question | decision | deciding source | why`. The
/// question is `verb group resource subresource namespace name` or `verb path`, `-`
/// for an empty attribute; the decision `allow`, `deny`, `approve`, or `allow, would
/// deny` in shadow mode.
const CASES: &str = "
bot      | get - pods - demo web-0          | allow   | bots/read       | exact
bot      | get - pods - demo -              | allow   | bots/read       | every name of a get
bot      | list - secrets - demo -          | deny    | bots/no-secrets | a denied resource
bot      | * - secrets - demo -             | deny    | bots/no-secrets | every verb
bot      | - - secrets - demo -             | deny    | bots/no-secrets | an empty verb is every verb
bot      | * - pods - demo -                | deny    | bots (default)  | the verbs no rule allows are denied
bot      | get - * - demo -                 | deny    | bots/no-prod-db | every resource: the most specific deny in it
bot      | get - - - demo -                 | deny    | bots/no-prod-db | an empty resource is every resource
bot      | list - * - demo -                | deny    | bots/no-secrets | a list names no object: the name rule is out
bot      | get * deployments - demo -       | allow   | bots/read       | every group of a read
bot      | delete - pods - demo -           | approve | bots/delete-pods | held for approval
bot      | delete - pods - - -              | deny    | bots (default)  | held in demo only, not in every namespace
bot      | get - pods * demo -              | deny    | bots/no-exec    | every subresource includes exec
bot      | get - pods - demo -              | allow   | bots/read       | no subresource
bot      | create - pods exec demo web-0    | deny    | bots/no-exec    | the exec subresource
bot      | get - configmaps - demo prod-db  | deny    | bots/no-prod-db | a name a narrower rule denies
bot      | get - configmaps - demo other    | allow   | bots/read       | another name
bot      | get - configmaps - demo -        | deny    | bots/no-prod-db | every name includes the denied one
bot      | list - configmaps - demo -       | allow   | bots/read       | a list names no object
bot      | patch apps deployments scale demo web | allow | bots/scale-web | a name rule
bot      | patch apps deployments scale demo -   | deny  | bots (default) | a name rule does not cover every name
bot      | * * * - sandbox -                | deny    | bots/no-prod-db | a namespace rule, with denies in it
bot      | list * * - sandbox -             | deny    | bots/no-secrets | a namespace rule, with a deny in it
bot      | delete - pods - sandbox -        | allow   | bots/sandbox    | a namespace rule
bot      | get /version                     | allow   | bots/health     | a non-resource path
bot      | get /healthz/ready               | allow   | bots/health     | a path glob
bot      | post /healthz                    | deny    | bots (default)  | another verb on a path
bot      | * /version                       | deny    | bots (default)  | every verb on a path
bot      | get *                            | deny    | bots (default)  | every path
trial    | delete - secrets - demo -        | allow, would deny | trial/no-secrets | shadow mode
trial    | * - pods - demo -                | allow, would deny | trial (default)  | shadow: verbs no rule allows
trial    | get - pods - demo -              | allow   | trial/read      | shadow mode, allowed
admin    | * * * * - -                      | allow   | open (default)  | a policy that allows by default
stranger | get - pods - demo -              | deny    | global default  | no policy
";

/// `-` stands for an empty attribute.
fn question(attrs: &str) -> Question {
    let a: Vec<&str> = attrs
        .split_whitespace()
        .map(|a| if a == "-" { "" } else { a })
        .collect();
    match a.as_slice() {
        [verb, path] => Question::non_resource(verb, path),
        [verb, group, resource, sub, ns, name] => {
            Question::resource(verb, group, resource, sub, ns, name)
        }
        _ => panic!("bad case {attrs:?}"),
    }
}

#[test]
fn questions_with_wildcards_are_answered_for_every_request_they_cover() {
    let set = set(false);
    for line in CASES.lines().filter(|l| !l.trim().is_empty()) {
        let [name, attrs, decision, source, why] =
            line.split('|').map(str::trim).collect::<Vec<_>>()[..]
        else {
            panic!("bad case {line:?}");
        };
        let name = match name {
            "bot" => BOT,
            "trial" => TRIAL,
            other => other,
        };
        let user = user(name);
        let caller = Caller {
            user: Some(&user),
            ..Caller::default()
        };
        let d = decide(&set, &caller, &question(attrs));
        let got = match d.shadowed {
            Some(would) => format!("{:?}, would {would:?}", d.action),
            None => format!("{:?}", d.action),
        };
        assert_eq!(
            (got.to_lowercase().as_str(), &*d.source),
            (decision, source),
            "{why}: {attrs}"
        );
    }
}

#[test]
fn exact_questions_are_decided_as_the_request_would_be() {
    let set = set(false);
    for name in [BOT, TRIAL, "admin", "stranger"] {
        let user = user(name);
        let caller = Caller {
            user: Some(&user),
            ..Caller::default()
        };
        for (verb, group, resource, sub, ns, object) in [
            ("get", "", "pods", "", "demo", "web-0"),
            ("delete", "", "secrets", "", "demo", "db"),
            ("delete", "", "pods", "", "demo", "web-0"),
            ("create", "", "pods", "exec", "demo", "web-0"),
            ("get", "", "configmaps", "", "demo", "prod-db"),
            ("patch", "apps", "deployments", "scale", "demo", "web"),
            ("list", "", "configmaps", "", "demo", ""),
            ("delete", "", "pods", "", "sandbox", "x"),
        ] {
            let request = RequestInfo {
                is_resource_request: true,
                verb: verb.into(),
                api_group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: object.into(),
                ..RequestInfo::default()
            };
            let q = Question::resource(verb, group, resource, sub, ns, object);
            assert_eq!(
                decide(&set, &caller, &q),
                set.evaluate(&caller, &request),
                "{name}: {q:?}"
            );
        }
    }
}

#[test]
fn global_shadow_mode_reports_and_never_refuses() {
    let set = set(true);
    let user = user(BOT);
    let caller = Caller {
        user: Some(&user),
        ..Caller::default()
    };
    let d = decide(&set, &caller, &question("* - secrets - demo -"));
    assert_eq!(
        (d.action, d.shadowed, &*d.source),
        (Action::Allow, Some(Action::Deny), "bots/no-secrets")
    );
    assert!(restrictions(&set, &caller).is_empty());
}

#[test]
fn restrictions_name_what_enforcing_policy_may_refuse() {
    let set = set(false);
    let of = |name: &str| {
        let user = user(name);
        let caller = Caller {
            user: Some(&user),
            ..Caller::default()
        };
        restrictions(&set, &caller)
    };
    assert_eq!(
        of(BOT),
        [
            "bots/no-secrets (deny)",
            "bots/no-exec (deny)",
            "bots/delete-pods (approve)",
            "bots/no-prod-db (deny)",
            "bots (default): deny",
        ]
    );
    assert!(of(TRIAL).is_empty(), "shadow mode refuses nothing");
    assert!(of("admin").is_empty(), "{:?}", of("admin"));
    assert_eq!(of("stranger"), ["global default: deny"]);
}

#[test]
fn questions_describe_themselves() {
    for (attrs, text) in [
        (
            "delete - secrets - demo -",
            "delete secrets in namespace \"demo\"",
        ),
        (
            "* apps deployments scale - web",
            "* deployments.apps/scale \"web\" in every namespace",
        ),
        ("- * * * demo -", "* *.*/* in namespace \"demo\""),
        ("get /healthz", "get path /healthz"),
    ] {
        assert_eq!(question(attrs).describe(), text);
    }
}
