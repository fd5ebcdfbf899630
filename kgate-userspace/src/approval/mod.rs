//! Just-in-time approval: a request that policy holds waits here while a
//! `KgateApproval` object asks a human. Approved: it goes on, and with `grantFor`
//! repeats of the same user, verb and resource pass for the window. Denied or not
//! decided in time: 403. The client going away (or the agent dying) abandons it:
//! a held request is never forwarded later, unchecked.
//!
//! On start the agent reads the approvals back: live grants are restored, approvals
//! it was holding when it stopped are marked `Abandoned` (without a notification).
//!
//! The agent that holds a request, and only it, tells the configured webhooks that it
//! is held and how it ended ([`notify`]): one notification per approval and event.
//!
//! Not here: deciding which requests are held (policy).

pub(crate) mod notify;
pub(crate) mod types;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{info, warn};

use self::{
    notify::Notifier,
    types::{HeldRequest, KgateApproval, KgateApprovalSpec, KgateApprovalStatus},
};
use crate::{
    api_status::Status, config::NotifyEvent, identity::Identity, policy::Decision,
    request_info::RequestInfo,
};

/// Label naming the node whose agent holds an approval.
const NODE_LABEL: &str = "kgate.io/node";
/// How often a held request checks its approval object.
const POLL: Duration = Duration::from_millis(250);

/// What repeats an approve-for grant covers.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct GrantKey {
    user: String,
    verb: String,
    api_group: String,
    resource: String,
    subresource: String,
    namespace: String,
}

pub(crate) struct Approvals {
    api: Api<KgateApproval>,
    node: String,
    grants: Mutex<HashMap<GrantKey, Timestamp>>,
    notifier: Option<Arc<Notifier>>,
}

// === impl Approvals ===

impl Approvals {
    pub(crate) fn new(client: kube::Client, node: &str) -> Self {
        Self {
            api: Api::all(client),
            node: node.to_owned(),
            grants: Mutex::new(HashMap::new()),
            notifier: None,
        }
    }

