//! `GET /webhooks/{id}/deliveries` against the real broker: what the dispatcher wrote
//! to `delivery-attempts`, grouped by delivery, newest first, within `limit`, without
//! payloads; records written before a request are in its answer; replicas answer the
//! same, and a restarted producer reads the whole listing back from `delivery-index`.

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

/// The keys whose latest record in `topic` is a value, not a tombstone: what the topic
/// holds once compacted.
async fn live_keys(config: &Config, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.kafka_brokers)
        .create()
        .expect("client");
    let written: i64 = (0..config.kafka.topic_partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum();
    let records = test_kit::read_topic(&config.kafka, topic, Duration::from_secs(30), move |r| {
        r.len() as i64 >= written
    })
    .await;
    assert_eq!(records.len() as i64, written, "read the whole topic");
    let mut latest = std::collections::HashMap::new();
    for r in records {
        latest.insert(r.key.expect("keyed"), r.value.is_some());
    }
    latest.values().filter(|live| **live).count()
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

    // A second replica (it joins the indexers' group: partitions move) answers the same,
    // and both take what is written after it joined.
    let second = Api::start(&config, &shutdown).await;
    let again = second.deliveries(&a, "").await;
    assert_eq!(again, api.deliveries(&a, "").await);
    assert_eq!(ids(&again), ["d4", "d2", "d3", "d1"]);
    assert_eq!(again[1]["attempts"].as_array().map(Vec::len), Some(3));
    produce(
        &config,
        vec![
            attempt(&a, "d4", 2, 45, "delivered"),
            attempt(&b, "e2", 1, 46, "delivered"),
        ],
    )
    .await;
    for replica in [&api, &second] {
        let listed = replica.deliveries(&a, "").await;
        assert_eq!(ids(&listed), ["d4", "d2", "d3", "d1"]);
        assert_eq!(listed[0]["status"], "delivered", "{listed:?}");
        assert_eq!(ids(&replica.deliveries(&b, "").await), ["e2", "e1"]);
    }
}

#[tokio::test]
async fn memory_is_bounded_and_a_restarted_producer_reads_back_the_whole_listing() {
    // 1,000 attempts in all, a third per partition (three partitions): ceil(1000 / 3).
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
    let first = CancellationToken::new();
    let api = Api::start(&config, &first).await;
    let a = api.create("/webhooks", webhook("a")).await;
    let quiet = api.create("/webhooks", webhook("quiet")).await;
    let backlog: Vec<wire::DeliveryAttempt> = (0..2000)
        .map(|n| wire::DeliveryAttempt {
            started_at: format!("2026-11-23T10:{:02}:{:02}.000+00:00", n / 60, n % 60),
            ..attempt(&a, &format!("d{n:04}"), 1, 0, "delivered")
        })
        .collect();
    produce(&config, vec![attempt(&quiet, "q1", 1, 0, "delivered")]).await;
    produce(&config, backlog).await;

    // The endpoint's partition holds at most 334 attempts: its newest 334 deliveries
    // (333 when the quiet endpoint's one attempt shares that partition).
    let partition = |id: &str| kafka_io::partition_for_key(id.as_bytes(), 3);
    let share = if partition(&a) == partition(&quiet) {
        333
    } else {
        334
    };
    let expected: Vec<String> = (2000 - share..2000)
        .rev()
        .map(|n| format!("d{n:04}"))
        .collect();
    assert_eq!(ids(&api.deliveries(&a, "?limit=500").await), expected);
    // A quiet endpoint keeps its history beside a noisy one, wherever its partition is.
    assert_eq!(ids(&api.deliveries(&quiet, "").await), ["q1"]);

    // The only replica stops; a new one (nothing in memory) reads the same listing back,
    // and the index holds no more than the bound: 2,001 attempts written, each
    // evicted delivery tombstoned.
    first.cancel();
    let restarted = Api::start(&config, &shutdown).await;
    assert_eq!(ids(&restarted.deliveries(&a, "?limit=500").await), expected);
    assert_eq!(ids(&restarted.deliveries(&quiet, "").await), ["q1"]);
    let live = live_keys(
        &config,
        &format!("{}delivery-index", config.kafka.topic_prefix),
    )
    .await;
    assert_eq!(live, share + 1, "a's share and quiet's one");
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
