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
    /// exec/attach/port-forward streams relayed without (full) capture.
    pub stream_capture_failures: Counter,
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
        Self {
            registry,
            requests,
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
