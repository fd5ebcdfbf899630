//! The agent's Prometheus metrics (served on the admin endpoint's `/metrics`):
//! requests by decision and outcome, request latency, stolen-token denials, held
//! approvals, masked responses, the policy generation, and the recorder's counters
//! (read from [`crate::record::writer::Stats`] at each scrape).

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

use crate::record::writer::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `allow`, `deny`, `approve`, `shadow-deny`, `shadow-approve`, or `refused`
    /// (kgate refused before policy: identity, parse errors).
    pub decision: String,
    /// HTTP status class: `2xx`, `4xx`, ...
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histogram,
    pub stolen_tokens: Counter,
    pub approvals_held: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub masked_responses: Counter,
    pub policy_generation: Gauge<u64, AtomicU64>,
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
        let policy_generation = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "policy_generation",
            "Generation of the policy set in force",
            policy_generation.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            stolen_tokens,
            approvals_held,
            masked_responses,
            policy_generation,
        }
    }
}

impl Metrics {
    /// The agent's metrics, with the recorder's counters from `stats`.
    pub fn with_recorder(stats: Arc<Stats>) -> Self {
        let mut metrics = Self::default();
        metrics
            .registry
            .register_collector(Box::new(RecorderCollector(stats)));
        metrics
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn request(&self, decision: &str, status: http::StatusCode, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                decision: decision.to_owned(),
                code: format!("{}xx", status.as_u16() / 100),
            })
            .inc();
        self.latency.observe(seconds);
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
