//! hookline-renderer: consumes `events` and the `endpoints` table, renders one HTTP
//! request per (event, subscribed webhook) and writes it to `rendered-deliveries`,
//! keyed by endpoint id. An event that cannot be read goes to `dead-letter`.
//! Sensitive traces take another path, [`aggregate`]: gathered per transfer on a
//! changelog and sent once the transfer ends, exactly once, through Kafka transactions.
//!
//! Architecture invariant: the renderer never calls an endpoint. The webhook path
//! stores an event's offset only after Kafka acknowledged every output of that event;
//! the aggregator commits offsets in the transaction that holds their outputs.

mod aggregate;
mod claim;
mod configured;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
mod metrics;
mod output;
mod schemas;
mod sensitive;
mod split;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dead_letter::DeadLetters;
use kafka_io::{KafkaSettings, Outcome, Record, SendError, Table, Topics};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use wire::{Endpoint, Event, EventReader, Read, Registry};

use crate::configured::{Compiled, configure, endpoint_of};
pub(crate) use crate::configured::{Configured, Endpoints};

/// The renderer's configuration (`HOOKLINE_*` variables, see the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection and topic layout.
    #[serde(flatten)]
    pub kafka: KafkaSettings,
    /// Consumer group of the renderers (`HOOKLINE_RENDERER_GROUP`); empty means
    /// `<topic prefix>hookline-renderer`, so each pipeline on a cluster has its own group.
    pub renderer_group: String,
    /// Events rendered at once (`HOOKLINE_RENDERER_MAX_IN_FLIGHT`).
    pub renderer_max_in_flight: usize,
    /// MiB of events rendered at once (`HOOKLINE_RENDERER_MAX_IN_FLIGHT_MIB`): with the
    /// count above, what bounds the webhook path's memory when events are large.
    pub renderer_max_in_flight_mib: usize,
    /// Bound on the shutdown drain (`HOOKLINE_SHUTDOWN_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `prod` or `staging`: `.Environment` in templates (`HOOKLINE_ENVIRONMENT`).
    pub environment: String,
    /// Opens endpoint secrets and seals what deliveries carry (`HOOKLINE_MASTER_KEY`).
    pub master_key: service_kit::Secret,
    /// Earlier master keys, comma-separated: they open what they sealed, never seal
    /// (`HOOKLINE_MASTER_KEYS_PREVIOUS`).
    pub master_keys_previous: service_kit::Secret,
    /// This renderer's name among its replicas (`HOOKLINE_INSTANCE_ID`), unique and
    /// stable across restarts (a pod name): the aggregator's transactional id, so a
    /// restarted instance aborts what it left open. Empty: the host name.
    pub instance_id: String,
    /// Consumer group of the sensitive-trace aggregators (`HOOKLINE_AGGREGATOR_GROUP`);
    /// empty means `<topic prefix>hookline-aggregator`.
    pub aggregator_group: String,
    /// How often the aggregator commits its transaction (`HOOKLINE_AGGREGATOR_COMMIT_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub aggregator_commit_interval: Duration,
    /// Kafka `transaction.timeout.ms` of the aggregator (`HOOKLINE_AGGREGATOR_TRANSACTION_TIMEOUT`):
    /// how long a crashed instance's open transaction holds back readers until the broker aborts it.
    #[serde(with = "humantime_serde")]
    pub aggregator_transaction_timeout: Duration,
    /// A transfer whose end never arrives is flushed this long after its first trace
    /// (`HOOKLINE_SENSITIVE_TRACE_MAX_AGE`).
    #[serde(with = "humantime_serde")]
    pub sensitive_trace_max_age: Duration,
    /// Largest body of one sensitive-trace request; more traces are split into numbered
    /// requests (`HOOKLINE_SENSITIVE_TRACE_MAX_BODY_BYTES`).
    pub sensitive_trace_max_body_bytes: usize,
    /// Health and metrics listener (`HOOKLINE_ADMIN_ADDR`; port 0: any free port).
    pub admin_addr: String,
    /// The Schema Registry that registry-framed events name their writer schema in.
    #[serde(flatten)]
    pub schema_registry: service_kit::SchemaRegistryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaSettings::default(),
            renderer_group: String::new(),
            renderer_max_in_flight: 10_000,
            renderer_max_in_flight_mib: 64,
            shutdown_timeout: Duration::from_secs(30),
            environment: "prod".to_owned(),
            master_key: service_kit::Secret::default(),
            master_keys_previous: service_kit::Secret::default(),
            instance_id: String::new(),
            aggregator_group: String::new(),
            aggregator_commit_interval: Duration::from_millis(100),
            aggregator_transaction_timeout: Duration::from_secs(30),
            sensitive_trace_max_age: Duration::from_secs(24 * 3600),
            sensitive_trace_max_body_bytes: 1024 * 1024,
            admin_addr: "127.0.0.1:8082".to_owned(),
            schema_registry: service_kit::SchemaRegistryConfig::default(),
        }
    }
}

