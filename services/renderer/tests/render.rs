//! The renderer against the real broker: events in, one rendered delivery per
//! subscribed endpoint out, poison messages dead-lettered without stopping the partition.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wire::{Endpoint, RenderedDelivery};

fn endpoint(id: &str, events: &[&str], active: bool) -> Endpoint {
    Endpoint {
        id: id.into(),
        kind: "webhook".into(),
        name: id.into(),
        vendor: "generic_post".into(),
        url: format!("https://example.com/{id}"),
        events: events.iter().map(|s| (*s).to_owned()).collect(),
        api_key: None,
        active,
        created_at: wire::now_rfc3339(),
        updated_at: wire::now_rfc3339(),
        ..Endpoint::default()
    }
}

fn started(transfer: &str) -> serde_json::Value {
    json!({"type": "transfer.started", "data": {"transfer_id": transfer, "destination_id": "d", "source_ids": ["s"],
        "model_ids": ["m"], "is_full_refresh": false, "started_at": "2023-10-15T16:19:08+00:00"}})
}

#[tokio::test]
async fn events_fan_out_to_subscribed_endpoints_and_poison_is_dead_lettered() {
    let (kafka, topics, registry) = test_kit::kafka_stack("renderer").await;

    // Endpoints exist before the renderer starts, and one is written after it started.
    let a = endpoint("ep-a", &["transfer.started"], true);
    let b = endpoint("ep-b", &["transfer.error"], true);
    let c = endpoint("ep-c", &["transfer.started"], false);
    let records: Vec<(&str, Vec<u8>)> = [&a, &b, &c]
        .iter()
        .map(|e| (e.id.as_str(), registry.encode(*e).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.endpoints, &records).await;

    let shutdown = CancellationToken::new();
    let config = renderer::Config {
        kafka: kafka.clone(),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..renderer::Config::default()
    };
    let task = tokio::spawn(renderer::run(config, shutdown.clone()));

    let d = endpoint("ep-d", &["transfer.started", "transfer.error"], true);
    test_kit::produce(
        &kafka,
        &topics.endpoints,
        &[(d.id.as_str(), registry.encode(&d).unwrap())],
    )
    .await;

    // A poison record between two good events on the same partition (same key).
    let (e1, e1_bytes) = registry.event_from_json(&started("tr-1")).unwrap();
    let (e2, e2_bytes) = registry.event_from_json(&started("tr-1")).unwrap();
    test_kit::produce(
        &kafka,
        &topics.events,
        &[
            ("tr-1", e1_bytes),
            ("tr-1", b"{\"not\": \"avro\"}".to_vec()),
            ("tr-1", e2_bytes),
        ],
    )
    .await;

    let out = test_kit::read_topic(
        &kafka,
        &topics.rendered_deliveries,
        Duration::from_secs(30),
        |r| r.len() >= 4,
    )
    .await;
    let mut got: Vec<(String, String)> = out
        .iter()
        .map(|r| {
            let d: RenderedDelivery = registry.decode(r.value.as_ref().unwrap()).unwrap();
            assert_eq!(
                r.key.as_deref(),
                Some(d.endpoint_id.as_str()),
                "keyed by endpoint id"
            );
            let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            assert_eq!(body["version"], "2023-10-15");
            assert_eq!(body["api_version"], "2023-10-15");
            assert_eq!(body["data"]["transfer_id"], "tr-1");
            assert_eq!(d.url, format!("https://example.com/{}", d.endpoint_id));
            (d.event_id, d.endpoint_id)
        })
        .collect();
    got.sort();
    let mut expected = vec![
        (e1.id.clone(), "ep-a".to_owned()),
        (e1.id.clone(), "ep-d".to_owned()),
        (e2.id.clone(), "ep-a".to_owned()),
        (e2.id.clone(), "ep-d".to_owned()),
    ];
    expected.sort();
    assert_eq!(got, expected, "ep-b is not subscribed, ep-c is inactive");

    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(20), |r| {
            !r.is_empty()
        })
        .await,
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason_code, "HL-WIRE-UNKNOWN-FORMAT");
    assert_eq!(dead[0].stage, "renderer");
    assert_eq!(
        dead[0].payload.as_deref(),
        Some(&b"{\"not\": \"avro\"}"[..])
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("renderer stops within its bound")
        .unwrap()
        .unwrap();
}