    /// Tells `notifier`'s webhooks of the requests this agent holds.
    pub(crate) fn with_notifier(mut self, notifier: Option<Arc<Notifier>>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Restores grants and abandons what this node held before a restart.
    pub(crate) async fn recover(&self) {
        let list = match self.api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(error) => {
                warn!(%error, "cannot list approvals; grants from before this start are not restored");
                return;
            }
        };
        let now = Timestamp::now();
        for approval in list.items {
            let name = approval.metadata.name.clone().unwrap_or_default();
            let phase = approval.status.as_ref().map_or("", |s| s.phase.as_str());
            let mine = approval
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NODE_LABEL))
                .is_some_and(|n| *n == self.node);
            match phase {
                "Approved" => {
                    let until = approval
                        .status
                        .as_ref()
                        .and_then(|s| s.grant_until.as_deref())
                        .and_then(|t| t.parse::<Timestamp>().ok());
                    if let Some(until) = until.filter(|u| *u > now) {
                        self.grant(key_of(&approval.spec), until);
                        info!(approval = name, %until, "approve-for grant restored");
                    }
                }
                "" | "Pending" if mine => {
                    let _ = self
                        .set_status(
                            &name,
                            "Abandoned",
                            "the agent restarted while the request was held; it was not forwarded",
                            None,
                        )
                        .await;
                }
                _ => {}
            }
        }
    }

    /// Holds the request until a human decides: `Ok` to forward, or the 403 (or 503
    /// when the approval cannot be created) to send.
    pub(crate) async fn hold(
        &self,
        identity: &Identity,
        process: Option<String>,
        info: &RequestInfo,
        decision: &Decision,
        body: Option<String>,
    ) -> Result<String, Status> {
        let spec = KgateApprovalSpec {
            user: identity.user.username.clone(),
            groups: identity.user.groups.clone(),
            workload: identity.workload.describe(),
            process,
            node: self.node.clone(),
            request: HeldRequest {
                verb: info.verb.to_string(),
                path: info.path.clone(),
                api_group: info.api_group.to_string(),
                resource: info.resource.to_string(),
                subresource: info.subresource.to_string(),
                namespace: info.namespace.to_string(),
                name: info.name.to_string(),
            },
            body,
            rule: decision.source.to_string(),
            approvers: decision.approvers.clone(),
            expires_at: (Timestamp::now() + Duration::from_secs(decision.approval_timeout_seconds))
                .to_string(),
            ..KgateApprovalSpec::default()
        };
        if self.granted(&key_of(&spec)) {
            return Ok("an approve-for grant".into());
        }
        let mut object = KgateApproval::new("", spec);
        object.metadata.name = None;
        object.metadata.generate_name = Some(format!("{}-{}-", info.verb, safe(&info.resource)));
        object.metadata.labels = Some([(NODE_LABEL.to_owned(), self.node.clone())].into());
        let created = self
            .api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| {
                Status::service_unavailable(format!(
                    "kgate: policy {} holds this request for approval, but the approval cannot be created: {e}",
                    decision.source
                ))
            })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let pending = self
            .set_status(&name, "Pending", "waiting for a decision", None)
            .await
            .unwrap_or_else(|_| with_phase(created, "Pending", "waiting for a decision"));
        // Marked held before the notification is queued, so its first failure retries.
        let _holding = self.notifier.as_ref().map(|n| n.holding(&name));
        self.announce(NotifyEvent::Held, &pending, decision);
        info!(
            approval = name,
            rule = &*decision.source,
            "request held for approval"
        );
        // If the client goes away, this future is dropped: the guard abandons it.
        let mut guard = Abandon {
            api: self.api.clone(),
            name: Some(name.clone()),
        };
        let deadline = Instant::now() + Duration::from_secs(decision.approval_timeout_seconds);
        // The object as last read: a denial's reason and decider, for its notification.
        let mut last: Option<KgateApproval> = None;
        let outcome = loop {
            if Instant::now() >= deadline {
                break Err(format!(
                    "kgate: approval {name} was not decided within {}s",
                    decision.approval_timeout_seconds
                ));
            }
            tokio::time::sleep(POLL).await;
            let Ok(current) = self.api.get(&name).await else {
                continue;
            };
            let by = current
                .spec
                .decided_by
                .clone()
                .unwrap_or_else(|| "an approver".into());
            match current.spec.decision.as_deref() {
                Some("approve") => break Ok((current.spec, by)),
                Some("deny") => {
                    let reason = current
                        .spec
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason given".into());
                    last = Some(current);
                    break Err(format!(
                        "kgate: request denied by {by} (approval {name}): {reason}"
                    ));
                }
                _ => {}
            }
        };
        guard.name = None;
        match outcome {
            Ok((spec, by)) => {
                let until = spec
                    .grant_for
                    .as_deref()
                    .and_then(parse_duration)
                    .map(|d| Timestamp::now() + d);
                if let Some(until) = until {
                    self.grant(key_of(&spec), until);
                }
                let message = format!("approved by {by}");
                let done = self
                    .set_status(&name, "Approved", &message, until)
                    .await
                    .unwrap_or_else(|_| {
                        let mut object = with_phase(pending, "Approved", &message);
                        object.spec = spec;
                        object
                    });
                self.announce(NotifyEvent::Approved, &done, decision);
                Ok(name)
            }
            Err(message) => {
                let (phase, event) = if message.contains("was not decided") {
                    ("Expired", NotifyEvent::Expired)
                } else {
                    ("Denied", NotifyEvent::Denied)
                };
                let done = match self.set_status(&name, phase, &message, None).await {
                    Ok(object) => object,
                    Err(_) => with_phase(last.unwrap_or(pending), phase, &message),
                };
                self.announce(event, &done, decision);
                Err(Status::forbidden(message))
            }
        }
    }

    fn granted(&self, key: &GrantKey) -> bool {
        let now = Timestamp::now();
        let mut grants = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        grants.retain(|_, until| *until > now);
        grants.contains_key(key)
    }

    fn grant(&self, key: GrantKey, until: Timestamp) {
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, until);
    }

    /// Queues the notification of `event` (never waits; see [`notify`]).
    fn announce(&self, event: NotifyEvent, approval: &KgateApproval, decision: &Decision) {
        if let Some(notifier) = &self.notifier {
            notifier.notify(event, approval, decision.notify.as_deref());
        }
    }

    /// Sets the status; the object as the API server then has it.
    async fn set_status(
        &self,
        name: &str,
        phase: &str,
        message: &str,
        grant_until: Option<Timestamp>,
    ) -> Result<KgateApproval, kube::Error> {
        let status = json!({"status": {
            "phase": phase, "message": message,
            "grantUntil": grant_until.map(|t| t.to_string()),
        }});
        self.api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
    }
}

/// `approval` with the status the agent meant to write, for a notification when the
/// write failed (the notification still says what happened to the request).
fn with_phase(mut approval: KgateApproval, phase: &str, message: &str) -> KgateApproval {
    approval.status = Some(KgateApprovalStatus {
        phase: phase.to_owned(),
        message: Some(message.to_owned()),
        grant_until: None,
    });
    approval
}

/// Marks an approval `Abandoned` when the request holding it is dropped undecided.
struct Abandon {
    api: Api<KgateApproval>,
    name: Option<String>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        let api = self.api.clone();
        tokio::spawn(async move {
            let status = json!({"status": {"phase": "Abandoned", "message": "the client went away while the request was held; it was not forwarded"}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        });
    }
}

fn key_of(spec: &KgateApprovalSpec) -> GrantKey {
    GrantKey {
        user: spec.user.clone(),
        verb: spec.request.verb.clone(),
        api_group: spec.request.api_group.clone(),
        resource: spec.request.resource.clone(),
        subresource: spec.request.subresource.clone(),
        namespace: spec.request.namespace.clone(),
    }
}

/// A resource name usable in an object name.
fn safe(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "path".into() } else { s }
}

/// `90s`, `10m`, `2h`: a grant window.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    (secs > 0 && secs <= 7 * 24 * 3600).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn grant_windows() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "10", "m", "0m", "10d", "-1m", "999h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
