//! The dispatcher's Prometheus metrics (README, "Metrics"), registered in the registry
//! its admin listener serves (dead letters are counted by `dead_letter::DeadLetters`).
//! Labels are bounded: outcome classes, tier names and circuit states, never an
//! endpoint, URL or event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::retry::AttemptOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    to: &'static str,
}

/// Every metric the dispatcher exports.
pub struct Metrics {
    attempts: Family<OutcomeLabel, Counter>,
    attempt_seconds: Family<OutcomeLabel, Histogram>,
    delivered_after: Histogram,
    retries: Family<TierLabel, Counter>,
    deferrals: Family<TierLabel, Counter>,
    circuit: Family<StateLabel, Counter>,
    /// Deliveries being handled (waiting for a turn, or attempted).
    pub in_flight: Gauge,
    circuits_open: Gauge,
}

/// An attempt's outcome class, the `outcome` label.
pub fn outcome_class(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Status { code, .. } => match code {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        AttemptOutcome::Timeout => "timeout",
        AttemptOutcome::Connect => "connect_error",
        AttemptOutcome::Invalid => "invalid_request",
        AttemptOutcome::Refused => "refused",
    }
}

/// Attempt durations: 1 ms to about 65 s.
fn attempt_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// Rendering to delivery: 1 ms to about 3 days (retries span days).
fn delivered_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 4.0, 15,
    ))
}

impl Metrics {
    /// Registers the dispatcher's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(attempt_buckets),
            delivered_after: delivered_buckets(),
            retries: Family::default(),
            deferrals: Family::default(),
            circuit: Family::default(),
            in_flight: Gauge::default(),
            circuits_open: Gauge::default(),
        };
        registry.register(
            "hookline_delivery_attempts",
            "HTTP delivery attempts by outcome class (2xx, 4xx, 5xx, timeout, connect_error, refused by the SSRF guard, invalid_request)",
            m.attempts.clone(),
        );
        registry.register_with_unit(
            "hookline_delivery_attempt_duration",
            "Duration of delivery attempts by outcome class",
            Unit::Seconds,
            m.attempt_seconds.clone(),
        );
        registry.register_with_unit(
            "hookline_delivery_latency",
            "From the event's ingest (its events record's time) to successful delivery, retries included; from rendering for sensitive-trace requests and replays",
            Unit::Seconds,
            m.delivered_after.clone(),
        );
        registry.register(
            "hookline_retries_scheduled",
            "Deliveries written to a retry tier after a failed attempt, by tier",
            m.retries.clone(),
        );
        registry.register(
            "hookline_deliveries_deferred",
            "Deliveries not attempted now (endpoint slow, rate-limited or its circuit open), by the tier they wait in",
            m.deferrals.clone(),
        );
        registry.register(
            "hookline_circuit_transitions",
            "Endpoint circuit breakers opening and closing",
            m.circuit.clone(),
        );
        registry.register(
            "hookline_circuits_open",
            "Endpoints whose circuit is open or probing (bounded by the endpoints configured)",
            m.circuits_open.clone(),
        );
        registry.register(
            "hookline_dispatcher_in_flight",
            "Deliveries being handled: waiting for their endpoint's turn or attempted",
            m.in_flight.clone(),
        );
        m
    }

    /// One attempt ended.
    pub fn attempt(&self, outcome: &AttemptOutcome, seconds: f64) {
        let label = OutcomeLabel {
            outcome: outcome_class(outcome),
        };
        self.attempts.get_or_create(&label).inc();
        self.attempt_seconds.get_or_create(&label).observe(seconds);
    }

    /// A delivery succeeded this long after its event was ingested (or rendered).
    pub fn delivered(&self, seconds: f64) {
        self.delivered_after.observe(seconds.max(0.0));
    }

    /// A delivery went to a retry tier: after a failure (`retry`), or deferred.
    pub fn requeued(&self, tier: &'static str, retry: bool) {
        let label = TierLabel { tier };
        if retry {
            self.retries.get_or_create(&label).inc();
        } else {
            self.deferrals.get_or_create(&label).inc();
        }
    }

    /// A circuit opened (`true`) or closed.
    pub fn circuit(&self, opened: bool) {
        let to = if opened { "open" } else { "closed" };
        self.circuit.get_or_create(&StateLabel { to }).inc();
        if opened {
            self.circuits_open.inc();
        } else {
            self.circuits_open.dec();
        }
    }
}
