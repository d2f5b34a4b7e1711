//! The renderer's Prometheus metrics (README, "Metrics"), registered in the registry its
//! admin listener serves (dead letters are counted by `dead_letter::DeadLetters`).
//! Labels are bounded: an outcome, never an endpoint or event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Every metric the renderer's webhook path exports.
pub struct Metrics {
    events: Family<OutcomeLabel, Counter>,
    /// Deliveries written to `rendered-deliveries`.
    pub deliveries: Counter,
    /// Events being rendered.
    pub in_flight: Gauge,
}

impl Metrics {
    /// Registers the renderer's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            events: Family::default(),
            deliveries: Counter::default(),
            in_flight: Gauge::default(),
        };
        registry.register(
            "hookline_renderer_events",
            "Events read from `events`, by outcome: rendered (for one endpoint or more), unsubscribed (no endpoint wants it), unreadable (dead-lettered)",
            m.events.clone(),
        );
        registry.register(
            "hookline_deliveries_rendered",
            "Deliveries written to `rendered-deliveries`",
            m.deliveries.clone(),
        );
        registry.register(
            "hookline_renderer_in_flight",
            "Events being rendered",
            m.in_flight.clone(),
        );
        m
    }

    /// An event was handled with `outcome` (`rendered`, `unsubscribed`, `unreadable`).
    pub fn event(&self, outcome: &'static str) {
        self.events.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// How often waits for the Schema Registry are logged.
const LOG_EVERY_MS: u64 = 5_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// Reads of events that waited for the Schema Registry, on both paths.
#[derive(Clone, Default)]
pub struct RegistryMetrics {
    waits: Family<CodeLabel, Counter>,
    /// When a wait was last logged (ms since the Unix epoch): thousands of events may
    /// wait at once, and the log says so every few seconds, not once per event.
    logged_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RegistryMetrics {
    /// Registers the Schema Registry metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RegistryMetrics::default();
        registry.register(
            "hookline_renderer_schema_registry_waits",
            "Reads of a Schema Registry-framed event that had to wait and try again, because the registry did not answer or refused hookline's credentials, by error code (HL-REGISTRY-UNAVAILABLE, HL-REGISTRY-AUTH, ...)",
            m.waits.clone(),
        );
        m
    }

    /// A read waited because of `code`; true when this wait should be logged (one in
    /// [`LOG_EVERY_MS`]).
    pub fn wait(&self, code: &'static str) -> bool {
        use std::sync::atomic::Ordering;
        self.waits.get_or_create(&CodeLabel { code }).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.logged_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_EVERY_MS
            && self
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The sensitive-trace aggregator's metrics.
#[derive(Clone)]
pub struct AggregatorMetrics {
    /// Transfers whose traces are gathered and not flushed yet, on this instance.
    pub open_transfers: Gauge,
    flushes: Family<ReasonLabel, Counter>,
    /// How long committing a transaction takes.
    pub commit_seconds: Histogram,
    /// When the last transaction committed (Unix seconds); 0 before the first.
    pub last_commit: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl AggregatorMetrics {
    /// Registers the aggregator's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AggregatorMetrics {
            open_transfers: Gauge::default(),
            flushes: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_commit: Gauge::default(),
        };
        registry.register(
            "hookline_aggregator_open_transfers",
            "Transfers whose sensitive traces are gathered and not sent yet, on this instance",
            m.open_transfers.clone(),
        );
        registry.register(
            "hookline_aggregator_flushes",
            "Transfers whose traces were sent, by reason (the transfer ended, or its oldest trace reached the maximum age)",
            m.flushes.clone(),
        );
        registry.register_with_unit(
            "hookline_aggregator_commit_duration",
            "Time to commit one aggregation transaction",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "hookline_aggregator_last_commit_timestamp",
            "When this instance last committed an aggregation transaction (Unix time; 0 before the first)",
            Unit::Seconds,
            m.last_commit.clone(),
        );
        m
    }

    /// A transfer was flushed for `reason`.
    pub fn flushed(&self, reason: &'static str) {
        self.flushes.get_or_create(&ReasonLabel { reason }).inc();
    }
}
