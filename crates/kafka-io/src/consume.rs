//! The consume loop both the renderer and the dispatcher run: records are handled
//! concurrently, up to a bound, and a record's offset is stored only once its handler
//! says its effects are durable, never past a record still in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::client::{GroupConsumer, commit_stored};
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
    /// The consume loop's claim on the record's partition.
    pub owner: Option<Owner>,
}

/// A record's claim on its partition: gone once the partition is revoked.
#[derive(Clone)]
pub struct Owner {
    tracker: Arc<Mutex<OffsetTracker>>,
    ticket: Ticket,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Record {
    /// Whether this process still owns the record's partition (in the generation it
    /// read the record in). A handler about to write the record's effect checks it,
    /// so a record revoked meanwhile is handled once, by the partition's new owner,
    /// not also here.
    pub fn still_owned(&self) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| lock(&o.tracker).is_current(o.ticket))
    }

    /// The bytes it holds: key, value and headers.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are durable: its offset may be stored.
    Done,
    /// It was given up (shutdown): it will be read again.
    Abandoned,
}

/// A handler at work: its ticket, topic, the record's size and outcome when it ends.
type Work = std::pin::Pin<Box<dyn Future<Output = (Ticket, String, usize, Outcome)> + Send>>;

/// Bounds of the loop.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Records handled at once; the loop stops reading while this many are in flight.
    pub max_in_flight: usize,
    /// Bytes of records (keys, values, headers) handled at once; the loop stops reading
    /// while this many are in flight. One record larger than the bound is still taken
    /// when the loop is empty, so every record can be handled.
    pub max_in_flight_bytes: usize,
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
    let mut in_flight: FuturesUnordered<Work> = FuturesUnordered::new();
    let mut bytes = 0usize;
    // The assignment is paused because the loop is full.
    let mut full = false;
    let mut paused = FullPause::default();
    // A pause outlives a rebalance (librdkafka keeps it for partitions assigned again),
    // so what this loop paused and could not resume is tried again every second.
    let mut unpause = tokio::time::interval(Duration::from_secs(1));
    unpause.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((ticket, topic, size, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                finish(consumer, tracker, ticket, topic.as_str(), outcome);
                bytes -= size;
                if full && has_room(options, in_flight.len(), bytes) {
                    paused.resume(consumer, |_, _| false);
                    full = false;
                }
            }
            _ = unpause.tick(), if !full && !paused.is_empty() => paused.resume(consumer, |_, _| false),
            message = consumer.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consume error");
                        // Errors come in bursts while a broker is away: don't spin.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut record = owned(&message);
                drop(message);
                let ticket = lock(tracker).begin(record.partition, record.offset);
                record.owner = Some(Owner { tracker: tracker.clone(), ticket });
                let topic: String = record.topic.clone();
                let size = record.size();
                bytes += size;
                // Spawned, so handlers run on every worker thread, not only this loop's.
                let work = tokio::spawn(handle(record));
                in_flight.push(Box::pin(async move { (ticket, topic, size, work.await.unwrap_or(Outcome::Abandoned)) }));
                if is_full(options, in_flight.len(), bytes) {
                    paused.pause(consumer, |_, _| false);
                    full = true;
                }
            }
        }
    }
    drain(consumer, tracker, options, in_flight).await;
}

fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        timestamp_ms: message.timestamp().to_millis(),
        headers: message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        received_at: std::time::Instant::now(),
        owner: None,
    }
}

/// Whether a loop holding `records` of `bytes` in all is at one of its bounds.
fn is_full(options: &ConsumeOptions, records: usize, bytes: usize) -> bool {
    records >= options.max_in_flight || bytes >= options.max_in_flight_bytes
}

/// Whether a full loop has room enough to read again: below both resume marks.
fn has_room(options: &ConsumeOptions, records: usize, bytes: usize) -> bool {
    records <= resume_below(options.max_in_flight)
        && bytes <= resume_below(options.max_in_flight_bytes)
}

