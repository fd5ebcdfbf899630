//! Validates policies and builds their matchers. Every error names its location
//! (`policy "ci": spec.rules[2].match.verbs[0]: unknown verb "delet"`), so a bad
//! policy can be fixed from the message alone.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use wildmatch::WildMatch;

use super::types::{
    Action, DefaultAction, KgatePolicySpec, LabelSelector, Mode, RequestMatch, Subjects,
};
use crate::request_info::{FILTER_VERBS, NON_RESOURCE_VERBS, RESOURCE_VERBS, SPECIAL_VERBS};

/// Whether a request can carry `verb` (`*` matches every verb): the verbs of resource
/// requests, those a path segment sets, and the lowercase methods of non-resource ones.
fn is_known_verb(verb: &str) -> bool {
    verb == "*" || known_verbs().any(|v| v == verb)
}

/// The verbs [`is_known_verb`] accepts, each once, for messages.
fn known_verbs() -> impl Iterator<Item = &'static str> {
    let mut seen = Vec::new();
    RESOURCE_VERBS
        .into_iter()
        .chain(SPECIAL_VERBS)
        .chain(FILTER_VERBS)
        .chain(NON_RESOURCE_VERBS)
        .filter(move |v| {
            let new = !seen.contains(v);
            seen.push(*v);
            new
        })
}

/// Default hold time of an approval.
const DEFAULT_APPROVAL_TIMEOUT: u64 = 300;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy:?}: {at}: {message}")]
pub(crate) struct PolicyError {
    pub policy: String,
    /// Where in the object, e.g. `spec.rules[2].match.verbs[0]`.
    pub at: String,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub name: String,
    /// `NAME (default)`: the source of the policy's default decisions.
    pub default_source: Arc<str>,
    pub mode: Mode,
    pub subjects: SubjectMatcher,
    pub default_action: Option<DefaultAction>,
    pub rules: Vec<CompiledRule>,
    /// SHA-256 of the name and the spec as JSON: two agents hold the same policy when
    /// these are equal, whatever each one's generation counter says.
    pub digest: [u8; 32],
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub name: String,
    /// `POLICY/RULE`: the source of the rule's decisions.
    pub source: Arc<str>,
    pub subjects: SubjectMatcher,
    pub request: RequestMatcher,
    pub action: Action,
    pub message: Option<String>,
    pub approvers: Vec<String>,
    pub approval_timeout_seconds: u64,
    /// The notification targets of a held request (`None`: the agent's every one).
    pub notify: Option<Vec<String>>,
    pub unmasked: bool,
    /// How many dimensions the rule (and its policy's subjects) constrain.
    pub specificity: u32,
}

/// Subjects compiled: each non-empty list must have a match.
#[derive(Debug, Default)]
pub(crate) struct SubjectMatcher {
    pub users: Vec<WildMatch>,
    pub service_accounts: Vec<WildMatch>,
    pub groups: Vec<WildMatch>,
    pub pod_selector: Option<Vec<Requirement>>,
    pub containers: Vec<WildMatch>,
    pub processes: Vec<WildMatch>,
}

/// One label requirement of a pod selector.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Debug, Default)]
pub(crate) struct RequestMatcher {
    pub verbs: Vec<WildMatch>,
    pub api_groups: Vec<WildMatch>,
    /// (resource, subresource): `pods` matches only the resource itself, `pods/*`
    /// any of its subresources, `*` resources without subresource.
    pub resources: Vec<(WildMatch, Option<WildMatch>)>,
    pub namespaces: Vec<WildMatch>,
    pub resource_names: Vec<WildMatch>,
    pub non_resource_urls: Vec<WildMatch>,
}

