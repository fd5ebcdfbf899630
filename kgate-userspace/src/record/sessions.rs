//! `kgate sessions`: the record log seen as sessions. A session is one client
//! connection's requests by one user; its ID is the connection's (12 hex digits),
//! with `.2`, `.3`, … for further users of the same connection.
//!
//! A session also lists the exec/attach/port-forward streams its requests opened
//! (their captured frames, [`super::stream`], joined by [`super::replay`]).
//!
//! Pure functions over records, so tests need no agent; [`load`] and [`load_all`] read
//! a log directory without changing it. Records of kinds this version does not know
//! are skipped, and logs written before stream capture (audit events only) read as
//! sessions without streams.
//!
//! Not here: printing them (`kgate sessions`, in [`crate::cli`]).

use std::{collections::HashMap, path::Path};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use super::{
    event::{self, Event},
    log::{self, Damage},
    replay::{self, Recording, StreamSummary},
    stream::{self, StreamChunk},
};

/// Which sessions to list.
#[derive(Default)]
pub struct Filter {
    pub user: Option<WildMatch>,
    /// Matches the pod (`ns/name`) or, without one, the workload description, or a
    /// pod a refused stolen token of the session is bound to.
    pub pod: Option<WildMatch>,
    /// Sessions that ended at or after this.
    pub since: Option<Timestamp>,
}

/// One session: one connection, one user. It reads back from its JSON (what an
/// agent's `/sessions` sends) without its events and pod.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub connection: String,
    pub user: String,
    /// The user's groups, as its first request's record gives them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The OIDC issuer that vouched for the user (gateway mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Whom its requests acted as through impersonation, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acting_as: Vec<String>,
    pub workload: String,
    /// The pod (`ns/name`) its requests came from, when known.
    #[serde(skip)]
    pub pod: Option<String>,
    /// The pods (`ns/name`) of stolen tokens its requests were refused with: whose
    /// tokens the session tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_pods: Vec<String>,
    pub start: String,
    pub end: String,
    pub requests: usize,
    pub refused: usize,
    /// The streams (exec, attach, port-forward) of the session's requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamSummary>,
    #[serde(skip)]
    pub events: Vec<Event>,
}

impl Session {
    /// What any record of its requests tells: the session's end is the latest of them
    /// (MicroTime in UTC sorts as text), its pod the first one named.
    fn saw(&mut self, event: &Event) {
        if *event.stage_timestamp > *self.end {
            event.stage_timestamp.clone_into(&mut self.end);
        }
        if self.pod.is_none() {
            self.pod = event.annotation(event::POD).map(str::to_owned);
        }
        if self.issuer.is_none() {
            self.issuer = event.annotation(event::ISSUER).map(str::to_owned);
        }
        if self.groups.is_empty() {
            self.groups.clone_from(&event.user.groups);
        }
        if let Some(acted) = &event.impersonated_user
            && !self.acting_as.contains(&acted.username)
        {
            self.acting_as.push(acted.username.clone());
        }
        if let Some(pod) = event.annotation(event::TOKEN_POD)
            && !self.token_pods.iter().any(|p| p == pod)
        {
            self.token_pods.push(pod.to_owned());
        }
    }
}

/// Everything in a record log.
#[derive(Debug, Default)]
pub struct Loaded {
    pub events: Vec<Event>,
    /// Captured streams, joined from their chunks.
    pub recordings: Vec<Recording>,
    pub damage: Vec<Damage>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("reading the record log in {0}: {1}")]
    ReadFailed(String, #[source] std::io::Error),
    #[error("no session {0:?}")]
    NotFound(String),
    #[error("session ID {0:?} is ambiguous: {1}")]
    Ambiguous(String, String),
    #[error("session {0} has no recorded exec or attach stream")]
    NoStream(String),
    #[error("session {0} has no stream {1:?}; its streams: {2}")]
    StreamNotFound(String, String, String),
    #[error("session {0} has several exec/attach streams; choose one with --stream: {1}")]
    WhichStream(String, String),
    #[error(
        "stream {0} is a port-forward: only its streams and byte counts are recorded (kgate sessions show)"
    )]
    NotTerminal(String),
}

/// Every event in `dir` (undecodable records skipped) and the damage found.
pub fn load(dir: &Path) -> Result<(Vec<Event>, Vec<Damage>), SessionsError> {
    let loaded = load_all(dir)?;
    Ok((loaded.events, loaded.damage))
}

/// Every event and captured stream in `dir`, and the damage found.
pub fn load_all(dir: &Path) -> Result<Loaded, SessionsError> {
    let mut events = Vec::new();
    let mut chunks = Vec::new();
    let damage = read(dir, |e| events.push(e), |c| chunks.push(c))?;
    Ok(Loaded {
        events,
        recordings: replay::assemble(chunks),
        damage,
    })
}