/// In flight at or below which a full loop reads again: a quarter below the bound, so a
/// loop at its bound pauses and resumes once per quarter of it, not once per record.
fn resume_below(max_in_flight: usize) -> usize {
    max_in_flight - max_in_flight.div_ceil(4)
}

/// The partitions a full loop paused, resumed exactly.
///
/// A full loop pauses its assignment instead of not polling: a consumer that does not
/// poll within `max.poll.interval.ms` is dropped from its group. A resume is not free
/// in librdkafka, even of a partition that is not paused: it bumps the partition's op
/// version, which drops the records already fetched for it and restarts its fetch
/// (`rd_kafka_toppar_pause_resume`). So a loop resumes only what it paused.
#[derive(Debug, Default)]
struct FullPause {
    partitions: HashSet<(String, i32)>,
}

impl FullPause {
    fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Pauses every assigned partition but those `keep` leaves alone.
    fn pause(&mut self, consumer: &GroupConsumer, keep: impl Fn(&str, i32) -> bool) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            if !keep(e.topic(), e.partition()) {
                tpl.add_partition(e.topic(), e.partition());
                self.partitions
                    .insert((e.topic().to_owned(), e.partition()));
            }
        }
        if let Err(e) = consumer.pause(&tpl) {
            tracing::debug!(error = %e, "pause refused");
        }
    }

    /// Resumes what this paused that is assigned now; `keep` names partitions another
    /// mechanism holds paused (they are left to it). A partition revoked meanwhile stays
    /// on the list: librdkafka keeps its pause if it is assigned again.
    fn resume(&mut self, consumer: &GroupConsumer, keep: impl Fn(&str, i32) -> bool) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            let key = (e.topic().to_owned(), e.partition());
            if self.partitions.remove(&key) && !keep(e.topic(), e.partition()) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.resume(&tpl)
        {
            tracing::debug!(error = %e, "resume refused");
        }
    }
}

/// A partition whose head record is not due yet: paused, with the records already
/// fetched held in order until they are.
struct Held {
    ticket_generation: Ticket,
    records: VecDeque<(Ticket, Record, std::time::Instant)>,
}

