//! A table's clients, replaced when they stop working. librdkafka 2.12 can leave a
//! client without brokers for minutes after one metadata response that lists none
//! (a single broker fenced by its controller for a moment; librdkafka issue 5301, see
//! ARCHITECTURE "Known gaps"), while a new client made from the same settings connects
//! at once. So a query client whose every query failed for [`STUCK_AFTER`] is
//! replaced, and so is a reader that applied nothing for that long while a sync waited
//! for it; the new reader starts where the old one stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::lock;

/// How long a client may fail every query, or a reader stand still while behind,
/// before it is replaced.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(30);

pub(super) struct Clients {
    /// What new clients are made from.
    config: Mutex<ClientConfig>,
    /// Asks for watermarks on its own connection: the reading consumer's connection
    /// is often parked in a fetch long-poll, which would delay every sync.
    queries: Mutex<Arc<BaseConsumer>>,
    /// Since when every query failed.
    failing_since: Mutex<Option<Instant>>,
    /// Set for the follower: make a new reader.
    replace_reader: AtomicBool,
    stuck_after: Mutex<Duration>,
}

impl Clients {
    /// The clients for a table read with `config`, and its first reader.
    pub(super) fn new(config: ClientConfig) -> KafkaResult<(Self, StreamConsumer)> {
        let reader: StreamConsumer = config.create()?;
        let queries = query_client(&config)?;
        let clients = Clients {
            config: Mutex::new(config),
            queries: Mutex::new(Arc::new(queries)),
            failing_since: Mutex::new(None),
            replace_reader: AtomicBool::new(false),
            stuck_after: Mutex::new(STUCK_AFTER),
        };
        Ok((clients, reader))
    }

    /// The client that asks for watermarks (see [`query_client`]).
    pub(super) fn queries(&self) -> Arc<BaseConsumer> {
        lock(&self.queries).clone()
    }

    pub(super) fn stuck_after(&self) -> Duration {
        *lock(&self.stuck_after)
    }

    /// Notes how a query went; after [`STUCK_AFTER`] of failures the query client is
    /// replaced (and again after as long, if the new one fails too).
    pub(super) fn query_answered<T>(&self, topic: &str, result: &KafkaResult<T>) {
        let mut since = lock(&self.failing_since);
        if result.is_ok() {
            *since = None;
            return;
        }
        let now = Instant::now();
        let failing = *since.get_or_insert(now);
        if now.duration_since(failing) < self.stuck_after() {
            return;
        }
        match query_client(&lock(&self.config)) {
            Ok(fresh) => {
                tracing::warn!(topic, failing_for = ?now.duration_since(failing), "a table's query client failed every query; replaced by a new one");
                let old = std::mem::replace(&mut *lock(&self.queries), Arc::new(fresh));
                // Destroying a librdkafka client can block while it winds down.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => tracing::warn!(topic, error = %e, "cannot make a new query client"),
        }
        *since = Some(now);
    }

    /// Asks the follower for a new reader: the current one stood still while behind.
    pub(super) fn reader_stalled(&self, topic: &str, stalled: Duration) {
        tracing::warn!(topic, stalled_for = ?stalled, "a table's reader applied nothing while behind; replacing it");
        self.replace_reader.store(true, Ordering::SeqCst);
    }

    /// Whether the follower should make a new reader.
    pub(super) fn reader_wanted(&self) -> bool {
        self.replace_reader.load(Ordering::Relaxed)
    }

    /// For the follower: a new reader of `partitions`, each from its `applied`
    /// position (or the beginning), when one was asked for.
    pub(super) fn new_reader(
        &self,
        topic: &str,
        partitions: &[i32],
        applied: &HashMap<i32, i64>,
    ) -> Option<StreamConsumer> {
        // Held from the request's take to the new client's creation (the test hook
        // restores the settings only after).
        let config = lock(&self.config);
        if !self.replace_reader.swap(false, Ordering::SeqCst) {
            return None;
        }
        let made = config.create::<StreamConsumer>().and_then(|reader| {
            let mut assignment = TopicPartitionList::new();
            for p in partitions {
                let at = applied
                    .get(p)
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                assignment.add_partition_offset(topic, *p, at)?;
            }
            reader.assign(&assignment)?;
            Ok(reader)
        });
        made.map_err(|e| tracing::warn!(topic, error = %e, "cannot make a new table reader"))
            .ok()
    }

    /// Test hook: both clients replaced by ones that reach no broker (`bootstrap`),
    /// then new clients made from the real settings again once [`STUCK_AFTER`]
    /// (here `stuck_after`) says so: a client left without brokers, as librdkafka can
    /// leave one.
    pub(super) async fn break_for_test(&self, bootstrap: &str, stuck_after: Duration) {
        *lock(&self.stuck_after) = stuck_after;
        let good = lock(&self.config).clone();
        let mut broken = good.clone();
        broken.set("bootstrap.servers", bootstrap);
        *lock(&self.config) = broken.clone();
        if let Ok(queries) = query_client(&broken) {
            let old = std::mem::replace(&mut *lock(&self.queries), Arc::new(queries));
            tokio::task::spawn_blocking(move || drop(old));
        }
        self.replace_reader.store(true, Ordering::SeqCst);
        while self.replace_reader.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *lock(&self.config) = good;
    }
}

/// A client for a table's watermark queries. It is told the high watermark, not the
/// last stable offset a `read_committed` client is told: the producer writes `endpoints`
/// and `keys` in transactions, and the broker writes a commit's markers after it has
/// answered the commit, so for a moment the last stable offset still stops before a
/// write whose commit returned (`tests/table.rs` saw 27 of 100 such writes missed).
/// The reader, `read_committed`, gets past a transaction's records only once it is
/// decided, so a sync up to the high watermark waits for every transaction written
/// before it to commit or abort: at most the writer's transaction timeout, for a writer
/// that died mid-write.
fn query_client(config: &ClientConfig) -> KafkaResult<BaseConsumer> {
    config
        .clone()
        .set("isolation.level", "read_uncommitted")
        .create()
}