/// The sessions in `dir` with their streams' summaries, and the damage found, for
/// `kgate sessions list`: neither events nor stream payloads are held, so a node's
/// whole log lists in a few words of memory per request.
pub fn load_summaries(dir: &Path) -> Result<(Vec<Session>, Vec<Damage>), SessionsError> {
    let mut grouper = Grouper::new(false);
    let mut chunks = Vec::new();
    // Payload bytes per stream and channel, counted before the payload is dropped.
    let mut payload: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let damage = read(
        dir,
        |e| grouper.push(e),
        |mut chunk: StreamChunk| {
            let counts = payload.entry(chunk.audit_id.clone()).or_default();
            for frame in &mut chunk.frames {
                if let stream::Frame::Data { ch, data, .. } = frame {
                    *counts.entry(ch.name().to_owned()).or_default() += data.len() as u64;
                    *data = Vec::new();
                }
            }
            chunks.push(chunk);
        },
    )?;
    let mut recordings = replay::assemble(chunks);
    for rec in &mut recordings {
        rec.dropped_payload = payload.remove(&rec.audit_id).unwrap_or_default();
    }
    Ok((grouper.finish_with_streams(&recordings), damage))
}

/// The session `id` (or the one it is a unique prefix of) with its events and the
/// recordings its requests opened, and the damage found, for `kgate sessions show`
/// and `replay`. Three reads of the log: the sessions' summaries to resolve `id`, then
/// that session's events, then its streams; only those are held.
pub fn load_session(
    dir: &Path,
    id: &str,
) -> Result<(Session, Vec<Recording>, Vec<Damage>), SessionsError> {
    let (all, damage) = load_summaries(dir)?;
    let found = find(all, id)?;
    let mut grouper = Grouper::new(true);
    read(
        dir,
        |e| {
            if e.annotation(event::CONNECTION).unwrap_or("") == found.connection
                && e.user.username == found.user
            {
                grouper.push(e);
            }
        },
        |_| {},
    )?;
    let mut session = grouper
        .finish()
        .pop()
        .ok_or_else(|| SessionsError::NotFound(id.to_owned()))?;
    // Grouped alone, it would be numbered as its connection's first user.
    session.id = found.id;
    let ids: std::collections::HashSet<String> =
        session.events.iter().map(|e| e.audit_id.clone()).collect();
    let mut chunks = Vec::new();
    read(
        dir,
        |_| {},
        |c| {
            if ids.contains(&c.audit_id) {
                chunks.push(c);
            }
        },
    )?;
    let recordings = replay::assemble(chunks);
    attach_streams(std::slice::from_mut(&mut session), &recordings);
    Ok((session, recordings, damage))
}

/// Hands each event and stream chunk in `dir` to its callback, oldest first; records
/// of other kinds, or that do not decode, are skipped.
fn read(
    dir: &Path,
    mut on_event: impl FnMut(Event),
    mut on_chunk: impl FnMut(StreamChunk),
) -> Result<Vec<Damage>, SessionsError> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    // Parsed as read: a segment's raw bytes are dropped before the next is read.
    log::each_record(dir, |record| {
        let Ok(Kind { kind }) = serde_json::from_slice(record) else {
            return;
        };
        if kind == stream::KIND {
            if let Ok(chunk) = serde_json::from_slice(record) {
                on_chunk(chunk);
            }
        } else if kind == "Event"
            && let Ok(event) = serde_json::from_slice(record)
        {
            on_event(event);
        }
    })
    .map_err(|e| SessionsError::ReadFailed(dir.display().to_string(), e))
}

/// Lists each recording under the session whose request opened it.
pub fn attach_streams(sessions: &mut [Session], recordings: &[Recording]) {
    let by_audit: HashMap<&str, &Recording> = recordings
        .iter()
        .map(|r| (r.audit_id.as_str(), r))
        .collect();
    for session in sessions {
        session.streams = session
            .events
            .iter()
            .filter_map(|e| by_audit.get(e.audit_id.as_str()))
            .map(|r| r.summary())
            .collect();
    }
}

/// The recording `replay` plays: the one named by `stream` (an audit ID or a unique
/// prefix), else the session's only exec/attach stream.
pub fn pick_stream<'a>(
    session: &Session,
    recordings: &'a [Recording],
    stream: Option<&str>,
) -> Result<&'a Recording, SessionsError> {
    let ids: Vec<&str> = session.events.iter().map(|e| e.audit_id.as_str()).collect();
    let mine: Vec<&Recording> = recordings
        .iter()
        .filter(|r| ids.contains(&r.audit_id.as_str()))
        .collect();
    let names = |rs: &[&Recording]| {
        rs.iter()
            .map(|r| format!("{} ({})", r.audit_id, r.subresource))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match stream {
        Some(id) => {
            let found: Vec<&Recording> = mine
                .iter()
                .copied()
                .filter(|r| r.audit_id.starts_with(id))
                .collect();
            match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(SessionsError::StreamNotFound(
                        session.id.clone(),
                        id.to_owned(),
                        if mine.is_empty() {
                            "none".to_owned()
                        } else {
                            names(&mine)
                        },
                    ));
                }
                many => return Err(SessionsError::Ambiguous(id.to_owned(), names(many))),
            }
        }
        None => {
            let terminal: Vec<&Recording> =
                mine.iter().copied().filter(|r| r.is_terminal()).collect();
            match terminal.as_slice() {
                [one] => *one,
                [] => return Err(SessionsError::NoStream(session.id.clone())),
                many => return Err(SessionsError::WhichStream(session.id.clone(), names(many))),
            }
        }
    };
    if chosen.is_terminal() {
        Ok(chosen)
    } else {
        Err(SessionsError::NotTerminal(chosen.audit_id.clone()))
    }
}

