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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use render::{CompiledTraces, FlushReason, RenderError, TraceBatch, TracesRequest};
use serde_json::{Map, Value};
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;
use wire::{AggregatedTrace, DeadLetter, Event, Redacted, Registry, RenderedDelivery};

use crate::split::{Part, RenderPart, Splitter};
use crate::{Configured, Endpoints, seal_delivery};

/// How long one Kafka transaction call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a changelog partition to its end may take.
const READ_PATIENCE: Duration = Duration::from_secs(120);
/// Fields of a trace object, in the seed's order.
const TRACE_FIELDS: [&str; 8] = [
    "destination_id",
    "source_id",
    "model_id",
    "model_name",
    "source_vendor",
    "destination_vendor",
    "execution_context",
    "trace",
];

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
    pub registry: Registry,
    pub sealer: Arc<signing::Sealer>,
    pub topics: kafka_io::Topics,
    pub endpoints: Endpoints,
    pub metrics: crate::metrics::AggregatorMetrics,
    pub lag: kafka_io::ConsumerStats,
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
        let result = run(&consumer, &core, &shutdown);
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "sensitive-trace aggregator stopped");
            shutdown.cancel();
        }
        // Leaving the group runs the revoke callback, which takes the lock.
        drop(consumer);
        result
    }))
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
        partitions: HashMap::new(),
        txn: None,
        stream_ms: HashMap::new(),
        fatal: None,
        flush_headers: None,
        shutdown,
    }));
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
        .set(
            "statistics.interval.ms",
            kafka_io::STATS_INTERVAL_MS.to_string(),
        );
    let lag = (lock(&core).shared.lag.clone(), settings.group.clone());
    let consumer: GroupConsumer = consumer_config
        .create_with_context(Rebalancing {
            core: core.clone(),
            lag,
        })
        .context("creating the consumer")?;
    let events = lock(&core).shared.topics.events.clone();
    consumer
        .subscribe(&[&events])
        .context("subscribing to events")?;
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
) -> anyhow::Result<()> {
    let mut last_expiry = Instant::now();
    while !shutdown.is_cancelled() {
        let polled = consumer.poll(Duration::from_millis(100));
        let mut core = lock(core);
        if let Some(e) = core.fatal.take() {
            return Err(e);
        }
        match polled {
            Some(Ok(message)) => core.process(consumer, &message)?,
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
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            last_expiry = Instant::now();
            core.expire(consumer)?;
        }
    }
    lock(core).commit_or_rewind(consumer)
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commits on revoke (the group generation is still ours) and restores what is assigned
/// before any of its events is handed out.
pub(crate) struct Rebalancing {
    core: Arc<Mutex<Core>>,
    /// Where the consumer's lag goes (librdkafka's statistics), and its group.
    lag: (kafka_io::ConsumerStats, String),
}

impl ClientContext for Rebalancing {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.0.update(&self.lag.1, &statistics);
    }
}

impl ConsumerContext for Rebalancing {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut core = lock(&self.core);
            if let Err(e) = core.commit(consumer) {
                tracing::warn!(error = %format!("{e:#}"), "cannot commit on revoke; aborting");
                if let Err(e) = core.abort() {
                    core.fatal = Some(e);
                }
                core.partitions.clear();
            }
            for p in partitions.elements() {
                core.partitions.remove(&p.partition());
            }
            tracing::info!(
                partitions = partitions.count(),
                "aggregator partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let mut core = lock(&self.core);
            for p in partitions.elements() {
                if let Err(e) = core.restore(p.partition()) {
                    core.fatal = Some(e.context("restoring aggregation state"));
                    return;
                }
            }
            let transfers: usize = core.partitions.values().map(HashMap::len).sum();
            tracing::info!(
                partitions = partitions.count(),
                open_transfers = transfers,
                "aggregator partitions assigned"
            );
        }
    }
}

/// Reads changelog partitions to their end.
type ChangelogReader = BaseConsumer<EndIsNoError>;

/// Reaching the end of a partition is how a read ends, not an error to log.
struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(error = %error, reason, "changelog reader");
        }
    }
}

impl ConsumerContext for EndIsNoError {}

/// Tracks, per changelog partition, an offset below every record written from now on.
struct Deliveries {
    floors: Arc<Mutex<HashMap<i32, i64>>>,
    changelog: String,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) if m.topic() == self.changelog => {
                let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
                let floor = floors.entry(m.partition()).or_insert(0);
                *floor = (*floor).max(m.offset() + 1);
            }
            Ok(_) => {}
            // The transaction fails with it and is aborted.
            Err((e, m)) => {
                tracing::warn!(topic = m.topic(), error = %e, "transactional write failed")
            }
        }
    }
}

