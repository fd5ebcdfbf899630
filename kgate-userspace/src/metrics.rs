//! The agent's Prometheus metrics (served on the admin endpoint's `/metrics`):
//! requests by decision and outcome, request latency, stolen-token denials, held
//! approvals, masked responses, the policy generation.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

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
        let node = NodeMetrics::register(&mut registry);
        Self {
            registry,
            node,
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

// === node metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `kernel` (the kernel's origin record was found), `direct` (none, allowed by
    /// `directClients`), or `refused`.
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelLabels {
    /// `redirected`, `refused` (no agent address: fail closed) or `exempt`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `identify`, `authorize`, `approve` or `forward` (to the upstream's response head).
    pub stage: &'static str,
}

/// What the node's agent is enforcing and where a request's time goes.
pub struct NodeMetrics {
    pub connections: Family<ConnectionLabels, Counter>,
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
    pub fn kernel(&self, now: [u64; 3]) {
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

    pub fn stage(&self, stage: &'static str, elapsed: std::time::Duration) {
        self.stage_latency
            .get_or_create(&StageLabels { stage })
            .observe(elapsed.as_secs_f64());
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
}
