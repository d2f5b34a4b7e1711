//! hlfloor: the floor of hookline's architecture on one machine (issue 11).
//!
//! Three processes carry an event along hookline's path, with hookline's librdkafka
//! settings (`kafka_io::client`, the chosen profile) and HTTP libraries (axum, reqwest),
//! and do nothing else with it:
//!
//! - `ingest`: `POST /events` writes the body to `events` (keyed, so it spreads over the
//!   partitions) and answers 202 once the broker acknowledged it. Like the producer, it
//!   also reads the attempt log (`attempts`).
//! - `relay`: reads `events` and writes the body once per endpoint to `deliveries`, keyed
//!   by endpoint as the renderer keys rendered deliveries; stores the event's offset once
//!   every copy is acknowledged.
//! - `send`: reads `deliveries`, POSTs the body to `{url}/ok/{endpoint}`, writes a small
//!   record to `attempts` and stores the offset once that is acknowledged.
//!
//! No validation, Avro, endpoint table, template, signature, admission, retry or
//! metrics; offsets are stored as each record finishes, in any order (a floor to
//! measure against, not a delivery guarantee). What this reaches is what any design
//! with these hops and these libraries could reach on the machine; hookline's distance
//! from it is its own work.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use kafka_io::{KafkaProfile, KafkaSettings, TopicSpec, consumer_config, ensure_topics, producer};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "The floor of hookline's architecture: its hops, none of its work")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Prefix of the run's topics (`events`, `deliveries`, `attempts`).
    #[arg(long)]
    prefix: String,
    /// hookline's Kafka profile: balanced, latency or throughput.
    #[arg(long, default_value = "balanced")]
    profile: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// POST /events to `events`, 202 once acknowledged; also reads `attempts`.
    Ingest {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Where to write the port once listening.
        #[arg(long)]
        port_file: PathBuf,
    },
    /// `events` to one record per endpoint on `deliveries`.
    Relay {
        #[arg(long, default_value_t = 1)]
        endpoints: u32,
        /// Events in flight at most (the renderer's default bound).
        #[arg(long, default_value_t = 10_000)]
        in_flight: usize,
    },
    /// `deliveries` to POST `{url}/ok/{endpoint}`, then a record on `attempts`.
    Send {
        /// The receiver's base URL.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1)]
        endpoints: u32,
        /// Requests in flight per endpoint.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile: KafkaProfile = serde_json::from_value(serde_json::json!(args.profile))
        .context("--profile is balanced, latency or throughput")?;
    let settings = KafkaSettings {
        kafka_brokers: args.brokers,
        topic_prefix: args.prefix,
        kafka_profile: profile,
        ..KafkaSettings::default()
    };
    match args.role {
        Role::Ingest { listen, port_file } => ingest(settings, &listen, port_file).await,
        Role::Relay {
            endpoints,
            in_flight,
        } => relay(settings, endpoints, in_flight).await,
        Role::Send {
            url,
            endpoints,
            concurrency,
        } => send(settings, &url, concurrency * endpoints as usize).await,
    }
}

fn topic(settings: &KafkaSettings, name: &str) -> String {
    format!("{}{name}", settings.topic_prefix)
}

/// A group consumer with hookline's settings (offsets stored by the caller).
fn consumer(settings: &KafkaSettings, name: &str) -> anyhow::Result<Arc<StreamConsumer>> {
    let group = format!("{}hlfloor-{name}", settings.topic_prefix);
    let consumer: StreamConsumer = consumer_config(settings, "hlfloor", &group).create()?;
    consumer.subscribe(&[&topic(settings, name)])?;
    Ok(Arc::new(consumer))
}

struct Ingest {
    producer: FutureProducer,
    topic: String,
    next_key: AtomicU64,
}

async fn ingest(settings: KafkaSettings, listen: &str, port_file: PathBuf) -> anyhow::Result<()> {
    let specs: Vec<TopicSpec> = ["events", "deliveries", "attempts"]
        .iter()
        .map(|name| TopicSpec {
            name: topic(&settings, name),
            compacted: false,
            retention: None,
        })
        .collect();
    ensure_topics(&settings, &specs).await?;
    let attempts = consumer(&settings, "attempts")?;
    tokio::spawn(async move {
        loop {
            if let Ok(m) = attempts.recv().await {
                let _ = attempts.store_offset_from_message(&m);
            }
        }
    });
    let state = Arc::new(Ingest {
        producer: producer(&settings, "hlfloor-ingest")?,
        topic: topic(&settings, "events"),
        next_key: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/events", post(accept))
        .route("/health", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    std::fs::write(&port_file, listener.local_addr()?.port().to_string())?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn accept(State(ingest): State<Arc<Ingest>>, body: Bytes) -> StatusCode {
    let key = ingest.next_key.fetch_add(1, Ordering::Relaxed).to_string();
    let record = FutureRecord::to(&ingest.topic).key(&key).payload(&body[..]);
    match ingest.producer.send(record, Timeout::Never).await {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn relay(settings: KafkaSettings, endpoints: u32, in_flight: usize) -> anyhow::Result<()> {
    let events = consumer(&settings, "events")?;
    let from = Arc::new(topic(&settings, "events"));
    let producer = producer(&settings, "hlfloor-relay")?;
    let out = Arc::new(topic(&settings, "deliveries"));
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let message = events.recv().await?;
        let slot = slots.clone().acquire_owned().await?;
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default().to_vec();
        let (events, from) = (events.clone(), from.clone());
        let (producer, out) = (producer.clone(), out.clone());
        tokio::spawn(async move {
            let copies = (0..endpoints).map(|i| {
                let (producer, out, payload) = (&producer, &out, &payload);
                async move {
                    let key = i.to_string();
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "endpoint",
                        value: Some(&key),
                    });
                    let record = FutureRecord::to(out)
                        .key(&key)
                        .payload(&payload[..])
                        .headers(headers);
                    producer.send(record, Timeout::Never).await.is_ok()
                }
            });
            if futures::future::join_all(copies)
                .await
                .into_iter()
                .all(|ok| ok)
            {
                let _ = events.store_offset(&from, partition, offset);
            }
            drop(slot);
        });
    }
}

async fn send(settings: KafkaSettings, url: &str, concurrency: usize) -> anyhow::Result<()> {
    let deliveries = consumer(&settings, "deliveries")?;
    let from = Arc::new(topic(&settings, "deliveries"));
    let producer = producer(&settings, "hlfloor-send")?;
    let attempts = Arc::new(topic(&settings, "attempts"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let base = Arc::new(url.trim_end_matches('/').to_owned());
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        let message = deliveries.recv().await?;
        let slot = slots.clone().acquire_owned().await?;
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default().to_vec();
        let endpoint = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "endpoint"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "0".to_owned());
        let (deliveries, from, producer, attempts, client, base) = (
            deliveries.clone(),
            from.clone(),
            producer.clone(),
            attempts.clone(),
            client.clone(),
            base.clone(),
        );
        tokio::spawn(async move {
            let answer = client
                .post(format!("{base}/ok/{endpoint}"))
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(15))
                .body(payload)
                .send()
                .await;
            let status = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            let attempt =
                format!(r#"{{"endpoint":"{endpoint}","offset":{offset},"status":{status}}}"#);
            let record = FutureRecord::to(&attempts[..])
                .key(&endpoint)
                .payload(&attempt);
            if producer.send(record, Timeout::Never).await.is_ok() {
                let _ = deliveries.store_offset(&from, partition, offset);
            }
            drop(slot);
        });
    }
}
