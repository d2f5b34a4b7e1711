//! The one writer of the producer's compacted tables (`endpoints`, `keys`): every
//! change is decided from the record as it is and committed only if no other write
//! committed since, across producer replicas, with Kafka itself as the arbiter.
//!
//! Every replica writes with one transactional id (`<prefix>hookline-endpoints`). A
//! replica that initialises it fences the one that held it, and the broker completes
//! the fenced one's open transaction before it answers. So a write (begin, sync the
//! table, decide from the record as it is, produce, commit) either commits with no
//! other write committed since its sync, or fails and is made again from a fresh read,
//! where `If-Match` is checked anew. These writes are rare (an operator's, an endpoint
//! disabled, a key rotated or resealed): a replica initialises again only after
//! another one wrote.

use std::time::Duration;

use kafka_io::{KafkaSettings, Table};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::AppState;
use crate::error::ApiError;

/// Bound on one transactional call (init, commit, abort).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replica that died mid-write holds back readers of `endpoints`.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
/// Writes made again after a conflict or a transient failure, before a 503.
const ATTEMPTS: usize = 8;

/// What a change makes of the record as it is now.
pub(crate) enum Change<V> {
    /// Write this record.
    Put(Box<V>),
    /// Delete it: a tombstone.
    Delete,
    /// Write nothing.
    Keep,
}

/// What a change did.
#[derive(Debug)]
pub(crate) enum Outcome<V> {
    /// This record was written.
    Put(Box<V>),
    /// The record was deleted.
    Deleted,
    /// Nothing was written.
    Kept,
}

/// A record written in the same transaction as the change (and only with it).
pub(crate) struct Also {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Why an attempt did not commit.
enum Failed {
    /// `decide` refused (404, 412, 400): answered as it is.
    Refused(ApiError),
    /// Kafka failed, or another replica wrote first: made again.
    Kafka(KafkaError),
}

/// Serialises table writes in this process and, through its transactional id,
/// across replicas.
pub(crate) struct TableWriter {
    config: ClientConfig,
    producer: tokio::sync::Mutex<Option<FutureProducer>>,
}

/// The table a change is made to, and its topic.
pub(crate) struct Target<'t, V> {
    pub table: &'t Table<V>,
    pub topic: &'t str,
    pub key: &'t str,
}

impl TableWriter {
    /// A writer for `settings`' cluster; it connects at the first write.
    pub(crate) fn new(settings: &KafkaSettings) -> Self {
        let mut config = kafka_io::producer_config(settings, "hookline-producer-endpoints");
        config
            .set(
                "transactional.id",
                format!("{}hookline-endpoints", settings.topic_prefix),
            )
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("message.timeout.ms", TRANSACTION_TIMEOUT_MS);
        TableWriter {
            config,
            producer: tokio::sync::Mutex::new(None),
        }
    }

