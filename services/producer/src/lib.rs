//! hookline-producer: the way into the pipeline for everything that does not write
//! Kafka itself. HTTP ingest of events (validated against the Avro schemas) and the
//! management API for webhooks and sensitive-trace endpoints, whose system of record
//! is the compacted `endpoints` topic, webhooks' recent deliveries, read from the
//! attempt log (`delivery-attempts`), and dead letters (list, show, replay).
//!
//! Architecture invariant: the API answers a write only after Kafka acknowledged it.

mod api;
mod attempt_index;
mod attempt_log;
mod bodies;
mod dead_letters;
mod deliveries;
mod delivery_index;
mod endpoint_requests;
mod endpoints;
mod error;
mod events;
mod fields;
mod framing;
mod keys;
mod listing;
mod metrics;
mod openapi;
mod policy;
mod requests;
mod reseal;
mod table_writer;
mod test_delivery;
mod trace_endpoints;
mod webhook_fields;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafka_io::{KafkaSettings, Table, Topics};
use serde::{Deserialize, Serialize};
use service_kit::Secret;
use tokio_util::sync::CancellationToken;
use wire::{Endpoint, Registry};

pub use api::router;

/// The producer's configuration (`HOOKLINE_*` variables, see the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection and topic layout.
    #[serde(flatten)]
    pub kafka: KafkaSettings,
    /// Listen address (`HOOKLINE_API_ADDR`).
    pub api_addr: String,
    /// Bearer token every route but `/health` requires (`HOOKLINE_API_TOKEN`).
    pub api_token: Secret,
    /// Serve without a token; must be asked for explicitly (`HOOKLINE_API_INSECURE_NO_AUTH=1`).
    pub api_insecure_no_auth: bool,
    /// Largest request body accepted (`HOOKLINE_API_MAX_BODY_BYTES`).
    pub api_max_body_bytes: usize,
    /// Seals secrets before they reach Kafka: 32 bytes, base64 (`HOOKLINE_MASTER_KEY`).
    pub master_key: Secret,
    /// Earlier master keys, comma-separated: they open what they sealed, never seal
    /// (`HOOKLINE_MASTER_KEYS_PREVIOUS`).
    pub master_keys_previous: Secret,
    /// How long a rotated-out Standard Webhooks secret still signs (`HOOKLINE_SECRET_ROTATION_OVERLAP`).
    #[serde(with = "humantime_serde")]
    pub secret_rotation_overlap: Duration,
    /// Bound on the shutdown drain (`HOOKLINE_SHUTDOWN_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `prod` or `staging`: `.Environment` in the creation-time dry runs (`HOOKLINE_ENVIRONMENT`).
    pub environment: String,
    /// Attempts the in-memory attempt log holds in all, and reads back at start
    /// (`HOOKLINE_ATTEMPT_LOG_MAX_ATTEMPTS`).
    pub attempt_log_max_attempts: usize,
    /// Health and metrics listener (`HOOKLINE_ADMIN_ADDR`; port 0: any free port).
    pub admin_addr: String,
    /// How events are framed on `events` (`HOOKLINE_EVENTS_FRAMING`): `single_object`,
    /// or `schema_registry` (the event schema registered under its subject first).
    pub events_framing: String,
    /// The Schema Registry, for `HOOKLINE_EVENTS_FRAMING=schema_registry`.
    #[serde(flatten)]
    pub schema_registry: service_kit::SchemaRegistryConfig,
    /// Networks test requests may reach besides public addresses, as the dispatcher's
    /// (`HOOKLINE_ALLOWED_NETWORKS`).
    pub allowed_networks: String,
    /// Timeout of a test request when the endpoint sets none, as the dispatcher's
    /// (`HOOKLINE_DELIVERY_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaSettings::default(),
            api_addr: "127.0.0.1:8080".to_owned(),
            api_token: Secret::default(),
            api_insecure_no_auth: false,
            api_max_body_bytes: 1024 * 1024,
            master_key: Secret::default(),
            master_keys_previous: Secret::default(),
            secret_rotation_overlap: Duration::from_secs(24 * 3600),
            shutdown_timeout: Duration::from_secs(30),
            environment: "prod".to_owned(),
            attempt_log_max_attempts: 100_000,
            admin_addr: "127.0.0.1:8081".to_owned(),
            events_framing: framing::SINGLE_OBJECT.to_owned(),
            schema_registry: service_kit::SchemaRegistryConfig::default(),
            allowed_networks: String::new(),
            delivery_timeout: Duration::from_secs(15),
        }
    }
}

/// Allowed values of `HOOKLINE_ATTEMPT_LOG_MAX_ATTEMPTS`.
const ATTEMPT_LOG_BOUNDS: std::ops::RangeInclusive<usize> = 1_000..=10_000_000;
/// Attempts the attempt log keeps per delivery (the newest): more than the 51 of the
/// longest schedule (50 retries), so a delivery's whole first run is kept.
const ATTEMPTS_PER_DELIVERY: usize = 100;

/// What the handlers share.
pub struct AppState {
    registry: Registry,
    topics: Topics,
    producer: rdkafka::producer::FutureProducer,
    endpoints: Table<Endpoint>,
    /// The one writer of `endpoints` and `keys` (see `table_writer`).
    writer: table_writer::TableWriter,
    token: Option<Secret>,
    max_body_bytes: usize,
    sealer: signing::Sealer,
    keys: Table<wire::SigningKey>,
    rotation_overlap: Duration,
    environment: String,
    attempts: attempt_log::AttemptLog,
    dead_letters: dead_letter_ops::Store,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
    /// The Schema Registry id events are framed with; `None`: single-object encoding.
    events_schema_id: Option<u32>,
    /// Sends test requests (`POST /webhooks/{id}/test`).
    tester: test_delivery::Tester,
}

