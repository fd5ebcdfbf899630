//! Where the console's sessions come from: the [`SessionSource`] trait (list with a
//! filter and a page, one session with its events, one stream as asciicast v2), and
//! its implementation over one local record directory ([`LocalDir`], `kgate console
//! --dir`), which reads the log with [`crate::record::sessions`], keeps the last
//! listing until the log changes, and reads one session in one pass.
//!
//! [`cluster::ClusterSessions`] reads every node's agent through the API server instead
//! ([`crate::cluster_sessions`]), as the viewer.
//!
//! Not here: turning a session into the page's timeline ([`super::api`]).

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use jiff::Timestamp;
use serde::Serialize;
use wildmatch::WildMatch;

use memchr::memmem;

pub(crate) mod cluster;

use crate::record::{
    event::{self, Event},
    log,
    replay::{self, Recording},
    sessions::{self, Filter, Grouper, Session, SessionsError},
    stream::{self, StreamChunk},
};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which sessions to list, and which page of them (newest first).
#[derive(Clone, Debug, Default)]
pub(crate) struct Query {
    /// A glob on the user.
    pub user: Option<String>,
    /// A glob on the pod (`ns/name`), as `kgate sessions list --pod`.
    pub pod: Option<String>,
    /// Sessions active at or after this.
    pub since: Option<Timestamp>,
    /// A glob on the node whose agent recorded the session.
    pub node: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page {
    /// How many sessions match, on all pages.
    pub total: usize,
    pub sessions: Vec<Listed>,
    /// Nodes whose sessions could not be read (cluster-wide), and why: named, so
    /// that a missing node is never mistaken for one without sessions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<crate::cluster_sessions::Unreachable>,
}

/// Whose credentials a source acts with: the console's kubeconfig, or the signed-in
/// viewer's client and bearer token (the agents authorize the viewer, not the
/// console).
#[derive(Clone)]
pub(crate) struct Caller {
    pub client: kube::Client,
    /// The viewer's bearer token; `None` on a console using its kubeconfig.
    pub token: Option<Arc<str>>,
}

/// A session and the node that recorded it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listed {
    pub node: String,
    #[serde(flatten)]
    pub session: Session,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// No such session or stream, or an ID prefix that names several.
    #[error(transparent)]
    NotFound(SessionsError),
    #[error("{0}")]
    Unavailable(String),
}

/// The sessions the console shows. One implementation per place records live: a
/// local record directory now; every agent's admin endpoint through the API server
/// later.
pub(crate) trait SessionSource: Send + Sync {
    /// The sessions matching `query` (user, pod, since, node), newest first, one page.
    fn list(&self, caller: Caller, query: Query) -> BoxFuture<'_, Result<Page, SourceError>>;
    /// One session (an ID or a unique prefix) with its events, and the node.
    fn session(
        &self,
        caller: Caller,
        id: String,
    ) -> BoxFuture<'_, Result<(String, Session), SourceError>>;
    /// A session's exec/attach stream (its audit ID, or a unique prefix) as asciicast v2.
    fn asciicast(
        &self,
        caller: Caller,
        id: String,
        stream: String,
    ) -> BoxFuture<'_, Result<Vec<u8>, SourceError>>;
}

/// One record directory, as `kgate sessions` reads it, labelled with a node name.
pub(crate) struct LocalDir {
    dir: PathBuf,
    node: String,
    /// The last full listing (oldest first) and the log's state it was read from.
    cache: Mutex<Option<(Fingerprint, Arc<Vec<Session>>)>>,
}

