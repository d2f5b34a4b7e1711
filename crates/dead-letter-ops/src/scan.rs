//! Reading a whole topic once: every partition from its beginning up to the high
//! watermark taken when the read starts, committed records only.
//!
//! A `read_committed` reader sees a partition end at its last stable offset, and a
//! transaction's markers are written after its commit returns: the read goes on until
//! the position passes the high watermark, so a transaction committed before the read
//! started (a replay's marks, the aggregator's dead letters) is never missed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_io::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers as _;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::OpsError;

/// A read that gets nothing for this long has stalled (a broker down, a transaction
/// that is never decided).
const STALL: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One record, as [`scan`] hands it over.
pub(crate) struct Read<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Its W3C `traceparent` header, if any.
    pub traceparent: Option<&'a [u8]>,
}

/// What to do when the topic does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// It is an error (the dead-letter topic: a wrong prefix).
    Error,
    /// It reads as empty (the replay marks, before the first replay).
    Empty,
}

/// Reads `topic` up to its end as of now, folding each record into `acc` with `f`.
/// With `key`, only the partition records with that key are written to (every writer
/// of the dead-letter topic keys by endpoint id with librdkafka's partitioner).
pub(crate) async fn scan<A, F>(
    settings: &KafkaSettings,
    topic: &str,
    key: Option<&str>,
    missing: Missing,
    acc: A,
    f: F,
) -> Result<A, OpsError>
where
    A: Send + 'static,
    F: FnMut(&mut A, Read<'_>) + Send + 'static,
{
    let (settings, topic) = (settings.clone(), topic.to_owned());
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        scan_blocking(&settings, &topic, key.as_deref(), missing, acc, f)
    })
    .await
    .map_err(|_| OpsError::Kafka(KafkaError::Canceled))?
}

fn scan_blocking<A, F>(
    settings: &KafkaSettings,
    topic: &str,
    key: Option<&str>,
    missing: Missing,
    mut acc: A,
    mut f: F,
) -> Result<A, OpsError>
where
    F: FnMut(&mut A, Read<'_>),
{
    let mut config = kafka_io::consumer_config(
        settings,
        "hookline-dead-letter-ops",
        "hookline-dead-letter-ops-unused",
    );
    config.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return match missing {
            Missing::Error => Err(OpsError::NoTopic(topic.to_owned())),
            Missing::Empty => Ok(acc),
        };
    }
    if let Some(key) = key {
        let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
        partitions = vec![kafka_io::partition_for_key(key.as_bytes(), count)];
    }
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, CALL_TIMEOUT)?;
        if high > low {
            ends.insert(p, high);
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    if ends.is_empty() {
        return Ok(acc);
    }
    consumer.assign(&assignment)?;
    let mut last_progress = Instant::now();
    let mut positions: HashMap<i32, i64> = HashMap::new();
    loop {
        if let Ok(now) = consumer.position() {
            for e in now.elements_for_topic(topic) {
                if let Offset::Offset(o) = e.offset() {
                    let known = positions.entry(e.partition()).or_insert(-1);
                    if o > *known {
                        *known = o;
                        last_progress = Instant::now();
                    }
                }
            }
        }
        if ends
            .iter()
            .all(|(p, end)| positions.get(p).is_some_and(|at| at >= end))
        {
            return Ok(acc);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                f(
                    &mut acc,
                    Read {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key(),
                        payload: m.payload(),
                        traceparent: m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| {
                                    h.key
                                        .eq_ignore_ascii_case(service_kit::telemetry::TRACEPARENT)
                                })
                                .and_then(|h| h.value)
                        }),
                    },
                );
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                tracing::debug!(topic, error = %e, "read error; going on");
            }
        }
        if last_progress.elapsed() > STALL {
            return Err(OpsError::Stalled(topic.to_owned()));
        }
    }
}