/// An open transfer: what is known without reading its traces back.
#[derive(Debug, Clone)]
struct Transfer {
    destination_id: String,
    first_event_id: String,
    opened_at_ms: i64,
    /// Traces written (the next seq).
    traces: i32,
    source_ids: Vec<String>,
    model_ids: Vec<String>,
    /// The changelog offset at or before its first trace.
    scan_from: i64,
    /// The trace contexts of its first [`MAX_LINKS`] traces read by this process, which
    /// the flush's span links to (in memory only: a transfer restored after a restart
    /// links to the traces read since).
    links: Vec<opentelemetry::trace::SpanContext>,
}

/// The most trace links one flush span carries.
const MAX_LINKS: usize = 32;

impl Transfer {
    fn add_ids(&mut self, source_id: Option<&str>, model_id: Option<&str>) {
        for (id, ids) in [
            (source_id, &mut self.source_ids),
            (model_id, &mut self.model_ids),
        ] {
            if let Some(id) = id.filter(|id| !id.is_empty())
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
    }
}

struct Txn {
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
    /// Open transfers per assigned `events` partition.
    partitions: HashMap<i32, HashMap<String, Transfer>>,
    txn: Option<Txn>,
    /// Per `events` partition, the newest record timestamp read (stream time).
    stream_ms: HashMap<i32, i64>,
    /// An error met in a rebalance callback, raised by the loop.
    fatal: Option<anyhow::Error>,
    /// While a flush writes its requests: its span's trace context, for their records.
    flush_headers: Option<OwnedHeaders>,
    shutdown: CancellationToken,
}

impl Core {
    fn process(
        &mut self,
        consumer: &GroupConsumer,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let result = self.handle(consumer, message);
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    fn handle(
        &mut self,
        consumer: &GroupConsumer,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let (p, offset) = (message.partition(), message.offset());
        if let Some(t) = message.timestamp().to_millis() {
            let stream = self.stream_ms.entry(p).or_insert(t);
            *stream = (*stream).max(t);
        }
        if !self.partitions.contains_key(&p) {
            self.restore(p)?;
        }
        // Undecodable events are the webhook path's to dead-letter; here they are skipped.
        let event = message
            .payload()
            .and_then(|bytes| self.shared.registry.decode_event(bytes).ok());
        let Some(mut event) = event.filter(|e| is_ours(&e.event_type)) else {
            return self.advance(p, offset);
        };
        if service_kit::open_event(&self.shared.sealer, &self.shared.registry, &mut event).is_err()
        {
            self.begin()?;
            let reason = "cannot open the event's sealed fields with this HOOKLINE_MASTER_KEY";
            self.dead_letter(
                p,
                offset,
                Some(&event),
                None,
                "HL-SEAL-OPEN",
                reason,
                message.payload().map(<[u8]>::to_vec),
            )?;
            return self.advance(p, offset);
        }
        match event.event_type.as_str() {
            // Model validation traces are never forwarded.
            _ if render::subscription::is_model_validation_trace(&event) => self.advance(p, offset),
            "transfer.sensitive_trace" => match transfer_id(&event) {
                Some(id) => {
                    let id = id.to_owned();
                    self.append(p, &id, &event, telemetry::message_context(message))?;
                    self.advance(p, offset)
                }
                None => {
                    self.begin()?;
                    let reason = "transfer.sensitive_trace without transfer_id: cannot be gathered with its transfer";
                    self.dead_letter(
                        p,
                        offset,
                        Some(&event),
                        None,
                        "HL-TRACE-NO-TRANSFER",
                        reason,
                        message.payload().map(<[u8]>::to_vec),
                    )?;
                    self.advance(p, offset)
                }
            },
            "connection_test.sensitive_trace" => {
                self.send_now(p, offset, &event)?;
                self.advance(p, offset)
            }
            "transfer.completed" => {
                let open = transfer_id(&event)
                    .filter(|id| self.partitions.get(&p).is_some_and(|t| t.contains_key(*id)));
                if let Some(id) = open.map(str::to_owned) {
                    // Its traces must be readable back: commit what came before this event.
                    self.commit(consumer)?;
                    self.flush(p, &id, FlushReason::Completed, Some((offset, &event.id)))?;
                }
                self.advance(p, offset)
            }
            _ => self.advance(p, offset),
        }
    }

    /// Records one trace of an open transfer on the changelog.
    fn append(
        &mut self,
        p: i32,
        transfer_id: &str,
        event: &Event,
        trace: Option<opentelemetry::Context>,
    ) -> anyhow::Result<()> {
        self.begin()?;
        let floor = self.floor(p);
        let data = &event.data;
        let text = |k: &str| data.get(k).and_then(Value::as_str);
        let transfers = self.partitions.entry(p).or_default();
        let transfer = transfers
            .entry(transfer_id.to_owned())
            .or_insert_with(|| Transfer {
                destination_id: text("destination_id").unwrap_or_default().to_owned(),
                first_event_id: event.id.clone(),
                opened_at_ms: now_ms(),
                traces: 0,
                source_ids: Vec::new(),
                model_ids: Vec::new(),
                scan_from: floor,
                links: Vec::new(),
            });
        if let Some(cx) = trace
            && transfer.links.len() < MAX_LINKS
        {
            use opentelemetry::trace::TraceContextExt as _;
            transfer.links.push(cx.span().span_context().clone());
        }
        let seq = transfer.traces;
        let record = AggregatedTrace {
            transfer_id: transfer_id.to_owned(),
            seq,
            event_id: event.id.clone(),
            destination_id: transfer.destination_id.clone(),
            source_id: text("source_id").map(str::to_owned),
            model_id: text("model_id").map(str::to_owned),
            opened_at_ms: transfer.opened_at_ms,
            trace_sealed: self.shared.sealer.seal(
                trace_object(data).expose().as_bytes(),
                &trace_context(transfer_id, seq),
            ),
        };
        transfer.traces += 1;
        transfer.add_ids(text("source_id"), text("model_id"));
        let bytes = self.shared.registry.encode(&record)?;
        let topic = self.shared.topics.sensitive_trace_changelog.clone();
        self.send(
            &topic,
            Some(p),
            &changelog_key(transfer_id, seq),
            Some(&bytes),
        )
    }

    /// A connection test's trace: one request per endpoint, at once.
    fn send_now(&mut self, p: i32, offset: i64, event: &Event) -> anyhow::Result<()> {
        self.begin()?;
        self.sync_endpoints()?;
        let data = &event.data;
        let text = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let source_ids: Vec<String> = text("source_id").into_iter().collect();
        let destination_id = text("destination_id").unwrap_or_default();
        let timestamp = render::trace_timestamp(time::OffsetDateTime::now_utc());
        let environment = self.settings.environment.clone();
        let trace = trace_object(data);
        for configured in self.trace_endpoints() {
            let Some(compiled) = configured.traces() else {
                continue;
            };
            let batch = BatchRender {
                compiled,
                environment: &environment,
                transfer_id: None,
                destination_id: &destination_id,
                source_ids: &source_ids,
                model_ids: &[],
                timestamp: &timestamp,
                reason: FlushReason::ConnectionTest,
            };
            let mut splitter = Splitter::new(batch, self.settings.max_body);
            let mut parts = splitter
                .push(trace.expose().clone())
                .unwrap_or_else(|never| match never {});
            parts.extend(splitter.finish().unwrap_or_else(|never| match never {}));
            for part in parts {
                self.deliver(p, offset, compiled, part, &event.id, &event.id, None)?;
            }
        }
        Ok(())
    }

    /// Sends a transfer's traces to every sensitive-trace endpoint and forgets them.
    /// The caller committed first, so every trace of the transfer is readable.
    fn flush(
        &mut self,
        p: i32,
        transfer_id: &str,
        reason: FlushReason,
        trigger: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        let Some(transfer) = self
            .partitions
            .get_mut(&p)
            .and_then(|t| t.remove(transfer_id))
        else {
            return Ok(());
        };
        self.begin()?;
        self.sync_endpoints()?;
        // The flush's span links to the traces of the events it gathers; its requests'
        // attempts are parented in it.
        let span = flush_span(transfer_id, &transfer, reason);
        self.flush_headers = telemetry::span_kafka_headers(&span);
        let flushed = self.flush_transfer(p, transfer_id, &transfer, reason, trigger);
        self.flush_headers = None;
        flushed
    }

    fn flush_transfer(
        &mut self,
        p: i32,
        transfer_id: &str,
        transfer: &Transfer,
        reason: FlushReason,
        trigger: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        let (offset, event_id) = trigger.unwrap_or((-1, &transfer.first_event_id));
        let environment = self.settings.environment.clone();
        let timestamp = render::trace_timestamp(time::OffsetDateTime::now_utc());
        let endpoints = self.trace_endpoints();
        let mut splitters: Vec<Splitter<BatchRender<'_>>> = endpoints
            .iter()
            .filter_map(|c| c.traces())
            .map(|compiled| {
                let batch = BatchRender {
                    compiled,
                    environment: &environment,
                    transfer_id: Some(transfer_id),
                    destination_id: &transfer.destination_id,
                    source_ids: &transfer.source_ids,
                    model_ids: &transfer.model_ids,
                    timestamp: &timestamp,
                    reason,
                };
                Splitter::new(batch, self.settings.max_body)
            })
            .collect();
        // Read the transfer's traces back, in order, into every endpoint's splitter,
        // until every one of them was seen (the last commit's markers may lag).
        let base = format!("transfer/{transfer_id}");
        let mut expected = 0;
        let mut failure: Option<anyhow::Error> = None;
        let topic = self.shared.topics.sensitive_trace_changelog.clone();
        let read = read_changelog(
            &self.changelog,
            &topic,
            p,
            Offset::Offset(transfer.scan_from),
            Until::Done,
            |m| {
                let Some((key_transfer, seq)) = m.key().and_then(parse_key) else {
                    return false;
                };
                if key_transfer != transfer_id || seq < expected || seq >= transfer.traces {
                    return false;
                }
                let Some(bytes) = m.payload() else {
                    return false;
                };
                if seq != expected {
                    tracing::error!(
                        code = "HL-TRACE-GAP",
                        transfer_id,
                        expected,
                        found = seq,
                        "traces missing from the changelog"
                    );
                }
                expected = seq + 1;
                let opened = self
                    .shared
                    .registry
                    .decode::<AggregatedTrace>(bytes)
                    .ok()
                    .and_then(|r| {
                        self.shared
                            .sealer
                            .open(&r.trace_sealed, &trace_context(transfer_id, seq))
                            .ok()
                    })
                    .and_then(|plain| String::from_utf8(plain).ok())
                    .map(Redacted::new);
                let step = match opened {
                Some(trace) => splitters.iter_mut().try_for_each(|splitter| {
                    let compiled = splitter.renderer().compiled;
                    let parts = splitter.push(trace.expose().clone()).unwrap_or_else(|never| match never {});
                    parts.into_iter().try_for_each(|part| self.deliver(p, offset, compiled, part, &base, event_id, Some(transfer_id)))
                }),
                // Kept, sealed as it is, rather than dropped or retried forever.
                None => self.dead_letter(
                    p,
                    offset,
                    None,
                    None,
                    "HL-TRACE-UNREADABLE",
                    "a trace on the changelog cannot be read or opened with this HOOKLINE_MASTER_KEY",
                    Some(bytes.to_vec()),
                ),
            };
                if let Err(e) = step {
                    failure = Some(e);
                    return true;
                }
                expected >= transfer.traces
            },
        );
        read?;
        if let Some(e) = failure {
            return Err(e);
        }
        for splitter in splitters {
            let compiled = splitter.renderer().compiled;
            for part in splitter.finish().unwrap_or_else(|never| match never {}) {
                self.deliver(
                    p,
                    offset,
                    compiled,
                    part,
                    &base,
                    event_id,
                    Some(transfer_id),
                )?;
            }
        }
        for seq in 0..transfer.traces {
            self.send(&topic, Some(p), &changelog_key(transfer_id, seq), None)?;
        }
        tracing::info!(
            transfer_id,
            traces = transfer.traces,
            reason = reason.as_str(),
            endpoints = endpoints.len(),
            "sensitive traces flushed"
        );
        self.shared.metrics.flushed(reason.as_str());
        Ok(())
    }

    /// Flushes transfers whose end never came within the maximum age.
    fn expire(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let max_age = i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut due: Vec<(i32, String)> = self
            .partitions
            .iter()
            .flat_map(|(p, transfers)| {
                transfers
                    .iter()
                    .filter(|(_, t)| now - t.opened_at_ms >= max_age)
                    .map(|(id, _)| (*p, id.clone()))
            })
            .collect();
        // A partition still reading a backlog may hold the end of such a transfer.
        let mut partitions: Vec<i32> = due.iter().map(|(p, _)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let behind: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.caught_up(consumer, *p, now))
            .collect();
        due.retain(|(p, _)| !behind.contains(p));
        if due.is_empty() {
            return Ok(());
        }
        let result = self.commit(consumer).and_then(|()| {
            due.iter()
                .try_for_each(|(p, id)| self.flush(*p, id, FlushReason::MaxAge, None))
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Whether partition `p` of `events` is read up to now: its newest record read is
    /// recent, or nothing is left to read.
    fn caught_up(&self, consumer: &GroupConsumer, p: i32, now: i64) -> bool {
        if self.stream_ms.get(&p).is_some_and(|t| *t >= now - 60_000) {
            return true;
        }
        let topic = &self.shared.topics.events;
        let position = consumer
            .position()
            .ok()
            .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()));
        match (
            consumer.fetch_watermarks(topic, p, Duration::from_secs(5)),
            position,
        ) {
            (Ok((_, high)), Some(Offset::Offset(at))) => at >= high,
            // Nothing read yet since the assignment: at the committed offset.
            (Ok((_, high)), _) => {
                consumer
                    .committed(Duration::from_secs(5))
                    .ok()
                    .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()))
                    == Some(Offset::Offset(high))
            }
            (Err(_), _) => false,
        }
    }

