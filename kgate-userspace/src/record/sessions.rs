//! `kgate sessions`: the record log seen as sessions. A session is one client
//! connection's requests by one user; its ID is the connection's (12 hex digits),
//! with `.2`, `.3`, … for further users of the same connection.
//!
//! Pure functions over events, so tests need no agent; [`load`] reads a log directory
//! without changing it.

use std::{collections::HashMap, fmt::Write as _, path::Path};

use jiff::{Timestamp, tz::TimeZone};
use serde::Serialize;
use wildmatch::WildMatch;

use super::{
    event::{self, Event},
    log::{self, Damage},
};

/// Which sessions to list.
#[derive(Default)]
pub struct Filter {
    pub user: Option<WildMatch>,
    /// Matches the pod (`ns/name`) or, without one, the workload description.
    pub pod: Option<WildMatch>,
    /// Sessions that ended at or after this.
    pub since: Option<Timestamp>,
}

/// One session: one connection, one user.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub connection: String,
    pub user: String,
    pub workload: String,
    pub start: String,
    pub end: String,
    pub requests: usize,
    pub refused: usize,
    #[serde(skip)]
    pub events: Vec<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("reading the record log in {0}: {1}")]
    ReadFailed(String, #[source] std::io::Error),
    #[error("no session {0:?}")]
    NotFound(String),
    #[error("session ID {0:?} is ambiguous: {1}")]
    Ambiguous(String, String),
}

/// Every event in `dir` (undecodable records skipped) and the damage found.
pub fn load(dir: &Path) -> Result<(Vec<Event>, Vec<Damage>), SessionsError> {
    let (records, damage) =
        log::read_dir(dir).map_err(|e| SessionsError::ReadFailed(dir.display().to_string(), e))?;
    let events = records
        .iter()
        .filter_map(|r| serde_json::from_slice(r).ok())
        .collect();
    Ok((events, damage))
}

/// Groups events into sessions, in order of their first request. Each request counts
/// once: its final record, or its `RequestReceived` record when no final one was
/// written (the agent stopped while it was in flight).
pub fn sessions(events: Vec<Event>) -> Vec<Session> {
    let mut latest: HashMap<String, usize> = HashMap::new();
    let mut requests: Vec<Event> = Vec::new();
    for event in events {
        match latest.get(&event.audit_id) {
            Some(&i) => {
                if event.stage != event::STAGE_RECEIVED {
                    requests[i] = event;
                }
            }
            None => {
                latest.insert(event.audit_id.clone(), requests.len());
                requests.push(event);
            }
        }
    }
    let mut out: Vec<Session> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut users_per_conn: HashMap<String, usize> = HashMap::new();
    for event in requests {
        let connection = event.annotation(event::CONNECTION).unwrap_or("").to_owned();
        let key = (connection.clone(), event.user.username.clone());
        let i = *index.entry(key).or_insert_with(|| {
            let n = users_per_conn.entry(connection.clone()).or_default();
            *n += 1;
            let short: String = connection.chars().take(12).collect();
            let id = if *n == 1 {
                short
            } else {
                format!("{short}.{n}")
            };
            out.push(Session {
                id,
                connection: connection.clone(),
                user: event.user.username.clone(),
                workload: event.annotation(event::WORKLOAD).unwrap_or("").to_owned(),
                start: event.request_received_timestamp.clone(),
                end: String::new(),
                requests: 0,
                refused: 0,
                events: Vec::new(),
            });
            out.len() - 1
        });
        let session = &mut out[i];
        session.requests += 1;
        if is_refusal(&event) {
            session.refused += 1;
        }
        session.end.clone_from(&event.stage_timestamp);
        session.events.push(event);
    }
    out
}

/// kgate refused the request itself (its Status carries a reason).
fn is_refusal(event: &Event) -> bool {
    event
        .response_status
        .as_ref()
        .is_some_and(|s| !s.reason.is_empty())
}