    /// Changes the target's record as `decide` says from its current value (`None`:
    /// absent or deleted), with `also` in the same transaction when something is
    /// written. `decide` may run more than once: again from a fresh read after a
    /// conflict.
    pub(crate) async fn change<
        V: wire::Record + serde::Serialize + Clone + Send + Sync + 'static,
    >(
        &self,
        state: &AppState,
        target: &Target<'_, V>,
        mut decide: impl FnMut(Option<V>) -> Result<Change<V>, ApiError>,
        also: Option<&Also>,
    ) -> Result<Outcome<V>, ApiError> {
        let id = target.key;
        let mut slot = self.producer.lock().await;
        for attempt in 1..=ATTEMPTS {
            if state.shutdown.is_cancelled() {
                break;
            }
            let producer = match slot.as_ref() {
                Some(p) => p.clone(),
                None => match self.init().await {
                    Ok(p) => {
                        *slot = Some(p.clone());
                        p
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "cannot start the endpoints writer");
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                },
            };
            match write(&producer, state, target, &mut decide, also).await {
                Ok(Outcome::Kept) => {
                    abort(&producer).await;
                    return Ok(Outcome::Kept);
                }
                Ok(written) => return Ok(written),
                Err(Failed::Refused(e)) => {
                    abort(&producer).await;
                    return Err(e);
                }
                Err(Failed::Kafka(e)) => {
                    // Fenced (another replica wrote) or failed for good: a new producer
                    // fences the other in turn. Anything else: abort and go again.
                    if producer.client().fatal_error().is_some() {
                        *slot = None;
                    } else {
                        abort(&producer).await;
                    }
                    tracing::info!(key = id, error = %e, attempt, "table write not committed; reading it again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(ApiError::unavailable_because(
            "HL-KAFKA-UNAVAILABLE",
            "the change was not committed; retry",
        ))
    }

    async fn init(&self) -> Result<FutureProducer, KafkaError> {
        let producer: FutureProducer = self.config.create()?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)??;
        Ok(producer)
    }
}

/// One attempt: begin, read, decide, produce, commit.
async fn write<V: wire::Record + serde::Serialize + Clone + Send + Sync + 'static>(
    producer: &FutureProducer,
    state: &AppState,
    target: &Target<'_, V>,
    decide: &mut impl FnMut(Option<V>) -> Result<Change<V>, ApiError>,
    also: Option<&Also>,
) -> Result<Outcome<V>, Failed> {
    let id = target.key;
    producer.begin_transaction().map_err(Failed::Kafka)?;
    target
        .table
        .sync()
        .await
        .map_err(|_| Failed::Refused(ApiError::unavailable("HL-KAFKA-UNAVAILABLE")))?;
    let record = match decide(target.table.get(id)).map_err(Failed::Refused)? {
        Change::Keep => return Ok(Outcome::Kept),
        Change::Put(record) => Some(*record),
        Change::Delete => None,
    };
    let payload = match &record {
        Some(record) => Some(state.registry.encode(record).map_err(|e| {
            tracing::error!(
                code = e.code(),
                table = target.topic,
                "cannot encode a record"
            );
            Failed::Refused(ApiError::internal(e.code()))
        })?),
        None => None,
    };
    let mut written = FutureRecord::to(target.topic).key(id);
    if let Some(p) = &payload {
        written = written.payload(p.as_slice());
    }
    let ack = producer
        .send_result(written)
        .map_err(|(e, _)| Failed::Kafka(e))?;
    let also_ack = match also {
        Some(a) => Some(
            producer
                .send_result(FutureRecord::to(&a.topic).key(&a.key).payload(&a.payload))
                .map_err(|(e, _)| Failed::Kafka(e))?,
        ),
        None => None,
    };
    let delivery = match ack.await {
        Ok(Ok(d)) => d,
        Ok(Err((e, _))) => return Err(Failed::Kafka(e)),
        Err(_) => return Err(Failed::Kafka(KafkaError::Canceled)),
    };
    if let Some(ack) = also_ack {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(Failed::Kafka(e)),
            Err(_) => return Err(Failed::Kafka(KafkaError::Canceled)),
        }
    }
    commit(producer).await.map_err(Failed::Kafka)?;
    target
        .table
        .apply(id, delivery.partition, delivery.offset, record.clone());
    Ok(record.map_or(Outcome::Deleted, |r| Outcome::Put(Box::new(r))))
}

/// Commits; a commit that timed out goes on in the background, and then only the same
/// call may follow (librdkafka's contract), so it is made again while retriable.
async fn commit(producer: &FutureProducer) -> Result<(), KafkaError> {
    for _ in 0..3 {
        let p = producer.clone();
        let result = tokio::task::spawn_blocking(move || p.commit_transaction(CALL_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)?;
        match result {
            Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
            other => return other,
        }
    }
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.commit_transaction(CALL_TIMEOUT))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

/// Aborts the open transaction, if any; a failure leaves it to the broker's timeout
/// or to the next writer's initialisation.
async fn abort(producer: &FutureProducer) {
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.abort_transaction(CALL_TIMEOUT)).await;
}

/// 100 ms doubling per attempt, jittered down by up to half, so two replicas that
/// fenced each other do not try again in step.
fn backoff(attempt: usize) -> Duration {
    let full = 50u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(full - nanos % (full / 2))
}