/// Reads a delay topic (a retry tier) until `shutdown`: a record is handed to
/// `handle` no sooner than `delay` after its timestamp, so every partition is in due
/// order and waiting for its head holds nothing else. A partition whose head is not
/// due is paused (the consumer keeps polling, so the group keeps it) and resumed when
/// it is; due records are handled concurrently, up to the bound, and offsets follow
/// as in [`consume_concurrently`]. Memory is bounded by what librdkafka fetched
/// before the pause.
pub async fn consume_delayed<F, Fut>(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    options: &ConsumeOptions,
    delay: Duration,
    shutdown: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut in_flight: FuturesUnordered<Work> = FuturesUnordered::new();
    let mut bytes = 0usize;
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    // The assignment is paused because the loop is full.
    let mut full = false;
    let mut paused = FullPause::default();
    let mut last_unpause = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let due_at = |record: &Record| {
        let written = record
            .timestamp_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        // Never longer than the delay: a writer whose clock runs ahead does not hold
        // the partition (the handler checks the record's own due time anyway).
        let wait = written
            .map_or(Duration::ZERO, |w| {
                (w + delay)
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
            .min(delay);
        record.received_at + wait
    };
    let pause = |topic: &str, partition: i32, on: bool| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let result = if on {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = result {
            // Not assigned any more: the new owner reads from the last commit.
            tracing::debug!(topic, partition, error = %e, "pause/resume refused");
        }
    };
    loop {
        let spawn = |ticket: Ticket,
                     record: Record,
                     handle: &mut F,
                     in_flight: &mut FuturesUnordered<_>,
                     bytes: &mut usize| {
            let topic = record.topic.clone();
            let size = record.size();
            *bytes += size;
            let work = tokio::spawn(handle(record));
            let fut: Work = Box::pin(async move {
                (
                    ticket,
                    topic,
                    size,
                    work.await.unwrap_or(Outcome::Abandoned),
                )
            });
            in_flight.push(fut);
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((ticket, topic, size, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                finish(consumer, tracker, ticket, topic.as_str(), outcome);
                bytes -= size;
                if full && has_room(options, in_flight.len(), bytes) {
                    paused.resume(consumer, |topic, partition| held.contains_key(&(topic.to_owned(), partition)));
                    full = false;
                }
            }
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                // A pause outlives a rebalance: resume what this paused, is assigned again
                // and is not held.
                if !full && !paused.is_empty() && last_unpause.elapsed() >= Duration::from_secs(1) {
                    paused.resume(consumer, |topic, partition| held.contains_key(&(topic.to_owned(), partition)));
                    last_unpause = now;
                }
                held.retain(|(topic, partition), h| {
                    // Revoked (and maybe reassigned) since: the records are read again.
                    if !lock(tracker).is_current(h.ticket_generation) {
                        pause(topic, *partition, false);
                        return false;
                    }
                    while !is_full(options, in_flight.len(), bytes) {
                        match h.records.front() {
                            Some((_, _, due)) if *due <= now => {
                                let (ticket, record, _) = h.records.pop_front().expect("front exists");
                                spawn(ticket, record, &mut handle, &mut in_flight, &mut bytes);
                            }
                            _ => break,
                        }
                    }
                    if h.records.is_empty() {
                        pause(topic, *partition, false);
                        return false;
                    }
                    true
                });
            }
            message = consumer.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut record = owned(&message);
                drop(message);
                let ticket = lock(tracker).begin(record.partition, record.offset);
                record.owner = Some(Owner { tracker: tracker.clone(), ticket });
                let due = due_at(&record);
                let key = (record.topic.clone(), record.partition);
                let holding = held.get(&key).is_some_and(|h| lock(tracker).is_current(h.ticket_generation));
                if !holding && due <= std::time::Instant::now() {
                    spawn(ticket, record, &mut handle, &mut in_flight, &mut bytes);
                    if is_full(options, in_flight.len(), bytes) {
                        paused.pause(consumer, |topic, partition| held.contains_key(&(topic.to_owned(), partition)));
                        full = true;
                    }
                    continue;
                }
                if !holding {
                    pause(&key.0, key.1, true);
                    held.insert(key.clone(), Held { ticket_generation: ticket, records: VecDeque::new() });
                }
                if let Some(h) = held.get_mut(&key) {
                    h.records.push_back((ticket, record, due));
                }
            }
        }
    }
    drain(consumer, tracker, options, in_flight).await;
}

/// At shutdown: waits up to the drain timeout for records in flight, then commits
/// what was stored. Records not finished are read again by the partition's next owner.
async fn drain(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    options: &ConsumeOptions,
    mut in_flight: FuturesUnordered<Work>,
) {
    let wait = async {
        while let Some((ticket, topic, _, outcome)) = in_flight.next().await {
            finish(consumer, tracker, ticket, topic.as_str(), outcome);
        }
    };
    if tokio::time::timeout(options.drain_timeout, wait)
        .await
        .is_err()
    {
        tracing::warn!(
            left = lock(tracker).in_flight(),
            "drain timed out; unfinished records will be read again"
        );
    }
    commit_stored(consumer);
}

fn finish(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    ticket: Ticket,
    topic: &str,
    outcome: Outcome,
) {
    if outcome != Outcome::Done {
        return;
    }
    let Some(position) = lock(tracker).finish(ticket) else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, ticket.partition, Offset::Offset(position))
        .is_ok()
        && let Err(e) = consumer.store_offsets(&tpl)
    {
        // The partition was revoked meanwhile: its new owner reads from the last commit.
        tracing::debug!(partition = ticket.partition, error = %e, "offset not stored");
    }
}

fn lock(tracker: &Arc<Mutex<OffsetTracker>>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}