    /// Writes one part as a rendered delivery (sealed) in the transaction, or, when it
    /// could not be rendered, as a dead letter holding its traces sealed.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        p: i32,
        offset: i64,
        compiled: &EndpointTraces,
        part: Part<Rendered>,
        base: &str,
        event_id: &str,
        transfer_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let endpoint = match compiled {
            Ok(c) => &c.endpoint,
            Err((e, _)) => e,
        };
        let request = match part.request {
            Rendered::Request(request) => request,
            Rendered::Failed { error, traces_json } => {
                let id = uuid::Uuid::now_v7().to_string();
                let sealed = self
                    .shared
                    .sealer
                    .seal(traces_json.expose().as_bytes(), &dead_letter_context(&id));
                return self.write_dead_letter(
                    id,
                    p,
                    offset,
                    Some(event_id),
                    Some(&endpoint.id),
                    error.code(),
                    &error.to_string(),
                    Some(sealed.into_bytes()),
                );
            }
        };
        tracing::debug!(endpoint_id = %endpoint.id, part = part.number, last = part.last, "sensitive-trace request rendered");
        if part.truncated {
            tracing::warn!(code = "HL-TRACE-TRUNCATED", endpoint_id = %endpoint.id, part = part.number, "a trace was cut to fit the maximum body");
        }
        let delivery = RenderedDelivery {
            delivery_id: render::delivery_id(&format!("{base}/part/{}", part.number), &endpoint.id),
            event_id: event_id.to_owned(),
            event_type: if transfer_id.is_some() {
                "transfer.sensitive_trace"
            } else {
                "connection_test.sensitive_trace"
            }
            .to_owned(),
            endpoint_id: endpoint.id.clone(),
            rendered_at: wire::now_rfc3339(),
            method: request.method,
            url: request.url,
            headers: request.headers,
            sensitive_headers: request.sensitive_headers,
            signing_scheme: "none".to_owned(),
            signing_secrets: Vec::new(),
            body_sealed: true,
            body: request.body,
            transfer_id: transfer_id.map(str::to_owned),
            ..RenderedDelivery::default()
        }
        .with_policy_of(endpoint);
        let bytes = self
            .shared
            .registry
            .encode(&seal_delivery(&self.shared.sealer, delivery))?;
        self.send_with(
            &self.shared.topics.rendered_deliveries,
            None,
            endpoint.id.as_bytes(),
            Some(&bytes),
            self.flush_headers.as_ref(),
        )
    }

