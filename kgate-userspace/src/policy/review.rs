//! Policy's answer to an access review (`kubectl auth can-i`): may the caller make the
//! requests that a SelfSubjectAccessReview's attributes describe? The attributes are
//! read as the API server reads them (k8s.io/api authorization/v1 `ResourceAttributes`
//! and RBAC's `RuleAllows`): `*` in the verb, group or resource, and `""` in the
//! namespace, mean every value; `""` in the name means every name, except for the
//! collection verbs (create, list, watch, deletecollection), whose requests carry
//! none; `""` in the subresource means none, `*` every subresource. A question with
//! such a wildcard is a set of requests, and is answered for all of them, as RBAC
//! answers `yes` to `*` only when every value is granted:
//!
//! - deny when policy denies any request of the set,
//! - else approve when it holds any,
//! - else allow; in shadow mode with what enforce would do in `shadowed`.
//!
//! Without evaluating every member of the set, which may be infinite, this runs the
//! ordinary evaluation with a widened notion of a rule matching: to find a denied
//! member, deny rules match when they match *some* member and other rules only when
//! they match *every* member (then an allow winner would win for each member too, so
//! a member that a deny decides cannot be hidden). The answer is sound (never `yes`
//! when a member is refused) and may be stricter than the truth where a more specific
//! allow rule carves a hole in a deny rule. Exact questions are evaluated exactly as
//! a request with those attributes.
//!
//! [`restrictions`] lists, for a SelfSubjectRulesReview, what policy may refuse or
//! hold of a caller's requests.
//!
//! Not here: reading or rewriting the review objects (the proxy does), selector
//! attributes (`fieldSelector`, `labelSelector`: they can only narrow a question), and
//! a resource's scope: a cluster-scoped resource asked about in a namespace is judged
//! in that namespace, as RBAC judges it.

#[cfg(test)]
mod tests;

use wildmatch::WildMatch;

use super::{
    Caller, Decision, PolicySet, ServiceAccount, any,
    compile::CompiledRule,
    prevailing_default, subjects_match,
    types::{Action, DefaultAction, Mode},
};

/// One attribute of a question: a value, or every value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    Is(String),
    All,
}

/// What an access review asks about, with its wildcards resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Question {
    Resource {
        verb: Attr,
        group: Attr,
        resource: Attr,
        /// `Is("")`: the resource itself, no subresource.
        subresource: Attr,
        namespace: Attr,
        name: Attr,
    },
    NonResource {
        verb: Attr,
        path: Attr,
    },
}

/// Verbs whose requests name no object.
const COLLECTION_VERBS: [&str; 4] = ["create", "list", "watch", "deletecollection"];

// === impl Question ===

impl Question {
    /// A review's `resourceAttributes`, as the API server reads them.
    pub(crate) fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        let every_if = |all: bool, v: &str| if all { Attr::All } else { Attr::Is(v.into()) };
        Self::Resource {
            verb: every_if(matches!(verb, "*" | ""), verb),
            group: every_if(group == "*", group),
            resource: every_if(matches!(resource, "*" | ""), resource),
            subresource: every_if(subresource == "*", subresource),
            namespace: every_if(namespace.is_empty(), namespace),
            name: every_if(name.is_empty() && !COLLECTION_VERBS.contains(&verb), name),
        }
    }

    /// A review's `nonResourceAttributes`.
    pub(crate) fn non_resource(verb: &str, path: &str) -> Self {
        let every_if = |all: bool, v: &str| if all { Attr::All } else { Attr::Is(v.into()) };
        Self::NonResource {
            verb: every_if(matches!(verb, "*" | ""), verb),
            path: every_if(matches!(path, "*" | ""), path),
        }
    }

    /// `delete secrets in namespace "demo"`, `* pods "web-0" in every namespace`,
    /// `get path /healthz`: for messages.
    pub(crate) fn describe(&self) -> String {
        let show = |a: &Attr| match a {
            Attr::Is(v) => v.clone(),
            Attr::All => "*".to_owned(),
        };
        match self {
            Self::NonResource { verb, path } => format!("{} path {}", show(verb), show(path)),
            Self::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let mut out = format!("{} {}", show(verb), show(resource));
                match group {
                    Attr::Is(g) if g.is_empty() => {}
                    g => out = format!("{out}.{}", show(g)),
                }
                match subresource {
                    Attr::Is(s) if s.is_empty() => {}
                    s => out = format!("{out}/{}", show(s)),
                }
                if let Attr::Is(n) = name
                    && !n.is_empty()
                {
                    out = format!("{out} {n:?}");
                }
                match namespace {
                    Attr::Is(ns) => format!("{out} in namespace {ns:?}"),
                    Attr::All => format!("{out} in every namespace"),
                }
            }
        }
    }
}

