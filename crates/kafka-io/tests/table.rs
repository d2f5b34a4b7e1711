//! `Table` against the real broker: a sync sees every write acknowledged before it
//! started (the watermarks of all partitions, asked at once), on a topic with empty
//! partitions too, and every transactional write committed before it.

use std::time::Duration;

use kafka_io::{Table, TopicSpec};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

/// A compacted topic of the test's own, and a table reading it.
async fn table_of(
    name: &str,
    shutdown: &CancellationToken,
) -> (kafka_io::KafkaSettings, String, Table<String>) {
    let settings = test_kit::kafka_settings(name);
    let topic = format!("{}endpoints", settings.topic_prefix);
    kafka_io::ensure_topics(
        &settings,
        &[TopicSpec {
            name: topic.clone(),
            compacted: true,
            retention: None,
        }],
    )
    .await
    .expect("test setup");
    let table: Table<String> = tokio::time::timeout(
        Duration::from_secs(60),
        Table::start(
            &settings,
            &topic,
            |bytes| String::from_utf8(bytes.to_vec()).ok(),
            shutdown.clone(),
        ),
    )
    .await
    .expect("started in time")
    .expect("started");
    (settings, topic, table)
}

#[tokio::test]
async fn a_sync_sees_every_write_acknowledged_before_it() {
    let shutdown = CancellationToken::new();
    // Every partition empty at start: the first sync returns at once.
    let (settings, topic, table) = table_of("table", &shutdown).await;
    let producer = kafka_io::producer(&settings, "test").expect("test setup");
    // Each write acknowledged, then a sync: the value is there, without waiting for
    // the follower any other way. 60 writes over the partitions, one key at a time.
    for i in 0..60 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged");
        tokio::time::timeout(Duration::from_secs(30), table.sync())
            .await
            .expect("synced in time")
            .expect("synced");
        assert_eq!(
            table.get(&key).as_deref(),
            Some(value.as_str()),
            "write {i}"
        );
    }
    shutdown.cancel();
}

/// A partition whose records were all deleted (its earliest offset is its latest) has
/// nothing to apply: a sync must not wait for it.
#[tokio::test]
async fn a_sync_does_not_wait_for_deleted_records() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let settings = test_kit::kafka_settings("table-deleted");
    let topic = format!("{}endpoints", settings.topic_prefix);
    kafka_io::ensure_topics(
        &settings,
        &[TopicSpec {
            name: topic.clone(),
            compacted: false,
            retention: None,
        }],
    )
    .await
    .expect("test setup");
    let producer = kafka_io::producer(&settings, "test").expect("test setup");
    for i in 0..3 {
        let (key, value) = (format!("gone{i}"), format!("v{i}"));
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged");
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka_brokers)
        .create()
        .expect("test setup");
    let mut up_to = TopicPartitionList::new();
    up_to
        .add_partition_offset(&topic, 0, Offset::End)
        .expect("test setup");
    let deleted = admin
        .delete_records(&up_to, &AdminOptions::new())
        .await
        .expect("records deleted");
    assert_eq!(
        deleted.elements()[0].offset(),
        Offset::Offset(3),
        "the partition's earliest offset is now its latest"
    );
    let shutdown = CancellationToken::new();
    // Start-up syncs: it returns although partition 0 has 3 offsets and no record.
    let table: Table<String> = tokio::time::timeout(
        Duration::from_secs(60),
        Table::start(
            &settings,
            &topic,
            |bytes| String::from_utf8(bytes.to_vec()).ok(),
            shutdown.clone(),
        ),
    )
    .await
    .expect("started in time")
    .expect("started");
    assert_eq!(table.get("gone0"), None);
    producer
        .send(
            FutureRecord::to(&topic).partition(0).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .expect("acknowledged");
    tokio::time::timeout(Duration::from_secs(30), table.sync())
        .await
        .expect("synced in time")
        .expect("synced");
    assert_eq!(table.get("k").as_deref(), Some("v"));
    shutdown.cancel();
}

