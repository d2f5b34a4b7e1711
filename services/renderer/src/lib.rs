//! hookline-renderer: consumes `events` and the `endpoints` table, renders one HTTP
//! request per (event, subscribed endpoint) and writes it to `rendered-deliveries`,
//! keyed by endpoint id. An event that cannot be read goes to `dead-letter`.
//!
//! Architecture invariant: the renderer never calls an endpoint. It stores an event's
//! offset only after Kafka acknowledged every output of that event.

pub mod render;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafka_io::{ConsumeOptions, KafkaSettings, Outcome, Record, Table, Topics};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wire::{DeadLetter, Endpoint, Registry};

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
    /// Bound on the shutdown drain (`HOOKLINE_SHUTDOWN_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaSettings::default(),
            renderer_group: String::new(),
            renderer_max_in_flight: 10_000,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

struct Renderer {
    registry: Registry,
    topics: Topics,
    endpoints: Table<Endpoint>,
    producer: FutureProducer,
    shutdown: CancellationToken,
}

/// Runs the renderer until `shutdown` is cancelled.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.renderer_group.is_empty() {
        config.renderer_group = format!("{}hookline-renderer", config.kafka.topic_prefix);
    }
    let registry = Registry::bundled().context("loading schemas")?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    kafka_io::ensure_topics(&config.kafka, &topics.specs()).await.context("creating topics")?;
    let table_registry = Arc::new(Registry::bundled().context("loading schemas")?);
    let endpoints = Table::start(
        &config.kafka,
        &topics.endpoints,
        move |bytes| table_registry.decode::<Endpoint>(bytes).ok(),
        shutdown.child_token(),
    )
    .await
    .context("reading endpoints")?;
    let producer = kafka_io::producer(&config.kafka, "hookline-renderer").context("creating producer")?;
    let (consumer, tracker) =
        kafka_io::group_consumer(&config.kafka, "hookline-renderer", &config.renderer_group, &topics.events)
            .context("creating consumer")?;
    tracing::info!(topic = %topics.events, group = %config.renderer_group, "renderer started");
    let renderer = Arc::new(Renderer { registry, topics, endpoints, producer, shutdown: shutdown.clone() });
    let options = ConsumeOptions { max_in_flight: config.renderer_max_in_flight, drain_timeout: config.shutdown_timeout };
    kafka_io::consume_concurrently(&consumer, &tracker, &options, &shutdown, |record| {
        let renderer = renderer.clone();
        async move { renderer.handle(record).await }
    })
    .await;
    Ok(())
}

impl Renderer {
    async fn handle(&self, record: Record) -> Outcome {
        let payload = record.payload.as_deref().unwrap_or_default();
        let event = match self.registry.decode_event(payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, code = e.code(), reason = %e, "unreadable event; dead-lettered");
                let letter = self.dead_letter(&record, e.code(), &e.to_string(), None);
                return self.write_dead_letter(&letter).await;
            }
        };
        // Every endpoint written before the event must be seen: sync the table up to it.
        let written_at = record.timestamp_ms.unwrap_or(i64::MAX);
        while let Err(e) = self.endpoints.sync_covering(written_at).await {
            tracing::warn!(error = %e, "cannot sync endpoints; retrying");
            tokio::select! {
                _ = self.shutdown.cancelled() => return Outcome::Abandoned,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        let rendered_at = wire::now_rfc3339();
        let subscribers: Vec<Endpoint> =
            self.endpoints.values().into_iter().filter(|ep| render::subscribed(ep, &event)).collect();
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, endpoints = subscribers.len(), "rendering");
        let sends = subscribers.into_iter().map(|endpoint| {
            let event = &event;
            let rendered_at = &rendered_at;
            let record = &record;
            async move {
                match render::render(event, &endpoint, rendered_at) {
                    Ok(delivery) => {
                        let (code, reason) = match self.registry.encode(&delivery) {
                            Ok(bytes) => match self.send(&self.topics.rendered_deliveries, &endpoint.id, &bytes).await {
                                Ok(outcome) => return outcome,
                                Err(e) => (e.code(), e.to_string()),
                            },
                            Err(e) => (e.code(), e.to_string()),
                        };
                        tracing::warn!(event_id = %event.id, endpoint_id = %endpoint.id, code, "cannot write the delivery; dead-lettered");
                        let mut letter = self.dead_letter(record, code, &reason, Some(&endpoint.id));
                        letter.event_id = Some(event.id.clone());
                        letter.delivery_id = Some(delivery.delivery_id.clone());
                        self.write_dead_letter(&letter).await
                    }
                    Err(e) => {
                        tracing::warn!(event_id = %event.id, endpoint_id = %endpoint.id, code = e.code(), "cannot render; dead-lettered");
                        let mut letter = self.dead_letter(record, e.code(), &e.to_string(), Some(&endpoint.id));
                        letter.event_id = Some(event.id.clone());
                        letter.delivery_id = Some(render::delivery_id(&event.id, &endpoint.id));
                        self.write_dead_letter(&letter).await
                    }
                }
            }
        });
        let outcomes = futures::future::join_all(sends).await;
        if outcomes.iter().all(|o| *o == Outcome::Done) { Outcome::Done } else { Outcome::Abandoned }
    }

    /// Sends one record; `Err` only when Kafka refuses it for good.
    async fn send(&self, topic: &str, key: &str, bytes: &[u8]) -> Result<Outcome, kafka_io::SendError> {
        match kafka_io::send_durably(&self.producer, topic, key.as_bytes(), Some(bytes), None, &self.shutdown).await {
            Ok(_) => Ok(Outcome::Done),
            Err(kafka_io::SendError::Cancelled) => Ok(Outcome::Abandoned),
            Err(e) => Err(e),
        }
    }

    async fn write_dead_letter(&self, letter: &DeadLetter) -> Outcome {
        let mut letter = letter.clone();
        loop {
            let bytes = match self.registry.encode(&letter) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(code = e.code(), "cannot encode a dead letter; record lost, operator action needed");
                    return Outcome::Done;
                }
            };
            match self.send(&self.topics.dead_letter, &letter.id, &bytes).await {
                Ok(outcome) => return outcome,
                Err(e) if letter.payload.is_some() => {
                    // Too large with the raw record: keep the reason and where to find it.
                    tracing::warn!(code = e.code(), "dead letter refused with its payload; writing it without");
                    letter.payload = None;
                }
                Err(e) => {
                    tracing::error!(code = e.code(), "dead letter refused by kafka; record lost, operator action needed");
                    return Outcome::Done;
                }
            }
        }
    }

    fn dead_letter(&self, record: &Record, code: &str, reason: &str, endpoint_id: Option<&str>) -> DeadLetter {
        DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            reason_code: code.to_owned(),
            reason: reason.to_owned(),
            failed_at: wire::now_rfc3339(),
            stage: "renderer".to_owned(),
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            event_id: None,
            endpoint_id: endpoint_id.map(str::to_owned),
            delivery_id: None,
            delivery: None,
            payload: record.payload.clone(),
            attempts: Vec::new(),
        }
    }
}