/// Groups events into sessions, in order of their first request. Each request counts
/// once: its final record, or its `RequestReceived` record when no final one was
/// written (the agent stopped while it was in flight).
pub fn sessions(events: Vec<Event>) -> Vec<Session> {
    let mut grouper = Grouper::new(true);
    events.into_iter().for_each(|e| grouper.push(e));
    grouper.finish()
}

/// [`sessions`] as the events are read: a request's later records update what its
/// first one started. Without `keep_events` it holds a few words per request, not the
/// events, which is what listing a node's whole log needs.
pub struct Grouper {
    keep_events: bool,
    requests: HashMap<String, Seen>,
    count: usize,
    out: Vec<Session>,
    index: HashMap<(String, String), usize>,
    users_per_conn: HashMap<String, usize>,
}

/// A request already grouped.
struct Seen {
    session: usize,
    /// Its event's place in the session's `events` (when kept).
    slot: usize,
    number: usize,
    refused: bool,
}

impl Grouper {
    pub fn new(keep_events: bool) -> Self {
        Self {
            keep_events,
            requests: HashMap::new(),
            count: 0,
            out: Vec::new(),
            index: HashMap::new(),
            users_per_conn: HashMap::new(),
        }
    }

    pub fn push(&mut self, event: Event) {
        if let Some(seen) = self.requests.get_mut(&event.audit_id) {
            if event.stage == event::STAGE_RECEIVED {
                return;
            }
            let session = &mut self.out[seen.session];
            let refused = is_refusal(&event);
            session.refused = session.refused - usize::from(seen.refused) + usize::from(refused);
            seen.refused = refused;
            session.saw(&event);
            if self.keep_events {
                session.events[seen.slot] = event;
            }
            return;
        }
        let connection = event.annotation(event::CONNECTION).unwrap_or("");
        let key = (connection.to_owned(), event.user.username.clone());
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let n = self.users_per_conn.entry(key.0.clone()).or_default();
                *n += 1;
                let short: String = connection.chars().take(12).collect();
                let id = if *n == 1 {
                    short
                } else {
                    format!("{short}.{n}")
                };
                self.out.push(Session {
                    id,
                    connection: key.0.clone(),
                    user: key.1.clone(),
                    groups: Vec::new(),
                    issuer: None,
                    acting_as: Vec::new(),
                    workload: event.annotation(event::WORKLOAD).unwrap_or("").to_owned(),
                    pod: None,
                    token_pods: Vec::new(),
                    start: event.request_received_timestamp.clone(),
                    end: String::new(),
                    requests: 0,
                    refused: 0,
                    streams: Vec::new(),
                    events: Vec::new(),
                });
                self.index.insert(key, self.out.len() - 1);
                self.out.len() - 1
            }
        };
        let session = &mut self.out[i];
        let refused = is_refusal(&event);
        session.requests += 1;
        session.refused += usize::from(refused);
        session.saw(&event);
        let seen = Seen {
            session: i,
            slot: session.events.len(),
            number: self.count,
            refused,
        };
        self.count += 1;
        self.requests.insert(event.audit_id.clone(), seen);
        if self.keep_events {
            session.events.push(event);
        }
    }

    pub fn finish(self) -> Vec<Session> {
        self.out
    }

    /// The sessions, each listing the recordings its requests opened (in request
    /// order), as [`attach_streams`] does with kept events.
    pub fn finish_with_streams(mut self, recordings: &[Recording]) -> Vec<Session> {
        let mut found: Vec<(usize, usize, StreamSummary)> = recordings
            .iter()
            .filter_map(|r| {
                let seen = self.requests.get(&r.audit_id)?;
                Some((seen.number, seen.session, r.summary()))
            })
            .collect();
        found.sort_by_key(|(number, ..)| *number);
        for (_, session, summary) in found {
            self.out[session].streams.push(summary);
        }
        self.out
    }
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
                g.matches(s.pod.as_deref().unwrap_or(&s.workload))
                    || s.token_pods.iter().any(|p| g.matches(p))
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
        n => {
            // A short prefix may match thousands: name a few, and how to choose.
            let mut some: Vec<&str> = found.iter().take(10).map(|s| s.id.as_str()).collect();
            let more = if n > some.len() {
                format!(" and {} more", n - some.len())
            } else {
                String::new()
            };
            some.dedup();
            Err(SessionsError::Ambiguous(
                id.to_owned(),
                format!(
                    "{}{more} (a longer prefix or the whole connection ID picks one)",
                    some.join(", ")
                ),
            ))
        }
    }
}