/// Policy's decision for the requests `q` describes, from `caller` (see the module
/// docs for how a set of requests is decided).
pub(crate) fn decide(set: &PolicySet, caller: &Caller<'_>, q: &Question) -> Decision {
    // `widen(action)`: rules with this (effective) action match a part of the set.
    let eval = |widen: fn(Action) -> bool, enforced: bool| {
        set.evaluate_with(
            caller,
            &|policy, rule| {
                let shadow = set.shadow || policy.mode == Mode::Shadow;
                let action = if enforced && shadow {
                    Action::Allow
                } else {
                    rule.action
                };
                mismatch(rule, q, widen(action))
            },
            None,
        )
    };
    let deny = |a: Action| a == Action::Deny;
    let refuse = |a: Action| a != Action::Allow;
    let denied = eval(deny, true);
    if denied.action == Action::Deny {
        return denied;
    }
    let held = eval(refuse, true);
    if held.action != Action::Allow {
        return held;
    }
    // Everything passes; shadow mode reports what enforcing would do.
    let would_deny = eval(deny, false);
    if would_deny.shadowed == Some(Action::Deny) {
        return would_deny;
    }
    let would_hold = eval(refuse, false);
    if would_hold.shadowed.is_some() {
        return would_hold;
    }
    held
}

/// What enforcing policy may refuse or hold of `caller`'s requests: each deny and
/// approve rule that applies to the caller (`bots/no-secrets (deny)`), and the
/// default for requests no rule matches when it is deny (`bots (default): deny`).
/// Empty when policy refuses the caller nothing. Shadow-mode policies are left out:
/// they change no outcome.
pub(crate) fn restrictions(set: &PolicySet, caller: &Caller<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut default = None;
    let sa = ServiceAccount::new();
    for policy in set.policies.iter().map(|p| &**p) {
        if !subjects_match(&policy.subjects, caller, &sa) {
            continue;
        }
        default = prevailing_default(default, policy);
        if set.shadow || policy.mode == Mode::Shadow {
            continue;
        }
        for rule in &policy.rules {
            if rule.action != Action::Allow && subjects_match(&rule.subjects, caller, &sa) {
                out.push(format!(
                    "{}/{} ({})",
                    policy.name,
                    rule.name,
                    rule.action.name()
                ));
            }
        }
    }
    // The same fallback as the evaluation: the policies' defaults (deny wins), then
    // the global default.
    match default {
        Some((policy, DefaultAction::Deny)) if !set.shadow && policy.mode != Mode::Shadow => {
            out.push(format!("{} (default): deny", policy.name));
        }
        None if set.default_action == DefaultAction::Deny && !set.shadow => {
            out.push("global default: deny".to_owned());
        }
        _ => {}
    }
    out
}

/// The first dimension of `rule`'s request match that the question misses. With
/// `part`, the rule need match only a part of the set; otherwise all of it.
fn mismatch(rule: &CompiledRule, q: &Question, part: bool) -> Option<&'static str> {
    let m = &rule.request;
    let fits = |globs: &[WildMatch], a: &Attr| match a {
        Attr::Is(v) => any(globs, v),
        Attr::All => part || globs.is_empty() || globs.iter().any(|g| *g == "*"),
    };
    let one = |glob: &WildMatch, a: &Attr| match a {
        Attr::Is(v) => glob.matches(v),
        Attr::All => part || *glob == "*",
    };
    match q {
        Question::NonResource { verb, path } => {
            if !fits(&m.verbs, verb) {
                return Some("verb");
            }
            if m.non_resource_urls.is_empty() {
                return Some("non-resource path (the rule is for resources)");
            }
            (!fits(&m.non_resource_urls, path)).then_some("path")
        }
        Question::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            if !fits(&m.verbs, verb) {
                return Some("verb");
            }
            if !m.non_resource_urls.is_empty() {
                return Some("resource (the rule is for non-resource paths)");
            }
            if !fits(&m.api_groups, group) {
                return Some("apiGroup");
            }
            let resource_fits = m.resources.iter().any(|(res, sub)| {
                one(res, resource)
                    && match (sub, subresource) {
                        (None, Attr::Is(s)) => s.is_empty(),
                        (None, Attr::All) => false,
                        (Some(_), Attr::Is(s)) if s.is_empty() => false,
                        (Some(sub), s) => one(sub, s),
                    }
            });
            if !m.resources.is_empty() && !resource_fits {
                return Some("resource");
            }
            if !fits(&m.namespaces, namespace) {
                return Some("namespace");
            }
            let name_fits = match name {
                Attr::Is(n) => !n.is_empty() && any(&m.resource_names, n),
                Attr::All => part,
            };
            if !m.resource_names.is_empty() && !name_fits {
                return Some("resourceName");
            }
            None
        }
    }
}
