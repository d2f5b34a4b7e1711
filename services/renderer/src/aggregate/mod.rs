//! Sensitive traces, exactly once: a transfer's traces gathered into one request per
//! sensitive-trace endpoint, sent when the transfer ends.
//!
//! The aggregator is its own consumer group on `events`, run on a blocking thread with
//! a transactional producer. Its state (each open transfer's traces, sealed) lives in
//! the compacted changelog, partition for partition with `events`, and every
//! transaction holds the changelog writes, the rendered deliveries and the consumed
//! offsets together (Kafka's consume-transform-produce with
//! `send_offsets_to_transaction`). So after a crash the state on the changelog is
//! exactly the one the committed offsets lead to: no trace lost, no batch sent twice.
//!
//! In memory there is only a summary per open transfer (counts, ids, where its traces
//! start on the changelog); the traces are read back from the changelog when the
//! transfer is flushed and streamed through a [`Splitter`] per endpoint.
//!
//! Invariants:
//! - state in memory = what the changelog holds up to the last commit + this
//!   transaction's writes; after an abort both are rebuilt from Kafka (`rewind`);
//! - a flush first commits, so the transfer's traces are readable (read_committed);
//! - partitions are restored from the changelog before any of their events is handled.

mod changelog;
mod flush;
mod handle;
mod rebalance;
mod registry_wait;
mod state;
mod txn;
mod txn_policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use render::{CompiledTraces, FlushReason, RenderError, TraceBatch, TracesRequest};
use serde_json::{Map, Value};
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;
use wire::{AggregatedTrace, DeadLetter, Event, Redacted, Registry};

use crate::split::{Part, RenderPart, Splitter};
use crate::{Configured, Endpoints, seal_delivery};

use self::changelog::*;
use self::flush::*;
use self::rebalance::Rebalancing;
use self::state::*;
use self::txn_policy::is_fatal;

/// How long one Kafka transaction call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a changelog partition to its end may take.
const READ_PATIENCE: Duration = Duration::from_secs(120);

/// The aggregator's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub kafka: kafka_io::KafkaSettings,
    pub group: String,
    pub instance_id: String,
    pub transactional_id: String,
    pub transaction_timeout: Duration,
    pub commit_interval: Duration,
    pub max_age: Duration,
    pub max_body: usize,
    pub environment: String,
}

/// What the aggregator shares with the rest of the renderer.
pub(crate) struct Shared {
    pub registry: Arc<Registry>,
    pub sealer: Arc<signing::Sealer>,
    pub topics: kafka_io::Topics,
    pub endpoints: Endpoints,
    pub metrics: crate::metrics::AggregatorMetrics,
    pub lag: kafka_io::ConsumerStats,
    /// Reads `events` in either framing (shared with the webhook path).
    pub events: Arc<wire::EventReader>,
    pub registry_metrics: crate::metrics::RegistryMetrics,
}

/// Starts the aggregator on a blocking thread; it runs until `shutdown`, and cancels
/// `shutdown` itself when it fails (e.g. fenced by another instance with its id).
pub(crate) async fn start(
    settings: Settings,
    shared: Shared,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let runtime = tokio::runtime::Handle::current();
    let token = shutdown.clone();
    let (consumer, core) =
        tokio::task::spawn_blocking(move || setup(settings, shared, runtime, token)).await??;
    Ok(tokio::task::spawn_blocking(move || {
        let mut consumer = consumer;
        let result = loop {
            match run(&consumer, &core, &shutdown) {
                Ok(Ended::Stopped) => break Ok(()),
                Ok(Ended::Fenced) => match rejoin(consumer, &core) {
                    Ok(again) => consumer = again,
                    Err(e) => break Err(e),
                },
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "sensitive-trace aggregator stopped");
            shutdown.cancel();
        }
        result
    }))
}

/// Why [`run`] returned without an error.
enum Ended {
    /// Shutdown: the last transaction committed. Dropping the consumer afterwards
    /// leaves the group and runs the revoke callback, which takes the lock.
    Stopped,
    /// The consumer raised a fatal error and can no longer be used.
    Fenced,
}