/// A table whose clients reach no broker (as librdkafka 2.12 leaves a client after a
/// metadata response that lists none, issue 5301) gets new ones: its syncs fail, then
/// succeed again and see a write made meanwhile, without a restart.
#[tokio::test]
async fn clients_left_without_brokers_are_replaced() {
    let shutdown = CancellationToken::new();
    let (settings, topic, table) = table_of("table-stuck", &shutdown).await;
    let producer = kafka_io::producer(&settings, "test").expect("test setup");
    let write = |key: &'static str, value: &'static str| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(key).payload(value),
                    Duration::from_secs(10),
                )
                .await
                .expect("acknowledged");
        }
    };
    write("before", "1").await;
    table.sync().await.expect("synced");
    // Nothing listens on port 1.
    table
        .break_clients_for_test("127.0.0.1:1", Duration::from_secs(3))
        .await;
    write("during", "2").await;
    let started = std::time::Instant::now();
    let (mut failed, mut synced) = (0, false);
    while started.elapsed() < Duration::from_secs(60) {
        match tokio::time::timeout(Duration::from_secs(20), table.sync()).await {
            Ok(Ok(())) => {
                synced = true;
                break;
            }
            Ok(Err(_)) | Err(_) => failed += 1,
        }
    }
    println!(
        "table-stuck: {failed} sync(s) failed, then synced: {synced}, after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failed >= 1, "the broken clients failed first");
    assert!(synced, "new clients synced within 60 s");
    assert_eq!(table.get("during").as_deref(), Some("2"));
    assert_eq!(table.get("before").as_deref(), Some("1"));
    shutdown.cancel();
}

/// A write committed in a transaction (as the producer writes `endpoints` and `keys`)
/// is seen by a sync made once the commit returned. The broker writes the commit's
/// markers after it answered the commit, so for a moment the last stable offset (the
/// end a read_committed client is told) still stops before the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_sees_every_transactional_write_committed_before_it() {
    let shutdown = CancellationToken::new();
    let (settings, topic, table) = table_of("table-txn", &shutdown).await;
    let producer: FutureProducer = kafka_io::producer_config(&settings, "test")
        .set(
            "transactional.id",
            format!("{}table-txn-writer", settings.topic_prefix),
        )
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("test setup");
    blocking(&producer, |p| p.init_transactions(TXN_CALL)).await;
    const WRITES: usize = 100;
    let mut missed = Vec::new();
    for i in 0..WRITES {
        let (key, value) = (format!("t{i}"), format!("v{i}"));
        write_in_transaction(&producer, &topic, &key, &value, true).await;
        tokio::time::timeout(Duration::from_secs(30), table.sync())
            .await
            .expect("synced in time")
            .expect("synced");
        if table.get(&key).as_deref() != Some(value.as_str()) {
            missed.push(i);
        }
    }
    println!(
        "table-txn: {} of {WRITES} committed writes not seen by the sync made after the commit",
        missed.len()
    );
    assert!(missed.is_empty(), "writes not seen: {missed:?}");
    // An aborted write last in its partition: a sync gets past it and never applies it.
    write_in_transaction(&producer, &topic, "aborted", "never", false).await;
    tokio::time::timeout(Duration::from_secs(30), table.sync())
        .await
        .expect("a sync past an aborted write in time")
        .expect("synced");
    assert_eq!(
        table.get("aborted"),
        None,
        "an aborted write is not applied"
    );
    shutdown.cancel();
}

/// Bound on one transactional call in the test.
const TXN_CALL: Duration = Duration::from_secs(30);

/// Writes one record in a transaction of its own, then commits it or aborts it.
async fn write_in_transaction(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    commit: bool,
) {
    producer.begin_transaction().expect("begun");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .expect("acknowledged");
    if commit {
        blocking(producer, |p| p.commit_transaction(TXN_CALL)).await;
    } else {
        blocking(producer, |p| p.abort_transaction(TXN_CALL)).await;
    }
}

/// Runs a blocking transactional call off the async threads; it must succeed.
async fn blocking(
    producer: &FutureProducer,
    call: impl FnOnce(&FutureProducer) -> rdkafka::error::KafkaResult<()> + Send + 'static,
) {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || call(&p))
        .await
        .expect("test setup")
        .expect("transactional call");
}
