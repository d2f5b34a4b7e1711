//! A compacted topic read as a table: every key's latest value, kept in memory and
//! followed as the topic changes (the `endpoints` topic is hookline's configuration store).
//!
//! [`Table::sync`] waits until everything written to the topic before the call has been
//! applied, so a reader sees every write acknowledged before it asked. It compares the
//! topic's high watermarks with what was applied, never with record timestamps, so a
//! writer's clock cannot make a reader skip a write. The high watermark, not the last
//! stable offset: a transactional write whose commit returned can still be beyond the
//! last stable offset for a moment (see `stuck::query_client`), so a sync also waits
//! for transactions written before it to be decided.

mod stuck;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
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

/// How long start-up keeps retrying transient Kafka errors.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// A read that waits this long with nothing to read means "caught up for now".
const IDLE_READ: Duration = Duration::from_millis(50);

struct Shared<V> {
    entries: RwLock<HashMap<String, TableEntry<V>>>,
    /// Per partition, the position up to which every record is applied: the next
    /// offset after an applied record, or the consumer's position read while idle
    /// (which also steps over compaction gaps and control records).
    applied: Mutex<HashMap<i32, i64>>,
    progress: Notify,
    /// Counts the times `applied` moved on: a reader standing still is seen by it.
    advanced: AtomicU64,
    /// When the latest completed sync started.
    synced_from: Mutex<Option<Instant>>,
    sync_lock: tokio::sync::Mutex<()>,
    clients: stuck::Clients,
}

