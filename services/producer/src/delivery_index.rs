//! The writer of `delivery-index`: producer replicas share `delivery-attempts` in one
//! consumer group; the owner of a partition keeps that partition's share of the
//! listing in an [`AttemptIndex`] and writes each changed delivery's summary (and a
//! tombstone for each delivery the bounds dropped) to the same partition of the
//! compacted `delivery-index`, which every replica follows ([`crate::attempt_log`]).
//!
//! Attempts are keyed by endpoint id, so an endpoint's whole history is in one
//! partition and its bounds are applied by one owner. On assignment the owner rebuilds
//! the partition's index from `delivery-index` itself; an attempt's offset is stored
//! only once what it changed is acknowledged, so after a crash or a rebalance the new
//! owner reads again what may be missing, and an attempt read twice is held once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kafka_io::KafkaSettings;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use wire::{DeliveryAttempt, DeliverySummary, Registry};

use crate::attempt_index::{AttemptIndex, Bounds};

/// Writes are awaited and offsets stored at least this often while records arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// ... or once this many writes are waiting.
const FLUSH_AT: usize = 2000;
/// A rebuild that cannot read the index gives up after this long (and is retried).
const REBUILD_PATIENCE: Duration = Duration::from_secs(30);
/// The listing is for people, and a listing waits for it to catch up: its clients
/// batch (a produce request per 20 ms; a fetch answered at 64 KiB or after
/// `fetch.wait.max.ms`) rather than add broker requests per attempt.
const LINGER_MS: &str = "20";
/// See [`LINGER_MS`].
pub(crate) const FETCH_MIN_BYTES: &str = "65536";

/// The consumer group the replicas share.
pub(crate) fn group(prefix: &str) -> String {
    format!("{prefix}hookline-producer-delivery-index")
}

/// The key of a delivery in `delivery-index`.
pub(crate) fn key(endpoint_id: &str, delivery_id: &str) -> String {
    format!("{endpoint_id}/{delivery_id}")
}

/// The (endpoint, delivery) a `delivery-index` key names.
pub(crate) fn split_key(key: &[u8]) -> Option<(&str, &str)> {
    std::str::from_utf8(key).ok()?.split_once('/')
}

/// Applies one `delivery-index` record to `index`: a summary replaces its delivery, a
/// tombstone removes it; a record without a key or that cannot be read is skipped
/// with a warning (never its value).
pub(crate) fn apply(index: &mut AttemptIndex, message: &impl Message, registry: &Registry) {
    let (partition, offset) = (message.partition(), message.offset());
    match (message.key().and_then(split_key), message.payload()) {
        (Some((endpoint, delivery)), None) => {
            index.remove(endpoint, delivery);
        }
        (Some(_), Some(bytes)) => match registry.decode::<DeliverySummary>(bytes) {
            Ok(summary) => {
                index.put(summary);
            }
            Err(e) => tracing::warn!(
                topic = message.topic(),
                partition,
                offset,
                code = e.code(),
                "skipping an unreadable delivery summary"
            ),
        },
        (None, _) => tracing::warn!(
            topic = message.topic(),
            partition,
            offset,
            "skipping a delivery index record without a key"
        ),
    }
}

/// Where to read and write, and how much one partition holds.
#[derive(Clone)]
pub(crate) struct Indexer {
    pub settings: KafkaSettings,
    pub attempts_topic: String,
    pub index_topic: String,
    /// Bounds of one partition's share: the total divided among the partitions.
    pub bounds: Bounds,
    pub registry: Arc<Registry>,
}

/// Marks a revocation for the loop, after committing what was stored.
struct RevokeContext {
    revoked: AtomicBool,
}

impl ClientContext for RevokeContext {}

impl ConsumerContext for RevokeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "no delivery index offsets to commit on revoke");
            }
            self.revoked.store(true, Ordering::SeqCst);
        }
    }
}

