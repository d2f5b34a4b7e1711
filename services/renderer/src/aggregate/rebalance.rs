//! The aggregator's rebalance callbacks: commit on revoke, restore on assign.

use super::*;

/// Commits on revoke (the group generation is still ours) and restores what is assigned
/// before any of its events is handed out.
pub(crate) struct Rebalancing {
    pub(super) core: Arc<Mutex<Core>>,
    /// Where the consumer's lag goes (librdkafka's statistics), and its group.
    pub(super) lag: (kafka_io::ConsumerStats, String),
}

impl ClientContext for Rebalancing {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.0.update(&self.lag.1, &statistics);
    }
}

impl ConsumerContext for Rebalancing {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut core = lock(&self.core);
            // A fenced consumer's generation is gone: its transaction was aborted.
            let committed = if core.fenced {
                Ok(())
            } else {
                core.commit(consumer)
            };
            if let Err(e) = committed {
                tracing::warn!(error = %format!("{e:#}"), "cannot commit on revoke; aborting");
                if let Err(e) = core.abort() {
                    core.fatal = Some(e);
                }
                core.partitions.clear();
            }
            for p in partitions.elements() {
                core.partitions.remove(&p.partition());
                core.committed.remove(&p.partition());
                core.stop_waiting(p.partition());
            }
            tracing::info!(
                partitions = partitions.count(),
                "aggregator partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let mut core = lock(&self.core);
            for p in partitions.elements() {
                // A transient failure (the broker away, the read too slow) leaves the
                // partition unrestored: its first event restores it before it is handled,
                // and a failure then rewinds and retries. It never stops the renderer.
                if let Err(e) = core.restore(p.partition()) {
                    tracing::warn!(partition = p.partition(), error = %format!("{e:#}"), "cannot restore aggregation state yet; retried before the partition's first event");
                }
            }
            let transfers: usize = core.partitions.values().map(HashMap::len).sum();
            tracing::info!(
                partitions = partitions.count(),
                open_transfers = transfers,
                "aggregator partitions assigned"
            );
        }
    }
}
