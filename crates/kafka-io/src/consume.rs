//! The consume loop both the renderer and the dispatcher run: records are handled
//! concurrently, up to a bound, and a record's offset is stored only once its handler
//! says its effects are durable, never past a record still in flight.

use std::collections::{HashMap, VecDeque};
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
use crate::pause::{FullPause, set_paused};

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

/// A handler at work: its ticket, lane, the record's size and outcome when it ends.
type Work = std::pin::Pin<Box<dyn Future<Output = (Ticket, usize, usize, Outcome)> + Send>>;

/// Why a consume loop returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was asked for.
    Shutdown,
    /// The consumer has been out of its group too long (see [`crate::GroupHealth`]):
    /// the caller replaces it ([`crate::consume_group`]).
    Stuck(crate::group::Stuck),
}

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

/// One topic of a consumer that reads several, with its own bounds (see
/// [`consume_lanes`]).
#[derive(Debug, Clone)]
pub struct Lane {
    /// The topic.
    pub topic: String,
    /// A delay topic (a retry tier): a record is handed over no sooner than this after
    /// its timestamp. `None`: at once.
    pub delay: Option<Duration>,
    /// Records of this topic handled at once.
    pub max_in_flight: usize,
    /// Bytes of this topic's records handled at once.
    pub max_in_flight_bytes: usize,
}

/// Reads `consumer` until `shutdown`, handling each record with `handle`.
///
/// At shutdown (or when the consumer is stuck out of its group, see [`consume_lanes`]) it stops reading, waits up to `drain_timeout` for records in flight,
/// commits what was stored and returns. Records not finished by then are read again
/// by whoever owns the partition next: at least once.
pub async fn consume_concurrently<F, Fut>(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    handle: F,
) -> Ended
where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let lane = one_lane(consumer, options);
    consume_lanes(
        consumer,
        tracker,
        &[lane],
        options.drain_timeout,
        shutdown,
        handle,
    )
    .await
}

/// The one lane of a consumer subscribed to one topic.
fn one_lane(consumer: &GroupConsumer, options: &ConsumeOptions) -> Lane {
    let topic = consumer
        .subscription()
        .ok()
        .and_then(|s| s.elements().first().map(|e| e.topic().to_owned()))
        .unwrap_or_default();
    Lane {
        topic,
        delay: None,
        max_in_flight: options.max_in_flight,
        max_in_flight_bytes: options.max_in_flight_bytes,
    }
}

/// What a lane holds now.
#[derive(Default)]
struct LaneState {
    in_flight: usize,
    bytes: usize,
    /// The lane's partitions are paused because it is full.
    full: bool,
    paused: FullPause,
    last_unpause: Option<std::time::Instant>,
}

/// Reads `consumer`, subscribed to the lanes' topics, until `shutdown`.
///
/// - Records are handled concurrently, each lane up to its own bounds: a full lane
///   pauses its own partitions (the consumer keeps polling, so the group keeps them)
///   and the other lanes read on.
/// - A delay lane hands a record over no sooner than its delay after the record's
///   timestamp. Its partitions are in due order, so waiting for a head holds nothing
///   else: a partition whose head is not due is paused, with the records already
///   fetched held in order, and resumed when they are due. Memory is bounded by what
///   librdkafka fetched before the pause.
/// - Offsets are stored per (topic, partition), never past a record in flight.
///
/// At shutdown it stops reading, waits up to `drain_timeout` for records in flight,
/// commits what was stored and returns. Records not finished by then are read again
/// by whoever owns the partition next: at least once. It returns the same way, with
/// [`Ended::Stuck`], once the consumer's statistics say it has been out of its group
/// too long.
pub async fn consume_lanes<F, Fut>(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    lanes: &[Lane],
    drain_timeout: Duration,
    shutdown: &CancellationToken,
    mut handle: F,
) -> Ended
where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    assert!(!lanes.is_empty(), "a consume loop reads at least one topic");
    let mut in_flight: FuturesUnordered<Work> = FuturesUnordered::new();
    let mut states: Vec<LaneState> = lanes.iter().map(|_| LaneState::default()).collect();
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ended::Shutdown,
            Some((ticket, lane, size, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                finish(consumer, tracker, ticket, outcome);
                let state = &mut states[lane];
                state.in_flight -= 1;
                state.bytes -= size;
                if state.full && has_room(&lanes[lane], state) {
                    state.paused.resume(consumer, |topic, partition| held.contains_key(&(topic.to_owned(), partition)));
                    state.full = false;
                }
            }
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                if let Some(stuck) = consumer.context().health().stuck(now) {
                    break Ended::Stuck(stuck);
                }
                // A pause outlives a rebalance: resume what a lane paused, is assigned
                // again and is not held, once a second.
                for state in states.iter_mut() {
                    if !state.full && !state.paused.is_empty()
                        && state.last_unpause.is_none_or(|t| now - t >= Duration::from_secs(1))
                    {
                        state.paused.resume(consumer, |topic, partition| held.contains_key(&(topic.to_owned(), partition)));
                        state.last_unpause = Some(now);
                    }
                }
                held.retain(|(topic, partition), h| {
                    // Revoked (and maybe reassigned) since: the records are read again.
                    if !lock(tracker).is_current(h.generation) {
                        set_paused(consumer, topic, *partition, false);
                        return false;
                    }
                    while !is_full(&lanes[h.lane], &states[h.lane]) {
                        match h.records.front() {
                            Some((_, _, due)) if *due <= now => {
                                let (ticket, record, _) = h.records.pop_front().expect("front exists");
                                spawn(&mut handle, ticket, h.lane, record, &mut states[h.lane], &mut in_flight);
                            }
                            _ => break,
                        }
                    }
                    if h.records.is_empty() {
                        set_paused(consumer, topic, *partition, false);
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
                        // Errors come in bursts while a broker is away: don't spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut record = owned(&message);
                drop(message);
                let lane = lanes.iter().position(|l| l.topic == record.topic).unwrap_or(0);
                let ticket = lock(tracker).begin(&record.topic, record.partition, record.offset);
                record.owner = Some(Owner { tracker: tracker.clone(), ticket });
                let key = (record.topic.clone(), record.partition);
                let holding = held.get(&key).is_some_and(|h| lock(tracker).is_current(h.generation));
                let due = lanes[lane].delay.map(|delay| due_at(&record, delay));
                if !holding && due.is_none_or(|due| due <= std::time::Instant::now()) {
                    let state = &mut states[lane];
                    spawn(&mut handle, ticket, lane, record, state, &mut in_flight);
                    if is_full(&lanes[lane], state) {
                        // A full lane pauses every partition no other lane reads.
                        let other = |t: &str| lanes.iter().enumerate().any(|(j, l)| j != lane && l.topic == t);
                        state.paused.pause(consumer, |t, p| other(t) || held.contains_key(&(t.to_owned(), p)));
                        state.full = true;
                    }
                    continue;
                }
                if !holding {
                    set_paused(consumer, &key.0, key.1, true);
                    held.insert(key.clone(), Held { generation: ticket, lane, records: VecDeque::new() });
                }
                if let Some(h) = held.get_mut(&key) {
                    h.records.push_back((ticket, record, due.unwrap_or_else(std::time::Instant::now)));
                }
            }
        }
    };
    drain(consumer, tracker, drain_timeout, in_flight).await;
    ended
}

