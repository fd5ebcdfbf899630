//! Policy: which requests each workload may make. Policies are `KgatePolicy` objects
//! (CRDs, or the same documents in a file); evaluation is a pure function of the
//! compiled policies, the caller and the request's attributes.
//!
//! Precedence, in one place: every rule whose policy and rule subjects match the
//! caller and whose request match matches the request is a candidate. The most
//! specific candidate decides (specificity: how many of subjects and request
//! dimensions it constrains; resource names count twice). Among equally specific
//! candidates deny wins over approve over allow. Without a candidate, the default
//! actions of the policies whose subjects match apply (deny wins), then the agent's
//! global default (deny unless configured).
//!
//! Shadow mode (per policy, or globally): a deny or approve decision is recorded as
//! "would deny"/"would hold" and the request passes.
//!
//! Questions about sets of requests (`kubectl auth can-i` with `*`) are answered by
//! the same evaluation in [`review`].
//!
//! Not here: holding requests for approval (the approve stage does it with the
//! decision this returns) and loading policy sources ([`store`], [`file`](mod@file);
//! the cluster's `KgatePolicy` objects come from [`crate::kube::policies`]).

pub(crate) mod compile;
pub(crate) mod explain;
pub(crate) mod file;
pub(crate) mod review;
pub(crate) mod store;
#[cfg(test)]
mod tests;
pub(crate) mod types;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, LazyLock},
};

use self::{
    compile::{CompiledPolicy, CompiledRule, SubjectMatcher},
    types::{Action, DefaultAction, Mode},
};
use crate::{identity::UserInfo, request_info::RequestInfo};

/// The caller as policy sees it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Caller<'a> {
    pub user: Option<&'a UserInfo>,
    pub pod_labels: Option<&'a BTreeMap<String, String>>,
    pub container: Option<&'a str>,
    /// `comm` of the calling process.
    pub process: Option<&'a str>,
}

/// The source of decisions no policy made.
static GLOBAL_DEFAULT: LazyLock<Arc<str>> = LazyLock::new(|| "global default".into());

/// What policy decided, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    /// What happens to the request (`Allow` for a shadow-mode deny or hold).
    pub action: Action,
    /// What an enforcing policy would have done, when shadow mode let it pass.
    pub shadowed: Option<Action>,
    /// `policy/rule`, `policy (default)` or `global default`.
    pub source: Arc<str>,
    pub message: Option<String>,
    pub approvers: Vec<String>,
    pub approval_timeout_seconds: u64,
    /// Which notification targets hear of a held request (`None`: every one).
    pub notify: Option<Vec<String>>,
    /// The deciding rule grants an unmasked response.
    pub unmasked: bool,
}

/// Every compiled policy, sorted by name, and the global settings.
#[derive(Debug)]
pub(crate) struct PolicySet {
    pub policies: Vec<Arc<CompiledPolicy>>,
    pub default_action: DefaultAction,
    /// Every decision in shadow mode.
    pub shadow: bool,
    /// Which generation of the policy sources this is (for status and records).
    pub generation: u64,
    /// What is in force, in 16 hex digits: equal on two agents exactly when they hold
    /// the same policies (by name and spec) and the same global default and mode.
    /// Unlike `generation`, a local counter, it can be compared across nodes.
    pub digest: String,
}

// === impl PolicySet ===

impl PolicySet {
    pub(crate) fn new(
        mut policies: Vec<Arc<CompiledPolicy>>,
        default_action: DefaultAction,
        shadow: bool,
        generation: u64,
    ) -> Self {
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for policy in &policies {
            ctx.update(&policy.digest);
        }
        ctx.update(format!("{default_action:?} {shadow}").as_bytes());
        let digest = ctx.finish().as_ref()[..8]
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            });
        Self {
            policies,
            default_action,
            shadow,
            generation,
            digest,
        }
    }

    /// The decision for `req` from `caller`.
    pub(crate) fn evaluate(&self, caller: &Caller<'_>, req: &RequestInfo) -> Decision {
        self.evaluate_explained(caller, req, None)
    }

    /// As [`PolicySet::evaluate`], writing each step of the reasoning to `why`.
    pub(crate) fn evaluate_explained(
        &self,
        caller: &Caller<'_>,
        req: &RequestInfo,
        why: Option<&mut String>,
    ) -> Decision {
        self.evaluate_with(caller, &|_, rule| request_mismatch(rule, req), why)
    }

    /// The evaluation itself, with the request side abstracted: `mismatch` says which
    /// dimension of a rule's request match (in its policy) the request misses, if
    /// any. [`review`] asks about sets of requests through it.
    fn evaluate_with(
        &self,
        caller: &Caller<'_>,
        mismatch: &dyn Fn(&CompiledPolicy, &CompiledRule) -> Option<&'static str>,
        mut why: Option<&mut String>,
    ) -> Decision {
        let mut best: Option<(&CompiledPolicy, &CompiledRule)> = None;
        let mut default = None;
        let sa = ServiceAccount::new();
        for policy in self.policies.iter().map(|p| &**p) {
            if !subjects_match(&policy.subjects, caller, &sa) {
                note(
                    &mut why,
                    format_args!("policy {}: subjects do not match", policy.name),
                );
                continue;
            }
            default = prevailing_default(default, policy);
            for rule in &policy.rules {
                if !subjects_match(&rule.subjects, caller, &sa) {
                    note(
                        &mut why,
                        format_args!("  {}/{}: subjects do not match", policy.name, rule.name),
                    );
                    continue;
                }
                if let Some(miss) = mismatch(policy, rule) {
                    note(
                        &mut why,
                        format_args!("  {}/{}: {miss} does not match", policy.name, rule.name),
                    );
                    continue;
                }
                note(
                    &mut why,
                    format_args!(
                        "  {}/{}: matches ({:?}, specificity {})",
                        policy.name, rule.name, rule.action, rule.specificity
                    ),
                );
                if best.is_none_or(|(_, b)| outranks(rule, b)) {
                    best = Some((policy, rule));
                }
            }
        }
        let decision = match (best, default) {
            (Some((policy, rule)), _) => Decision {
                action: rule.action,
                shadowed: None,
                source: rule.source.clone(),
                message: rule.message.clone(),
                approvers: rule.approvers.clone(),
                approval_timeout_seconds: rule.approval_timeout_seconds,
                notify: rule.notify.clone(),
                unmasked: rule.unmasked,
            }
            .shadow_if(self.shadow || policy.mode == Mode::Shadow),
            (None, Some((policy, default))) => {
                Decision::default_of(default, policy.default_source.clone())
                    .shadow_if(self.shadow || policy.mode == Mode::Shadow)
            }
            (None, None) => Decision::default_of(self.default_action, GLOBAL_DEFAULT.clone())
                .shadow_if(self.shadow),
        };
        note(
            &mut why,
            format_args!(
                "decided by {}: {:?}",
                decision.source,
                decision.shadowed.unwrap_or(decision.action)
            ),
        );
        decision
    }
}

