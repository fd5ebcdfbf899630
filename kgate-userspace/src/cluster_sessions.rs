//! Every node's recorded sessions, asked from an admin's machine with only a
//! kubeconfig: what cluster-wide `kgate sessions` and the console call.
//!
//! How an agent is reached: its heartbeat Lease (`kgate-<node>`, [`crate::admin::heartbeat`])
//! names its pod, its admin port and its serving certificate's SHA-256; the API
//! server's port-forward to that pod carries a TLS connection to the admin endpoint,
//! whose certificate must have that fingerprint (the Lease is writable only by the
//! agents' ServiceAccount), or chain to `--ca-file` when one is given; the request
//! carries the caller's own bearer token, which the agent checks (TokenReview, then a
//! SubjectAccessReview on `sessions.kgate.io`). Not the pod proxy: the API server's
//! authentication filter deletes the `Authorization` header before proxying, so the
//! agent could not tell who asks.
//!
//! A node whose agent does not answer (stale Lease, port-forward, TLS or HTTP failure,
//! or an error status) is reported as [`Unreachable`], never left out silently.
//!
//! Not here: printing (`kgate sessions`, [`crate::cli`]); the endpoints themselves
//! ([`crate::admin::sessions`]).

mod connect;
mod merge;

use std::{collections::VecDeque, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::ListParams};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::record::{event::Event, sessions::Session};

pub(crate) use connect::bearer_token;
use merge::Heads;

/// How long an agent may take to answer, and to send each further piece of a list.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest NDJSON line accepted from an agent (one session summary or event).
const MAX_LINE: usize = 16 << 20;
/// Sessions buffered per node ahead of the merge.
const PER_NODE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("no usable kubeconfig (KUBECONFIG or ~/.kube/config): {0}")]
    KubeconfigFailed(String),
    #[error(
        "the kubeconfig's user has no bearer token (client certificates cannot be passed on to the agents): \
         pass one with --token-file, e.g. `kubectl create token NAME -n NAMESPACE > token` for a \
         ServiceAccount bound to the ClusterRole kgate-session-reader"
    )]
    NoBearerToken,
    #[error("getting the kubeconfig's token: {0}")]
    TokenFailed(String),
    #[error("reading {0}: {1}")]
    FileFailed(PathBuf, String),
    #[error("listing kgate's heartbeat Leases in namespace {0}: {1}")]
    LeasesFailed(String, #[source] kube::Error),
    #[error("no kgate heartbeat Lease in namespace {0}{1}: is kgate installed (with heartbeats)?")]
    NoAgents(String, String),
    #[error("no session {0:?} on the nodes that answered{1}")]
    NotFound(String, String),
    #[error(
        "session ID {0:?} is ambiguous: {1} (a longer prefix or the whole connection ID picks one)"
    )]
    Ambiguous(String, String),
    #[error("node {0}: {1}")]
    AgentFailed(String, String),
}

/// How to reach the agents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// The agents' namespace (their Leases and pods).
    pub namespace: String,
    /// A bearer token file to use instead of the kubeconfig's credential.
    pub token_file: Option<PathBuf>,
    /// Trust agents whose certificate chains to this CA (instead of the Lease's pin).
    pub ca_file: Option<PathBuf>,
    /// Only this node.
    pub node: Option<String>,
}

/// One node's agent as its heartbeat Lease describes it.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub port: u16,
    /// The serving certificate's SHA-256 (hex).
    pub fingerprint: String,
    /// The certificate's names (for `--ca-file`).
    pub sans: Vec<String>,
}

/// A node whose sessions could not be read, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Unreachable {
    pub node: String,
    pub error: String,
}

/// The cluster, as one admin reaches it.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: kube::Client,
    token: Arc<str>,
    ca: Option<Arc<rustls::RootCertStore>>,
    options: Options,
}

/// What [`Listing::next`] yields.
// Yielded one at a time and never held in bulk: boxing the session would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Item {
    Session { node: String, session: Session },
    Unreachable(Unreachable),
}

/// Every node's sessions merged oldest first (by start, then ID), as they arrive.
pub(crate) struct Listing {
    /// The agents asked, by node.
    agents: Vec<Agent>,
    sources: Vec<(String, mpsc::Receiver<Result<Session, String>>)>,
    heads: Heads<Session>,
    /// Nodes known to be unreachable before asking (stale Leases).
    pending: VecDeque<Unreachable>,
}