/// The sessions `filter` selects.
pub fn select(sessions: Vec<Session>, filter: &Filter) -> Vec<Session> {
    sessions
        .into_iter()
        .filter(|s| filter.user.as_ref().is_none_or(|g| g.matches(&s.user)))
        .filter(|s| {
            filter.pod.as_ref().is_none_or(|g| {
                let pod = s.events.iter().find_map(|e| e.annotation(event::POD));
                g.matches(pod.unwrap_or(&s.workload))
            })
        })
        .filter(|s| {
            filter
                .since
                .is_none_or(|since| s.end.parse::<Timestamp>().is_ok_and(|end| end >= since))
        })
        .collect()
}

/// The session whose ID is `id` or starts with it.
pub fn find(sessions: Vec<Session>, id: &str) -> Result<Session, SessionsError> {
    let mut found: Vec<Session> = sessions
        .into_iter()
        .filter(|s| s.id == id || s.connection.starts_with(id) || s.id.starts_with(id))
        .collect();
    if let Some(exact) = found.iter().position(|s| s.id == id) {
        return Ok(found.swap_remove(exact));
    }
    match found.len() {
        0 => Err(SessionsError::NotFound(id.to_owned())),
        1 => Ok(found.remove(0)),
        _ => Err(SessionsError::Ambiguous(
            id.to_owned(),
            found
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// `kgate sessions list` as a table.
pub fn list_table(sessions: &[Session]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<40} {:<28} {:<20} {:<20} {:>8} {:>7}",
        "ID", "USER", "WORKLOAD", "START", "END", "REQUESTS", "REFUSED"
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "{:<14} {:<40} {:<28} {:<20} {:<20} {:>8} {:>7}",
            s.id,
            or_dash(&s.user),
            or_dash(&s.workload),
            seconds(&s.start),
            seconds(&s.end),
            s.requests,
            s.refused
        );
    }
    out
}

/// `kgate sessions show` as a timeline.
pub fn show_timeline(session: &Session) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Session {}  user {}  workload {}  ({} requests, {} refused)",
        session.id,
        or_dash(&session.user),
        or_dash(&session.workload),
        session.requests,
        session.refused
    );
    let _ = writeln!(
        out,
        "{:<15} {:<16} {:<48} {:>4}  DECISION",
        "TIME", "VERB", "RESOURCE", "CODE"
    );
    for e in &session.events {
        let code = e.code().map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut decision = e.annotation(event::DECISION).unwrap_or("-").to_owned();
        if let Some(rule) = e.annotation(event::RULE) {
            let _ = write!(decision, " ({rule})");
        }
        if let Some(would) = e.annotation(event::WOULD) {
            let _ = write!(decision, " would {would}");
        }
        if e.stage == event::STAGE_RECEIVED {
            decision.push_str(" [no response recorded]");
        }
        let _ = writeln!(
            out,
            "{:<15} {:<16} {:<48} {:>4}  {decision}",
            clock(&e.request_received_timestamp),
            e.verb,
            what(e),
            code,
        );
    }
    out
}

/// `pods/web -n demo`, `secrets -n demo`, `/version`.
fn what(e: &Event) -> String {
    let Some(o) = &e.object_ref else {
        return e.request_uri.split('?').next().unwrap_or("").to_owned();
    };
    let mut s = o.resource.clone();
    if !o.api_group.is_empty() {
        let _ = write!(s, ".{}", o.api_group);
    }
    if !o.name.is_empty() {
        let _ = write!(s, "/{}", o.name);
    }
    if !o.subresource.is_empty() {
        let _ = write!(s, "/{}", o.subresource);
    }
    if !o.namespace.is_empty() {
        let _ = write!(s, " -n {}", o.namespace);
    }
    s
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `2026-01-02T03:04:05Z`, in UTC.
fn seconds(ts: &str) -> String {
    ts.parse::<Timestamp>().map_or_else(
        |_| ts.to_owned(),
        |t| {
            t.to_zoned(TimeZone::UTC)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        },
    )
}

/// `03:04:05.678` (UTC): the timeline's clock.
fn clock(ts: &str) -> String {
    ts.parse::<Timestamp>().map_or_else(
        |_| ts.to_owned(),
        |t| {
            t.to_zoned(TimeZone::UTC)
                .strftime("%H:%M:%S%.3f")
                .to_string()
        },
    )
}
