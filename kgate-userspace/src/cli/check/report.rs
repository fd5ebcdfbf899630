//! What `kgate check` found: checks in groups, each ok, warn or fail with what it saw
//! and, when not ok, what to do about it; printed as `linkerd check` prints (a title
//! per group, one line per check, the hint indented under it) or as JSON.
//!
//! Not here: the checks themselves (the sibling modules).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Outcome {
    Ok,
    /// kgate works, but not as well as it could, or not for long.
    Warn,
    /// kgate does not work (or does not protect) until this is fixed.
    Fail,
}

/// One requirement and how the cluster meets it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Check {
    /// Stable, for scripts: `api.version`, `node.cert-names`...
    pub id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: Outcome,
    pub message: String,
    /// What to do; only when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

// === impl Check ===

impl Check {
    pub(super) fn ok(id: &'static str, message: impl Into<String>) -> Self {
        Self {
            id,
            node: None,
            status: Outcome::Ok,
            message: message.into(),
            hint: None,
        }
    }

    pub(super) fn warn(
        id: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status: Outcome::Warn,
            hint: Some(hint.into()),
            ..Self::ok(id, message)
        }
    }

    pub(super) fn fail(
        id: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status: Outcome::Fail,
            hint: Some(hint.into()),
            ..Self::ok(id, message)
        }
    }

    /// The same check, about `node`.
    pub(super) fn on(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }
}

/// Every check, in the order it ran, by group.
#[derive(Debug, Default)]
pub(super) struct Report {
    groups: Vec<(String, Vec<Check>)>,
}

// === impl Report ===

impl Report {
    /// Adds `check` to the group titled `group` (a new group at the end if none yet).
    pub(super) fn add(&mut self, group: &str, check: Check) {
        match self.groups.iter_mut().find(|(title, _)| title == group) {
            Some((_, checks)) => checks.push(check),
            None => self.groups.push((group.to_owned(), vec![check])),
        }
    }

    pub(super) fn count(&self, outcome: Outcome) -> usize {
        self.checks().filter(|(_, c)| c.status == outcome).count()
    }

    fn checks(&self) -> impl Iterator<Item = (&str, &Check)> {
        self.groups
            .iter()
            .flat_map(|(group, checks)| checks.iter().map(move |c| (group.as_str(), c)))
    }

    /// `linkerd check`'s layout: √ ok, ‼ warn, × fail, the hint under the line.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        for (title, checks) in &self.groups {
            let _ = writeln!(out, "{title}\n{}", "-".repeat(title.chars().count()));
            for check in checks {
                let mark = match check.status {
                    Outcome::Ok => '√',
                    Outcome::Warn => '‼',
                    Outcome::Fail => '×',
                };
                let _ = writeln!(out, "{mark} {}", check.message);
                if let Some(hint) = &check.hint {
                    for line in hint.lines() {
                        let _ = writeln!(out, "    {line}");
                    }
                }
            }
            out.push('\n');
        }
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let _ = writeln!(
            out,
            "Status: {} ok, {}, {}",
            self.count(Outcome::Ok),
            plural(self.count(Outcome::Warn), "warning"),
            plural(self.count(Outcome::Fail), "failure")
        );
        out
    }

    /// Every check with its group, and the tally.
    pub(super) fn json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks()
            .map(|(group, check)| {
                let mut value = serde_json::to_value(check).unwrap_or_default();
                value["group"] = json!(group);
                value
            })
            .collect();
        json!({
            "success": self.count(Outcome::Fail) == 0,
            "summary": {
                "ok": self.count(Outcome::Ok),
                "warn": self.count(Outcome::Warn),
                "fail": self.count(Outcome::Fail),
            },
            "checks": checks,
        })
    }
}
