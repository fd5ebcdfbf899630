//! The console's sessions from every node's agent, through the API server
//! ([`crate::cluster_sessions`], what `kgate sessions` without `--dir` uses), asked
//! with the viewer's own token when one signed in, so that each agent authorizes the
//! viewer (`kgate.io` `sessions`), not the console.
//!
//! A listing reads every node's (filtered) summaries and pages them here, newest
//! first; the nodes that did not answer are named in the page.
//!
//! Not here: reaching and merging the agents (that module), the page itself.

use tokio::sync::OnceCell;
use wildmatch::WildMatch;

use super::{BoxFuture, Caller, Listed, Page, Query, SessionSource, SourceError};
use crate::{
    cluster_sessions::{Cluster, ClusterError, Item, Options},
    record::sessions::{Session, SessionsError},
};

/// Every agent the heartbeat Leases name.
pub(crate) struct ClusterSessions {
    options: Options,
    /// The console's own (kubeconfig) view, made at first use.
    own: OnceCell<Cluster>,
}

impl ClusterSessions {
    pub(crate) fn new(options: Options) -> Self {
        Self {
            options,
            own: OnceCell::new(),
        }
    }

    /// The cluster as `caller` reaches it.
    async fn as_caller(&self, caller: Caller) -> Result<Cluster, SourceError> {
        match caller.token {
            Some(token) => Cluster::with_credentials(caller.client, &token, self.options.clone())
                .map_err(unavailable),
            None => self
                .own
                .get_or_try_init(|| Cluster::connect(self.options.clone()))
                .await
                .cloned()
                .map_err(unavailable),
        }
    }
}

impl SessionSource for ClusterSessions {
    fn list(&self, caller: Caller, query: Query) -> BoxFuture<'_, Result<Page, SourceError>> {
        Box::pin(async move {
            let cluster = self.as_caller(caller).await?;
            let mut ask = Vec::new();
            if let Some(user) = &query.user {
                ask.push(("user", user.clone()));
            }
            if let Some(pod) = &query.pod {
                ask.push(("pod", pod.clone()));
            }
            if let Some(since) = query.since {
                ask.push(("since", since.to_string()));
            }
            let node = query.node.as_deref().map(WildMatch::new);
            let mut listing = cluster.list(&ask).await.map_err(unavailable)?;
            let (mut all, mut unreachable) = (Vec::new(), Vec::new());
            while let Some(item) = listing.next().await {
                match item {
                    Item::Session { node: n, session } => {
                        if node.as_ref().is_none_or(|g| g.matches(&n)) {
                            all.push(Listed { node: n, session });
                        }
                    }
                    Item::Unreachable(u) => unreachable.push(u),
                }
            }
            let total = all.len();
            let sessions = all
                .into_iter()
                .rev()
                .skip(query.offset)
                .take(query.limit)
                .collect();
            Ok(Page {
                total,
                sessions,
                unreachable,
            })
        })
    }

    fn session(
        &self,
        caller: Caller,
        id: String,
    ) -> BoxFuture<'_, Result<(String, Session), SourceError>> {
        Box::pin(async move {
            let cluster = self.as_caller(caller).await?;
            let (node, mut session, events) = cluster.events(&id).await.map_err(classify)?;
            session.events = events;
            Ok((node, session))
        })
    }

    fn asciicast(
        &self,
        caller: Caller,
        id: String,
        stream: String,
    ) -> BoxFuture<'_, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            let cluster = self.as_caller(caller).await?;
            let (_, cast) = cluster
                .asciicast(&id, Some(&stream))
                .await
                .map_err(classify)?;
            Ok(cast.to_vec())
        })
    }
}

fn classify(error: ClusterError) -> SourceError {
    match error {
        ClusterError::NotFound(id, _) => SourceError::NotFound(SessionsError::NotFound(id)),
        other => unavailable(other),
    }
}

fn unavailable(error: impl std::fmt::Display) -> SourceError {
    SourceError::Unavailable(error.to_string())
}
