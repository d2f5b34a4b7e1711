//! The attempt log as the producer reads it: a follower of `delivery-attempts` that
//! reads every partition without a consumer group (each producer instance holds its
//! own copy, like the `endpoints` table) into a bounded [`AttemptIndex`].
//!
//! At start it reads back only the last `total_attempts / partitions` records of each
//! partition (what the index could hold anyway), so start-up work is bounded by the
//! memory bound, not by the topic's retention. [`AttemptLog::catch_up`] waits until
//! everything written before the call has been read, as `Table::sync` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kafka_io::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wire::{DeliveryAttempt, Registry};

use crate::attempt_index::{AttemptIndex, Bounds, Delivery};

/// A read that waits this long with nothing to read means "caught up for now".
const IDLE_READ: Duration = Duration::from_millis(50);
/// How long start-up waits for the topic's partitions (right after creation).
const START_PATIENCE: Duration = Duration::from_secs(60);

struct Shared {
    index: Mutex<AttemptIndex>,
    /// Per partition, the position up to which every record is in the index.
    read: Mutex<HashMap<i32, i64>>,
    progress: Notify,
}

/// The recent attempts of every endpoint, kept up to date.
pub struct AttemptLog {
    shared: Arc<Shared>,
    /// Asks for watermarks on its own connection, not behind the follower's long poll.
    queries: Arc<BaseConsumer>,
    topic: String,
    partitions: Vec<i32>,
}

impl AttemptLog {
    /// Starts following `topic` from the tail each partition's share of the bound
    /// allows. Returns at once; the index fills in the background.
    pub async fn start(
        settings: &KafkaSettings,
        topic: &str,
        bounds: Bounds,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut config = kafka_io::consumer_config(
            settings,
            "hookline-producer-attempts",
            "hookline-attempt-log-unused",
        );
        config.set("enable.auto.commit", "false");
        let consumer: StreamConsumer =
            config.create().context("creating the attempt log reader")?;
        let queries: Arc<BaseConsumer> =
            Arc::new(config.create().context("creating the attempt log reader")?);
        let partitions = partitions_of(&queries, topic, &shutdown).await?;
        let tail =
            i64::try_from(bounds.total_attempts.div_ceil(partitions.len())).unwrap_or(i64::MAX);
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            // Below the log start (retention), the reset policy starts at the earliest record.
            assignment.add_partition_offset(topic, *p, Offset::OffsetTail(tail))?;
        }
        consumer.assign(&assignment)?;
        let shared = Arc::new(Shared {
            index: Mutex::new(AttemptIndex::new(bounds)),
            read: Mutex::new(HashMap::new()),
            progress: Notify::new(),
        });
        tokio::spawn(follow(
            consumer,
            shared.clone(),
            registry,
            topic.to_owned(),
            shutdown,
        ));
        Ok(AttemptLog {
            shared,
            queries,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Waits until every record written to the topic before this call is in the index,
    /// at most `patience`. False when it did not get there (the follower is behind, or
    /// Kafka did not answer): the index is then older than the call.
    pub async fn catch_up(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        let high = {
            let (consumer, topic, partitions) = (
                self.queries.clone(),
                self.topic.clone(),
                self.partitions.clone(),
            );
            let query =
                tokio::task::spawn_blocking(move || -> KafkaResult<Vec<(i32, i64, i64)>> {
                    partitions
                        .iter()
                        .map(|p| {
                            consumer
                                .fetch_watermarks(&topic, *p, Duration::from_secs(5))
                                .map(|(low, high)| (*p, low, high))
                        })
                        .collect()
                });
            match tokio::time::timeout_at(deadline, query).await {
                Ok(Ok(Ok(high))) => high,
                Ok(Ok(Err(e))) => {
                    tracing::warn!(topic = %self.topic, error = %e, "cannot read the attempt log's watermarks");
                    return false;
                }
                Ok(Err(_)) | Err(_) => return false,
            }
        };
        loop {
            let progress = self.shared.progress.notified();
            let behind = {
                let read = lock(&self.shared.read);
                high.iter()
                    .any(|(p, low, high)| high > low && read.get(p).is_none_or(|r| r < high))
            };
            if !behind {
                return true;
            }
            tokio::select! {
                _ = progress => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(topic = %self.topic, waited = ?patience, "the attempt log is behind");
                    return false;
                }
            }
        }
    }

    /// The endpoint's `limit` most recent deliveries, newest first.
    pub fn recent(&self, endpoint_id: &str, limit: usize) -> Vec<Delivery> {
        lock(&self.shared.index).recent(endpoint_id, limit)
    }
}

async fn follow(
    consumer: StreamConsumer,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    topic: String,
    shutdown: CancellationToken,
) {
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = tokio::time::timeout(IDLE_READ, consumer.recv()) => read,
        };
        let message = match read {
            Err(_idle) => {
                // Nothing is between recv and the index now: the consumer's position
                // (past control records and compaction gaps too) is read.
                if let Ok(positions) = consumer.position() {
                    let mut read = lock(&shared.read);
                    for e in positions.elements_for_topic(&topic) {
                        if let Offset::Offset(o) = e.offset() {
                            let r = read.entry(e.partition()).or_insert(o);
                            *r = (*r).max(o);
                        }
                    }
                }
                shared.progress.notify_waiters();
                continue;
            }
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(topic = %topic, error = %e, "attempt log read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        match message
            .payload()
            .map(|bytes| registry.decode::<DeliveryAttempt>(bytes))
        {
            Some(Ok(attempt)) => lock(&shared.index).record(attempt),
            Some(Err(e)) => {
                tracing::warn!(topic = %topic, partition, offset, code = e.code(), "skipping an unreadable attempt record")
            }
            None => {
                tracing::warn!(topic = %topic, partition, offset, "skipping an attempt record without a value")
            }
        }
        {
            let mut read = lock(&shared.read);
            let r = read.entry(partition).or_insert(offset + 1);
            *r = (*r).max(offset + 1);
        }
        shared.progress.notify_waiters();
    }
}

/// The topic's partitions, retried while its metadata is not there yet.
async fn partitions_of(
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<i32>> {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        let (c, t) = (consumer.clone(), topic.to_owned());
        let found = tokio::task::spawn_blocking(move || -> KafkaResult<Vec<i32>> {
            let metadata = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|m| m.name() == t)
                .flat_map(|m| m.partitions().iter().map(|p| p.id()))
                .collect())
        })
        .await
        .context("reading the attempt log's partitions")?;
        match found {
            Ok(partitions) if !partitions.is_empty() => return Ok(partitions),
            other if Instant::now() < deadline && !shutdown.is_cancelled() => {
                tracing::info!(topic, error = ?other.err(), "the attempt log's partitions are not known yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(_) => anyhow::bail!("topic {topic} has no partitions"),
            Err(e) => return Err(e).with_context(|| format!("reading the partitions of {topic}")),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