/// The log's files with their sizes and modification times: the log only grows by
/// appends and new segments, so an unchanged fingerprint means an unchanged listing.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl LocalDir {
    pub(crate) fn new(dir: PathBuf, node: String) -> Self {
        Self {
            dir,
            node,
            cache: Mutex::new(None),
        }
    }

    /// Reads the listing ahead of the first page (a node's log takes seconds).
    pub(crate) fn warm(&self) {
        if let Err(error) = self.all() {
            tracing::warn!(%error, "reading the record log for the console's sessions");
        }
    }

    /// Every session in the directory, oldest first, read again only when it changed.
    /// The lock is held while reading, so that concurrent callers (the warm-up and a
    /// first page) wait for one read instead of each reading the log.
    fn all(&self) -> Result<Arc<Vec<Session>>, SourceError> {
        let print = fingerprint(&self.dir);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, all)) = &*cache
            && *seen == print
        {
            return Ok(all.clone());
        }
        let (all, _damage) = sessions::load_summaries(&self.dir).map_err(unavailable)?;
        let all = Arc::new(all);
        *cache = Some((print, all.clone()));
        Ok(all)
    }

    /// The session `id` (or the one it is a unique prefix of) with its events and
    /// recordings, as [`sessions::load_session`] gives them, in one pass over the log
    /// instead of three: the cached listing resolves the ID and names the session's
    /// streams, and only records that mention its connection or one of its streams
    /// are parsed (measured with 10,000 sessions: docs/console.md).
    fn load(&self, id: &str) -> Result<(Session, Vec<Recording>), SourceError> {
        let found = sessions::find(self.all()?.as_ref().clone(), id).map_err(classify)?;
        let connection = memmem::Finder::new(found.connection.as_bytes());
        let streams: Vec<memmem::Finder<'_>> = found
            .streams
            .iter()
            .map(|s| memmem::Finder::new(s.audit_id.as_bytes()))
            .collect();
        let mut grouper = Grouper::new(true);
        let mut chunks = Vec::new();
        log::each_record(&self.dir, |record| {
            if connection.find(record).is_some() {
                if let Ok(e) = serde_json::from_slice::<Event>(record)
                    && e.kind == "Event"
                    && e.annotation(event::CONNECTION) == Some(found.connection.as_str())
                    && e.user.username == found.user
                {
                    grouper.push(e);
                }
            } else if streams.iter().any(|f| f.find(record).is_some())
                && let Ok(chunk) = serde_json::from_slice::<StreamChunk>(record)
                && chunk.kind == stream::KIND
                && found.streams.iter().any(|s| s.audit_id == chunk.audit_id)
            {
                chunks.push(chunk);
            }
        })
        .map_err(|e| {
            unavailable(format!(
                "reading the record log in {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut session = grouper
            .finish()
            .pop()
            .ok_or_else(|| SourceError::NotFound(SessionsError::NotFound(id.to_owned())))?;
        // Grouped alone, it would be numbered as its connection's first user.
        session.id = found.id;
        let recordings = replay::assemble(chunks);
        sessions::attach_streams(std::slice::from_mut(&mut session), &recordings);
        Ok((session, recordings))
    }

    fn page(&self, query: &Query) -> Result<Page, SourceError> {
        let glob = |g: &Option<String>| g.as_deref().map(WildMatch::new);
        let node_matches = glob(&query.node).is_none_or(|n| n.matches(&self.node));
        let all = self.all()?;
        let filter = Filter {
            user: glob(&query.user),
            pod: glob(&query.pod),
            since: query.since,
        };
        let selected = if node_matches {
            sessions::select(all.as_ref().clone(), &filter)
        } else {
            Vec::new()
        };
        let total = selected.len();
        let sessions = selected
            .into_iter()
            .rev()
            .skip(query.offset)
            .take(query.limit)
            .map(|session| Listed {
                node: self.node.clone(),
                session,
            })
            .collect();
        Ok(Page {
            total,
            sessions,
            unreachable: Vec::new(),
        })
    }
}

/// A local directory is read with the console's own file access, whoever asks.
impl SessionSource for LocalDir {
    fn list(&self, _: Caller, query: Query) -> BoxFuture<'_, Result<Page, SourceError>> {
        Box::pin(async move { tokio::task::block_in_place(|| self.page(&query)) })
    }

    fn session(
        &self,
        _: Caller,
        id: String,
    ) -> BoxFuture<'_, Result<(String, Session), SourceError>> {
        Box::pin(async move {
            let (session, _) = tokio::task::block_in_place(|| self.load(&id))?;
            Ok((self.node.clone(), session))
        })
    }

    fn asciicast(
        &self,
        _: Caller,
        id: String,
        stream: String,
    ) -> BoxFuture<'_, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            tokio::task::block_in_place(|| {
                let (session, recordings) = self.load(&id)?;
                let rec = sessions::pick_stream(&session, &recordings, Some(&stream))
                    .map_err(classify)?;
                let mut out = Vec::new();
                replay::asciicast(rec, &mut out).map_err(unavailable)?;
                Ok(out)
            })
        })
    }
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

fn classify(error: SessionsError) -> SourceError {
    match error {
        SessionsError::ReadFailed(..) => unavailable(error),
        other => SourceError::NotFound(other),
    }
}

fn unavailable(error: impl std::fmt::Display) -> SourceError {
    SourceError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests;