impl Indexer {
    /// Indexes until shutdown; a failure (a write not acknowledged, an index that
    /// cannot be read back) starts over with a new consumer after a pause.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.run_once(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "the delivery indexer failed; starting over"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn run_once(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let prefix = &self.settings.topic_prefix;
        let context = RevokeContext {
            revoked: AtomicBool::new(false),
        };
        let consumer: StreamConsumer<RevokeContext> = kafka_io::consumer_config(
            &self.settings,
            "hookline-producer-delivery-index",
            &group(prefix),
        )
        .set("fetch.min.bytes", FETCH_MIN_BYTES)
        .create_with_context(context)
        .context("creating the delivery indexer's consumer")?;
        consumer
            .subscribe(&[self.attempts_topic.as_str()])
            .context("subscribing to the attempt log")?;
        let producer: FutureProducer =
            kafka_io::producer_config(&self.settings, "hookline-producer-delivery-index")
                .set("linger.ms", LINGER_MS)
                .create()
                .context("creating the delivery indexer's producer")?;
        let mut parts: HashMap<i32, AttemptIndex> = HashMap::new();
        let mut batch = Batch::default();
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => {
                    batch.flush(&consumer, &self.attempts_topic).await?;
                    consumer.commit_consumer_state(CommitMode::Sync).ok();
                    return Ok(());
                }
                read = tokio::time::timeout(FLUSH_EVERY, consumer.recv()) => read,
            };
            if consumer.context().revoked.swap(false, Ordering::SeqCst) {
                // Another replica may own these partitions now and write to them.
                batch.flush(&consumer, &self.attempts_topic).await?;
                parts.clear();
            }
            let message = match read {
                Err(_idle) => {
                    batch.flush(&consumer, &self.attempts_topic).await?;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the attempt log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let partition = message.partition();
            let index = match parts.entry(partition) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(new) => {
                    let (index, dropped) = self.rebuild(partition, shutdown).await?;
                    batch.tombstones(&producer, &self.index_topic, partition, dropped)?;
                    new.insert(index)
                }
            };
            match message
                .payload()
                .map(|bytes| self.registry.decode::<DeliveryAttempt>(bytes))
            {
                Some(Ok(attempt)) => {
                    let (endpoint, delivery) =
                        (attempt.endpoint_id.clone(), attempt.delivery_id.clone());
                    let dropped = index.record(attempt);
                    if let Some(summary) = index.summary(&endpoint, &delivery) {
                        let bytes = self
                            .registry
                            .encode(&summary)
                            .context("encoding a delivery summary")?;
                        batch.send(
                            &producer,
                            &self.index_topic,
                            partition,
                            &key(&endpoint, &delivery),
                            Some(&bytes),
                        )?;
                    }
                    batch.tombstones(&producer, &self.index_topic, partition, dropped)?;
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        partition,
                        offset = message.offset(),
                        code = e.code(),
                        "skipping an unreadable attempt record"
                    )
                }
                None => {
                    tracing::warn!(
                        partition,
                        offset = message.offset(),
                        "skipping an attempt record without a value"
                    )
                }
            }
            batch.read(partition, message.offset());
            if batch.writes.len() >= FLUSH_AT || batch.since.elapsed() >= FLUSH_EVERY {
                batch.flush(&consumer, &self.attempts_topic).await?;
            }
        }
    }

    /// The partition's index as `delivery-index` holds it, read from its start to its
    /// end (without bounds, so a compacted head followed by newer records cannot drop
    /// what is still live), then bounded. Returns it and what the bounds dropped.
    async fn rebuild(
        &self,
        partition: i32,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(AttemptIndex, Vec<(Arc<str>, Arc<str>)>)> {
        let started = std::time::Instant::now();
        let mut config = kafka_io::consumer_config(
            &self.settings,
            "hookline-producer-delivery-index-rebuild",
            "hookline-delivery-index-rebuild-unused",
        );
        config.set("enable.auto.commit", "false");
        let reader: StreamConsumer = config.create().context("creating the index reader")?;
        let topic = self.index_topic.clone();
        let reader = Arc::new(reader);
        let watermarks = {
            let (reader, t) = (reader.clone(), topic.clone());
            tokio::task::spawn_blocking(move || {
                reader.fetch_watermarks(&t, partition, Duration::from_secs(10))
            })
            .await?
            .with_context(|| format!("reading the end of {topic} [{partition}]"))?
        };
        let mut index = AttemptIndex::new(Bounds {
            total_attempts: usize::MAX,
            per_endpoint: usize::MAX,
            per_delivery: self.bounds.per_delivery,
        });
        let (low, high) = watermarks;
        let mut records = 0u64;
        if high > low {
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
            reader.assign(&assignment)?;
            let deadline = tokio::time::Instant::now() + REBUILD_PATIENCE;
            loop {
                let read = tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("stopped"),
                    _ = tokio::time::sleep_until(deadline) => anyhow::bail!("reading {topic} [{partition}] took over {REBUILD_PATIENCE:?}"),
                    read = tokio::time::timeout(Duration::from_millis(200), reader.recv()) => read,
                };
                let message = match read {
                    // Compaction may have removed the last records (old tombstones): the
                    // position says whether the end was passed.
                    Err(_idle) => match reader
                        .position()?
                        .find_partition(&topic, partition)
                        .map(|p| p.offset())
                    {
                        Some(Offset::Offset(o)) if o >= high => break,
                        _ => continue,
                    },
                    Ok(m) => m.with_context(|| format!("reading {topic} [{partition}]"))?,
                };
                records += 1;
                apply(&mut index, &message, &self.registry);
                if message.offset() + 1 >= high {
                    break;
                }
            }
        }
        let dropped = index.bound(self.bounds);
        tracing::info!(
            partition,
            records,
            dropped = dropped.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "delivery index partition rebuilt"
        );
        Ok((index, dropped))
    }
}