/// Validates and compiles one policy.
pub(crate) fn compile(name: &str, spec: &KgatePolicySpec) -> Result<CompiledPolicy, PolicyError> {
    let err = |at: String, message: String| PolicyError {
        policy: name.to_owned(),
        at,
        message,
    };
    if name.is_empty() {
        return Err(err("metadata.name".into(), "a policy needs a name".into()));
    }
    let policy_subjects =
        subjects(&spec.subjects, "spec.subjects").map_err(|(at, m)| err(at, m))?;
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.name.trim().is_empty() {
            return Err(err(format!("{at}.name"), "a rule needs a name".into()));
        }
        if !seen.insert(rule.name.as_str()) {
            return Err(err(
                format!("{at}.name"),
                format!("duplicate rule name {:?}", rule.name),
            ));
        }
        let rule_subjects =
            subjects(&rule.subjects, &format!("{at}.subjects")).map_err(|(at, m)| err(at, m))?;
        let request =
            request(&rule.matches, &format!("{at}.match")).map_err(|(at, m)| err(at, m))?;
        if rule.action != Action::Approve && rule.approval.is_some() {
            return Err(err(
                format!("{at}.approval"),
                "only an `approve` rule takes approval settings".into(),
            ));
        }
        if rule.action == Action::Deny && rule.unmasked {
            return Err(err(
                format!("{at}.unmasked"),
                "a `deny` rule returns nothing to unmask".into(),
            ));
        }
        if rule.action != Action::Deny && rule.message.is_some() {
            return Err(err(
                format!("{at}.message"),
                "only a `deny` rule takes a message".into(),
            ));
        }
        let timeout = rule
            .approval
            .as_ref()
            .and_then(|a| a.timeout_seconds)
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
        if timeout == 0 || timeout > 24 * 3600 {
            return Err(err(
                format!("{at}.approval.timeoutSeconds"),
                "must be between 1 and 86400".into(),
            ));
        }
        let notify = rule.approval.as_ref().and_then(|a| a.notify.as_deref());
        if let Some((j, bad)) = notify
            .unwrap_or_default()
            .iter()
            .enumerate()
            .find(|(_, n)| !crate::config::is_target_name(n))
        {
            return Err(err(
                format!("{at}.approval.notify[{j}]"),
                format!("{bad:?} is not a notification target's name (a DNS label)"),
            ));
        }
        let specificity = policy_subjects.count() + rule_subjects.count() + request.count();
        rules.push(CompiledRule {
            name: rule.name.clone(),
            source: format!("{name}/{}", rule.name).into(),
            subjects: rule_subjects,
            request,
            action: rule.action,
            message: rule.message.clone(),
            approvers: rule
                .approval
                .as_ref()
                .map(|a| a.approvers.clone())
                .unwrap_or_default(),
            approval_timeout_seconds: timeout,
            notify: rule.approval.as_ref().and_then(|a| a.notify.clone()),
            unmasked: rule.unmasked,
            specificity,
        });
    }
    Ok(CompiledPolicy {
        name: name.to_owned(),
        default_source: format!("{name} (default)").into(),
        mode: spec.mode,
        subjects: policy_subjects,
        default_action: spec.default_action,
        rules,
        digest: digest(name, spec),
    })
}

/// The spec's JSON is canonical: struct fields serialize in declaration order and
/// every map in the spec is a `BTreeMap`.
fn digest(name: &str, spec: &KgatePolicySpec) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[0]);
    ctx.update(&serde_json::to_vec(spec).unwrap_or_default());
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

type Located = (String, String);

fn subjects(s: &Subjects, at: &str) -> Result<SubjectMatcher, Located> {
    Ok(SubjectMatcher {
        users: globs(&s.users, &format!("{at}.users"))?,
        service_accounts: {
            let field = format!("{at}.serviceAccounts");
            for (i, sa) in s.service_accounts.iter().enumerate() {
                if sa.split('/').count() != 2 {
                    return Err((
                        format!("{field}[{i}]"),
                        format!("{sa:?} is not NAMESPACE/NAME"),
                    ));
                }
            }
            globs(&s.service_accounts, &field)?
        },
        groups: globs(&s.groups, &format!("{at}.groups"))?,
        pod_selector: s
            .pod_selector
            .as_ref()
            .map(|sel| selector(sel, &format!("{at}.podSelector")))
            .transpose()?,
        containers: globs(&s.containers, &format!("{at}.containers"))?,
        processes: globs(&s.processes, &format!("{at}.processes"))?,
    })
}

fn request(m: &RequestMatch, at: &str) -> Result<RequestMatcher, Located> {
    for (i, verb) in m.verbs.iter().enumerate() {
        if !is_known_verb(verb) {
            let known: Vec<_> = known_verbs().chain(["*"]).collect();
            return Err((
                format!("{at}.verbs[{i}]"),
                format!("unknown verb {verb:?} (known: {})", known.join(", ")),
            ));
        }
    }
    let resource_fields = !m.api_groups.is_empty()
        || !m.resources.is_empty()
        || !m.namespaces.is_empty()
        || !m.resource_names.is_empty();
    if !m.non_resource_urls.is_empty() && resource_fields {
        return Err((
            format!("{at}.nonResourceURLs"),
            "a rule matches either resources or non-resource URLs, not both".into(),
        ));
    }
    for (i, url) in m.non_resource_urls.iter().enumerate() {
        if !url.starts_with('/') && url != "*" {
            return Err((
                format!("{at}.nonResourceURLs[{i}]"),
                format!("{url:?} is not a path"),
            ));
        }
    }
    let mut resources = Vec::with_capacity(m.resources.len());
    for (i, r) in m.resources.iter().enumerate() {
        let field = format!("{at}.resources[{i}]");
        check_glob(r, &field)?;
        let (resource, sub) = match r.split_once('/') {
            Some((res, sub)) if !res.is_empty() && !sub.is_empty() && !sub.contains('/') => {
                (res, Some(WildMatch::new(sub)))
            }
            Some(_) => {
                return Err((
                    field,
                    format!("{r:?} is not RESOURCE or RESOURCE/SUBRESOURCE"),
                ));
            }
            None => (r.as_str(), None),
        };
        if resource != "*" && resource.chars().any(|c| c.is_ascii_uppercase()) {
            return Err((
                field,
                format!("{r:?}: resources are lowercase plurals (pods, not Pod)"),
            ));
        }
        resources.push((WildMatch::new(resource), sub));
    }
    Ok(RequestMatcher {
        verbs: globs(&m.verbs, &format!("{at}.verbs"))?,
        api_groups: m.api_groups.iter().map(|g| WildMatch::new(g)).collect(),
        resources,
        namespaces: globs(&m.namespaces, &format!("{at}.namespaces"))?,
        resource_names: globs(&m.resource_names, &format!("{at}.resourceNames"))?,
        non_resource_urls: globs(&m.non_resource_urls, &format!("{at}.nonResourceURLs"))?,
    })
}

