//! Approval notifications: webhooks (Slack, CloudEvents) told when a request is held
//! for approval and when it is approved, denied or expires, so that approvers need not
//! poll `kgate approvals list`.
//!
//! - The request path only enqueues ([`Notifier::notify`]): a bounded queue, `try_send`,
//!   so a full queue drops the notification (counted, logged) and never waits. Nothing
//!   here can delay or decide a request.
//! - A background task takes each notification and sends it, with capped exponential
//!   backoff and jitter, while it is still relevant: a `held` notification while the
//!   request is held ([`Notifier::holding`] marks it), a decided or expired one for
//!   the target's `decidedRetrySeconds`. 2xx is sent; 429, 5xx, no answer and a URL
//!   that cannot be read are retried; any other 4xx is final.
//! - One notification per approval and event, whatever the number of agents: only
//!   [`super::Approvals::hold`], on the agent that created the `KgateApproval` and holds
//!   the request, calls [`Notifier::notify`]. No agent watches approvals to notify, and
//!   an agent that restarts and marks what it held `Abandoned` sends nothing.
//!
//! Not here: the bodies ([`body`]), one target's HTTPS client ([`mod@deliver`]).

pub(crate) mod body;
mod deliver;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

pub(crate) use self::body::Event;
pub(crate) use self::deliver::TargetError;
use self::deliver::{PostError, Sender};
use super::types::KgateApproval;
use crate::{
    config::{self, Format, NotifyEvent, NotifyTarget},
    metrics::Metrics,
};

/// Deliveries in progress (each retrying in its own task), at most; past this the
/// queue fills and further notifications are dropped.
const MAX_IN_FLIGHT: usize = 256;

/// The agent's notifier: targets, the queue and what is held now.
pub(crate) struct Notifier {
    targets: Vec<Arc<Target>>,
    queue: mpsc::Sender<Delivery>,
    /// Approvals whose request is held right now: a `held` notification is retried
    /// only while its approval is here.
    held: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
}

/// One configured target, its client and its health.
pub(crate) struct Target {
    cfg: NotifyTarget,
    sender: Sender,
    stats: TargetStats,
}

/// One target's health since the agent started.
#[derive(Default)]
struct TargetStats {
    sent: AtomicU64,
    /// Given up: refused for good, or no longer relevant before it went through.
    failed: AtomicU64,
    dropped: AtomicU64,
    /// The last attempt failed.
    failing: AtomicBool,
    last_failure: Mutex<Option<(String, Timestamp)>>,
}

/// What `/status` says of one target.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TargetStatus {
    pub target: String,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    /// The last attempt failed (the notification is being retried, or was given up).
    pub failing: bool,
    /// What the last failure was (never the URL), and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<String>,
}

/// One event for one target.
struct Delivery {
    target: Arc<Target>,
    event: Arc<Event>,
}

/// How a delivery ended, as the metric's `result` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Refused for good (4xx other than 408/429).
    Failed,
    /// Not sent before it stopped being relevant (the request was decided, or the
    /// decided event's retry window passed).
    GaveUp,
}

// === impl Notifier ===

