//! Label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`)
//! and field selectors, as list, watch and deletecollection apply them. Fields:
//! `metadata.name` and `metadata.namespace` (every resource), the pod fields the real
//! server indexes (`spec.nodeName`, `spec.serviceAccountName`, `spec.restartPolicy`,
//! `spec.schedulerName`, `status.phase`, `status.podIP`) and a Secret's `type`.
//!
//! Not here: the 400 the real server answers for a field it does not support; such a
//! term matches nothing (or everything, with `!=`).

use serde_json::Value;
/// A parsed `labelSelector` and `fieldSelector`.
#[derive(Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<(String, Op)>,
    fields: Vec<(String, String, bool)>,
}

#[derive(Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
}

impl Selector {
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Self {
        let mut s = Self::default();
        for term in split_terms(labels.unwrap_or_default()) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let op = if let Some((k, v)) = term.split_once("!=") {
                (k, Op::Ne(v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, Op::Eq(v.trim().into()))
            } else if let Some((k, v)) = term.split_once(" notin ") {
                (k, Op::NotIn(set(v)))
            } else if let Some((k, v)) = term.split_once(" in ") {
                (k, Op::In(set(v)))
            } else if let Some(k) = term.strip_prefix('!') {
                (k, Op::NotExists)
            } else {
                (term, Op::Exists)
            };
            s.labels.push((op.0.trim().to_owned(), op.1));
        }
        for term in fields
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            if let Some((k, v)) = term.split_once("!=") {
                s.fields.push((k.into(), v.into(), false));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                s.fields.push((k.into(), v.into(), true));
            }
        }
        s
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(k, op)| {
            let v = labels[k].as_str();
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            }
        });
        label_ok
            && self.fields.iter().all(|(k, want, eq)| {
                let v = match k.as_str() {
                    "metadata.name"
                    | "metadata.namespace"
                    | "spec.nodeName"
                    | "spec.serviceAccountName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "status.phase"
                    | "status.podIP"
                    | "type" => k
                        .split('.')
                        .try_fold(obj, |v, part| v.get(part))
                        .and_then(Value::as_str),
                    _ => None,
                };
                (v == Some(want.as_str())) == *eq
            })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}
