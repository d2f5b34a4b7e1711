//! The dead-letter routes against the real broker: listing and showing without
//! secrets, coded 4xx answers for bad parameters, and replays (also through
//! `/webhooks/{id}/recover`) that re-queue a letter once.

use std::time::Duration;

use producer::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_kit::Secret;
use tokio_util::sync::CancellationToken;
use wire::{Attempt, DeadLetter, Header, Registry, RenderedDelivery};

const TOKEN: &str = "test-token-dl";
const CANARY_KEY: &str = "canary-key-d3ad";
const CANARY_BODY: &str = "canary-body-l3tt3r";

struct Api {
    base: String,
    client: reqwest::Client,
    config: Config,
    shutdown: CancellationToken,
}

impl Api {
    async fn start(test: &str) -> Api {
        let config = Config {
            kafka: test_kit::kafka_settings(test),
            api_token: Secret::new(TOKEN),
            master_key: Secret::new(test_kit::MASTER_KEY),
            admin_addr: "127.0.0.1:0".to_owned(),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(producer::serve(config.clone(), listener, shutdown.clone()));
        let api = Api {
            base,
            client: reqwest::Client::new(),
            config,
            shutdown,
        };
        for _ in 0..600 {
            if task.is_finished() {
                panic!("producer stopped: {:?}", task.await);
            }
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

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.config.kafka.topic_prefix)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The dispatcher's dead letter of a request to `url` for `endpoint_id`, sealed as the
/// renderer seals it.
fn letter(id: &str, endpoint_id: &str, url: &str) -> DeadLetter {
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).expect("key");
    let delivery_id = format!("del-{id}");
    let ctx = |part: &str| signing::delivery_context(&delivery_id, part, "POST", url);
    DeadLetter {
        id: id.to_owned(),
        reason_code: "HL-DELIVERY-REJECTED".into(),
        reason: "final outcome after 1 attempt(s); last: HTTP 410".into(),
        failed_at: wire::now_rfc3339(),
        stage: "dispatcher".into(),
        source_topic: "rendered-deliveries".into(),
        source_partition: 0,
        source_offset: 1,
        event_id: Some("ev-1".into()),
        endpoint_id: Some(endpoint_id.to_owned()),
        delivery_id: Some(delivery_id.clone()),
        delivery: Some(RenderedDelivery {
            delivery_id: delivery_id.clone(),
            event_id: "ev-1".into(),
            event_type: "transfer.error".into(),
            endpoint_id: endpoint_id.to_owned(),
            method: "POST".into(),
            url: url.to_owned(),
            headers: vec![Header::new("Content-Type", "application/json")],
            sensitive_headers: vec![Header::new(
                "Authorization",
                sealer.seal(
                    format!("Bearer {CANARY_KEY}").as_bytes(),
                    &ctx("header/authorization"),
                ),
            )],
            signing_scheme: "prequel_rsa".into(),
            body_sealed: true,
            body: sealer
                .seal(CANARY_BODY.as_bytes(), &ctx("body"))
                .into_bytes(),
            ..RenderedDelivery::default()
        }),
        payload: None,
        attempts: vec![Attempt {
            attempt: 1,
            started_at: wire::now_rfc3339(),
            duration_ms: 4,
            status: Some(410),
            error_code: None,
            response: None,
        }],
    }
}

fn assert_no_canary(what: &str, body: &Value) {
    let text = body.to_string();
    for canary in [CANARY_KEY, CANARY_BODY, "canary-query"] {
        assert!(!text.contains(canary), "{canary} in {what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_without_secrets() {
    let api = Api::start("dlq-api").await;
    let url = "https://example.com/hook?sig=canary-query";
    let (status, created) = api
        .call(Method::POST, "/webhooks", Some(json!({"webhook": {"name": "n", "vendor": "generic_post", "url": url, "events": ["transfer.error"], "api_key": CANARY_KEY}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let webhook = created["webhook"]["id"].as_str().expect("id").to_owned();
    let registry = Registry::bundled().expect("schemas");
    let letters = [
        letter("dl-a", &webhook, url),
        letter("dl-b", &webhook, url),
        letter("dl-c", "ep-gone", url),
    ];
    // Keyed as the services key them: by endpoint id.
    let records: Vec<(&str, Vec<u8>)> = letters
        .iter()
        .map(|l| {
            let key = l.endpoint_id.as_deref().unwrap_or(&l.id);
            (key, registry.encode(l).expect("encodes"))
        })
        .collect();
    test_kit::produce(&api.config.kafka, &api.topic("dead-letter"), &records).await;

    let unauthed = api
        .client
        .get(format!("{}/dead-letters", api.base))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthed.status(), StatusCode::UNAUTHORIZED);

    let (status, all) = api.call(Method::GET, "/dead-letters", None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["dead_letters"].as_array().expect("list").len(), 3);
    assert_no_canary("the list", &all);
    let (_, page) = api
        .call(
            Method::GET,
            &format!(
                "/dead-letters?endpoint_id={webhook}&limit=1&reason=HL-DELIVERY-REJECTED&since=1h"
            ),
            None,
        )
        .await;
    assert_eq!(page["dead_letters"].as_array().expect("list").len(), 1);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, second) = api
        .call(
            Method::GET,
            &format!("/dead-letters?endpoint_id={webhook}&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["dead_letters"].as_array().expect("list").len(), 1);
    assert_ne!(
        second["dead_letters"][0]["id"],
        page["dead_letters"][0]["id"]
    );
    assert!(second["next_cursor"].is_null());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("since=yesterday", "since"),
        ("cursor=zz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = api
            .call(Method::GET, &format!("/dead-letters?{query}"), None)
            .await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["field"].as_str()
            ),
            (StatusCode::BAD_REQUEST, Some("HL-API-INVALID"), Some(field)),
            "{query}: {body}"
        );
    }

    let (status, shown) = api.call(Method::GET, "/dead-letters/dl-a", None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_no_canary("show", &shown);
    assert_eq!(
        shown["dead_letter"]["request"]["url"],
        "https://example.com/hook?sig=[redacted]"
    );
    assert_eq!(shown["dead_letter"]["request"]["body_sealed"], true);
    let (status, missing) = api.call(Method::GET, "/dead-letters/dl-nope", None).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("HL-API-NOT-FOUND"))
    );

    let (status, refused) = api
        .call(Method::POST, "/dead-letters/replay", Some(json!({})))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("HL-API-INVALID")),
        "{refused}"
    );
    let (status, refused) = api
        .call(
            Method::POST,
            "/dead-letters/replay",
            Some(json!({"ids": "dl-a"})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ids"))
    );

    let (status, dry) = api
        .call(
            Method::POST,
            "/dead-letters/replay",
            Some(json!({"ids": ["dl-a", "dl-c", "dl-x"], "dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(
        (
            dry["dry_run"].as_bool(),
            dry["matched"].as_u64(),
            dry["requeued"].as_u64()
        ),
        (Some(true), Some(2), Some(1))
    );
    assert_eq!(dry["refused"]["HL-REPLAY-ENDPOINT-DELETED"], 1);
    assert_eq!(dry["not_found"], json!(["dl-x"]));
    let (_, done) = api
        .call(
            Method::POST,
            "/dead-letters/replay",
            Some(json!({"ids": ["dl-a"]})),
        )
        .await;
    assert_eq!(
        (done["dry_run"].as_bool(), done["requeued"].as_u64()),
        (Some(false), Some(1)),
        "{done}"
    );
    let (_, again) = api
        .call(
            Method::POST,
            "/dead-letters/replay",
            Some(json!({"ids": ["dl-a"]})),
        )
        .await;
    assert_eq!(
        (
            again["requeued"].as_u64(),
            again["already_replayed"].as_u64()
        ),
        (Some(0), Some(1)),
        "{again}"
    );

    let (status, body) = api
        .call(
            Method::POST,
            "/webhooks/no-such-webhook/recover",
            Some(json!({"since": "1h"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("HL-API-NOT-FOUND"))
    );
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/webhooks/{webhook}/recover"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("since"))
    );
    let (status, recovered) = api
        .call(
            Method::POST,
            &format!("/webhooks/{webhook}/recover"),
            Some(json!({"since": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{recovered}");
    assert_eq!(
        (
            recovered["matched"].as_u64(),
            recovered["requeued"].as_u64(),
            recovered["already_replayed"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_no_canary("a replay summary", &recovered);

    // dl-a and dl-b were re-queued once each, resealed for the webhook's URL.
    test_kit::produce(
        &api.config.kafka,
        &api.topic("rendered-deliveries"),
        &[(webhook.as_str(), b"sentinel".to_vec())],
    )
    .await;
    let records = test_kit::read_topic(
        &api.config.kafka,
        &api.topic("rendered-deliveries"),
        Duration::from_secs(60),
        |r| r.iter().any(|r| r.value.as_deref() == Some(b"sentinel")),
    )
    .await;
    let mut replays: Vec<String> = records
        .iter()
        .filter(|r| {
            r.key.as_deref() == Some(webhook.as_str()) && r.value.as_deref() != Some(b"sentinel")
        })
        .map(|r| {
            registry
                .decode::<RenderedDelivery>(r.value.as_ref().expect("value"))
                .expect("a delivery")
                .replay_of
                .expect("replay_of")
        })
        .collect();
    replays.sort();
    assert_eq!(replays, ["dl-a", "dl-b"]);
}