/// After the consumer was fenced: a static member whose session timed out (a broker
/// that stopped answering) rejoins under a new member id, and a request still carrying
/// the old one is then answered `FENCED_INSTANCE_ID`, which librdkafka makes fatal to
/// that consumer. Another live renderer with this id cannot be the cause: it would
/// have been refused at start (`claim`). The open transaction is aborted (its offsets
/// were for a generation that is gone), the dead consumer dropped without committing,
/// and a new one joins under the same instance id; its assignment restores the state.
fn rejoin(consumer: GroupConsumer, core: &Arc<Mutex<Core>>) -> anyhow::Result<GroupConsumer> {
    tracing::warn!(
        "the aggregator's consumer was fenced (its own rejoin after a session timeout); joining again"
    );
    {
        let mut core = lock(core);
        core.abort()?;
        core.fenced = true;
    }
    // Dropping it may run the revoke callback, which takes the lock.
    drop(consumer);
    let settings = {
        let mut core = lock(core);
        core.fenced = false;
        core.partitions.clear();
        core.committed.clear();
        core.settings.clone()
    };
    join(&settings, core)
}

/// The aggregator's consumer: its own group on `events`, a static member.
fn join(settings: &Settings, core: &Arc<Mutex<Core>>) -> anyhow::Result<GroupConsumer> {
    let mut consumer_config =
        kafka_io::consumer_config(&settings.kafka, "hookline-aggregator", &settings.group);
    // Static membership: a restarted instance takes its partitions back at once instead
    // of waiting for the session of its previous life to time out.
    consumer_config
        .set("enable.auto.commit", "false")
        .set("group.instance.id", &settings.instance_id)
        // A flush of a very large transfer or a restore can keep this thread from
        // polling for a while.
        .set("max.poll.interval.ms", "300000")
        .set("queued.max.messages.kbytes", "16384")
        // Traces wait for their transfer's end and commits come every 100 ms, so fetches
        // answered at 64 KiB or after `fetch.wait.max.ms` (100 ms) cost nothing visible.
        // A fetch per small batch of events was 28-30% of the broker's fetches in
        // scenario A (docs/BENCHMARKS.md, "The aggregator's fetches").
        .set("fetch.min.bytes", "65536")
        .set(
            "statistics.interval.ms",
            kafka_io::STATS_INTERVAL_MS.to_string(),
        );
    let lag = (lock(core).shared.lag.clone(), settings.group.clone());
    let consumer: GroupConsumer = consumer_config
        .create_with_context(Rebalancing {
            core: core.clone(),
            lag,
        })
        .context("creating the consumer")?;
    let events = lock(core).shared.topics.events.clone();
    consumer
        .subscribe(&[&events])
        .context("subscribing to events")?;
    Ok(consumer)
}

type GroupConsumer = BaseConsumer<Rebalancing>;

fn setup(
    settings: Settings,
    shared: Shared,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> anyhow::Result<(GroupConsumer, Arc<Mutex<Core>>)> {
    let floors = Arc::new(Mutex::new(HashMap::new()));
    let mut config = kafka_io::producer_config(&settings.kafka, "hookline-aggregator");
    let timeout_ms = settings.transaction_timeout.as_millis().to_string();
    config
        // A flush of a large transfer waits for room rather than buffering it whole.
        .set("queue.buffering.max.kbytes", "32768")
        .set("transactional.id", &settings.transactional_id)
        .set("transaction.timeout.ms", &timeout_ms)
        .set("message.timeout.ms", &timeout_ms);
    let producer: ThreadedProducer<Deliveries> = config
        .create_with_context(Deliveries {
            floors: floors.clone(),
            changelog: shared.topics.sensitive_trace_changelog.clone(),
        })
        .context("creating the transactional producer")?;
    // Fences a previous instance with this id and aborts what it left open.
    patiently("initialising transactions", &shutdown, || {
        producer.init_transactions(CALL_TIMEOUT)
    })?;
    let mut reader_config = kafka_io::consumer_config(
        &settings.kafka,
        "hookline-aggregator-changelog",
        &format!("{}-changelog", settings.group),
    );
    reader_config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("queued.max.messages.kbytes", "8192");
    let changelog: ChangelogReader = reader_config
        .create_with_context(EndIsNoError)
        .context("creating the changelog reader")?;
    check_partitions(&changelog, &shared.topics, &shutdown)?;
    let core = Arc::new(Mutex::new(Core {
        shared,
        settings: settings.clone(),
        runtime,
        producer,
        floors,
        changelog,
        changelog_config: reader_config,
        partitions: HashMap::new(),
        committed: HashMap::new(),
        fenced: false,
        txn: None,
        stream_ms: HashMap::new(),
        fatal: None,
        flush_headers: None,
        waiting: HashMap::new(),
        unreadable: HashMap::new(),
        shutdown,
    }));
    let consumer = join(&settings, &core)?;
    tracing::info!(group = %settings.group, transactional_id = %settings.transactional_id, "sensitive-trace aggregator started");
    Ok((consumer, core))
}

/// The changelog must be partitioned like `events`: partition p holds the state of the
/// transfers whose events are in partition p.
fn check_partitions(
    reader: &ChangelogReader,
    topics: &kafka_io::Topics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let count = |topic: &str| -> anyhow::Result<usize> {
        let metadata = patiently("reading partitions", shutdown, || {
            reader.fetch_metadata(Some(topic), Duration::from_secs(10))
        })?;
        Ok(metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len()))
    };
    let (events, changelog) = (
        count(&topics.events)?,
        count(&topics.sensitive_trace_changelog)?,
    );
    anyhow::ensure!(
        events == changelog,
        "topic {} has {changelog} partitions but {} has {events}: they must match (increase the changelog's partitions)",
        topics.sensitive_trace_changelog,
        topics.events
    );
    Ok(())
}

