//! The agent's Prometheus metrics (served on the admin endpoint's `/metrics`):
//! requests by decision and outcome, request latency, stolen-token denials, held
//! approvals, approval notifications, masked responses, the policy generation, and the recorder's counters
//! (read from [`crate::record::stats::Stats`] at each scrape).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::record::stats::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// `allow`, `deny`, `approve`, `shadow-deny`, `shadow-approve`, or `refused`
    /// (kgate refused before policy: identity, parse errors).
    pub decision: &'static str,
    /// HTTP status class: `2xx`, `4xx`, ...
    pub code: &'static str,
}

/// The label of each status class (`StatusCode` is 100 to 999).
const STATUS_CLASSES: [&str; 9] = [
    "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
];

/// A refusal kgate made itself: its kind (`StolenToken`, `PolicyDenied`, ...) and who
/// caused it (`client`, `upstream`, `kgate`), from the typed refusal, never its message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    pub kind: &'static str,
    pub side: &'static str,
}

/// One notification to one target (`approval.notify`), by how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NotificationLabels {
    /// The target's configured name (never its URL).
    pub target: String,
    /// `held`, `approved`, `denied` or `expired`.
    pub event: &'static str,
    /// `sent`, `failed` (refused for good), `gave_up` (not sent before it stopped
    /// being relevant: the request was decided, or the retry window passed) or
    /// `dropped` (the queue was full).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabels {
    pub target: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub notifications: Family<NotificationLabels, Counter>,
    /// Failed notification attempts (each retry counted), and when the last one was.
    pub notification_failures: Family<TargetLabels, Counter>,
    pub notification_last_failure: Family<TargetLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub requests: Family<RequestLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub latency: Histogram,
    pub stolen_tokens: Counter,
    pub approvals_held: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub masked_responses: Counter,
    /// exec/attach/port-forward streams relayed without (full) capture.
    pub stream_capture_failures: Counter,
    pub policy_generation: Gauge<u64, AtomicU64>,
    /// Connections, enforcement and the request path's stages.
    pub node: NodeMetrics,
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by policy decision and status class",
            requests.clone(),
        );
        // 50 µs to ~100 s: proxy overhead at the low end, held approvals at the top.
        let latency = Histogram::new([
            50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0, 100.0,
        ]);
        registry.register(
            "request_duration_seconds",
            "Time to the response head, refusals included",
            latency.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests kgate answered itself, by kind and by who caused it",
            refusals.clone(),
        );
        let stolen_tokens = Counter::default();
        registry.register(
            "stolen_token_denials",
            "Tokens refused because they were bound to another pod, or used outside any pod",
            stolen_tokens.clone(),
        );
        let approvals_held = Gauge::default();
        registry.register(
            "approvals_held",
            "Requests waiting for a human right now",
            approvals_held.clone(),
        );
        let masked_responses = Counter::default();
        registry.register(
            "masked_responses",
            "Responses that went through the masker",
            masked_responses.clone(),
        );
        let stream_capture_failures = Counter::default();
        registry.register(
            "stream_capture_failures",
            "Upgraded streams relayed unchanged whose frames could not be captured",
            stream_capture_failures.clone(),
        );
        let policy_generation = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "policy_generation",
            "Generation of the policy set in force",
            policy_generation.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Approval notifications by target, event and how they ended",
            notifications.clone(),
        );
        let notification_failures = Family::<TargetLabels, Counter>::default();
        registry.register(
            "notification_failures",
            "Failed approval notification attempts by target (each retry counted)",
            notification_failures.clone(),
        );
        let notification_last_failure = Family::default();
        registry.register(
            "notification_last_failure_timestamp_seconds",
            "When the last approval notification attempt to the target failed (Unix time)",
            notification_last_failure.clone(),
        );
        let node = NodeMetrics::register(&mut registry);
        Self {
            registry,
            notifications,
            notification_failures,
            notification_last_failure,
            node,
            requests,
            refusals,
            latency,
            stolen_tokens,
            approvals_held,
            masked_responses,
            stream_capture_failures,
            policy_generation,
        }
    }
}

