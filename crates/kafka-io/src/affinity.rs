//! One consumer group that reads several topics keyed alike, with partition `n` of every
//! topic on one member: what the dispatcher's endpoint affinity rests on.
//!
//! Every writer keys the dispatcher's topics by endpoint id with librdkafka's
//! partitioner, so an endpoint's records sit in the same partition number of every
//! topic as long as the partition counts are equal. The `range` assignor then gives
//! each member the same numbers of every topic it subscribes to, when every member
//! subscribes to the same topics (`rdkafka_range_assignor.c`, "co-partitioned topics").

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{KafkaSettings, consumer_config};

/// The partition librdkafka's default partitioner (`consistent_random`) gives a record
/// with a non-empty `key` in a topic of `partitions` partitions: the CRC-32 of the key
/// modulo the count (`rd_kafka_msg_partitioner_consistent`). Every hookline writer keys
/// with it, so a reader looking for one key's records reads this partition only.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let partitions = u32::try_from(partitions.max(1)).unwrap_or(1);
    // Below `partitions`, which is an i32.
    i32::try_from(crc32fast::hash(key) % partitions).unwrap_or(0)
}

/// Why a co-partitioned group cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// A Kafka call failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topics' partition counts differ, so one key lands on different numbers.
    #[error(
        "{topic} has {count} partitions and {first} has {first_count}: an endpoint's deliveries and retries must share a partition number, so these topics need equal partition counts (add partitions with kafka-topics --alter)"
    )]
    Unequal {
        /// The first topic.
        first: String,
        /// Its partition count.
        first_count: usize,
        /// A topic whose count differs.
        topic: String,
        /// Its partition count.
        count: usize,
    },
    /// A topic is missing from the broker's metadata.
    #[error("{0} has no partitions in the broker's metadata")]
    Missing(String),
}

/// The partition count shared by `topics`, or why they do not share one.
pub async fn co_partitioned(
    settings: &KafkaSettings,
    topics: &[String],
) -> Result<usize, AffinityError> {
    let (settings, topics) = (settings.clone(), topics.to_vec());
    blocking(move || {
        let consumer: BaseConsumer =
            crate::client::base_config(&settings, "hookline-affinity").create()?;
        let count = |topic: &str| -> Result<usize, KafkaError> {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len()))
        };
        let first = topics.first().cloned().unwrap_or_default();
        let first_count = count(&first)?;
        for topic in &topics {
            let n = count(topic)?;
            if n == 0 {
                return Err(AffinityError::Missing(topic.clone()));
            }
            if n != first_count {
                return Err(AffinityError::Unequal {
                    first: first.clone(),
                    first_count,
                    topic: topic.clone(),
                    count: n,
                });
            }
        }
        Ok(first_count)
    })
    .await
}

/// Gives `group` the committed offsets another group holds for a topic, where `group`
/// has none yet: each `(topic, from)` pair names a topic `group` now reads that the
/// group `from` read before. Nothing is re-read, nothing skipped, when one group takes
/// over topics several groups read.
///
/// The broker takes such a commit only while `group` has no members, so the first
/// replica to start does it, before it joins; a replica that finds the group running
/// finds the offsets there already. Returns how many partitions' offsets were copied.
pub async fn adopt_offsets(
    settings: &KafkaSettings,
    group: &str,
    from: &[(String, String)],
    partitions: usize,
) -> Result<usize, AffinityError> {
    let (settings, group, from) = (settings.clone(), group.to_owned(), from.to_vec());
    let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
    blocking(move || {
        let reader = |group: &str| -> Result<BaseConsumer, KafkaError> {
            consumer_config(&settings, "hookline-affinity", group).create()
        };
        let target = reader(&group)?;
        // The group's own offsets first, in one request: once it has them, which is
        // every start after the first, no old group is asked.
        let mut all = TopicPartitionList::new();
        for (topic, _) in &from {
            for p in 0..partitions {
                all.add_partition(topic, p);
            }
        }
        let have = target.committed_offsets(all, Duration::from_secs(10))?;
        let mut asks = Vec::new();
        for (topic, old_group) in &from {
            let mut missing = TopicPartitionList::new();
            for p in 0..partitions {
                let taken = have
                    .find_partition(topic, p)
                    .is_some_and(|h| matches!(h.offset(), Offset::Offset(_)));
                if !taken {
                    missing.add_partition(topic, p);
                }
            }
            if missing.count() > 0 {
                asks.push((old_group, missing));
            }
        }
        // A tier that never held a record has no offsets in either group, so every
        // start asks its old group again: the old groups are asked at once, not one
        // round trip after another (each is a client of its own).
        let answers: Vec<Result<TopicPartitionList, KafkaError>> = std::thread::scope(|s| {
            let asking: Vec<_> = asks
                .into_iter()
                .map(|(old_group, missing)| {
                    s.spawn(move || {
                        reader(old_group)?.committed_offsets(missing, Duration::from_secs(10))
                    })
                })
                .collect();
            asking
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(KafkaError::Canceled)))
                .collect()
        });
        let mut adopt = TopicPartitionList::new();
        for old in answers {
            for e in old?.elements() {
                if let Offset::Offset(offset) = e.offset() {
                    adopt.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
                }
            }
        }
        let copied = adopt.count();
        if copied > 0 {
            target.commit(&adopt, CommitMode::Sync)?;
        }
        Ok(copied)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AffinityError> + Send + 'static,
) -> Result<T, AffinityError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| AffinityError::Kafka(KafkaError::Canceled))?
}
