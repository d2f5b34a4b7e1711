//! Client settings shared by every service, and the consumer that commits on revoke.
//!
//! Latency and durability settings are deliberate, not librdkafka's defaults:
//! - producers are idempotent with `acks=all` (no duplicates or reordering from
//!   internal retries);
//! - batching and fetching follow a [`KafkaProfile`]: `balanced` (the default: a few
//!   records per batch at low rates, full batches under load as sends pile up behind
//!   in-flight requests), `latency` or `throughput`;
//! - consumers never auto-store offsets (`enable.auto.offset.store=false`): the service
//!   stores an offset once the record's effects are durable, and librdkafka's auto
//!   commit sends what was stored every 250 ms (fewer re-deliveries after a crash,
//!   for one small request per consumer); they read only committed data.

use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};

use crate::group::GroupHealth;
use crate::offsets::OffsetTracker;
use crate::stats::ConsumerStats;

/// Where Kafka is and how topics are laid out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Bootstrap servers (`HOOKLINE_KAFKA_BROKERS`).
    pub kafka_brokers: String,
    /// Prefix of every topic name (`HOOKLINE_TOPIC_PREFIX`).
    pub topic_prefix: String,
    /// Partitions of topics created at start-up (`HOOKLINE_TOPIC_PARTITIONS`).
    pub topic_partitions: i32,
    /// Replication factor of topics created at start-up (`HOOKLINE_TOPIC_REPLICATION`).
    pub topic_replication: i32,
    /// Batching and fetching settings chosen together (`HOOKLINE_KAFKA_PROFILE`).
    pub kafka_profile: KafkaProfile,
    /// Producer `linger.ms` (`HOOKLINE_KAFKA_LINGER_MS`); unset: the profile's.
    pub kafka_linger_ms: Option<u32>,
    /// Producer `compression.type` (`HOOKLINE_KAFKA_COMPRESSION`): `lz4`, `zstd`,
    /// `snappy`, `gzip` or `none`.
    pub kafka_compression: String,
    /// Records a group consumer prefetches, in KiB (`queued.max.messages.kbytes`,
    /// `HOOKLINE_KAFKA_PREFETCH_KIB`); unset: [`DEFAULT_PREFETCH_KIB`].
    pub kafka_prefetch_kib: Option<u32>,
    /// TLS and SASL (`HOOKLINE_KAFKA_SECURITY_PROTOCOL`, `HOOKLINE_KAFKA_SASL_*`,
    /// `HOOKLINE_KAFKA_SSL_*`).
    #[serde(flatten)]
    pub security: crate::security::KafkaSecurity,
    /// librdkafka's debug contexts (`HOOKLINE_KAFKA_DEBUG`, e.g. `cgrp,eos,topic`),
    /// logged at debug level under the `librdkafka` target; empty: none.
    pub kafka_debug: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            kafka_brokers: "127.0.0.1:9092".to_owned(),
            topic_prefix: String::new(),
            topic_partitions: 6,
            topic_replication: 1,
            kafka_profile: KafkaProfile::Balanced,
            kafka_linger_ms: None,
            kafka_compression: "lz4".to_owned(),
            kafka_prefetch_kib: None,
            security: crate::security::KafkaSecurity::default(),
            kafka_debug: String::new(),
        }
    }
}

/// librdkafka's batching and fetching settings, chosen together for what matters most.
/// Every hop of the pipeline (API to `events`, renderer to `rendered-deliveries`,
/// dispatcher to the attempt log) pays the producer's linger and the consumer's wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProfile {
    /// `linger.ms` 1; consumers answered as soon as one record is there (`fetch.min.bytes`
    /// 1, `fetch.wait.max.ms` 100). Serves both as far as one setting can: under load,
    /// batches fill behind the requests in flight anyway.
    Balanced,
    /// `linger.ms` 0: every record leaves at once (more, smaller requests). Measured on
    /// 2026-12-05: about 1 ms less per event at low rates, 10-20% less throughput.
    Latency,
    /// `linger.ms` 10 and consumers that wait for 64 KiB or 100 ms: fewer, larger
    /// requests (less broker CPU per event at moderate rates), up to ~100 ms more per hop
    /// at low rates.
    Throughput,
}

impl KafkaProfile {
    fn linger_ms(self) -> u32 {
        match self {
            KafkaProfile::Balanced => 1,
            KafkaProfile::Latency => 0,
            KafkaProfile::Throughput => 10,
        }
    }

    fn fetch_min_bytes(self) -> u32 {
        match self {
            KafkaProfile::Balanced | KafkaProfile::Latency => 1,
            KafkaProfile::Throughput => 64 * 1024,
        }
    }
}

pub(crate) fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("client.id", client_id)
        // Kafka on loopback or in one data centre: fail over quickly.
        .set("socket.keepalive.enable", "true")
        // Small requests leave at once, as Kafka's Java clients and broker send them;
        // librdkafka's default keeps Nagle's algorithm on.
        .set("socket.nagle.disable", "true")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "4");
    if !settings.kafka_debug.is_empty() {
        config
            .set("debug", &settings.kafka_debug)
            .set("log_level", "7");
    }
    settings.security.apply(&mut config);
    config
}