impl Metrics {
    /// The agent's metrics, with the recorder's counters from `stats`.
    pub(crate) fn with_recorder(stats: Arc<Stats>) -> Self {
        let mut metrics = Self::default();
        metrics
            .registry
            .register_collector(Box::new(RecorderCollector(stats)));
        metrics
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn notification(&self, target: &str, event: &'static str, result: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                target: target.to_owned(),
                event,
                result,
            })
            .inc();
    }

    pub(crate) fn notification_failed(&self, target: &str, at_seconds: i64) {
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        self.notification_failures.get_or_create(&labels).inc();
        self.notification_last_failure
            .get_or_create(&labels)
            .set(at_seconds);
    }

    pub(crate) fn request(&self, decision: &'static str, status: http::StatusCode, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                decision,
                code: STATUS_CLASSES[usize::from(status.as_u16() / 100 - 1)],
            })
            .inc();
        self.latency.observe(seconds);
    }
}

// === node metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    /// `kernel` (the kernel's origin record was found), `direct` (none, allowed by
    /// `directClients`), or `refused`.
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WorkerLabels {
    /// The worker thread's index, from 0.
    pub worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KernelLabels {
    /// `redirected`, `refused` (no agent address: fail closed) or `exempt`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabels {
    /// `identify`, `authorize`, `approve` or `forward` (to the upstream's response head).
    pub stage: &'static str,
}

/// What the node's agent is enforcing and where a request's time goes.
pub(crate) struct NodeMetrics {
    pub connections: Family<ConnectionLabels, Counter>,
    /// Client connections open now, by the worker thread serving them.
    pub open_connections: Family<WorkerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Target connects the kernel programs handled, from their per-CPU counters.
    kernel_connects: Family<KernelLabels, Counter>,
    kernel_seen: std::sync::Mutex<[u64; 3]>,
    pub stage_latency: Family<StageLabels, Histogram>,
    /// Addresses in the kernel's targets map.
    pub targets: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// 1 while discovery's targets are current (or discovery is off).
    pub targets_synced: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// The serving certificate's notAfter, seconds since the epoch.
    pub cert_not_after: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl NodeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Accepted client connections by where they came from",
            connections.clone(),
        );
        let open_connections = Family::default();
        registry.register(
            "open_connections",
            "Client connections open now, by the worker thread serving them",
            open_connections.clone(),
        );
        let kernel_connects = Family::<KernelLabels, Counter>::default();
        registry.register(
            "kernel_connects",
            "Connects to API server addresses that the kernel programs redirected, refused or left to an exempt cgroup",
            kernel_connects.clone(),
        );
        // 10 µs to ~5 s: local stages at the low end, a slow API server at the top.
        let stage_latency = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                50e-3, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        registry.register(
            "stage_duration_seconds",
            "Time spent in each stage of the request path",
            stage_latency.clone(),
        );
        let targets = Gauge::default();
        registry.register(
            "kernel_targets",
            "API server addresses the kernel programs intercept",
            targets.clone(),
        );
        let targets_synced = Gauge::default();
        registry.register(
            "kernel_targets_synced",
            "1 when the intercepted addresses match endpoint discovery",
            targets_synced.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "serving_cert_not_after_seconds",
            "When the serving certificate expires (Unix time)",
            cert_not_after.clone(),
        );
        Self {
            connections,
            open_connections,
            kernel_connects,
            kernel_seen: std::sync::Mutex::new([0; 3]),
            stage_latency,
            targets,
            targets_synced,
            cert_not_after,
        }
    }

    /// Brings the kernel counters up to `now` (redirected, refused, exempt), which the
    /// programs count from their attachment, across agent restarts.
    pub(crate) fn kernel(&self, now: [u64; 3]) {
        let mut seen = self
            .kernel_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, outcome) in ["redirected", "refused", "exempt"].into_iter().enumerate() {
            // Fewer than before: the programs were attached afresh.
            let delta = now[i].checked_sub(seen[i]).unwrap_or(now[i]);
            self.kernel_connects
                .get_or_create(&KernelLabels { outcome })
                .inc_by(delta);
        }
        *seen = now;
    }

    pub(crate) fn stage(&self, stage: &'static str, elapsed: std::time::Duration) {
        self.stage_latency
            .get_or_create(&StageLabels { stage })
            .observe(elapsed.as_secs_f64());
    }
}

/// The recorder's counters, as they are at the scrape. The writer thread keeps plain
/// atomics, so the record path does not depend on the metrics library.
#[derive(Debug)]
struct RecorderCollector(Arc<Stats>);

