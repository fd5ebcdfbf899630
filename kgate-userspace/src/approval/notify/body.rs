//! What a notification says: a Slack incoming-webhook message (`text` for
//! notifications and old clients, `blocks` for the message) or a CloudEvents 1.0
//! structured-mode JSON event whose `data` is the `KgateApproval`. Pure functions of
//! the approval, for the table-driven tests.
//!
//! Slack refuses a message whose block texts are too long (400 `invalid_blocks`): a
//! header holds at most 150 characters, a section's text 3000. Every text is cut to
//! fit, at a character boundary and never inside an `&amp;`-style escape, with `…`
//! showing the cut. Everything the caller controls (user, groups, paths, the process
//! name) is escaped (`&`, `<`, `>`), so it cannot make links or mentions.
//!
//! Not here: the request body of a write (the console shows it), sending.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{approval::types::KgateApproval, config::NotifyEvent};

/// Slack's limit on a header block's text.
pub(crate) const HEADER_MAX: usize = 150;
/// Slack's limit on a section block's text.
pub(crate) const SECTION_MAX: usize = 3000;
/// The top-level `text` is cut with the same limit as a section: Slack shows it in
/// notifications, where a longer one helps nobody.
pub(crate) const TEXT_MAX: usize = 3000;

/// One thing that happened to an approval.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub kind: NotifyEvent,
    /// The object as the agent last wrote it.
    pub approval: KgateApproval,
    /// When it happened; also sent as the CloudEvent's `time`, the same on every retry.
    pub time: Timestamp,
}

// === impl Event ===

impl Event {
    pub(crate) fn name(&self) -> &str {
        self.approval.metadata.name.as_deref().unwrap_or_default()
    }

    /// Unique per approval and event, the same on every retry: receivers may drop
    /// duplicates by it (a retry after a lost answer is one).
    pub(crate) fn id(&self) -> String {
        let object = self
            .approval
            .metadata
            .uid
            .as_deref()
            .unwrap_or_else(|| self.name());
        format!("{object}.{}", self.kind.as_str())
    }
}

/// The CloudEvent: `data` is the approval object as the agent last wrote it.
pub(crate) fn cloudevent(event: &Event, node: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": event.id(),
        "source": format!("/kgate/nodes/{node}"),
        "type": format!("io.kgate.approval.{}", event.kind.as_str()),
        "time": event.time.to_string(),
        "subject": event.name(),
        "datacontenttype": "application/json",
        "data": serde_json::to_value(&event.approval).unwrap_or(Value::Null),
    })
}