    /// A dead letter in the transaction. `reason` holds no trace text or secret.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        p: i32,
        offset: i64,
        event: Option<&Event>,
        endpoint_id: Option<&str>,
        code: &str,
        reason: &str,
        payload: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let id = uuid::Uuid::now_v7().to_string();
        self.write_dead_letter(
            id,
            p,
            offset,
            event.map(|e| e.id.as_str()),
            endpoint_id,
            code,
            reason,
            payload,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write_dead_letter(
        &self,
        id: String,
        p: i32,
        offset: i64,
        event_id: Option<&str>,
        endpoint_id: Option<&str>,
        code: &str,
        reason: &str,
        payload: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        tracing::warn!(
            code,
            endpoint_id,
            event_id,
            "sensitive traces dead-lettered"
        );
        let letter = DeadLetter {
            id,
            reason_code: code.to_owned(),
            reason: reason.to_owned(),
            failed_at: wire::now_rfc3339(),
            stage: "renderer".to_owned(),
            source_topic: self.shared.topics.events.clone(),
            source_partition: p,
            source_offset: offset,
            event_id: event_id.map(str::to_owned),
            endpoint_id: endpoint_id.map(str::to_owned),
            delivery_id: None,
            delivery: None,
            payload,
            attempts: Vec::new(),
        };
        let bytes = self.shared.registry.encode(&letter)?;
        let key = endpoint_id.unwrap_or(&letter.id).as_bytes().to_vec();
        self.send(&self.shared.topics.dead_letter, None, &key, Some(&bytes))
    }

    /// Queues a write in the transaction.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        self.send_with(topic, partition, key, value, None)
    }

