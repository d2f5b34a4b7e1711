//! The producer's Prometheus metrics (README, "Metrics"), registered in the registry its
//! admin listener serves. Labels are bounded: an event type is one of the types the
//! bundled schemas know (input that names another is counted as `unknown`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    r#type: String,
    outcome: &'static str,
}

/// Every metric the producer exports.
pub struct Metrics {
    ingested: Family<IngestLabels, Counter>,
    replays: Family<ReplayLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayLabels {
    outcome: &'static str,
}

impl Metrics {
    /// Registers the producer's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            ingested: Family::default(),
            replays: Family::default(),
        };
        registry.register(
            "hookline_events_ingested",
            "Events posted to POST /events, by type and outcome: accepted (Kafka has it), invalid (refused with 400), failed (Kafka did not take it)",
            m.ingested.clone(),
        );
        registry.register(
            "hookline_dead_letter_replays",
            "Dead letters a replay through the API handled, by outcome: requeued, already_replayed, duplicate, refused",
            m.replays.clone(),
        );
        m
    }

    /// A replay (not a dry run) ended with `summary`.
    pub fn replayed(&self, summary: &dead_letter_ops::ReplaySummary) {
        let refused: usize = summary.refused.values().sum();
        for (outcome, n) in [
            ("requeued", summary.requeued),
            ("already_replayed", summary.already_replayed),
            ("duplicate", summary.duplicates),
            ("refused", refused),
        ] {
            self.replays
                .get_or_create(&ReplayLabels { outcome })
                .inc_by(n as u64);
        }
    }

    /// One event of `event_type` (`None`: it did not validate) ended with `outcome`.
    pub fn ingested(&self, event_type: Option<&str>, outcome: &'static str) {
        let labels = IngestLabels {
            r#type: event_type.unwrap_or("unknown").to_owned(),
            outcome,
        };
        self.ingested.get_or_create(&labels).inc();
    }
}