impl Collector for RecorderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let counters = [
            (
                "record_written_records",
                "Records written to the log (or stdout)",
                get(&stats.written),
            ),
            (
                "record_dropped_queue_full_records",
                "Records lost because the writer's queue was full",
                get(&stats.dropped),
            ),
            (
                "record_dropped_too_large_records",
                "Records refused because they were empty or too large",
                get(&stats.too_large),
            ),
            (
                "record_write_errors",
                "Record groups whose write or sync failed",
                get(&stats.write_errors),
            ),
            (
                "record_write_failed_records",
                "Records whose write failed: lost (batch) or refused requests (strict)",
                get(&stats.write_failed_records),
            ),
            (
                "record_syncs",
                "fdatasync calls of the record log",
                get(&stats.syncs),
            ),
        ];
        let webhook = &stats.webhook;
        let webhook_counters = [
            (
                "record_webhook_sent_records",
                "Records the audit webhook acknowledged",
                get(&webhook.sent),
            ),
            (
                "record_webhook_failed_attempts",
                "Audit webhook POSTs that failed (each retry counted)",
                get(&webhook.failed_attempts),
            ),
            (
                "record_webhook_rejected_records",
                "Records the audit webhook rejected as bad (400, 413, 415, 422) even alone",
                get(&webhook.rejected),
            ),
            (
                "record_webhook_skipped_records",
                "Records never sent: deleted by retention first, damaged, or not JSON",
                get(&webhook.skipped),
            ),
        ];
        let webhook_on = webhook.enabled.load(Ordering::Relaxed);
        for (name, help, value) in counters
            .into_iter()
            .chain(webhook_counters.into_iter().filter(|_| webhook_on))
        {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut gauges = vec![
            (
                "record_damaged_segments",
                "Damaged segments the recovery scan found at start-up",
                i64::try_from(get(&stats.damaged_segments)).unwrap_or(i64::MAX),
            ),
            (
                "record_writable",
                "1 when the last write and sync of the record log succeeded",
                i64::from(!stats.failing.load(Ordering::Relaxed)),
            ),
        ];
        if webhook_on {
            gauges.push((
                "record_webhook_lag_records",
                "Durable records the audit webhook has not had acknowledged yet",
                i64::try_from(get(&stats.durable_end).saturating_sub(get(&webhook.acked)))
                    .unwrap_or(i64::MAX),
            ));
        }
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_advance_by_what_the_programs_counted() {
        let metrics = Metrics::default();
        metrics.node.kernel([5, 1, 0]);
        metrics.node.kernel([7, 1, 2]);
        // The programs were attached afresh: their counts start again.
        metrics.node.kernel([3, 0, 0]);
        let text = metrics.render();
        for line in [
            "kgate_kernel_connects_total{outcome=\"redirected\"} 10",
            "kgate_kernel_connects_total{outcome=\"refused\"} 1",
            "kgate_kernel_connects_total{outcome=\"exempt\"} 2",
        ] {
            assert!(text.contains(line), "no {line} in {text}");
        }
    }

    #[test]
    fn recorder_counters_are_exposed() {
        let stats = Arc::new(Stats::default());
        stats.written.store(7, Ordering::Relaxed);
        stats.write_failed_records.store(3, Ordering::Relaxed);
        stats.failing.store(true, Ordering::Relaxed);
        let metrics = Metrics::with_recorder(stats.clone());
        let text = metrics.render();
        assert!(
            text.contains("kgate_record_written_records_total 7"),
            "{text}"
        );
        assert!(
            text.contains("kgate_record_write_failed_records_total 3"),
            "{text}"
        );
        assert!(text.contains("kgate_record_writable 0"), "{text}");
        assert!(!text.contains("webhook"), "no webhook configured: {text}");
        stats.webhook.enabled.store(true, Ordering::Relaxed);
        stats.durable_end.store(20, Ordering::Relaxed);
        stats.webhook.acked.store(8, Ordering::Relaxed);
        let text = metrics.render();
        assert!(
            text.contains("kgate_record_webhook_lag_records 12"),
            "{text}"
        );
        assert!(
            text.contains("kgate_record_webhook_sent_records_total 0"),
            "{text}"
        );
    }
}