/// Settings of an idempotent producer.
pub fn producer_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "linger.ms",
            settings
                .kafka_linger_ms
                .unwrap_or(settings.kafka_profile.linger_ms())
                .to_string(),
        )
        .set("compression.type", &settings.kafka_compression)
        // Delivery is retried inside librdkafka for this long, then handed back to us.
        .set("message.timeout.ms", "120000")
        .set(
            "message.max.bytes",
            (crate::MAX_RECORD_BYTES + 64 * 1024).to_string(),
        );
    config
}

/// An idempotent producer.
pub fn producer(
    settings: &KafkaSettings,
    client_id: &str,
) -> rdkafka::error::KafkaResult<FutureProducer> {
    producer_config(settings, client_id).create()
}

/// What a group consumer prefetches unless `HOOKLINE_KAFKA_PREFETCH_KIB` says otherwise:
/// 4 MiB, not librdkafka's 64 MiB. A loop whose lane is full pauses its partitions, and a
/// pause drops what was prefetched for them (`crate::pause`), so a large prefetch is read
/// from the broker again at every pause. A lane's own bound holds what waits; the
/// prefetch only has to cover the next fetch's round trip (docs/BENCHMARKS.md).
pub const DEFAULT_PREFETCH_KIB: u32 = 4096;

/// How long a partition waits before its next fetch once the prefetch is full
/// (`fetch.queue.backoff.ms`). librdkafka's 1 s leaves a consumer with a small prefetch
/// idle for most of that second after its loop has caught up.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Settings of a group consumer that stores offsets itself and reads committed data.
pub fn consumer_config(settings: &KafkaSettings, client_id: &str, group: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "250")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: how long a coordinator waits for members of the
        // last generation to rejoin. After a broker restart a dead member id can hold a
        // rebalance that long (seen: a dispatcher without partitions for over 4 min at
        // librdkafka's 300 s default). The consume loops poll continuously.
        .set("max.poll.interval.ms", "120000")
        .set("fetch.wait.max.ms", "100")
        // Stated, not left to librdkafka's default list (which starts with it): a group
        // whose members read several topics keyed alike gets partition n of each on one
        // member (`crate::affinity`). A cooperative assignor would not keep them together.
        .set("partition.assignment.strategy", "range")
        .set(
            "fetch.min.bytes",
            settings.kafka_profile.fetch_min_bytes().to_string(),
        )
        .set("enable.partition.eof", "false")
        .set(
            "queued.max.messages.kbytes",
            settings
                .kafka_prefetch_kib
                .unwrap_or(DEFAULT_PREFETCH_KIB)
                .to_string(),
        )
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    config
}

/// A consumer context that commits stored offsets before partitions are revoked and
/// forgets the revoked partitions' in-flight work.
#[derive(Clone)]
pub struct CommitOnRevoke {
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Where librdkafka's statistics go, and the group they are for.
    stats: Option<(ConsumerStats, String)>,
    /// Whether the consumer is in its group, from the same statistics.
    health: GroupHealth,
}

impl CommitOnRevoke {
    /// The tracker shared with the consume loop.
    pub fn tracker(&self) -> &Arc<Mutex<OffsetTracker>> {
        &self.tracker
    }

    /// Whether the consumer is in its group.
    pub fn health(&self) -> &GroupHealth {
        &self.health
    }
}

impl ClientContext for CommitOnRevoke {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(cgrp) = &statistics.cgrp {
            self.health
                .update(&cgrp.state, &cgrp.join_state, std::time::Instant::now());
        }
        if let Some((stats, group)) = &self.stats {
            stats.update(group, &statistics);
        }
    }
}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // Whatever was stored is durable: commit it before another member takes over.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "no offsets to commit on revoke");
            }
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for p in partitions.elements() {
                tracker.revoke(p.topic(), p.partition());
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A group consumer whose offsets follow effects.
pub type GroupConsumer = StreamConsumer<CommitOnRevoke>;

/// Creates a group consumer subscribed to `topics`, reporting its lag to `stats`. It
/// reports statistics either way: [`consume_lanes`](crate::consume_lanes) watches
/// them for a member stuck out of its group.
pub fn group_consumer(
    settings: &KafkaSettings,
    client_id: &str,
    group: &str,
    topics: &[&str],
    stats: Option<&ConsumerStats>,
) -> rdkafka::error::KafkaResult<(GroupConsumer, Arc<Mutex<OffsetTracker>>)> {
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let context = CommitOnRevoke {
        tracker: tracker.clone(),
        stats: stats.map(|s| (s.clone(), group.to_owned())),
        health: GroupHealth::default(),
    };
    let mut config = consumer_config(settings, client_id, group);
    config.set(
        "statistics.interval.ms",
        crate::stats::STATS_INTERVAL_MS.to_string(),
    );
    let consumer: GroupConsumer = config.create_with_context(context)?;
    consumer.subscribe(topics)?;
    Ok((consumer, tracker))
}

/// Commits what was stored, synchronously (used at shutdown).
pub fn commit_stored(consumer: &GroupConsumer) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "nothing to commit");
    }
}
