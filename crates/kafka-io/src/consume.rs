//! The consume loop both the renderer and the dispatcher run: records are handled
//! concurrently, up to a bound, and a record's offset is stored only once its handler
//! says its effects are durable, never past a record still in flight.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::client::{commit_stored, GroupConsumer};
use crate::offsets::{OffsetTracker, Ticket};

/// A consumed record, owned so its handling can outlive the poll.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value, if any (tombstones have none).
    pub payload: Option<Vec<u8>>,
    /// Producer or log-append time, in ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Kafka headers as (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
    /// When this process received it (its own clock, unlike `timestamp_ms`).
    pub received_at: std::time::Instant,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are durable: its offset may be stored.
    Done,
    /// It was given up (shutdown): it will be read again.
    Abandoned,
}

/// Bounds of the loop.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Records handled at once; the loop stops reading while this many are in flight.
    pub max_in_flight: usize,
    /// How long to wait for in-flight records at shutdown before handing them back.
    pub drain_timeout: Duration,
}

/// Reads `consumer` until `shutdown`, handling each record with `handle`.
///
/// At shutdown it stops reading, waits up to `drain_timeout` for records in flight,
/// commits what was stored and returns. Records not finished by then are read again
/// by whoever owns the partition next: at least once.
pub async fn consume_concurrently<F, Fut>(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut in_flight: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = (Ticket, String, Outcome)> + Send>>> =
        FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((ticket, topic, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                finish(consumer, tracker, ticket, topic.as_str(), outcome);
            }
            message = consumer.recv(), if in_flight.len() < options.max_in_flight => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consume error");
                        // Errors come in bursts while a broker is away: don't spin.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let record = Record {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                    headers: message
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
                        .unwrap_or_default(),
                    received_at: std::time::Instant::now(),
                };
                drop(message);
                let ticket = lock(tracker).begin(record.partition, record.offset);
                let topic: String = record.topic.clone();
                // Spawned, so handlers run on every worker thread, not only this loop's.
                let work = tokio::spawn(handle(record));
                in_flight.push(Box::pin(async move { (ticket, topic, work.await.unwrap_or(Outcome::Abandoned)) }));
            }
        }
    }
    let drain = async {
        while let Some((ticket, topic, outcome)) = in_flight.next().await {
            finish(consumer, tracker, ticket, topic.as_str(), outcome);
        }
    };
    if tokio::time::timeout(options.drain_timeout, drain).await.is_err() {
        tracing::warn!(left = lock(tracker).in_flight(), "drain timed out; unfinished records will be read again");
    }
    commit_stored(consumer);
}

fn finish(consumer: &GroupConsumer, tracker: &Arc<Mutex<OffsetTracker>>, ticket: Ticket, topic: &str, outcome: Outcome) {
    if outcome != Outcome::Done {
        return;
    }
    let Some(position) = lock(tracker).finish(ticket) else { return };
    let mut tpl = TopicPartitionList::new();
    if tpl.add_partition_offset(topic, ticket.partition, Offset::Offset(position)).is_ok() {
        if let Err(e) = consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile: its new owner reads from the last commit.
            tracing::debug!(partition = ticket.partition, error = %e, "offset not stored");
        }
    }
}

fn lock(tracker: &Arc<Mutex<OffsetTracker>>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}