/// Retries a start-up call while Kafka is away (a broker restarting as the renderer
/// starts), for up to a minute or until shutdown.
fn patiently<T>(
    what: &str,
    shutdown: &CancellationToken,
    mut call: impl FnMut() -> KafkaResult<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && !shutdown.is_cancelled() => {
                tracing::info!(error = %e, "{what}: retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_owned())),
        }
    }
}

fn run(
    consumer: &GroupConsumer,
    core: &Mutex<Core>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Ended> {
    let mut last_expiry = Instant::now();
    while !shutdown.is_cancelled() {
        let polled = consumer.poll(Duration::from_millis(100));
        let mut core = lock(core);
        if let Some(e) = core.fatal.take() {
            return Err(e);
        }
        match polled {
            Some(Ok(message)) => core.process(consumer, &message)?,
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                tracing::warn!(error = %e, "consumer error");
                return Ok(Ended::Fenced);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        if core
            .txn
            .as_ref()
            .is_some_and(|t| t.started.elapsed() >= core.settings.commit_interval)
        {
            core.commit_or_rewind(consumer)?;
        }
        if !core.waiting.is_empty() {
            core.resume_fetched(consumer)?;
        }
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            last_expiry = Instant::now();
            core.expire(consumer)?;
        }
    }
    lock(core).commit_or_rewind(consumer)?;
    Ok(Ended::Stopped)
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct Txn {
    started: Instant,
    /// Per `events` partition, the next offset to commit.
    positions: HashMap<i32, i64>,
}

pub(crate) struct Core {
    shared: Shared,
    settings: Settings,
    runtime: tokio::runtime::Handle,
    producer: ThreadedProducer<Deliveries>,
    floors: Arc<Mutex<HashMap<i32, i64>>>,
    changelog: ChangelogReader,
    /// What a new changelog reader is made from, when the current one fails.
    changelog_config: ClientConfig,
    /// Open transfers per assigned `events` partition.
    partitions: HashMap<i32, HashMap<String, Transfer>>,
    /// Per assigned partition, where a rewind goes back to: the offset the last commit
    /// left it at, else the first record read since the assignment (the group's
    /// committed offset, which the consumer started from). Kept here so a rewind needs
    /// no broker round trip (an offset fetch can hang after a broker stall).
    committed: HashMap<i32, i64>,
    /// The consumer was fenced and is being replaced: a revoke commits nothing.
    fenced: bool,
    txn: Option<Txn>,
    /// Per `events` partition, the newest record timestamp read (stream time).
    stream_ms: HashMap<i32, i64>,
    /// An error met in a rebalance callback, raised by the loop.
    fatal: Option<anyhow::Error>,
    /// While a flush writes its requests: its span's trace context, for their records.
    flush_headers: Option<OwnedHeaders>,
    /// Partitions paused while an event's writer schema is fetched from the registry.
    waiting: HashMap<i32, registry_wait::Waiting>,
    /// Per partition, the offset of an event found unreadable while it waited.
    unreadable: HashMap<i32, i64>,
    shutdown: CancellationToken,
}

fn is_ours(event_type: &str) -> bool {
    event_type.ends_with(".sensitive_trace") || event_type == "transfer.completed"
}

fn transfer_id(event: &Event) -> Option<&str> {
    event
        .data
        .get("transfer_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}
