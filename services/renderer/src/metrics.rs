//! The renderer's Prometheus metrics (README, "Metrics"), registered in the registry its
//! admin listener serves (dead letters are counted by `dead_letter::DeadLetters`).
//! Labels are bounded: an outcome, never an endpoint or event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