/// The Slack message.
pub(crate) fn slack(event: &Event, console: Option<&str>) -> Value {
    let spec = &event.approval.spec;
    let name = event.name();
    let what = request_line(event);
    let title = match event.kind {
        NotifyEvent::Held => format!("Approval needed: {}", plain_request(event)),
        NotifyEvent::Approved => format!("Approved: {}", plain_request(event)),
        NotifyEvent::Denied => format!("Denied: {}", plain_request(event)),
        NotifyEvent::Expired => format!("Expired: {}", plain_request(event)),
    };
    let mut facts = format!("*Who:* {}", code(&spec.user));
    if !spec.groups.is_empty() {
        facts.push_str(&format!(
            " (groups {})",
            spec.groups
                .iter()
                .map(|g| code(g))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    facts.push_str(&format!("\n*Workload:* {}", code(&spec.workload)));
    if let Some(process) = &spec.process {
        facts.push_str(&format!("\n*Process:* {}", code(process)));
    }
    facts.push_str(&format!("\n*Request:* {what}"));
    facts.push_str(&format!("\n*Rule:* {}", code(&spec.rule)));
    if !spec.approvers.is_empty() {
        facts.push_str(&format!(
            "\n*Approvers:* {}",
            escape(&spec.approvers.join(", "))
        ));
    }
    facts.push_str(&format!("\n*Node:* {}", code(&spec.node)));
    let by = spec.decided_by.as_deref().unwrap_or("an approver");
    let outcome = match event.kind {
        NotifyEvent::Held => format!(
            "*Waits until* {} (then it is refused). Decide with:\n```kgate approve {name}\nkgate deny {name} --reason '…'```",
            escape(&spec.expires_at)
        ),
        NotifyEvent::Approved => {
            let mut line = format!("*Approved by* {} at {}", code(by), event.time);
            if let Some(grant) = &spec.grant_for {
                line.push_str(&format!("; repeats pass for {}", escape(grant)));
            }
            line
        }
        NotifyEvent::Denied => format!(
            "*Denied by* {} at {}: {}",
            code(by),
            event.time,
            escape(spec.reason.as_deref().unwrap_or("no reason given"))
        ),
        NotifyEvent::Expired => format!(
            "*Nobody decided* by {}: the request was refused.",
            escape(&spec.expires_at)
        ),
    };
    let link = console.map(|c| format!("{}/approvals/{name}", c.trim_end_matches('/')));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": fit(&title, HEADER_MAX)}}),
        section(&facts),
        section(&outcome),
    ];
    if let Some(link) = &link {
        blocks.push(section(&format!(
            "<{link}|Open approval {name} in the kgate console>"
        )));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": fit(&format!("kgate approval `{name}`"), SECTION_MAX)},
    ]}));
    let mut text = match event.kind {
        NotifyEvent::Held => format!(
            "kgate: {} wants to {what}; approval {name} waits until {}: `kgate approve {name}` or `kgate deny {name}`",
            code(&spec.user),
            escape(&spec.expires_at)
        ),
        NotifyEvent::Approved => format!("kgate: {by_} approved {name} ({what})", by_ = escape(by)),
        NotifyEvent::Denied => format!("kgate: {by_} denied {name} ({what})", by_ = escape(by)),
        NotifyEvent::Expired => format!("kgate: approval {name} expired undecided ({what})"),
    };
    if let Some(link) = &link {
        text.push_str(&format!(" <{link}|console>"));
    }
    json!({"text": fit(&text, TEXT_MAX), "blocks": blocks})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": fit(text, SECTION_MAX)}})
}

/// `delete pods demo/a`, as plain text (the header).
fn plain_request(event: &Event) -> String {
    let r = &event.approval.spec.request;
    if r.resource.is_empty() {
        return format!("{} {}", r.verb, r.path);
    }
    let mut resource = r.resource.clone();
    if !r.subresource.is_empty() {
        resource = format!("{resource}/{}", r.subresource);
    }
    match (r.namespace.as_str(), r.name.as_str()) {
        ("", "") => format!("{} {resource}", r.verb),
        ("", name) => format!("{} {resource} {name}", r.verb),
        (ns, "") => format!("{} {resource} in {ns}", r.verb),
        (ns, name) => format!("{} {resource} {ns}/{name}", r.verb),
    }
}

/// The request in mrkdwn: verb, resource (with its group), name, namespace, or the URL
/// path of a non-resource request.
fn request_line(event: &Event) -> String {
    let r = &event.approval.spec.request;
    if r.resource.is_empty() {
        return format!("{} {}", code(&r.verb), code(&r.path));
    }
    let mut resource = r.resource.clone();
    if !r.subresource.is_empty() {
        resource = format!("{resource}/{}", r.subresource);
    }
    if !r.api_group.is_empty() {
        resource = format!("{resource}.{}", r.api_group);
    }
    let mut line = format!("{} {}", code(&r.verb), code(&resource));
    if !r.name.is_empty() {
        line.push_str(&format!(" {}", code(&r.name)));
    }
    if !r.namespace.is_empty() {
        line.push_str(&format!(" in namespace {}", code(&r.namespace)));
    }
    line
}

/// An inline code span of `s`, escaped; a backtick in it would end the span early.
fn code(s: &str) -> String {
    format!("`{}`", escape(&s.replace('`', "'")))
}

/// Slack's escaping of the three characters its mrkdwn gives meaning to.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` cut to at most `max` characters (`…` included), at a character boundary and
/// never inside an escape (`&amp;`, `&lt;`, `&gt;`).
pub(crate) fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    // An escape is at most 5 characters: an `&` among the last 4 followed by a strict
    // prefix of one is the start of a cut one.
    let tail_start = cut.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    if let Some(amp) = cut[tail_start..].rfind('&').map(|i| tail_start + i) {
        let rest = &cut[amp + 1..];
        if ["amp;", "lt;", "gt;"]
            .iter()
            .any(|e| e.starts_with(rest) && rest.len() < e.len())
        {
            cut.truncate(amp);
        }
    }
    cut.push('…');
    cut
}
