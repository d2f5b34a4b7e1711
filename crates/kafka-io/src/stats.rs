//! Consumer lag as Prometheus metrics, from librdkafka's statistics (emitted every
//! [`STATS_INTERVAL_MS`] by the consumers given a [`ConsumerStats`]).
//!
//! - `hookline_consumer_lag_records{group,topic,partition}`: records from the offset
//!   this process last stored (every record before it handled, its effects durable) to
//!   the partition's end, for the partitions it is assigned;
//! - `hookline_consumer_fetched_records_total{group,topic,partition}`: records fetched.
//!
//! Labels are bounded by configuration: consumer groups, topics and partition counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rdkafka::Statistics;

/// How often consumers with statistics report them.
pub const STATS_INTERVAL_MS: u32 = 5000;

#[derive(Debug, Clone, Copy)]
struct Partition {
    lag: i64,
    fetched: u64,
    /// When `fetched` last changed, or the partition was first seen.
    fetched_since: std::time::Instant,
    /// A stall was logged since `fetched` last changed.
    told: bool,
}

/// A partition with records beyond what was fetched that fetched nothing this long is
/// logged, with librdkafka's own view of it (its fetch state and offsets).
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

type Key = (String, String, i32);

/// The latest statistics of a service's consumers, shared by their contexts and encoded
/// on each scrape.
#[derive(Debug, Clone, Default)]
pub struct ConsumerStats {
    partitions: Arc<Mutex<BTreeMap<Key, Partition>>>,
}

impl ConsumerStats {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// Replaces what `group`'s consumer reported last.
    pub fn update(&self, group: &str, stats: &Statistics) {
        let now = std::time::Instant::now();
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let mut before = BTreeMap::new();
        partitions.retain(|key, v| {
            if key.0 == group {
                before.insert(key.clone(), *v);
                false
            } else {
                true
            }
        });
        for (name, topic) in &stats.topics {
            for (&id, p) in &topic.partitions {
                // -1 is librdkafka's internal partition; a lag of -1: not assigned here.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if id < 0 || lag < 0 {
                    continue;
                }
                let key = (group.to_owned(), name.clone(), id);
                let (fetched_since, mut told) = match before.get(&key) {
                    Some(b) if b.fetched == p.rxmsgs => (b.fetched_since, b.told),
                    _ => (now, false),
                };
                // Records past the fetch position, and nothing fetched for a while: a
                // paused partition (a full loop) or a fetch that stopped. librdkafka's
                // fetch state tells which. A retry tier's partitions wait paused on
                // purpose (its head is not due), so its topics are left out.
                if !told
                    && !crate::topics::is_retry_tier(name)
                    && p.hi_offset > p.next_offset.max(0)
                    && now.duration_since(fetched_since) >= STALL
                {
                    told = true;
                    tracing::warn!(
                        group,
                        topic = %name,
                        partition = id,
                        fetch_state = %p.fetch_state,
                        next_offset = p.next_offset,
                        app_offset = p.app_offset,
                        hi_offset = p.hi_offset,
                        ls_offset = p.ls_offset,
                        fetchq_cnt = p.fetchq_cnt,
                        leader = p.leader,
                        "a partition with records to read fetched nothing for 30 s"
                    );
                }
                partitions.insert(
                    key,
                    Partition {
                        lag,
                        fetched: p.rxmsgs,
                        fetched_since,
                        told,
                    },
                );
            }
        }
    }
}

impl Collector for ConsumerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let partitions: Vec<(Key, Partition)> = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let labels = |(group, topic, partition): &Key| {
            [
                ("group", group.clone()),
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ]
        };
        let mut lag = encoder.encode_descriptor(
            "hookline_consumer_lag_records",
            "Records from the offset last stored (everything before it handled) to the partition's end, per assigned partition",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (key, p) in &partitions {
            ConstGauge::new(p.lag).encode(lag.encode_family(&labels(key))?)?;
        }
        let mut fetched = encoder.encode_descriptor(
            "hookline_consumer_fetched_records",
            "Records fetched per assigned partition, since this process started",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (key, p) in &partitions {
            ConstCounter::new(p.fetched).encode(fetched.encode_family(&labels(key))?)?;
        }
        Ok(())
    }
}