/// Writes sent and not yet awaited, and the attempts whose effects they are.
struct Batch {
    writes: Vec<DeliveryFuture>,
    /// Per partition, the offset after the last attempt read.
    read: HashMap<i32, i64>,
    since: std::time::Instant,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            writes: Vec::new(),
            read: HashMap::new(),
            since: std::time::Instant::now(),
        }
    }
}

impl Batch {
    fn send(
        &mut self,
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).partition(partition).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let future = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .context("queueing a delivery index record")?;
        self.writes.push(future);
        Ok(())
    }

    /// A tombstone for each delivery the bounds dropped.
    fn tombstones(
        &mut self,
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        dropped: Vec<(Arc<str>, Arc<str>)>,
    ) -> anyhow::Result<()> {
        for (endpoint, delivery) in dropped {
            self.send(producer, topic, partition, &key(&endpoint, &delivery), None)?;
        }
        Ok(())
    }

    fn read(&mut self, partition: i32, offset: i64) {
        self.read.insert(partition, offset + 1);
    }

    /// Awaits every write, then stores the offsets of the attempts they came from (the
    /// consumer commits them). A write that failed fails the batch: nothing is stored.
    async fn flush<C: ConsumerContext + 'static>(
        &mut self,
        consumer: &StreamConsumer<C>,
        topic: &str,
    ) -> anyhow::Result<()> {
        for write in self.writes.drain(..) {
            match write.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e).context("writing to the delivery index"),
                Err(_) => anyhow::bail!("a delivery index write was cancelled"),
            }
        }
        if !self.read.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for (partition, offset) in self.read.drain() {
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
            }
            // A partition revoked meanwhile is refused: its new owner reads it again.
            if let Err(e) = consumer.store_offsets(&offsets) {
                tracing::debug!(error = %e, "delivery index offsets not stored");
            }
        }
        self.since = std::time::Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_endpoint_then_the_delivery() {
        let k = key("ep-1", "0193-abc");
        assert_eq!(split_key(k.as_bytes()), Some(("ep-1", "0193-abc")));
        assert_eq!(split_key(b"no-slash"), None);
        assert_eq!(split_key(&[0xff, b'/', b'a']), None);
    }
}
