//! A panic while an event is rendered (a dependency's bug) becomes a dead letter, and the
//! partition's commits go on past it. A test binary of its own: the fault hook is
//! process-wide.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wire::{Endpoint, RenderedDelivery};

fn started(transfer: &str) -> serde_json::Value {
    json!({"type": "transfer.started", "data": {"transfer_id": transfer, "destination_id": "d", "source_ids": ["s"],
        "model_ids": ["m"], "is_full_refresh": false, "started_at": "2023-10-15T16:19:08+00:00"}})
}

/// The group's committed offsets on `topic`, summed over its partitions.
fn committed(settings: &kafka_io::KafkaSettings, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("group.id", group)
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..settings.topic_partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("the group's committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn a_panicking_render_is_dead_lettered_and_commits_go_on() {
    let (kafka, topics, registry) = test_kit::kafka_stack("renderer-panic").await;
    let endpoint = Endpoint {
        id: "ep-a".into(),
        kind: "webhook".into(),
        name: "ep-a".into(),
        vendor: "generic_post".into(),
        url: "https://example.com/ep-a".into(),
        events: vec!["transfer.started".to_owned()],
        active: true,
        created_at: wire::now_rfc3339(),
        updated_at: wire::now_rfc3339(),
        ..Endpoint::default()
    };
    test_kit::produce(
        &kafka,
        &topics.endpoints,
        &[("ep-a", registry.encode(&endpoint).unwrap())],
    )
    .await;

    // Three events of one transfer, so one partition; the middle one panics.
    let events: Vec<_> = (0..3)
        .map(|_| registry.event_from_json(&started("tr-1")).unwrap())
        .collect();
    *renderer::fault::PANIC_ON_EVENT.lock().unwrap() = Some(events[1].0.id.clone());
    let records: Vec<(&str, Vec<u8>)> = events.iter().map(|(_, b)| ("tr-1", b.clone())).collect();
    test_kit::produce(&kafka, &topics.events, &records).await;

    let shutdown = CancellationToken::new();
    let config = renderer::Config {
        kafka: kafka.clone(),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..renderer::Config::default()
    };
    let task = tokio::spawn(renderer::run(config, shutdown.clone()));

    // Looked at first and judged after the renderer stopped, so a failure is reported
    // rather than left waiting on a renderer that is still running.
    let out = test_kit::read_topic(
        &kafka,
        &topics.rendered_deliveries,
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )
    .await;
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(20), |r| {
            !r.is_empty()
        })
        .await,
    );
    // The panicked record's offset was stored: all three get committed.
    let group = format!("{}hookline-renderer", kafka.topic_prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut at = committed(&kafka, &group, &topics.events);
    while at < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        at = committed(&kafka, &group, &topics.events);
    }
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(40), task).await;

    let mut rendered: Vec<String> = out
        .iter()
        .map(|r| {
            let d: RenderedDelivery = registry.decode(r.value.as_ref().unwrap()).unwrap();
            d.event_id
        })
        .collect();
    rendered.sort();
    let mut expected = vec![events[0].0.id.clone(), events[2].0.id.clone()];
    expected.sort();
    assert_eq!(rendered, expected, "the events around the panicking one");
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].reason_code, dead_letter::PANIC_CODE);
    assert_eq!(dead[0].stage, "renderer");
    assert_eq!(dead[0].payload.as_deref(), Some(&records[1].1[..]));
    assert!(
        !dead[0].reason.contains("fault injection"),
        "the panic's message is not kept"
    );
    assert_eq!(at, 3, "committed offsets on the events topic");
    stopped
        .expect("renderer stops within its bound")
        .unwrap()
        .unwrap();
}