/// A materialised compacted topic.
pub struct Table<V> {
    shared: Arc<Shared<V>>,
    topic: String,
    partitions: Vec<i32>,
    shutdown: CancellationToken,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            shared: self.shared.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Table<V> {
    /// Starts reading `topic` from the beginning, and returns once every record that
    /// existed at start has been applied. `decode` returns `None` for a value it cannot
    /// read (the record is skipped with a warning and the key keeps its previous value).
    pub async fn start(
        settings: &KafkaSettings,
        topic: &str,
        decode: impl Fn(&[u8]) -> Option<V> + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) -> KafkaResult<Self> {
        let mut config =
            crate::client::consumer_config(settings, "hookline-table", "hookline-table-unused");
        config.set("enable.auto.commit", "false");
        // A table is followed as it changes, whatever the profile: a sync waits for it.
        config.set("fetch.min.bytes", "1");
        let (clients, consumer) = stuck::Clients::new(config)?;
        let partitions = {
            let (c, topic) = (clients.queries(), topic.to_owned());
            retry_for(START_PATIENCE, "reading partitions", &shutdown, move || {
                let (c, topic) = (c.clone(), topic.clone());
                async move { blocking(move || partitions_of(&c, &topic)).await }
            })
            .await?
        };
        // The reader learns where the partitions are before it is assigned them: a fresh
        // client assigned `Beginning` before it knows a partition's leader asks for that
        // offset 500 ms later (librdkafka's `rd_kafka_toppar_offset_request`), which
        // was most of a table's start (docs/benchmarks/issue-11-steps-2.md). A failure
        // here only leaves that wait.
        let consumer = {
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || {
                let _ = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10));
                consumer
            })
            .await
            .map_err(|_| KafkaError::Canceled)?
        };
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let shared = Arc::new(Shared {
            entries: RwLock::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            progress: Notify::new(),
            advanced: AtomicU64::new(0),
            synced_from: Mutex::new(None),
            sync_lock: tokio::sync::Mutex::new(()),
            clients,
        });
        let table = Table {
            shared: shared.clone(),
            topic: topic.to_owned(),
            partitions,
            shutdown: shutdown.clone(),
        };
        let decode: Arc<Decode<V>> = Arc::new(decode);
        tokio::spawn(follow(
            consumer,
            shared,
            decode,
            (topic.to_owned(), table.partitions.clone()),
            shutdown.clone(),
        ));
        // Right after topics are created, a client's metadata can still lag (NotLeader):
        // such errors pass within seconds.
        retry_for(START_PATIENCE, "loading the table", &shutdown, || {
            table.sync()
        })
        .await?;
        Ok(table)
    }

    /// Waits until every record acknowledged before `seen_at` (this process's clock,
    /// e.g. when the caller received the event it is about to handle) is applied.
    /// Concurrent callers share one sync; callers already covered return at once.
    pub async fn sync_after(&self, seen_at: Instant) -> KafkaResult<()> {
        let covered = || lock(&self.shared.synced_from).is_some_and(|from| from > seen_at);
        if covered() {
            return Ok(());
        }
        let _one_at_a_time = self.shared.sync_lock.lock().await;
        if covered() {
            return Ok(());
        }
        self.sync().await
    }

    /// Waits until every record written to the topic before this call is applied.
    /// Returns `Canceled` at shutdown.
    pub async fn sync(&self) -> KafkaResult<()> {
        let started = Instant::now();
        let high = self.offsets(Offset::End).await?;
        // The earliest offsets matter only for a partition not applied up to its end
        // (one whose records were all deleted has nothing left to apply): a table that
        // is caught up, as it nearly always is, syncs in one request.
        let low = if self.behind(&high, None) {
            Some(self.offsets(Offset::Beginning).await?)
        } else {
            None
        };
        // The reader's progress, to see it stand still.
        let mut moved = (self.shared.advanced.load(Ordering::SeqCst), Instant::now());
        loop {
            let progress = self.shared.progress.notified();
            if !self.behind(&high, low.as_ref()) {
                tracing::debug!(topic = %self.topic, ?high, "table synced");
                let mut synced_from = lock(&self.shared.synced_from);
                if synced_from.is_none_or(|s| s < started) {
                    *synced_from = Some(started);
                }
                return Ok(());
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(KafkaError::Canceled),
                _ = progress => {}
                // The follower stopped (shutdown) or is stuck: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if started.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(topic = %self.topic, waited = ?started.elapsed(), "table sync is slow");
                    }
                    let advanced = self.shared.advanced.load(Ordering::SeqCst);
                    if advanced != moved.0 {
                        moved = (advanced, Instant::now());
                    } else if moved.1.elapsed() >= self.shared.clients.stuck_after() {
                        self.shared.clients.reader_stalled(&self.topic, moved.1.elapsed());
                        moved.1 = Instant::now();
                    }
                }
            }
        }
    }

    /// Whether a partition holds records below `high` not applied yet; without `low`, a
    /// partition's records are taken to start at offset 0.
    fn behind(&self, high: &HashMap<i32, i64>, low: Option<&HashMap<i32, i64>>) -> bool {
        let applied = lock(&self.shared.applied);
        high.iter().any(|(p, high)| {
            let low = low.and_then(|l| l.get(p)).copied().unwrap_or(0);
            *high > low && applied.get(p).is_none_or(|a| a < high)
        })
    }

    /// Every partition's earliest or latest offset, in one `ListOffsets` request.
    async fn offsets(&self, at: Offset) -> KafkaResult<HashMap<i32, i64>> {
        let (consumer, topic, partitions) = (
            self.shared.clients.queries(),
            self.topic.clone(),
            self.partitions.clone(),
        );
        let query = blocking(move || offsets(&consumer, &topic, &partitions, at));
        let result = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(KafkaError::Canceled),
            result = query => result,
        };
        self.shared.clients.query_answered(&self.topic, &result);
        result
    }

    /// Test hook: the table's clients replaced by ones that reach no broker at
    /// `bootstrap`, as librdkafka can leave a client; they are replaced again after
    /// `stuck_after` of failed queries or of a reader standing still.
    #[doc(hidden)]
    pub async fn break_clients_for_test(&self, bootstrap: &str, stuck_after: Duration) {
        self.shared
            .clients
            .break_for_test(bootstrap, stuck_after)
            .await;
    }

    /// The latest value of `key`, `None` when absent or deleted.
    pub fn get(&self, key: &str) -> Option<V> {
        self.read().get(key).and_then(|e| e.value.clone())
    }

    /// Every live value.
    pub fn values(&self) -> Vec<V> {
        self.select(|_| true)
    }

    /// The live values for which `keep` holds (only those are cloned).
    pub fn select(&self, keep: impl Fn(&V) -> bool) -> Vec<V> {
        self.read()
            .values()
            .filter_map(|e| e.value.as_ref().filter(|v| keep(v)).cloned())
            .collect()
    }

    /// Applies a write this process made and Kafka acknowledged, without waiting to
    /// read it back (read-your-writes). Older offsets never overwrite newer ones.
    pub fn apply(&self, key: &str, partition: i32, offset: i64, value: Option<V>) {
        apply(&self.shared, key, partition, offset, value);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TableEntry<V>>> {
        self.shared
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn apply<V>(shared: &Shared<V>, key: &str, partition: i32, offset: i64, value: Option<V>) {
    let mut entries = shared.entries.write().unwrap_or_else(|p| p.into_inner());
    match entries.get(key) {
        Some(e) if e.partition == partition && e.offset >= offset => {}
        _ => {
            entries.insert(
                key.to_owned(),
                TableEntry {
                    partition,
                    offset,
                    value,
                },
            );
        }
    }
}

async fn follow<V>(
    mut consumer: StreamConsumer,
    shared: Arc<Shared<V>>,
    decode: Arc<Decode<V>>,
    (topic, partitions): (String, Vec<i32>),
    shutdown: CancellationToken,
) {
    loop {
        let fresh = shared.clients.reader_wanted().then(|| {
            let applied = lock(&shared.applied).clone();
            shared.clients.new_reader(&topic, &partitions, &applied)
        });
        if let Some(fresh) = fresh.flatten() {
            let old = std::mem::replace(&mut consumer, fresh);
            // Destroying a librdkafka client can block while it winds down.
            tokio::task::spawn_blocking(move || drop(old));
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = tokio::time::timeout(IDLE_READ, consumer.recv()) => read,
        };
        let message = match read {
            Err(_idle) => {
                // Nothing is between recv and apply now: the consumer's position (last
                // record handed to us + 1, past gaps and control records) is applied.
                if let Ok(positions) = consumer.position() {
                    let mut applied = lock(&shared.applied);
                    for e in positions.elements_for_topic(&topic) {
                        if let Offset::Offset(o) = e.offset()
                            && applied.get(&e.partition()).is_none_or(|a| *a < o)
                        {
                            tracing::debug!(topic = %topic, partition = e.partition(), from = ?applied.get(&e.partition()), to = o, "table position applied");
                            applied.insert(e.partition(), o);
                            shared.advanced.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                shared.progress.notify_waiters();
                continue;
            }
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(topic = %topic, error = %e, "table read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        tracing::debug!(topic = %topic, partition, offset, "table record read");
        match message.key().map(std::str::from_utf8) {
            Some(Ok(key)) => match message.payload() {
                None => apply(&shared, key, partition, offset, None),
                Some(bytes) => match decode(bytes) {
                    Some(v) => apply(&shared, key, partition, offset, Some(v)),
                    None => {
                        tracing::warn!(topic = %topic, partition, offset, code = "HL-TABLE-UNREADABLE", "skipping unreadable record")
                    }
                },
            },
            _ => {
                tracing::warn!(topic = %topic, partition, offset, code = "HL-TABLE-NO-KEY", "skipping record without a UTF-8 key")
            }
        }
        {
            let mut applied = lock(&shared.applied);
            let a = applied.entry(partition).or_insert(offset + 1);
            *a = (*a).max(offset + 1);
        }
        shared.advanced.fetch_add(1, Ordering::SeqCst);
        shared.progress.notify_waiters();
    }
}

/// Every partition's earliest or latest offset in one `ListOffsets` request for all
/// partitions at once, where asking partition by partition costs a request each: a sync
/// runs before every event.
fn offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at: Offset,
) -> KafkaResult<HashMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, at)?;
    }
    let answer = consumer.offsets_for_times(tpl, Duration::from_secs(5))?;
    let found: HashMap<i32, i64> = answer
        .elements_for_topic(topic)
        .iter()
        .map(|e| match (e.error(), e.offset()) {
            (Err(error), _) => Err(error),
            (Ok(()), Offset::Offset(o)) => Ok((e.partition(), o)),
            (Ok(()), _) => Err(KafkaError::OffsetFetch(
                rdkafka::types::RDKafkaErrorCode::OffsetNotAvailable,
            )),
        })
        .collect::<KafkaResult<_>>()?;
    if partitions.iter().any(|p| !found.contains_key(p)) {
        return Err(KafkaError::OffsetFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownPartition,
        ));
    }
    Ok(found)
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> KafkaResult<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok(partitions)
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> KafkaResult<T> + Send + 'static,
) -> KafkaResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KafkaError::Canceled)?
}

/// Calls `attempt` until it succeeds, for at most `patience` (or until `shutdown`):
/// right after topics are created a client's metadata can lag (`NotLeader`) for a
/// moment, and such errors pass.
pub async fn retry_for<T, F, Fut>(
    patience: Duration,
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> KafkaResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = KafkaResult<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && !shutdown.is_cancelled() => {
                tracing::info!(error = %e, "{what}: retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