impl Notifier {
    /// Sets up every target (CA, a `urlFile`'s URL) and starts the sending task.
    /// `None` without targets.
    pub(crate) fn start(
        cfg: &config::Approval,
        client: Option<&kube::Client>,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, TargetError> {
        if cfg.notify.is_empty() {
            return Ok(None);
        }
        let targets = cfg
            .notify
            .iter()
            .map(|t| {
                Ok(Arc::new(Target {
                    cfg: t.clone(),
                    sender: Sender::new(t, client)?,
                    stats: TargetStats::default(),
                }))
            })
            .collect::<Result<Vec<_>, TargetError>>()?;
        let (queue, rx) = mpsc::channel(cfg.notify_queue);
        let notifier = Arc::new(Self {
            targets,
            queue,
            held: Mutex::new(HashSet::new()),
            metrics,
        });
        info!(
            targets = ?notifier.targets.iter().map(|t| &t.cfg.name).collect::<Vec<_>>(),
            "approval notifications on"
        );
        let context = Arc::new(Context {
            node: node.to_owned(),
            console: cfg.console_url.clone(),
        });
        tokio::spawn(run(Arc::downgrade(&notifier), rx, context));
        Ok(Some(notifier))
    }

    /// Marks `name` held until the returned guard is dropped.
    pub(crate) fn holding(self: &Arc<Self>, name: &str) -> Holding {
        self.lock_held().insert(name.to_owned());
        Holding {
            notifier: self.clone(),
            name: name.to_owned(),
        }
    }

    fn is_held(&self, name: &str) -> bool {
        self.lock_held().contains(name)
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `kind` of `approval` for the targets `only` names (every target when
    /// `None`) that take it. Never waits: a full queue drops it.
    pub(crate) fn notify(
        &self,
        kind: NotifyEvent,
        approval: &KgateApproval,
        only: Option<&[String]>,
    ) {
        let event = Arc::new(Event {
            kind,
            approval: approval.clone(),
            time: Timestamp::now(),
        });
        if let Some(only) = only {
            for unknown in only
                .iter()
                .filter(|n| !self.targets.iter().any(|t| t.cfg.name == **n))
            {
                warn!(
                    target = unknown,
                    rule = event.approval.spec.rule,
                    "the rule names a notification target this agent does not have"
                );
            }
        }
        for target in self
            .targets
            .iter()
            .filter(|t| t.cfg.wants(kind) && only.is_none_or(|only| only.contains(&t.cfg.name)))
        {
            let delivery = Delivery {
                target: target.clone(),
                event: event.clone(),
            };
            if self.queue.try_send(delivery).is_err() {
                target.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.count(&target.cfg.name, kind, "dropped");
                warn!(
                    target = target.cfg.name,
                    approval = event.name(),
                    event = kind.as_str(),
                    "notification queue full: notification dropped"
                );
            }
        }
    }

    fn count(&self, target: &str, event: NotifyEvent, result: &'static str) {
        self.metrics.notification(target, event.as_str(), result);
    }

    /// Every target's health.
    pub(crate) fn status(&self) -> Vec<TargetStatus> {
        self.targets
            .iter()
            .map(|t| {
                let s = &t.stats;
                let last = s
                    .last_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                TargetStatus {
                    target: t.cfg.name.clone(),
                    sent: s.sent.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    failing: s.failing.load(Ordering::Relaxed),
                    last_error: last.as_ref().map(|(e, _)| e.clone()),
                    last_failure_at: last.map(|(_, at)| at.to_string()),
                }
            })
            .collect()
    }
}

/// Keeps an approval marked held; dropped when the held request ends, however it ends.
pub(crate) struct Holding {
    notifier: Arc<Notifier>,
    name: String,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.notifier.lock_held().remove(&self.name);
    }
}

/// What every body needs besides the event.
struct Context {
    node: String,
    console: Option<String>,
}

/// Takes deliveries off the queue and sends each in its own task, at most
/// [`MAX_IN_FLIGHT`] at once, until the notifier is gone.
async fn run(
    notifier: std::sync::Weak<Notifier>,
    mut rx: mpsc::Receiver<Delivery>,
    context: Arc<Context>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(delivery) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (notifier, context) = (notifier.clone(), context.clone());
        tokio::spawn(async move {
            let _slot = slot;
            deliver(&notifier, &context, &delivery).await;
        });
    }
}

/// Sends one delivery until it is sent, refused for good, or no longer relevant.
async fn deliver(notifier: &std::sync::Weak<Notifier>, context: &Context, delivery: &Delivery) {
    let (target, event) = (&delivery.target, &delivery.event);
    let (body, content_type) = match target.cfg.format {
        Format::Slack => (
            body::slack(event, context.console.as_deref()),
            "application/json",
        ),
        Format::CloudEvents => (
            body::cloudevent(event, &context.node),
            "application/cloudevents+json",
        ),
    };
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let cfg = &target.cfg;
    let decided_until = event.time + Duration::from_secs(cfg.decided_retry_seconds);
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.initial_backoff_millis),
        Duration::from_millis(cfg.max_backoff_millis),
    );
    let outcome = loop {
        // Before every attempt: a `held` notification sent after the decision (a slow
        // queue, a long backoff) would ask for a decision already made.
        let relevant = match (notifier.upgrade(), event.kind) {
            (None, _) => return,
            (Some(n), NotifyEvent::Held) => n.is_held(event.name()),
            (Some(_), _) => Timestamp::now() < decided_until,
        };
        if !relevant {
            break Outcome::GaveUp;
        }
        let error = match target.sender.post(body.clone(), content_type).await {
            Ok(()) => break Outcome::Sent,
            Err(error) => error,
        };
        let Some(notifier) = notifier.upgrade() else {
            return;
        };
        failed_attempt(&notifier, target, event, &error);
        if error.is_final() {
            break Outcome::Failed;
        }
        drop(notifier);
        let wait = backoff.next_wait();
        debug!(
            target = cfg.name,
            approval = event.name(),
            ?wait,
            "notification retry"
        );
        tokio::time::sleep(wait).await;
    };
    let Some(notifier) = notifier.upgrade() else {
        return;
    };
    let (result, stats) = match outcome {
        Outcome::Sent => {
            target.stats.failing.store(false, Ordering::Relaxed);
            ("sent", &target.stats.sent)
        }
        Outcome::Failed => ("failed", &target.stats.failed),
        Outcome::GaveUp => ("gave_up", &target.stats.failed),
    };
    stats.fetch_add(1, Ordering::Relaxed);
    notifier.count(&cfg.name, event.kind, result);
    if outcome == Outcome::Sent {
        info!(
            target = cfg.name,
            approval = event.name(),
            event = event.kind.as_str(),
            "notification sent"
        );
    } else {
        warn!(
            target = cfg.name,
            approval = event.name(),
            event = event.kind.as_str(),
            result,
            "notification not sent"
        );
    }
}

fn failed_attempt(notifier: &Notifier, target: &Target, event: &Event, error: &PostError) {
    let name = &target.cfg.name;
    let now = Timestamp::now();
    target.stats.failing.store(true, Ordering::Relaxed);
    *target
        .stats
        .last_failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((error.to_string(), now));
    notifier.metrics.notification_failed(name, now.as_second());
    warn!(
        target = name,
        approval = event.name(),
        event = event.kind.as_str(),
        %error,
        "notification attempt failed"
    );
}

/// Capped exponential backoff with jitter: the `n`th wait is drawn from
/// `[d/2, d]` where `d = min(initial · 2ⁿ, max)`, so that agents retrying against one
/// receiver spread out.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    pub(crate) fn next_wait(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        jitter(d, random_fraction())
    }
}

/// `d` scaled into `[d/2, d]` by `fraction` in `[0, 1]`.
pub(crate) fn jitter(d: Duration, fraction: f64) -> Duration {
    d.mul_f64(0.5 + 0.5 * fraction.clamp(0.0, 1.0))
}

fn random_fraction() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 1.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}
