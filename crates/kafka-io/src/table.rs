//! A compacted topic read as a table: every key's latest value, kept in memory and
//! followed as the topic changes (the `endpoints` topic is hookline's configuration store).
//!
//! [`Table::sync`] waits until everything written to the topic before the call has been
//! applied, so a reader can see every write acknowledged before it asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::client::KafkaSettings;

/// One key's latest value and where it was read. A tombstone has no value.
#[derive(Debug, Clone)]
pub struct TableEntry<V> {
    /// Partition of the latest record.
    pub partition: i32,
    /// Offset of the latest record.
    pub offset: i64,
    /// The value, `None` once deleted.
    pub value: Option<V>,
}

type Decode<V> = dyn Fn(&[u8]) -> Option<V> + Send + Sync;

struct Shared<V> {
    entries: RwLock<HashMap<String, TableEntry<V>>>,
    /// Next offset to apply, per partition.
    applied: RwLock<HashMap<i32, i64>>,
    last_applied_at: RwLock<Instant>,
    /// Wall-clock ms at which the latest completed sync started.
    synced_at_ms: AtomicI64,
    sync_lock: tokio::sync::Mutex<()>,
}

/// A materialised compacted topic.
pub struct Table<V> {
    shared: Arc<Shared<V>>,
    consumer: Arc<StreamConsumer>,
    /// Asks for watermarks on its own connection: the reading consumer's connection
    /// is often parked in a fetch long-poll, which would delay every sync.
    queries: Arc<BaseConsumer>,
    topic: String,
    partitions: Vec<i32>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            shared: self.shared.clone(),
            consumer: self.consumer.clone(),
            queries: self.queries.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions.clone(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Table<V> {
    /// Starts reading `topic` from the beginning, and returns once every record that
    /// existed at start has been applied. `decode` returns `None` for a value it cannot
    /// read (the record is skipped with a warning).
    pub async fn start(
        settings: &KafkaSettings,
        topic: &str,
        decode: impl Fn(&[u8]) -> Option<V> + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) -> rdkafka::error::KafkaResult<Self> {
        let mut config = crate::client::consumer_config(settings, "hookline-table", "hookline-table-unused");
        config.set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
        let queries: Arc<BaseConsumer> = Arc::new(config.create()?);
        let partitions = {
            let c = queries.clone();
            let topic = topic.to_owned();
            retry_for(START_PATIENCE, "reading partitions", move || {
                let (c, topic) = (c.clone(), topic.clone());
                async move {
                    tokio::task::spawn_blocking(move || partitions_of(&c, &topic))
                        .await
                        .map_err(|_| rdkafka::error::KafkaError::Canceled)?
                }
            })
            .await?
        };
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let shared = Arc::new(Shared {
            entries: RwLock::new(HashMap::new()),
            applied: RwLock::new(HashMap::new()),
            last_applied_at: RwLock::new(Instant::now()),
            synced_at_ms: AtomicI64::new(0),
            sync_lock: tokio::sync::Mutex::new(()),
        });
        let table = Table { shared: shared.clone(), consumer: consumer.clone(), queries, topic: topic.to_owned(), partitions };
        let decode: Arc<Decode<V>> = Arc::new(decode);
        tokio::spawn(follow(consumer, shared, decode, topic.to_owned(), shutdown));
        // Right after topics are created, a client's metadata can still lag (NotLeader):
        // such errors pass within seconds.
        retry_for(START_PATIENCE, "loading the table", || table.sync()).await?;
        Ok(table)
    }

    /// Waits until every record acknowledged before `written_at_ms` (wall-clock ms) is
    /// applied. Concurrent callers share one sync; callers already covered return at once.
    pub async fn sync_covering(&self, written_at_ms: i64) -> rdkafka::error::KafkaResult<()> {
        if self.shared.synced_at_ms.load(Ordering::Acquire) > written_at_ms {
            return Ok(());
        }
        let _one_at_a_time = self.shared.sync_lock.lock().await;
        if self.shared.synced_at_ms.load(Ordering::Acquire) > written_at_ms {
            return Ok(());
        }
        self.sync().await
    }

    /// Waits until every record written to the topic before this call is applied.
    pub async fn sync(&self) -> rdkafka::error::KafkaResult<()> {
        let started_ms = now_ms();
        let high = {
            let consumer = self.queries.clone();
            let topic = self.topic.clone();
            let partitions = self.partitions.clone();
            tokio::task::spawn_blocking(move || {
                partitions
                    .iter()
                    .map(|p| Ok((*p, consumer.fetch_watermarks(&topic, *p, Duration::from_secs(10))?)))
                    .collect::<rdkafka::error::KafkaResult<Vec<_>>>()
            })
            .await
            .map_err(|_| rdkafka::error::KafkaError::Canceled)??
        };
        let mut waited = 0u32;
        loop {
            waited += 1;
            if waited % 1000 == 0 {
                let applied = self.shared.applied.read().unwrap_or_else(|p| p.into_inner()).clone();
                tracing::warn!(topic = %self.topic, ?high, ?applied, "table sync is slow");
            }
            if high.iter().all(|(p, (low, high))| self.caught_up(*p, *low, *high)) {
                self.shared.synced_at_ms.fetch_max(started_ms, Ordering::AcqRel);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn caught_up(&self, partition: i32, low: i64, high: i64) -> bool {
        if high <= low {
            return true;
        }
        let applied = self.shared.applied.read().unwrap_or_else(|p| p.into_inner()).get(&partition).copied();
        if applied.is_some_and(|a| a >= high) {
            return true;
        }
        // The tail of a compacted partition can be a gap with no record to apply: accept
        // the fetch position once nothing has been applied for a while.
        let quiet = self.shared.last_applied_at.read().unwrap_or_else(|p| p.into_inner()).elapsed()
            > Duration::from_millis(200);
        quiet
            && self.consumer.position().ok().is_some_and(|tpl| {
                tpl.find_partition(&self.topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o >= high),
                        _ => None,
                    })
                    .unwrap_or(false)
            })
    }

    /// The latest value of `key`, `None` when absent or deleted.
    pub fn get(&self, key: &str) -> Option<V> {
        self.read().get(key).and_then(|e| e.value.clone())
    }

    /// Every live value.
    pub fn values(&self) -> Vec<V> {
        self.read().values().filter_map(|e| e.value.clone()).collect()
    }

    /// Applies a write this process made and Kafka acknowledged, without waiting to
    /// read it back (read-your-writes). Older offsets never overwrite newer ones.
    pub fn apply(&self, key: &str, partition: i32, offset: i64, value: Option<V>) {
        apply(&self.shared, key, partition, offset, value);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TableEntry<V>>> {
        self.shared.entries.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply<V>(shared: &Shared<V>, key: &str, partition: i32, offset: i64, value: Option<V>) {
    let mut entries = shared.entries.write().unwrap_or_else(|p| p.into_inner());
    match entries.get(key) {
        Some(e) if e.partition == partition && e.offset >= offset => {}
        _ => {
            entries.insert(key.to_owned(), TableEntry { partition, offset, value });
        }
    }
}

async fn follow<V>(
    consumer: Arc<StreamConsumer>,
    shared: Arc<Shared<V>>,
    decode: Arc<Decode<V>>,
    topic: String,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "table read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        match message.key().map(std::str::from_utf8) {
            Some(Ok(key)) => {
                let value = match message.payload() {
                    None => None,
                    Some(bytes) => match decode(bytes) {
                        Some(v) => Some(v),
                        None => {
                            tracing::warn!(topic = %topic, partition, offset, code = "HL-TABLE-UNREADABLE", "skipping unreadable record");
                            None
                        }
                    },
                };
                if message.payload().is_none() || value.is_some() {
                    apply(&shared, key, partition, offset, value);
                }
            }
            _ => tracing::warn!(topic = %topic, partition, offset, code = "HL-TABLE-NO-KEY", "skipping record without a UTF-8 key"),
        }
        shared.applied.write().unwrap_or_else(|p| p.into_inner()).insert(partition, offset + 1);
        *shared.last_applied_at.write().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> rdkafka::error::KafkaResult<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    Ok(partitions)
}


fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long start-up keeps retrying transient Kafka errors.
const START_PATIENCE: Duration = Duration::from_secs(60);

async fn retry_for<T, F, Fut>(patience: Duration, what: &str, mut attempt: F) -> rdkafka::error::KafkaResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = rdkafka::error::KafkaResult<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "{what}: retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
