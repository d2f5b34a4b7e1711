//! One group reading several topics keyed alike (the dispatcher's endpoint affinity),
//! against the real broker: every record of one key, whichever topic it is in, goes to
//! one member; a delay lane still waits; unequal partition counts are refused; a group
//! taking over a topic from another group starts where that one stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_io::{AffinityError, Lane, Outcome, TopicSpec};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// (member, topic, key) of each record handed over.
type Seen = Arc<Mutex<Vec<(usize, String, String)>>>;

async fn topics(settings: &kafka_io::KafkaSettings, names: &[&str]) -> Vec<String> {
    let names: Vec<String> = names
        .iter()
        .map(|n| format!("{}{n}", settings.topic_prefix))
        .collect();
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|name| TopicSpec {
            name: name.clone(),
            compacted: false,
            retention: None,
        })
        .collect();
    kafka_io::ensure_topics(settings, &specs)
        .await
        .expect("test setup");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_a_key_goes_to_one_member_whichever_topic_it_is_in() {
    // Three partitions for two members: an assignor that balances the total, not each
    // topic, splits some partition number between them (cooperative-sticky does).
    let settings = test_kit::kafka_settings("affinity");
    let names = topics(&settings, &["first", "tier"]).await;
    assert_eq!(
        kafka_io::co_partitioned(&settings, &names)
            .await
            .expect("equal counts"),
        3
    );
    let group = format!("{}group", settings.topic_prefix);
    let subscribed: Vec<&str> = names.iter().map(String::as_str).collect();
    let lanes = vec![
        Lane {
            topic: names[0].clone(),
            delay: None,
            max_in_flight: 4,
            max_in_flight_bytes: 1 << 20,
        },
        Lane {
            topic: names[1].clone(),
            delay: Some(Duration::from_secs(1)),
            max_in_flight: 2,
            max_in_flight_bytes: 1 << 20,
        },
    ];
    let seen: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let mut members = Vec::new();
    let mut assigned = Vec::new();
    for member in 0..2 {
        let (consumer, tracker) =
            kafka_io::group_consumer(&settings, "test", &group, &subscribed, None)
                .expect("test setup");
        let consumer = Arc::new(consumer);
        assigned.push(consumer.clone());
        let (seen, shutdown, lanes) = (seen.clone(), shutdown.clone(), lanes.clone());
        members.push(tokio::spawn(async move {
            kafka_io::consume_lanes(
                &consumer,
                &tracker,
                &lanes,
                Duration::from_secs(5),
                &shutdown,
                |record| {
                    let seen = seen.clone();
                    async move {
                        let key = String::from_utf8(record.key.clone().unwrap_or_default())
                            .expect("test setup");
                        seen.lock()
                            .expect("test setup")
                            .push((member, record.topic.clone(), key));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Outcome::Done
                    }
                },
            )
            .await;
        }));
    }
    // Both members hold their share of both topics before anything is written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let assignments = loop {
        let now: Vec<HashMap<String, HashSet<i32>>> = assigned
            .iter()
            .map(|c| {
                let mut by_topic: HashMap<String, HashSet<i32>> = HashMap::new();
                for e in c.assignment().expect("assignment").elements() {
                    by_topic
                        .entry(e.topic().to_owned())
                        .or_default()
                        .insert(e.partition());
                }
                by_topic
            })
            .collect();
        let total: usize = now.iter().flat_map(|m| m.values()).map(HashSet::len).sum();
        if total == 6 && now.iter().all(|m| m.len() == 2) {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never settled: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (member, by_topic) in assignments.iter().enumerate() {
        assert_eq!(
            by_topic[&names[0]], by_topic[&names[1]],
            "member {member} holds the same partition numbers of both topics"
        );
    }

    let keys: Vec<String> = (0..24).map(|i| format!("endpoint-{i}")).collect();
    let records: Vec<(&str, Vec<u8>)> = keys.iter().map(|k| (k.as_str(), vec![1])).collect();
    for topic in &names {
        test_kit::produce(&settings, topic, &records).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("test setup").len() < 48 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    for m in members {
        m.await.expect("member");
    }
    let seen = seen.lock().expect("test setup").clone();
    assert_eq!(seen.len(), 48, "every record once: {seen:?}");
    let mut owner: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (member, _, key) in &seen {
        owner.entry(key.as_str()).or_default().insert(*member);
    }
    for (key, members) in &owner {
        assert_eq!(members.len(), 1, "{key} went to one member in both topics");
    }
    let per_member: HashSet<usize> = seen.iter().map(|(m, _, _)| *m).collect();
    assert_eq!(per_member.len(), 2, "both members took a share");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unequal_partition_counts_are_refused() {
    let mut settings = test_kit::kafka_settings("affinity-unequal");
    let mut names = topics(&settings, &["a"]).await;
    settings.topic_partitions = 2;
    names.extend(topics(&settings, &["b"]).await);
    let err = kafka_io::co_partitioned(&settings, &names)
        .await
        .expect_err("3 and 2 partitions");
    assert!(
        matches!(
            &err,
            AffinityError::Unequal {
                first_count: 3,
                count: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("equal partition counts"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_takes_over_where_the_old_group_stopped() {
    let settings = test_kit::kafka_settings("affinity-adopt");
    let names = topics(&settings, &["tier"]).await;
    let (old, new) = (
        format!("{}old", settings.topic_prefix),
        format!("{}new", settings.topic_prefix),
    );
    let committer = |group: &str| -> BaseConsumer {
        kafka_io::consumer_config(&settings, "test", group)
            .create()
            .expect("test setup")
    };
    // The broker does not check a committed offset against the log.
    let partition = 1;
    let mut done = TopicPartitionList::new();
    done.add_partition_offset(&names[0], partition, Offset::Offset(17))
        .expect("test setup");
    committer(&old)
        .commit(&done, CommitMode::Sync)
        .expect("test setup");

    let from = vec![(names[0].clone(), old.clone())];
    let copied = kafka_io::adopt_offsets(&settings, &new, &from, 3)
        .await
        .expect("adopted");
    assert_eq!(copied, 1);
    let mut all = TopicPartitionList::new();
    all.add_partition(&names[0], partition);
    let have = committer(&new)
        .committed_offsets(all, Duration::from_secs(10))
        .expect("committed");
    assert_eq!(
        have.elements()[0].offset(),
        Offset::Offset(17),
        "the new group starts where the old one stopped"
    );
    // Once the new group has its own offsets, they are not overwritten.
    let copied = kafka_io::adopt_offsets(&settings, &new, &from, 3)
        .await
        .expect("adopted");
    assert_eq!(copied, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_for_key_is_where_the_producer_puts_a_key() {
    use rdkafka::producer::FutureRecord;
    let mut settings = test_kit::kafka_settings("partition-for-key");
    settings.topic_partitions = 7;
    let names = topics(&settings, &["keyed"]).await;
    let producer = kafka_io::producer(&settings, "partition-for-key").expect("producer");
    let mut used = HashSet::new();
    for n in 0..300 {
        let key = format!("ep-{n}-{}", uuid_like(n));
        let delivery = producer
            .send(
                FutureRecord::to(&names[0]).key(&key).payload("x"),
                Duration::from_secs(30),
            )
            .await
            .expect("sent");
        assert_eq!(
            kafka_io::partition_for_key(key.as_bytes(), 7),
            delivery.partition,
            "key {key}"
        );
        used.insert(delivery.partition);
    }
    assert_eq!(used.len(), 7, "the keys reached every partition");
}

/// Some variety in the keys' bytes.
fn uuid_like(n: u64) -> String {
    format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