// === impl Cluster ===

impl Cluster {
    /// The admin's kubeconfig (KUBECONFIG or ~/.kube/config) and bearer token.
    pub(crate) async fn connect(options: Options) -> Result<Self, ClusterError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| ClusterError::KubeconfigFailed(e.to_string()))?;
        let token = match &options.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| ClusterError::FileFailed(path.clone(), e.to_string()))?
                .trim()
                .to_owned(),
            None => bearer_token(&config).await?,
        };
        let client = kube::Client::try_from(config)
            .map_err(|e| ClusterError::KubeconfigFailed(e.to_string()))?;
        Self::with_credentials(client, &token, options)
    }

    /// The cluster as `client` reaches it, with `token` for the agents (a web console's
    /// signed-in viewer: their client and token, never the console's kubeconfig).
    pub(crate) fn with_credentials(
        client: kube::Client,
        token: &str,
        options: Options,
    ) -> Result<Self, ClusterError> {
        let ca = options
            .ca_file
            .as_deref()
            .map(connect::roots)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            client,
            token: token.into(),
            ca,
            options,
        })
    }

    /// The agents the heartbeat Leases name (only `options.node`'s, with one), and the
    /// nodes whose Lease is stale or names no pod.
    pub(crate) async fn agents(&self) -> Result<(Vec<Agent>, Vec<Unreachable>), ClusterError> {
        use crate::admin::heartbeat::{APP_LABEL, NODE_LABEL};
        let namespace = &self.options.namespace;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let leases = leases
            .list(&ListParams::default().labels(&format!("{}={}", APP_LABEL.0, APP_LABEL.1)))
            .await
            .map_err(|e| ClusterError::LeasesFailed(namespace.clone(), e))?
            .items;
        let now = jiff::Timestamp::now();
        let (mut agents, mut unreachable) = (Vec::new(), Vec::new());
        for lease in &leases {
            let Some(node) = lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NODE_LABEL))
            else {
                continue;
            };
            if self.options.node.as_ref().is_some_and(|n| n != node) {
                continue;
            }
            let (status, _) = crate::nodes::lease_status(lease, now);
            match status.and_then(|s| agent_of(node, namespace, &s)) {
                Ok(agent) => agents.push(agent),
                Err(error) => unreachable.push(Unreachable {
                    node: node.clone(),
                    error,
                }),
            }
        }
        if agents.is_empty() && unreachable.is_empty() {
            let which = self
                .options
                .node
                .as_ref()
                .map_or_else(String::new, |n| format!(" for node {n}"));
            return Err(ClusterError::NoAgents(namespace.clone(), which));
        }
        agents.sort_by(|a, b| a.node.cmp(&b.node));
        unreachable.sort_by(|a, b| a.node.cmp(&b.node));
        Ok((agents, unreachable))
    }

    /// Every node's sessions that `query` selects (`user`, `pod`, `since` as RFC 3339,
    /// `id` as a prefix: [`crate::admin::sessions`]), merged oldest first.
    pub(crate) async fn list(&self, query: &[(&str, String)]) -> Result<Listing, ClusterError> {
        let (agents, unreachable) = self.agents().await?;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let mut sources = Vec::new();
        for agent in &agents {
            let (tx, rx) = mpsc::channel(PER_NODE);
            sources.push((agent.node.clone(), rx));
            let (this, agent, path) = (self.clone(), agent.clone(), format!("/sessions?{query}"));
            tokio::spawn(async move { this.list_node(&agent, &path, tx).await });
        }
        Ok(Listing {
            agents,
            heads: Heads::new(sources.len()),
            sources,
            pending: unreachable.into(),
        })
    }

    /// The session `id` (or the one it is a unique prefix of, across nodes) and the
    /// node holding it.
    pub(crate) async fn find(&self, id: &str) -> Result<(Agent, Session), ClusterError> {
        let mut listing = self.list(&[("id", id.to_owned())]).await?;
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        while let Some(item) = listing.next().await {
            match item {
                Item::Session { node, session } => found.push((node, session)),
                Item::Unreachable(u) => missing.push(u),
            }
        }
        let exact: Vec<usize> = (0..found.len()).filter(|&i| found[i].1.id == id).collect();
        let pick = match (exact.as_slice(), found.len()) {
            ([one], _) => *one,
            ([], 1) => 0,
            ([], 0) => {
                let not_asked = missing
                    .iter()
                    .map(|u| format!("{} ({})", u.node, u.error))
                    .collect::<Vec<_>>();
                let not_asked = if not_asked.is_empty() {
                    String::new()
                } else {
                    format!("; not answering: {}", not_asked.join(", "))
                };
                return Err(ClusterError::NotFound(id.to_owned(), not_asked));
            }
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .take(10)
                    .map(|(node, s)| format!("{} on {node}", s.id))
                    .collect();
                let more = found.len().saturating_sub(names.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                return Err(ClusterError::Ambiguous(
                    id.to_owned(),
                    format!("{}{more}", names.join(", ")),
                ));
            }
        };
        let (node, session) = found.swap_remove(pick);
        let agent = listing
            .agents
            .into_iter()
            .find(|a| a.node == node)
            .ok_or_else(|| ClusterError::AgentFailed(node, "not among the agents asked".into()))?;
        Ok((agent, session))
    }

    /// The session `id` (a unique prefix across nodes), its node and its audit events in
    /// request order.
    pub(crate) async fn events(
        &self,
        id: &str,
    ) -> Result<(String, Session, Vec<Event>), ClusterError> {
        let (agent, session) = self.find(id).await?;
        let body = self
            .fetch(&agent, &format!("/sessions/{}", session.id))
            .await?;
        let mut events = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event = serde_json::from_slice(line).map_err(|e| {
                ClusterError::AgentFailed(agent.node.clone(), format!("a bad event: {e}"))
            })?;
            events.push(event);
        }
        Ok((agent.node, session, events))
    }

    /// One exec/attach stream of the session `id` as asciicast v2: the one whose audit
    /// ID starts with `stream`, else the session's only one.
    pub(crate) async fn asciicast(
        &self,
        id: &str,
        stream: Option<&str>,
    ) -> Result<(String, Bytes), ClusterError> {
        self.recording(id, stream, false).await
    }

    /// [`Cluster::asciicast`], or with `json` the stream's captured frames as JSON (what
    /// `kgate sessions replay -o json` prints).
    pub(crate) async fn recording(
        &self,
        id: &str,
        stream: Option<&str>,
        json: bool,
    ) -> Result<(String, Bytes), ClusterError> {
        let (agent, session) = self.find(id).await?;
        let stream: String = form_urlencoded::byte_serialize(
            stream
                .unwrap_or(crate::admin::sessions::TERMINAL)
                .as_bytes(),
        )
        .collect();
        let format = if json { "?format=json" } else { "" };
        let path = format!("/sessions/{}/streams/{stream}{format}", session.id);
        Ok((agent.node.clone(), self.fetch(&agent, &path).await?))
    }

    /// A whole answer from `agent`'s admin endpoint, or why not.
    async fn fetch(&self, agent: &Agent, path: &str) -> Result<Bytes, ClusterError> {
        let failed = |e: String| ClusterError::AgentFailed(agent.node.clone(), e);
        let response = self.request(agent, path).await.map_err(failed)?;
        let body = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| failed(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(body.to_bytes())
    }

    /// `GET path` on `agent`'s admin endpoint; an answer other than 200 is an error
    /// naming its status and message.
    async fn request(
        &self,
        agent: &Agent,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let response = tokio::time::timeout(
            ANSWER_TIMEOUT,
            connect::get(&self.client, agent, self.ca.as_deref(), &self.token, path),
        )
        .await
        .map_err(|_| format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()))??;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let status: Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(format!(
            "{code}: {}",
            status["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                str::to_owned
            )
        ))
    }

    /// One node's list, session by session into `tx`; a failure is its last item.
    async fn list_node(
        &self,
        agent: &Agent,
        path: &str,
        tx: mpsc::Sender<Result<Session, String>>,
    ) {
        let response = match self.request(agent, path).await {
            Ok(response) => response,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut body = response.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(ANSWER_TIMEOUT, body.frame()).await {
                Err(_) => Err(format!(
                    "stalled: nothing for {}s",
                    ANSWER_TIMEOUT.as_secs()
                )),
                Ok(None) => break,
                Ok(Some(Err(e))) => Err(format!("the answer broke off: {e}")),
                Ok(Some(Ok(frame))) => Ok(frame),
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                if line.len() > 1 {
                    let item = serde_json::from_slice(&line[..line.len() - 1])
                        .map_err(|e| format!("a bad session summary: {e}"));
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
            if buf.len() > MAX_LINE {
                let _ = tx.send(Err("a line over 16 MiB".into())).await;
                return;
            }
        }
        if !buf.is_empty() {
            let _ = tx
                .send(
                    serde_json::from_slice(&buf).map_err(|e| format!("a bad session summary: {e}")),
                )
                .await;
        }
    }
}

/// The agent a fresh Lease's status describes, or why it cannot be reached.
fn agent_of(node: &str, namespace: &str, status: &Value) -> Result<Agent, String> {
    let field = |k: &str| {
        status[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (Some(pod), Some(port), Some(fingerprint)) = (
        field("podName"),
        status["adminPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok()),
        field("certSha256"),
    ) else {
        return Err(
            "its heartbeat names no pod, admin port or certificate fingerprint \
             (POD_NAME/POD_NAMESPACE unset, no admin endpoint, or an older agent)"
                .into(),
        );
    };
    Ok(Agent {
        node: node.to_owned(),
        namespace: field("podNamespace").unwrap_or_else(|| namespace.to_owned()),
        pod,
        port,
        fingerprint,
        sans: status["certSans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
    })
}

// === impl Listing ===

impl Listing {
    /// The next session (oldest first across nodes) or unreachable node; `None` at the
    /// end. Nodes known to be down come first; a node that fails while answering is
    /// reported when it fails (its sessions until then were already yielded).
    pub(crate) async fn next(&mut self) -> Option<Item> {
        if let Some(u) = self.pending.pop_front() {
            return Some(Item::Unreachable(u));
        }
        while let Some(i) = self.heads.need() {
            let (node, rx) = &mut self.sources[i];
            match rx.recv().await {
                Some(Ok(session)) => self.heads.put(i, Some(session)),
                Some(Err(error)) => {
                    self.heads.put(i, None);
                    return Some(Item::Unreachable(Unreachable {
                        node: node.clone(),
                        error,
                    }));
                }
                None => self.heads.put(i, None),
            }
        }
        let (i, session) = self
            .heads
            .pop_min(|a, b| (&a.start, &a.id) < (&b.start, &b.id))?;
        Some(Item::Session {
            node: self.sources[i].0.clone(),
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::agent_of;

    /// What a heartbeat's status must name before the agent can be reached.
    #[test]
    fn agents_from_heartbeat_statuses() {
        let full = json!({"podName": "kgate-agent-x", "podNamespace": "ops", "adminPort": 9443,
                          "certSha256": "ab", "certSans": ["kubernetes", "10.96.0.1"]});
        let cases = [
            ("complete", full.clone(), Ok(("ops", "kgate-agent-x", 9443))),
            (
                "no namespace: the Leases'",
                json!({"podName": "p", "adminPort": 1, "certSha256": "ab"}),
                Ok(("kgate-system", "p", 1)),
            ),
            (
                "no pod",
                json!({"adminPort": 1, "certSha256": "ab"}),
                Err("names no pod"),
            ),
            (
                "no port",
                json!({"podName": "p", "certSha256": "ab"}),
                Err("names no pod"),
            ),
            (
                "port out of range",
                json!({"podName": "p", "adminPort": 70000, "certSha256": "ab"}),
                Err("names no pod"),
            ),
            (
                "no fingerprint",
                json!({"podName": "p", "adminPort": 1}),
                Err("names no pod"),
            ),
            (
                "an older agent",
                json!({"node": "n"}),
                Err("an older agent"),
            ),
        ];
        for (name, status, want) in cases {
            let got = agent_of("n", "kgate-system", &status);
            match (got, want) {
                (Ok(a), Ok((ns, pod, port))) => {
                    assert_eq!(
                        (a.namespace.as_str(), a.pod.as_str(), a.port),
                        (ns, pod, port),
                        "{name}"
                    );
                }
                (Err(e), Err(says)) => assert!(e.contains(says), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            agent_of("n", "x", &full).unwrap().sans,
            ["kubernetes", "10.96.0.1"]
        );
    }
}