fn globs(patterns: &[String], at: &str) -> Result<Vec<WildMatch>, Located> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            check_glob(p, &format!("{at}[{i}]"))?;
            Ok(WildMatch::new(p))
        })
        .collect()
}

/// Globs are `*` and `?` over literal text: no empty patterns, no character classes
/// or braces that a reader might expect to work.
fn check_glob(pattern: &str, at: &str) -> Result<(), Located> {
    if pattern.trim().is_empty() {
        return Err((at.to_owned(), "empty pattern".into()));
    }
    if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
        return Err((
            at.to_owned(),
            format!("bad glob {pattern:?}: {c:?} is not supported (only * and ?)"),
        ));
    }
    Ok(())
}

fn selector(sel: &LabelSelector, at: &str) -> Result<Vec<Requirement>, Located> {
    let mut out = Vec::new();
    for (key, value) in &sel.match_labels {
        label_key(key, &format!("{at}.matchLabels"))?;
        label_value(value, &format!("{at}.matchLabels[{key:?}]"))?;
        out.push(Requirement::In(key.clone(), vec![value.clone()]));
    }
    for (i, expr) in sel.match_expressions.iter().enumerate() {
        let field = format!("{at}.matchExpressions[{i}]");
        label_key(&expr.key, &format!("{field}.key"))?;
        for (j, v) in expr.values.iter().enumerate() {
            label_value(v, &format!("{field}.values[{j}]"))?;
        }
        if !matches!(
            expr.operator.as_str(),
            "In" | "NotIn" | "Exists" | "DoesNotExist"
        ) {
            return Err((
                format!("{field}.operator"),
                format!(
                    "unknown operator {:?} (In, NotIn, Exists, DoesNotExist)",
                    expr.operator
                ),
            ));
        }
        let needs_values = matches!(expr.operator.as_str(), "In" | "NotIn");
        if needs_values == expr.values.is_empty() {
            return Err((
                format!("{field}.values"),
                if needs_values {
                    format!("operator {} needs values", expr.operator)
                } else {
                    format!("operator {} takes no values", expr.operator)
                },
            ));
        }
        out.push(match expr.operator.as_str() {
            "In" => Requirement::In(expr.key.clone(), expr.values.clone()),
            "NotIn" => Requirement::NotIn(expr.key.clone(), expr.values.clone()),
            "Exists" => Requirement::Exists(expr.key.clone()),
            _ => Requirement::DoesNotExist(expr.key.clone()),
        });
    }
    Ok(out)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, `-`, `_` and `.` inside.
fn label_key(key: &str, at: &str) -> Result<(), Located> {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let bad = |why: &str| Err((at.to_owned(), format!("invalid label key {key:?}: {why}")));
    if let Some(prefix) = prefix
        && (prefix.is_empty()
            || prefix.len() > 253
            || !prefix.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }))
    {
        return bad("the prefix must be a DNS subdomain");
    }
    if name.is_empty() || name.len() > 63 || !label_chars(name) {
        return bad(
            "the name must be 1-63 alphanumerics, '-', '_' or '.', alphanumeric at both ends",
        );
    }
    Ok(())
}

fn label_value(value: &str, at: &str) -> Result<(), Located> {
    if value.len() > 63 || !(value.is_empty() || label_chars(value)) {
        return Err((
            at.to_owned(),
            format!(
                "invalid label value {value:?}: at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
            ),
        ));
    }
    Ok(())
}

fn label_chars(s: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ends(s.chars().next())
        && ends(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// === impl SubjectMatcher ===

impl SubjectMatcher {
    fn count(&self) -> u32 {
        let n = [
            !self.users.is_empty(),
            !self.service_accounts.is_empty(),
            !self.groups.is_empty(),
            self.pod_selector.is_some(),
            !self.containers.is_empty(),
            !self.processes.is_empty(),
        ];
        n.iter().map(|&b| u32::from(b)).sum()
    }

    /// Whether a pod's labels satisfy the selector (no selector: yes).
    pub(crate) fn labels_match(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let Some(reqs) = &self.pod_selector else {
            return true;
        };
        let Some(labels) = labels else {
            return false;
        };
        reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

// === impl RequestMatcher ===

impl RequestMatcher {
    fn count(&self) -> u32 {
        let constrained =
            |v: &[WildMatch]| u32::from(!v.is_empty() && !v.iter().any(|g| *g == "*"));
        constrained(&self.verbs)
            + constrained(&self.api_groups)
            + u32::from(!self.resources.is_empty())
            + constrained(&self.namespaces)
            // A name is the narrowest thing a rule can say.
            + 2 * constrained(&self.resource_names)
            + constrained(&self.non_resource_urls)
    }
}
