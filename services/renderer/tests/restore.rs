//! A transient failure while the aggregator rebuilds a partition's state (its changelog
//! cannot be read for a moment) does not stop the renderer: the webhook path goes on,
//! and the partition is restored before its first event, so the transfer's traces still
//! go out once. A test binary of its own: the fault hook is process-wide.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wire::{Endpoint, RenderedDelivery};

#[tokio::test]
async fn a_restore_that_fails_for_a_while_stops_nothing() {
    let (kafka, topics, registry) = test_kit::kafka_stack("renderer-restore").await;
    let now = wire::now_rfc3339();
    let webhook = Endpoint {
        id: "ep-hook".into(),
        kind: "webhook".into(),
        name: "hook".into(),
        vendor: "generic_post".into(),
        url: "https://example.com/hook".into(),
        events: vec!["transfer.started".to_owned()],
        active: true,
        created_at: now.clone(),
        updated_at: now.clone(),
        ..Endpoint::default()
    };
    let traces = Endpoint {
        id: "ep-traces".into(),
        kind: "sensitive_trace".into(),
        name: "traces".into(),
        vendor: "sensitive_trace".into(),
        url: "https://example.com/traces".into(),
        signing_scheme: "none".into(),
        active: true,
        created_at: now.clone(),
        updated_at: now,
        ..Endpoint::default()
    };
    test_kit::produce(
        &kafka,
        &topics.endpoints,
        &[
            ("ep-hook", registry.encode(&webhook).unwrap()),
            ("ep-traces", registry.encode(&traces).unwrap()),
        ],
    )
    .await;
    // Every restore fails for a while: at assignment, and the retries after it.
    renderer::fault::FAIL_RESTORES.store(6, Ordering::SeqCst);

    let shutdown = CancellationToken::new();
    let config = renderer::Config {
        kafka: kafka.clone(),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        admin_addr: "127.0.0.1:0".to_owned(),
        aggregator_commit_interval: Duration::from_millis(200),
        ..renderer::Config::default()
    };
    let task = tokio::spawn(renderer::run(config, shutdown.clone()));
    let event = |json| registry.event_from_json(&json).unwrap().1;
    let started = json!({"type": "transfer.started", "data": {"transfer_id": "tr-1", "destination_id": "d",
        "source_ids": ["s"], "model_ids": ["m"], "is_full_refresh": false, "started_at": "2023-10-15T16:19:08+00:00"}});
    let trace = json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": "tr-1", "destination_id": "d",
        "source_id": "s", "model_id": "m", "model_name": "m_table", "source_vendor": "postgres",
        "destination_vendor": "snowflake", "execution_context": "load", "trace": "relation does not exist"}});
    let completed = json!({"type": "transfer.completed", "data": {"transfer_id": "tr-1", "destination_id": "d",
        "status": "PARTIAL_ERROR", "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T10:30:00Z"}});
    test_kit::produce(
        &kafka,
        &topics.events,
        &[
            ("tr-1", event(started)),
            ("tr-1", event(trace)),
            ("tr-1", event(completed)),
        ],
    )
    .await;

    let out = test_kit::read_topic(
        &kafka,
        &topics.rendered_deliveries,
        Duration::from_secs(60),
        |r| r.len() >= 2,
    )
    .await;
    let left = renderer::fault::FAIL_RESTORES.load(Ordering::SeqCst);
    let running = !task.is_finished();
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(40), task).await;

    let mut endpoints: Vec<String> = out
        .iter()
        .map(|r| {
            let d: RenderedDelivery = registry.decode(r.value.as_ref().unwrap()).unwrap();
            d.endpoint_id
        })
        .collect();
    endpoints.sort();
    assert_eq!(left, 0, "every injected failure was hit");
    assert!(
        running,
        "the renderer was still running after the failed restores"
    );
    assert_eq!(
        endpoints,
        vec!["ep-hook".to_owned(), "ep-traces".to_owned()],
        "the webhook's delivery and the transfer's one batch"
    );
    stopped
        .expect("renderer stops within its bound")
        .unwrap()
        .unwrap();
}