fn note(why: &mut Option<&mut String>, line: std::fmt::Arguments<'_>) {
    if let Some(why) = why.as_deref_mut() {
        let _ = writeln!(why, "{line}");
    }
}

/// Whether `a` beats `b`: more specific, or as specific and stricter.
fn outranks(a: &CompiledRule, b: &CompiledRule) -> bool {
    let strictness = |r: &CompiledRule| match r.action {
        Action::Deny => 2,
        Action::Approve => 1,
        Action::Allow => 0,
    };
    (a.specificity, strictness(a)) > (b.specificity, strictness(b))
}

/// The policies' default that decides a request no rule matches, given the one so
/// far and the next policy whose subjects match: the first deny, else the first.
fn prevailing_default<'p>(
    so_far: Option<(&'p CompiledPolicy, DefaultAction)>,
    policy: &'p CompiledPolicy,
) -> Option<(&'p CompiledPolicy, DefaultAction)> {
    match (so_far, policy.default_action) {
        (_, None) | (Some((_, DefaultAction::Deny)), _) | (Some(_), Some(DefaultAction::Allow)) => {
            so_far
        }
        (_, Some(action)) => Some((policy, action)),
    }
}

fn any(globs: &[wildmatch::WildMatch], value: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| g.matches(value))
}

/// The caller's service account as policies name it (`NAMESPACE/NAME`), worked out
/// once per evaluation and only when a matcher names service accounts.
pub(crate) type ServiceAccount = std::cell::OnceCell<Option<String>>;

fn subjects_match(s: &SubjectMatcher, caller: &Caller<'_>, sa: &ServiceAccount) -> bool {
    let username = caller.user.map_or("", |u| u.username.as_str());
    let groups: &[String] = caller.user.map_or(&[], |u| u.groups.as_slice());
    any(&s.users, username)
        && (s.service_accounts.is_empty()
            || sa
                .get_or_init(|| {
                    username
                        .strip_prefix("system:serviceaccount:")
                        .map(|rest| rest.replacen(':', "/", 1))
                })
                .as_deref()
                .is_some_and(|sa| any(&s.service_accounts, sa)))
        && (s.groups.is_empty() || groups.iter().any(|g| any(&s.groups, g)))
        && s.labels_match(caller.pod_labels)
        && (s.containers.is_empty() || caller.container.is_some_and(|c| any(&s.containers, c)))
        && (s.processes.is_empty() || caller.process.is_some_and(|p| any(&s.processes, p)))
}

/// The first request dimension that `rule` does not match, if any.
fn request_mismatch(rule: &CompiledRule, req: &RequestInfo) -> Option<&'static str> {
    let m = &rule.request;
    if !any(&m.verbs, &req.verb) {
        return Some("verb");
    }
    if !req.is_resource_request {
        if m.non_resource_urls.is_empty() {
            return Some("non-resource path (the rule is for resources)");
        }
        return (!any(&m.non_resource_urls, &req.path)).then_some("path");
    }
    if !m.non_resource_urls.is_empty() {
        return Some("resource (the rule is for non-resource paths)");
    }
    if !any(&m.api_groups, &req.api_group) {
        return Some("apiGroup");
    }
    if !m.resources.is_empty()
        && !m.resources.iter().any(|(res, sub)| {
            res.matches(&req.resource)
                && match sub {
                    None => req.subresource.is_empty(),
                    Some(sub) => !req.subresource.is_empty() && sub.matches(&req.subresource),
                }
        })
    {
        return Some("resource");
    }
    if !any(&m.namespaces, &req.namespace) {
        return Some("namespace");
    }
    if !m.resource_names.is_empty() && (req.name.is_empty() || !any(&m.resource_names, &req.name)) {
        return Some("resourceName");
    }
    None
}

// === impl Decision ===

impl Decision {
    fn default_of(action: DefaultAction, source: Arc<str>) -> Self {
        Self {
            action: match action {
                DefaultAction::Allow => Action::Allow,
                DefaultAction::Deny => Action::Deny,
            },
            shadowed: None,
            source,
            message: None,
            approvers: Vec::new(),
            approval_timeout_seconds: 0,
            notify: None,
            unmasked: false,
        }
    }

    fn shadow_if(mut self, shadow: bool) -> Self {
        if shadow && self.action != Action::Allow {
            self.shadowed = Some(self.action);
            self.action = Action::Allow;
        }
        self
    }
}