    fn send_with(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<&OwnedHeaders>,
    ) -> anyhow::Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        if self.txn.is_none() {
            self.producer
                .begin_transaction()
                .context("beginning a transaction")?;
            self.txn = Some(Txn {
                started: Instant::now(),
                positions: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Marks `offset` of partition `p` handled in this transaction.
    fn advance(&mut self, p: i32, offset: i64) -> anyhow::Result<()> {
        self.begin()?;
        if let Some(txn) = &mut self.txn {
            txn.positions.insert(p, offset + 1);
        }
        Ok(())
    }

    /// Commits the open transaction with the offsets it handled.
    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> anyhow::Result<()> {
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        if !txn.positions.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for (p, next) in &txn.positions {
                offsets.add_partition_offset(
                    &self.shared.topics.events,
                    *p,
                    Offset::Offset(*next),
                )?;
            }
            let metadata = consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            self.again_while_retriable("adding offsets to the transaction", || {
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)
            })?;
        }
        let started = Instant::now();
        self.again_while_retriable("committing the transaction", || {
            self.producer.commit_transaction(CALL_TIMEOUT)
        })?;
        let metrics = &self.shared.metrics;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics.last_commit.set(now.as_secs_f64());
        let open: usize = self.partitions.values().map(HashMap::len).sum();
        metrics
            .open_transfers
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Calls `call` again while it fails with an error librdkafka calls retriable: a
    /// commit or an offsets call that timed out goes on in the background, and then
    /// only the same call may follow (an abort would get a conflict, for ever).
    /// Abortable and fatal errors are returned, for [`Self::recover`].
    fn again_while_retriable(
        &self,
        what: &'static str,
        call: impl Fn() -> rdkafka::error::KafkaResult<()>,
    ) -> anyhow::Result<()> {
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && !self.shutdown.is_cancelled() =>
                {
                    tracing::warn!(error = %e, "{what}: retrying the same call");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(anyhow::Error::from(e).context(what)),
            }
        }
    }

    fn commit_or_rewind(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        match self.commit(consumer) {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// After a failed step: abort, and go back to the last commit: state and positions.
    /// Transient failures (the broker restarting) are waited out; fatal producer errors
    /// (fenced by another instance with this id) end the aggregator.
    fn recover(&mut self, consumer: &GroupConsumer, e: anyhow::Error) -> anyhow::Result<()> {
        if is_fatal(&e) {
            return Err(e.context(
                "fatal transactional error (another renderer with the same HOOKLINE_INSTANCE_ID?)",
            ));
        }
        tracing::warn!(error = %format!("{e:#}"), "aggregator transaction failed; rewinding to the last commit");
        loop {
            let attempt = self.abort().and_then(|()| self.rewind(consumer));
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) if self.shutdown.is_cancelled() => {
                    tracing::warn!(error = %format!("{e:#}"), "stopping before the aggregator could rewind");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot rewind yet; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Aborts the open transaction, if any (retrying while the broker is away).
    fn abort(&mut self) -> anyhow::Result<()> {
        self.txn = None;
        loop {
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) if is_fatal_kafka(&e) => {
                    return Err(anyhow::Error::from(e).context("aborting the transaction"));
                }
                // No transaction in progress: nothing to abort.
                Err(KafkaError::Transaction(r)) if r.code() == RDKafkaErrorCode::State => {
                    return Ok(());
                }
                Err(e) if self.shutdown.is_cancelled() => {
                    return Err(anyhow::Error::from(e).context("aborting the transaction"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot abort the transaction yet; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Positions back to the committed offsets, state rebuilt from the changelog.
    fn rewind(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let assignment = consumer.assignment()?;
        let committed = consumer.committed_offsets(assignment, CALL_TIMEOUT)?;
        let mut seek = TopicPartitionList::new();
        self.partitions.clear();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(e.topic(), e.partition(), offset)?;
            self.restore(e.partition())?;
        }
        let result = consumer.seek_partitions(seek, CALL_TIMEOUT)?;
        for e in result.elements() {
            if let Err(err) = e.error() {
                anyhow::bail!("cannot seek partition {} back: {err}", e.partition());
            }
        }
        Ok(())
    }

    /// Rebuilds the open transfers of `events` partition `p` from changelog partition `p`.
    fn restore(&mut self, p: i32) -> anyhow::Result<()> {
        let mut transfers: HashMap<String, Transfer> = HashMap::new();
        let registry = &self.shared.registry;
        let topic = &self.shared.topics.sensitive_trace_changelog;
        // Everything written before now, once its transaction is decided: the last
        // commit of a previous owner may not have its markers yet.
        // Right after a broker restart the partition can be unknown for a moment
        // (stale metadata): that is retried, not a reason to stop the renderer.
        let (_, high) = patiently(
            "reading the changelog's high watermark",
            &self.shutdown,
            || self.changelog.fetch_watermarks(topic, p, CALL_TIMEOUT),
        )?;
        let end = read_changelog(
            &self.changelog,
            topic,
            p,
            Offset::Beginning,
            Until::Position(high),
            |m| {
                restore_record(&mut transfers, registry, p, m);
                false
            },
        )?;
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let floor = floors.entry(p).or_insert(0);
        *floor = (*floor).max(end);
        drop(floors);
        tracing::debug!(
            partition = p,
            open_transfers = transfers.len(),
            "aggregation state restored"
        );
        self.partitions.insert(p, transfers);
        Ok(())
    }

    fn floor(&self, p: i32) -> i64 {
        self.floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&p)
            .copied()
            .unwrap_or(0)
    }

    /// Every endpoint acknowledged before now is seen.
    fn sync_endpoints(&self) -> anyhow::Result<()> {
        let since = Instant::now();
        self.runtime
            .block_on(self.shared.endpoints.sync_after(since))
            .context("syncing endpoints")
    }

    fn trace_endpoints(&self) -> Vec<Arc<Configured>> {
        self.shared
            .endpoints
            .select(|c| matches!(c.as_ref(), Configured::Traces(_)))
    }
}

/// A sensitive-trace endpoint as the table holds it: compiled, or refused with why.
type EndpointTraces = Result<CompiledTraces, (wire::Endpoint, RenderError)>;

/// A part rendered, or its traces with why it could not be (then dead-lettered sealed,
/// and sized by the traces so the split goes on).
enum Rendered {
    Request(TracesRequest),
    Failed {
        error: RenderError,
        traces_json: Redacted<String>,
    },
}

/// Renders one batch for one endpoint.
struct BatchRender<'a> {
    compiled: &'a EndpointTraces,
    environment: &'a str,
    transfer_id: Option<&'a str>,
    destination_id: &'a str,
    source_ids: &'a [String],
    model_ids: &'a [String],
    timestamp: &'a str,
    reason: FlushReason,
}

impl RenderPart for BatchRender<'_> {
    type Request = Rendered;
    type Error = std::convert::Infallible;

    fn render(
        &mut self,
        traces_json: &str,
        part: u32,
        last: bool,
    ) -> Result<Rendered, std::convert::Infallible> {
        let batch = TraceBatch {
            transfer_id: self.transfer_id,
            destination_id: self.destination_id,
            traces_json,
            source_ids: self.source_ids,
            model_ids: self.model_ids,
            timestamp: self.timestamp,
            part,
            last_part: last,
            flush_reason: self.reason,
        };
        let rendered = match self.compiled {
            Ok(compiled) => render::render_traces(compiled, &batch, self.environment),
            Err((_, e)) => Err(e.clone()),
        };
        Ok(match rendered {
            Ok(request) => Rendered::Request(request),
            Err(error) => Rendered::Failed {
                error,
                traces_json: Redacted::new(traces_json.to_owned()),
            },
        })
    }

    fn body_len(request: &Rendered) -> usize {
        match request {
            Rendered::Request(r) => r.body.len(),
            Rendered::Failed { traces_json, .. } => traces_json.expose().len(),
        }
    }
}

/// Applies one changelog record to the open transfers being rebuilt.
fn restore_record(
    transfers: &mut HashMap<String, Transfer>,
    registry: &Registry,
    p: i32,
    m: &BorrowedMessage<'_>,
) {
    let Some((transfer_id, _)) = m.key().and_then(parse_key) else {
        return;
    };
    let Some(bytes) = m.payload() else {
        // A flush's tombstones: the transfer was sent.
        transfers.remove(transfer_id);
        return;
    };
    let Ok(record) = registry.decode::<AggregatedTrace>(bytes) else {
        // Kept as a trace of its transfer: the flush dead-letters what it cannot read.
        tracing::warn!(
            partition = p,
            offset = m.offset(),
            code = "HL-TRACE-UNREADABLE",
            "unreadable changelog record"
        );
        return;
    };
    let transfer = transfers
        .entry(record.transfer_id.clone())
        .or_insert_with(|| Transfer {
            destination_id: record.destination_id.clone(),
            first_event_id: record.event_id.clone(),
            opened_at_ms: record.opened_at_ms,
            traces: 0,
            source_ids: Vec::new(),
            model_ids: Vec::new(),
            scan_from: m.offset(),
            links: Vec::new(),
        });
    transfer.traces = transfer.traces.max(record.seq + 1);
    transfer.add_ids(record.source_id.as_deref(), record.model_id.as_deref());
}

/// Where a read of a changelog partition ends.
enum Until {
    /// Once the position reached this offset: a high watermark read before, so the
    /// read waits for every transaction written below it to be committed or aborted.
    Position(i64),
    /// Once the callback says so (it saw every record it expects).
    Done,
}

/// Reads changelog partition `p` from `from` (read_committed), calling `f` on each
/// record; `f` answers whether it has seen all it needs. Returns the position reached.
///
/// The end of the partition a read_committed consumer sees is the last stable offset,
/// and a commit's markers are written after `commit_transaction` returns: reaching
/// the end is not enough, the read goes on until `until`.
fn read_changelog(
    reader: &ChangelogReader,
    topic: &str,
    p: i32,
    from: Offset,
    until: Until,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, from)?;
    reader.assign(&tpl)?;
    let deadline = Instant::now() + READ_PATIENCE;
    let start = match from {
        Offset::Offset(o) => o,
        _ => 0,
    };
    let position = || match reader
        .position()
        .ok()
        .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()))
    {
        Some(Offset::Offset(o)) => o.max(start),
        _ => start,
    };
    let reached = |target: i64| position() >= target;
    let result = loop {
        if let Until::Position(target) = until
            && reached(target)
        {
            break Ok(());
        }
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if f(&m) {
                    break Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None if Instant::now() <= deadline => {}
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                break Err(anyhow::anyhow!(
                    "reading changelog partition {p} did not end within {READ_PATIENCE:?}"
                ));
            }
            Some(Err(e)) => break Err(anyhow::Error::from(e).context("reading the changelog")),
        }
    };
    let end = position();
    reader.unassign()?;
    result.map(|()| end)
}

/// The span of a transfer's flush, linked to its traces' events; `Span::none()` when
/// tracing is off. Carries ids and counts, never a trace.
fn flush_span(transfer_id: &str, transfer: &Transfer, reason: FlushReason) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "flush sensitive-traces",
        otel.kind = "producer",
        hookline.transfer.id = %transfer_id,
        hookline.flush.reason = reason.as_str(),
        hookline.traces = transfer.traces,
        hookline.links = transfer.links.len(),
    );
    for link in &transfer.links {
        span.add_link(link.clone());
    }
    span
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

fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<KafkaError>())
        .any(is_fatal_kafka)
}

fn is_fatal_kafka(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(r) if r.is_fatal())
}

/// The trace object receivers get: the seed's fields, in its order, without nulls.
fn trace_object(data: &Value) -> Redacted<String> {
    let mut obj = Map::new();
    for field in TRACE_FIELDS {
        if let Some(v) = data.get(field).filter(|v| !v.is_null()) {
            obj.insert(field.to_owned(), v.clone());
        }
    }
    Redacted::new(Value::Object(obj).to_string())
}

/// The associated data of a dead letter's sealed payload (traces that could not be rendered).
fn dead_letter_context(id: &str) -> String {
    format!("dead-letter/{id}/payload")
}

/// The associated data of a sealed trace on the changelog.
fn trace_context(transfer_id: &str, seq: i32) -> String {
    format!("trace/{transfer_id}/{seq}")
}

fn changelog_key(transfer_id: &str, seq: i32) -> Vec<u8> {
    format!("{transfer_id}#{seq}").into_bytes()
}

fn parse_key(key: &[u8]) -> Option<(&str, i32)> {
    let (transfer_id, seq) = std::str::from_utf8(key).ok()?.rsplit_once('#')?;
    Some((transfer_id, seq.parse().ok()?))
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_keys_round_trip_whatever_the_transfer_id() {
        for id in ["t-1", "a#b", "#", "ü/ß"] {
            let key = changelog_key(id, 42);
            assert_eq!(parse_key(&key), Some((id, 42)));
        }
        assert_eq!(parse_key(b"no-seq"), None);
        assert_eq!(parse_key(b"t#x"), None);
    }

    #[test]
    fn trace_objects_keep_the_seed_fields_in_order_without_nulls() {
        let data = serde_json::json!({"transfer_id": "t", "trace": "boom", "destination_id": "d", "source_id": null,
            "model_id": "m", "execution_context": "write_destination"});
        assert_eq!(
            trace_object(&data).expose(),
            r#"{"destination_id":"d","model_id":"m","execution_context":"write_destination","trace":"boom"}"#
        );
    }

    #[test]
    fn transfers_keep_distinct_ids_in_arrival_order() {
        let mut t = Transfer {
            destination_id: String::new(),
            first_event_id: String::new(),
            opened_at_ms: 0,
            traces: 0,
            source_ids: Vec::new(),
            model_ids: Vec::new(),
            scan_from: 0,
            links: Vec::new(),
        };
        t.add_ids(Some("s2"), Some("m1"));
        t.add_ids(Some("s1"), None);
        t.add_ids(Some("s2"), Some(""));
        assert_eq!(t.source_ids, ["s2", "s1"]);
        assert_eq!(t.model_ids, ["m1"]);
    }
}
