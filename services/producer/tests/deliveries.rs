//! `GET /webhooks/{id}/deliveries` against the real broker: what the dispatcher wrote
//! to `delivery-attempts`, grouped by delivery, newest first, within `limit`, without
//! payloads; records written before a request are in its answer, and a restarted
//! producer reads the log back.

use std::time::Duration;

use producer::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Secret;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-456";

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A producer on `config`, stopped by `shutdown`.
    async fn start(config: &Config, shutdown: &CancellationToken) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let task = tokio::spawn(producer::serve(config.clone(), listener, shutdown.clone()));
        let api = Api {
            base,
            client: reqwest::Client::new(),
        };
        for _ in 0..600 {
            assert!(!task.is_finished(), "producer stopped: {:?}", task.await);
            if api
                .client
                .get(format!("{}/health", api.base))
                .send()
                .await
                .is_ok()
            {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("producer did not start");
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the API answers");
        (resp.status(), resp.json().await.expect("a JSON body"))
    }

    async fn create(&self, route: &str, body: Value) -> String {
        let (status, created) = self.call(reqwest::Method::POST, route, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e["id"].as_str())
            .expect("an id")
            .to_owned()
    }

    /// The listing, asserting it is complete (`caught_up`).
    async fn deliveries(&self, webhook: &str, query: &str) -> Vec<Value> {
        let (status, answer) = self
            .call(
                reqwest::Method::GET,
                &format!("/webhooks/{webhook}/deliveries{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["caught_up"], true, "{answer}");
        answer["deliveries"].as_array().expect("deliveries").clone()
    }
}

fn ids(deliveries: &[Value]) -> Vec<&str> {
    deliveries
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("delivery_id"))
        .collect()
}

fn webhook(name: &str) -> Value {
    json!({"webhook": {"name": name, "vendor": "generic_post", "url": "https://example.com/hook", "events": ["transfer.error"]}})
}

/// One attempt of `delivery` to `endpoint`, started at 10:00:`second`.
fn attempt(
    endpoint: &str,
    delivery: &str,
    n: i32,
    second: u32,
    outcome: &str,
) -> wire::DeliveryAttempt {
    wire::DeliveryAttempt {
        delivery_id: delivery.to_owned(),
        event_id: format!("event-{delivery}"),
        event_type: "transfer.error".to_owned(),
        endpoint_id: endpoint.to_owned(),
        attempt: n,
        started_at: format!("2026-11-23T10:00:{second:02}.000+00:00"),
        duration_ms: 40 + i64::from(n),
        status: Some(if outcome == "delivered" { 200 } else { 503 }),
        outcome: outcome.to_owned(),
        next_attempt_at: (outcome == "retrying")
            .then(|| format!("2026-11-23T10:01:{second:02}.000+00:00")),
        ..wire::DeliveryAttempt::default()
    }
}

async fn produce(config: &Config, attempts: Vec<wire::DeliveryAttempt>) {
    let registry = wire::Registry::bundled().expect("schemas");
    let records: Vec<(String, Vec<u8>)> = attempts
        .iter()
        .map(|a| (a.endpoint_id.clone(), registry.encode(a).expect("encodes")))
        .collect();
    let records: Vec<(&str, Vec<u8>)> = records
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    test_kit::produce(
        &config.kafka,
        &format!("{}delivery-attempts", config.kafka.topic_prefix),
        &records,
    )
    .await;
}

#[tokio::test]
async fn lists_a_webhooks_deliveries_from_the_attempt_log() {
    let config = Config {
        kafka: test_kit::kafka_settings("deliveries"),
        api_token: Secret::new(TOKEN),
        master_key: Secret::new(test_kit::MASTER_KEY),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let api = Api::start(&config, &shutdown).await;
    let a = api.create("/webhooks", webhook("a")).await;
    let b = api.create("/webhooks", webhook("b")).await;
    let trace = api
        .create(
            "/sensitive-trace-endpoints",
            json!({"sensitive_trace_endpoint": {"name": "t", "url": "https://example.com/t"}}),
        )
        .await;
    assert!(api.deliveries(&a, "").await.is_empty());

    // Two endpoints' attempts interleaved, as a dispatcher writes them.
    let mut timeout = attempt(&a, "d2", 1, 2, "retrying");
    (timeout.status, timeout.error_code) = (None, Some("HL-HTTP-TIMEOUT".to_owned()));
    let mut rejected = attempt(&a, "d2", 3, 30, "dead_lettered");
    (rejected.status, rejected.reason_code) = (Some(410), Some("HL-DELIVERY-REJECTED".to_owned()));
    let mut replayed = attempt(&a, "d3", 1, 10, "delivered");
    replayed.replay_of = Some("dl-7".to_owned());
    produce(
        &config,
        vec![
            attempt(&a, "d1", 1, 0, "retrying"),
            attempt(&b, "e1", 1, 1, "delivered"),
            timeout,
            attempt(&a, "d1", 2, 5, "delivered"),
            attempt(&trace, "t1", 1, 6, "delivered"),
            attempt(&a, "d2", 2, 7, "retrying"),
            replayed,
            rejected,
        ],
    )
    .await;

    let listed = api.deliveries(&a, "").await;
    assert_eq!(
        ids(&listed),
        ["d2", "d3", "d1"],
        "grouped by delivery, newest first: {listed:?}"
    );
    // Exactly these fields: times, statuses and codes, never a payload.
    assert_eq!(
        listed[0],
        json!({
            "delivery_id": "d2", "event_id": "event-d2", "event_type": "transfer.error", "status": "dead_lettered",
            "attempts": [
                {"attempt": 1, "started_at": "2026-11-23T10:00:02.000+00:00", "duration_ms": 41, "status": null, "error_code": "HL-HTTP-TIMEOUT",
                 "outcome": "retrying", "reason_code": null, "next_attempt_at": "2026-11-23T10:01:02.000+00:00"},
                {"attempt": 2, "started_at": "2026-11-23T10:00:07.000+00:00", "duration_ms": 42, "status": 503, "error_code": null,
                 "outcome": "retrying", "reason_code": null, "next_attempt_at": "2026-11-23T10:01:07.000+00:00"},
                {"attempt": 3, "started_at": "2026-11-23T10:00:30.000+00:00", "duration_ms": 43, "status": 410, "error_code": null,
                 "outcome": "dead_lettered", "reason_code": "HL-DELIVERY-REJECTED", "next_attempt_at": null},
            ],
            "last_attempt_at": "2026-11-23T10:00:30.000+00:00", "replay_of": null, "test": false,
        })
    );
    assert_eq!(
        (listed[1]["status"].clone(), listed[1]["replay_of"].clone()),
        (json!("delivered"), json!("dl-7"))
    );
    let d1: Vec<(i64, &str)> = listed[2]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["attempt"].as_i64().unwrap(),
                x["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        (listed[2]["status"].clone(), d1),
        (json!("delivered"), vec![(1, "retrying"), (2, "delivered")])
    );
    assert_eq!(ids(&api.deliveries(&a, "?limit=2").await), ["d2", "d3"]);
    assert_eq!(ids(&api.deliveries(&a, "?limit=1").await), ["d2"]);
    assert_eq!(
        ids(&api.deliveries(&b, "").await),
        ["e1"],
        "each webhook sees only its own"
    );

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=all", "limit"),
        ("?page=2", "page"),
    ] {
        let (status, answer) = api
            .call(
                reqwest::Method::GET,
                &format!("/webhooks/{a}/deliveries{query}"),
                None,
            )
            .await;
        assert_eq!(
            (status, answer["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field)),
            "{query}: {answer}"
        );
    }
    // Unknown ids and sensitive-trace endpoints (whose attempts are in the log) are 404.
    for id in ["no-such-webhook", trace.as_str()] {
        let (status, answer) = api
            .call(
                reqwest::Method::GET,
                &format!("/webhooks/{id}/deliveries"),
                None,
            )
            .await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("HL-API-NOT-FOUND")),
            "{id}: {answer}"
        );
    }

    // What is written before a request is in its answer.
    produce(&config, vec![attempt(&a, "d4", 1, 40, "retrying")]).await;
    assert_eq!(ids(&api.deliveries(&a, "").await), ["d4", "d2", "d3", "d1"]);

    // Another instance (a restarted producer) reads the log back from the topic.
    let restarted = Api::start(&config, &shutdown).await;
    let again = restarted.deliveries(&a, "").await;
    assert_eq!(again, api.deliveries(&a, "").await);
    assert_eq!(ids(&again), ["d4", "d2", "d3", "d1"]);
    assert_eq!(again[1]["attempts"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn memory_is_bounded_and_a_restart_reads_back_only_the_tail_the_bound_allows() {
    // 1,000 attempts in all: a restart reads the last ceil(1000 / 3) records of each partition.
    let config = Config {
        kafka: test_kit::kafka_settings("deliveries-bound"),
        api_token: Secret::new(TOKEN),
        master_key: Secret::new(test_kit::MASTER_KEY),
        attempt_log_max_attempts: 1000,
        admin_addr: "127.0.0.1:0".to_owned(),
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let api = Api::start(&config, &shutdown).await;
    let a = api.create("/webhooks", webhook("a")).await;
    let backlog: Vec<wire::DeliveryAttempt> = (0..2000)
        .map(|n| wire::DeliveryAttempt {
            started_at: format!("2026-11-23T10:{:02}:{:02}.000+00:00", n / 60, n % 60),
            ..attempt(&a, &format!("d{n:04}"), 1, 0, "delivered")
        })
        .collect();
    produce(&config, backlog).await;

    // A running producer holds the newest 500 (the most one listing shows) of the endpoint.
    let expected: Vec<String> = (1500..2000).rev().map(|n| format!("d{n:04}")).collect();
    assert_eq!(ids(&api.deliveries(&a, "?limit=500").await), expected);
    // A restarted one only what its share of the bound let it read back: 334.
    let restarted = Api::start(&config, &shutdown).await;
    assert_eq!(
        ids(&restarted.deliveries(&a, "?limit=500").await),
        expected[..334]
    );
}

#[tokio::test]
async fn the_attempt_log_bound_is_checked_at_start() {
    for bad in [0, 999, 10_000_001] {
        let config = Config {
            attempt_log_max_attempts: bad,
            api_insecure_no_auth: true,
            admin_addr: "127.0.0.1:0".to_owned(),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let err = producer::serve(config, listener, CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("HOOKLINE_ATTEMPT_LOG_MAX_ATTEMPTS"),
            "{bad}: {err}"
        );
    }
}
