//! The delivery listing as every producer reads it: a follower of the compacted
//! `delivery-index` (written by [`crate::delivery_index`]) that reads every partition
//! from its start, without a consumer group, so every replica holds the same listing
//! and a restarted one reads it all back. The topic holds only what the bounds keep
//! (a tombstone for every delivery dropped), so start-up work and memory follow the
//! bounds, not the attempt log's retention.
//!
//! [`AttemptLog::catch_up`] waits until every attempt written before the call is in
//! the listing: the indexers' group has committed past it (its summary is written),
//! then the follower has read the index that far.

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
use wire::Registry;

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
    /// Asks the indexers' group for its committed offsets (never joins it).
    group: Arc<BaseConsumer>,
    attempts_topic: String,
    index_topic: String,
    partitions: Vec<i32>,
}

impl AttemptLog {
    /// Starts this replica's indexer (its share of `delivery-attempts`) and the
    /// follower of `delivery-index` (all of it). `bounds.total_attempts` is divided
    /// among the partitions. Returns at once; the listing fills in the background.
    pub async fn start(
        settings: &KafkaSettings,
        attempts_topic: &str,
        index_topic: &str,
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
        let queries: Arc<BaseConsumer> = Arc::new(
            config
                .create()
                .context("creating the delivery index reader")?,
        );
        let consumer: StreamConsumer = config
            .set("fetch.min.bytes", crate::delivery_index::FETCH_MIN_BYTES)
            .create()
            .context("creating the delivery index reader")?;
        let group: Arc<BaseConsumer> = Arc::new(
            kafka_io::consumer_config(
                settings,
                "hookline-producer-attempts",
                &crate::delivery_index::group(&settings.topic_prefix),
            )
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the delivery index reader")?,
        );
        let partitions = partitions_of(&queries, attempts_topic, &shutdown).await?;
        let index_partitions = partitions_of(&queries, index_topic, &shutdown).await?;
        anyhow::ensure!(
            partitions.len() == index_partitions.len(),
            "{index_topic} has {} partitions and {attempts_topic} {}: they must be equal (an endpoint's attempts and its listing share a partition number)",
            index_partitions.len(),
            partitions.len()
        );
        let mut assignment = TopicPartitionList::new();
        for p in &index_partitions {
            assignment.add_partition_offset(index_topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        // The topic holds only what the indexers' bounds keep: no second bound here,
        // which could drop differently from the indexers while a compacted head is read.
        let shared = Arc::new(Shared {
            index: Mutex::new(AttemptIndex::new(Bounds {
                total_attempts: usize::MAX,
                per_endpoint: usize::MAX,
                per_delivery: bounds.per_delivery,
            })),
            read: Mutex::new(HashMap::new()),
            progress: Notify::new(),
        });
        tokio::spawn(follow(
            consumer,
            shared.clone(),
            registry.clone(),
            index_topic.to_owned(),
            shutdown.clone(),
        ));
        let indexer = crate::delivery_index::Indexer {
            settings: settings.clone(),
            attempts_topic: attempts_topic.to_owned(),
            index_topic: index_topic.to_owned(),
            bounds: Bounds {
                total_attempts: bounds.total_attempts.div_ceil(partitions.len()),
                ..bounds
            },
            registry,
        };
        tokio::spawn(indexer.run(shutdown));
        Ok(AttemptLog {
            shared,
            queries,
            group,
            attempts_topic: attempts_topic.to_owned(),
            index_topic: index_topic.to_owned(),
            partitions,
        })
    }

    /// Waits until every attempt written before this call is in the listing, at most
    /// `patience`. False when it did not get there (an indexer or the follower is
    /// behind, or Kafka did not answer): the listing is then older than the call.
    pub async fn catch_up(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        let Some(attempts) = self.watermarks(&self.attempts_topic, deadline).await else {
            return false;
        };
        // Summaries are acknowledged before the attempts' offsets are committed.
        loop {
            let (group, topic, wanted) = (
                self.group.clone(),
                self.attempts_topic.clone(),
                attempts.clone(),
            );
            let query = tokio::task::spawn_blocking(move || -> KafkaResult<bool> {
                let mut asked = TopicPartitionList::new();
                for (p, low, high) in &wanted {
                    if high > low {
                        asked.add_partition(&topic, *p);
                    }
                }
                if asked.count() == 0 {
                    return Ok(true);
                }
                let committed = group.committed_offsets(asked, Duration::from_secs(5))?;
                Ok(wanted.iter().all(|(p, low, high)| {
                    high <= low
                        || committed
                            .find_partition(&topic, *p)
                            .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
                }))
            });
            match tokio::time::timeout_at(deadline, query).await {
                Ok(Ok(Ok(true))) => break,
                Ok(Ok(Ok(false))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(topic = %self.attempts_topic, error = %e, "cannot read the delivery indexers' offsets");
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(topic = %self.attempts_topic, waited = ?patience, "the delivery indexers are behind");
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20)))
                .await
                .is_err()
            {
                tracing::warn!(topic = %self.attempts_topic, waited = ?patience, "the delivery indexers are behind");
                return false;
            }
        }
        let Some(high) = self.watermarks(&self.index_topic, deadline).await else {
            return false;
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
                    tracing::warn!(topic = %self.index_topic, waited = ?patience, "the delivery index follower is behind");
                    return false;
                }
            }
        }
    }

    /// Every partition's (partition, low, high) watermarks of `topic`, or None (warned)
    /// when Kafka did not answer by `deadline`.
    async fn watermarks(
        &self,
        topic: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Vec<(i32, i64, i64)>> {
        let (consumer, t, partitions) = (
            self.queries.clone(),
            topic.to_owned(),
            self.partitions.clone(),
        );
        let query = tokio::task::spawn_blocking(move || -> KafkaResult<Vec<(i32, i64, i64)>> {
            partitions
                .iter()
                .map(|p| {
                    consumer
                        .fetch_watermarks(&t, *p, Duration::from_secs(5))
                        .map(|(low, high)| (*p, low, high))
                })
                .collect()
        });
        match tokio::time::timeout_at(deadline, query).await {
            Ok(Ok(Ok(high))) => Some(high),
            Ok(Ok(Err(e))) => {
                tracing::warn!(topic, error = %e, "cannot read watermarks for the delivery listing");
                None
            }
            Ok(Err(_)) | Err(_) => None,
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
                // (past compaction gaps too) is read.
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
                tracing::warn!(topic = %topic, error = %e, "delivery index read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        crate::delivery_index::apply(&mut lock(&shared.index), &message, &registry);
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
        .context("reading a topic's partitions")?;
        match found {
            Ok(partitions) if !partitions.is_empty() => return Ok(partitions),
            other if Instant::now() < deadline && !shutdown.is_cancelled() => {
                tracing::info!(topic, error = ?other.err(), "the partitions are not known yet; retrying");
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