/// Hands `record` to `handle` on its own task, counted in its lane.
fn spawn<F, Fut>(
    handle: &mut F,
    ticket: Ticket,
    lane: usize,
    record: Record,
    state: &mut LaneState,
    in_flight: &mut FuturesUnordered<Work>,
) where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let size = record.size();
    state.in_flight += 1;
    state.bytes += size;
    // Spawned, so handlers run on every worker thread, not only this loop's.
    let work = tokio::spawn(handle(record));
    in_flight.push(Box::pin(async move {
        (ticket, lane, size, work.await.unwrap_or(Outcome::Abandoned))
    }));
}

/// When a record of a delay lane is due: its timestamp plus the delay, never later
/// than the delay from now (a writer whose clock runs ahead does not hold the
/// partition; the handler checks the record's own due time anyway).
fn due_at(record: &Record, delay: Duration) -> std::time::Instant {
    let written = record
        .timestamp_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let wait = written
        .map_or(Duration::ZERO, |w| {
            (w + delay)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .min(delay);
    record.received_at + wait
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

/// Whether a lane is at one of its bounds.
fn is_full(lane: &Lane, state: &LaneState) -> bool {
    state.in_flight >= lane.max_in_flight || state.bytes >= lane.max_in_flight_bytes
}

/// Whether a full lane has room enough to read again: below both resume marks.
fn has_room(lane: &Lane, state: &LaneState) -> bool {
    state.in_flight <= resume_below(lane.max_in_flight)
        && state.bytes <= resume_below(lane.max_in_flight_bytes)
}

/// In flight at or below which a full lane reads again: a quarter below the bound, so a
/// lane at its bound pauses and resumes once per quarter of it, not once per record.
fn resume_below(max_in_flight: usize) -> usize {
    max_in_flight - max_in_flight.div_ceil(4)
}

/// A partition of a delay lane whose head record is not due yet: paused, with the
/// records already fetched held in order until they are.
struct Held {
    /// The ticket of the first record held: the generation it was read in.
    generation: Ticket,
    lane: usize,
    records: VecDeque<(Ticket, Record, std::time::Instant)>,
}

/// At shutdown: waits up to the drain timeout for records in flight, then commits
/// what was stored. Records not finished are read again by the partition's next owner.
async fn drain(
    consumer: &GroupConsumer,
    tracker: &Arc<Mutex<OffsetTracker>>,
    drain_timeout: Duration,
    mut in_flight: FuturesUnordered<Work>,
) {
    let wait = async {
        while let Some((ticket, _, _, outcome)) = in_flight.next().await {
            finish(consumer, tracker, ticket, outcome);
        }
    };
    if tokio::time::timeout(drain_timeout, wait).await.is_err() {
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
    outcome: Outcome,
) {
    if outcome != Outcome::Done {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    {
        let mut tracker = lock(tracker);
        let Some(position) = tracker.finish(ticket) else {
            return;
        };
        if tpl
            .add_partition_offset(
                tracker.topic(ticket),
                ticket.partition,
                Offset::Offset(position),
            )
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // The partition was revoked meanwhile: its new owner reads from the last commit.
        tracing::debug!(partition = ticket.partition, error = %e, "offset not stored");
    }
}

fn lock(tracker: &Arc<Mutex<OffsetTracker>>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}