struct Renderer {
    registry: Registry,
    /// Reads `events` in either framing (Schema Registry writer schemas cached here).
    events: Arc<EventReader>,
    registry_metrics: metrics::RegistryMetrics,
    topics: Topics,
    endpoints: Endpoints,
    producer: FutureProducer,
    dead_letters: DeadLetters,
    environment: String,
    sealer: Arc<signing::Sealer>,
    metrics: metrics::Metrics,
    /// The consumer group, for the `process` spans.
    group: String,
    shutdown: CancellationToken,
}

/// Runs the renderer until `shutdown` is cancelled.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.kafka.security.check().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        matches!(config.environment.as_str(), "prod" | "staging"),
        "HOOKLINE_ENVIRONMENT must be prod or staging"
    );
    if config.renderer_group.is_empty() {
        config.renderer_group = format!("{}hookline-renderer", config.kafka.topic_prefix);
    }
    if config.aggregator_group.is_empty() {
        config.aggregator_group = format!("{}hookline-aggregator", config.kafka.topic_prefix);
    }
    if config.instance_id.is_empty() {
        config.instance_id = claim::host_name();
    }
    // Bodies are sealed (base64: 4/3) into records of at most MAX_RECORD_BYTES.
    anyhow::ensure!(
        (4 * 1024..=4 * 1024 * 1024).contains(&config.sensitive_trace_max_body_bytes),
        "HOOKLINE_SENSITIVE_TRACE_MAX_BODY_BYTES must be between 4096 and 4194304"
    );
    let sealer = Arc::new(service_kit::sealer(
        &config.master_key,
        &config.master_keys_previous,
    )?);
    let registry = Registry::bundled().context("loading schemas")?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    let mut exported = admin::Registry::default();
    let metrics = metrics::Metrics::register(&mut exported);
    let aggregator_metrics = metrics::AggregatorMetrics::register(&mut exported);
    let registry_metrics = metrics::RegistryMetrics::register(&mut exported);
    let events = Arc::new(EventReader::new(
        &registry,
        config.schema_registry.client()?,
    )?);
    let lag = kafka_io::ConsumerStats::default();
    lag.register(&mut exported);
    let producer =
        kafka_io::producer(&config.kafka, "hookline-renderer").context("creating producer")?;
    let dead_letters = DeadLetters::new(producer.clone(), topics.dead_letter.clone(), "renderer");
    dead_letters.register(&mut exported);
    let used = vec![
        topics.events.clone(),
        topics.endpoints.clone(),
        topics.rendered_deliveries.clone(),
        topics.sensitive_trace_changelog.clone(),
    ];
    let (_, readiness) =
        service_kit::start_admin(&config.admin_addr, &config.kafka, used, exported, &shutdown)
            .await?;
    kafka_io::ensure_topics(&config.kafka, &topics.specs())
        .await
        .context("creating topics")?;
    // Before the aggregator takes the transactional id and the static membership.
    let claim = claim::Claim::take(
        &config.kafka,
        &topics.instance_claims,
        &config.instance_id,
        Arc::new(Registry::bundled()?),
        &shutdown,
    )
    .await?;
    // The renderer only checks the key; the table it reads for that stops afterwards.
    let check = shutdown.child_token();
    service_kit::check_master_key(&config.kafka, &topics, &sealer, &check).await?;
    check.cancel();
    let table_registry = Arc::new(Registry::bundled().context("loading schemas")?);
    // Templates are parsed once, when the endpoint is read; one that does not parse
    // (written by a newer version, or by hand) dead-letters its deliveries.
    let endpoints = Table::start(
        &config.kafka,
        &topics.endpoints,
        {
            let sealer = sealer.clone();
            move |bytes| {
                let endpoint = table_registry.decode::<Endpoint>(bytes).ok()?;
                Some(Arc::new(configure(&sealer, endpoint)))
            }
        },
        shutdown.child_token(),
    )
    .await
    .context("reading endpoints")?;
    let (kafka, group, events_topic) = (
        config.kafka.clone(),
        config.renderer_group.clone(),
        topics.events.clone(),
    );
    let new_consumer = || {
        kafka_io::group_consumer(
            &kafka,
            "hookline-renderer",
            &group,
            &[&events_topic],
            Some(&lag),
        )
    };
    // The first joins now; another replaces it if it is ever stuck out of its group.
    let mut first = Some(new_consumer().context("creating consumer")?);
    tracing::info!(topic = %topics.events, group = %config.renderer_group, "renderer started");
    let environment = config.environment.clone();
    let aggregator = aggregate::start(
        aggregate::Settings {
            kafka: config.kafka.clone(),
            group: config.aggregator_group.clone(),
            instance_id: config.instance_id.clone(),
            transactional_id: format!(
                "{}hookline-aggregator-{}",
                config.kafka.topic_prefix, config.instance_id
            ),
            transaction_timeout: config.aggregator_transaction_timeout,
            commit_interval: config.aggregator_commit_interval,
            max_age: config.sensitive_trace_max_age,
            max_body: config.sensitive_trace_max_body_bytes,
            environment: environment.clone(),
        },
        aggregate::Shared {
            registry: Arc::new(Registry::bundled()?),
            sealer: sealer.clone(),
            topics: topics.clone(),
            endpoints: endpoints.clone(),
            metrics: aggregator_metrics,
            lag: lag.clone(),
            events: events.clone(),
            registry_metrics: registry_metrics.clone(),
        },
        shutdown.clone(),
    )
    .await
    .context("starting the sensitive-trace aggregator")?;
    let renderer = Arc::new(Renderer {
        registry,
        events,
        registry_metrics,
        topics,
        endpoints,
        producer,
        dead_letters,
        environment,
        sealer,
        metrics,
        group: config.renderer_group.clone(),
        shutdown: shutdown.clone(),
    });
    readiness.started();
    let lane = kafka_io::Lane {
        topic: events_topic.clone(),
        delay: None,
        max_in_flight: config.renderer_max_in_flight,
        max_in_flight_bytes: config
            .renderer_max_in_flight_mib
            .saturating_mul(1024 * 1024),
    };
    let consumed = kafka_io::consume_group(
        || first.take().map_or_else(new_consumer, Ok),
        &[lane],
        config.shutdown_timeout,
        &shutdown,
        |record| {
            let renderer = renderer.clone();
            async move { renderer.handle(record).await }
        },
    )
    .await
    .context("creating a consumer to replace one stuck out of its group");
    // The aggregator stops with the service, also when no consumer could replace one.
    shutdown.cancel();
    let stopped = aggregator.await.context("the aggregator thread panicked")?;
    claim.release().await;
    consumed.and(stopped)
}