/// Runs the producer until `shutdown` is cancelled. The listener is bound first, so
/// a caller (a test) can pass port 0 and read the address from `on_listen`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.kafka.security.check().map_err(anyhow::Error::msg)?;
    let addr: SocketAddr = config
        .api_addr
        .parse()
        .with_context(|| format!("HOOKLINE_API_ADDR `{}` is not host:port", config.api_addr))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    serve(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let token = match (config.api_token.is_empty(), config.api_insecure_no_auth) {
        (false, _) => Some(config.api_token.clone()),
        (true, true) => {
            tracing::warn!(
                "HOOKLINE_API_INSECURE_NO_AUTH is set: the API accepts requests without a token"
            );
            None
        }
        (true, false) => anyhow::bail!(
            "HOOKLINE_API_TOKEN is not set: refusing to serve an open API (set HOOKLINE_API_INSECURE_NO_AUTH=1 to allow it)"
        ),
    };
    anyhow::ensure!(
        matches!(config.environment.as_str(), "prod" | "staging"),
        "HOOKLINE_ENVIRONMENT must be prod or staging"
    );
    anyhow::ensure!(
        ATTEMPT_LOG_BOUNDS.contains(&config.attempt_log_max_attempts),
        "HOOKLINE_ATTEMPT_LOG_MAX_ATTEMPTS must be from {} to {}",
        ATTEMPT_LOG_BOUNDS.start(),
        ATTEMPT_LOG_BOUNDS.end()
    );
    let sealer = service_kit::sealer(&config.master_key, &config.master_keys_previous)?;
    let registry = Registry::bundled().context("loading schemas")?;
    let events_schema_id = framing::events_schema_id(&config).await?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    let mut exported = admin::Registry::default();
    let metrics = metrics::Metrics::register(&mut exported);
    let used = vec![
        topics.events.clone(),
        topics.endpoints.clone(),
        topics.keys.clone(),
        topics.delivery_attempts.clone(),
        topics.delivery_index.clone(),
    ];
    let (_, readiness) =
        service_kit::start_admin(&config.admin_addr, &config.kafka, used, exported, &shutdown)
            .await?;
    kafka_io::ensure_topics(&config.kafka, &topics.specs())
        .await
        .context("creating topics")?;
    let producer =
        kafka_io::producer(&config.kafka, "hookline-producer").context("creating producer")?;
    let decoder = Arc::new(Registry::bundled().context("loading schemas")?);
    let bounds = attempt_index::Bounds {
        total_attempts: config.attempt_log_max_attempts,
        per_endpoint: deliveries::MAX_LIMIT,
        per_delivery: ATTEMPTS_PER_DELIVERY,
    };
    let attempts = attempt_log::AttemptLog::start(
        &config.kafka,
        &topics.delivery_attempts,
        &topics.delivery_index,
        bounds,
        decoder.clone(),
        shutdown.child_token(),
    )
    .await
    .context("reading the attempt log")?;
    let endpoints = Table::start(
        &config.kafka,
        &topics.endpoints,
        move |bytes| decoder.decode::<Endpoint>(bytes).ok(),
        shutdown.child_token(),
    )
    .await
    .context("reading endpoints")?;
    anyhow::ensure!(
        config.api_max_body_bytes <= kafka_io::MAX_RECORD_BYTES / 2,
        "HOOKLINE_API_MAX_BODY_BYTES must be at most {} (half the largest Kafka record)",
        kafka_io::MAX_RECORD_BYTES / 2
    );
    let max_body_bytes = config.api_max_body_bytes;
    let keys = service_kit::check_master_key(&config.kafka, &topics, &sealer, &shutdown).await?;
    let dead_letters =
        dead_letter_ops::Store::new(config.kafka.clone()).context("loading schemas")?;
    let requests: rdkafka::consumer::StreamConsumer = kafka_io::consumer_config(
        &config.kafka,
        "hookline-producer-endpoint-requests",
        &endpoint_requests::group(&config.kafka.topic_prefix),
    )
    .create()
    .context("creating the endpoint requests consumer")?;
    rdkafka::consumer::Consumer::subscribe(&requests, &[topics.endpoint_requests.as_str()])
        .context("subscribing to endpoint requests")?;
    let tester = test_delivery::Tester::new(&config.allowed_networks, config.delivery_timeout)
        .context("HOOKLINE_ALLOWED_NETWORKS")?;
    let state = Arc::new(AppState {
        tester,
        registry,
        writer: table_writer::TableWriter::new(&config.kafka),
        topics,
        producer,
        endpoints,
        token,
        max_body_bytes,
        sealer,
        keys,
        rotation_overlap: config.secret_rotation_overlap,
        environment: config.environment.clone(),
        attempts,
        dead_letters,
        metrics,
        shutdown: shutdown.clone(),
        events_schema_id,
    });
    keys::ensure_signing_key(&state).await?;
    tokio::spawn(endpoint_requests::follow(state.clone(), requests));
    readiness.started();
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "producer API listening");
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        result = std::future::IntoFuture::into_future(server) => result.context("serving the API")?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(config.shutdown_timeout).await } => {
            tracing::warn!("requests still open after the shutdown timeout; exiting");
        }
    }
    Ok(())
}