impl Renderer {
    async fn handle(&self, record: Record) -> Outcome {
        let _in_flight = admin::InFlight::count(&self.metrics.in_flight);
        let span = self.process_span(&record);
        let work = self.render(&record, &span).instrument(span.clone());
        let headers = telemetry::carried(&record.headers);
        self.dead_letters
            .unless_panic(
                &self.registry,
                &record,
                headers.as_ref(),
                &self.shutdown,
                work,
            )
            .await
    }

    /// The event's `process` span, continuing the trace its record carries (the API's,
    /// or a transfer engine's own); `Span::none()` when tracing is off.
    fn process_span(&self, record: &Record) -> Span {
        if !telemetry::enabled() {
            return Span::none();
        }
        let span = tracing::info_span!(
            target: telemetry::TARGET,
            "process events",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %record.topic,
            messaging.destination.partition.id = %record.partition,
            messaging.kafka.offset = record.offset,
            messaging.consumer.group.name = %self.group,
        );
        telemetry::set_parent(&span, telemetry::record_context(&record.headers));
        span
    }

    /// Reads the record's event; while the Schema Registry cannot say what its writer
    /// schema is, the record waits (other records go on). `None`: shutting down.
    async fn read(&self, record: &Record) -> Option<Result<Event, wire::WireError>> {
        let payload = record.payload.as_deref().unwrap_or_default();
        loop {
            let id = match self.events.read_cached(&self.registry, payload) {
                Read::Done(result) => return Some(result),
                Read::Fetch(id) => id,
            };
            let fetched = schemas::fetch_patiently(
                &self.events,
                &self.registry,
                id,
                &self.registry_metrics,
                &self.shutdown,
                (record.partition, record.offset),
            )
            .await?;
            if let Err(e) = fetched {
                return Some(Err(e));
            }
        }
    }

    async fn render(&self, record: &Record, span: &Span) -> Outcome {
        let Some(read) = self.read(record).await else {
            return Outcome::Abandoned;
        };
        let decoded = read
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|mut event| {
                service_kit::open_event(&self.sealer, &self.registry, &mut event)
                    .map(|()| event)
                    .map_err(|_| {
                        (
                            "HL-SEAL-OPEN",
                            "cannot open the event's sealed fields with this HOOKLINE_MASTER_KEY"
                                .to_owned(),
                        )
                    })
            });
        let event = match decoded {
            Ok(event) => {
                #[cfg(feature = "fault-injection")]
                fault::check(&event.id);
                event
            }
            Err((code, reason)) => {
                tracing::warn!(partition = record.partition, offset = record.offset, code, reason = %reason, "unreadable event; dead-lettered");
                self.metrics.event("unreadable");
                let mut letter = self.dead_letters.letter(record, code, &reason);
                letter.payload = record.payload.clone();
                return self
                    .dead_letters
                    .write(
                        &self.registry,
                        letter,
                        telemetry::carried(&record.headers).as_ref(),
                        &self.shutdown,
                    )
                    .await;
            }
        };
        // Every endpoint acknowledged before the event was written must be seen: sync the
        // table past the moment this process received the event.
        while let Err(e) = self.endpoints.sync_after(record.received_at).await {
            if self.shutdown.is_cancelled() {
                return Outcome::Abandoned;
            }
            tracing::warn!(error = %e, "cannot sync endpoints; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rendered_at = wire::now_rfc3339();
        let subscribers: Vec<Compiled> = self
            .endpoints
            .select(|c| matches!(c.as_ref(), Configured::Webhook(ep) if render::subscribed(endpoint_of(ep), &event)))
            .into_iter()
            .filter_map(|c| match c.as_ref() {
                Configured::Webhook(ep) => Some(ep.clone()),
                Configured::Traces(_) => None,
            })
            .collect();
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, endpoints = subscribers.len(), "rendering");
        self.metrics.event(if subscribers.is_empty() {
            "unsubscribed"
        } else {
            "rendered"
        });
        // The event's body is serialised once for all its endpoints.
        let rendering = render::EventRender::new(&event);
        let outputs = subscribers
            .iter()
            .map(|compiled| self.output(record, &rendering, compiled, &rendered_at, span));
        let outcomes = futures::future::join_all(outputs).await;
        if outcomes.iter().all(|o| *o == Outcome::Done) {
            Outcome::Done
        } else {
            Outcome::Abandoned
        }
    }
}

pub(crate) use service_kit::seal_delivery;

#[cfg(test)]
mod future_size {
    use super::*;

    fn size<F: std::future::Future>(_: fn(Arc<Renderer>, Record) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every event in flight is a task: the rare dead-letter write is boxed, so a task
    /// holds what rendering needs and no more.
    #[test]
    fn an_event_in_flight_holds_a_small_task() {
        let bytes = size(|r, record| async move { r.handle(record).await });
        eprintln!("handle future: {bytes} bytes");
        // 4,352 bytes before the dead-letter write was boxed, 1,992 after (Rust 1.95, x86_64).
        assert!(bytes <= 3072, "the handle future is {bytes} bytes");
    }
}
