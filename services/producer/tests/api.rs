//! The producer API against the real broker: auth, webhooks CRUD through the compacted
//! endpoints topic, sensitive-trace endpoints, event ingest, and clear 4xx answers for
//! bad input.

use std::time::Duration;

use producer::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Secret;
use tokio_util::sync::CancellationToken;

mod common;

use common::{Api, TOKEN};

fn webhook(url: &str) -> Value {
    json!({"webhook": {"name": "ops alerts", "vendor": "generic_post", "url": url, "events": ["transfer.error"], "api_key": "sk-live-secret"}})
}

fn transfer_error(transfer_id: &str) -> Value {
    json!({"type": "transfer.error", "data": {"error": {
        "destination_id": "d-1", "destination_name": "Foo Bar", "id_in_provider_system": "acme",
        "models": ["users"], "is_full_refresh": true, "transfer_id": transfer_id,
        "transfer_status": "ERROR", "transfer_error_type": "third_party",
        "transfer_log": "secret stack trace", "transfer_log_pretty": "",
        "transfer_started_at": "2023-10-15T16:19:08+00:00", "transfer_ended_at": null, "in_app_url": ""
    }}})
}

#[tokio::test]
async fn refuses_to_start_without_a_token() {
    let config = Config {
        kafka: test_kit::kafka_settings("notoken"),
        master_key: Secret::new(test_kit::MASTER_KEY),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = producer::serve(config, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HOOKLINE_API_TOKEN"), "{err}");
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let api = Api::start("auth").await;
    let health = api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    for (method, path, token) in [
        (reqwest::Method::GET, "/webhooks", None),
        (reqwest::Method::GET, "/webhooks", Some("wrong")),
        (reqwest::Method::POST, "/events", Some("")),
        (reqwest::Method::POST, "/webhooks", Some("test-token-12")),
    ] {
        let mut req = api.client.request(method, format!("{}{path}", api.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "HL-API-UNAUTHORIZED");
    }
}

#[tokio::test]
async fn webhooks_crud_reads_its_own_writes_and_masks_the_key() {
    let api = Api::start("crud").await;
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(webhook("https://example.com/hook")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["webhook"]["api_key"], "******");
    assert!(!created.to_string().contains("sk-live-secret"));

    let (status, got) = api
        .call(reqwest::Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["webhook"]["url"], "https://example.com/hook");
    assert_eq!(got["webhook"]["events"], json!(["transfer.error"]));

    let (_, list) = api.call(reqwest::Method::GET, "/webhooks", None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);

    // PATCH: the masked key sent back leaves the key unchanged.
    let patch =
        json!({"webhook": {"url": "https://example.com/v2", "api_key": "******", "active": false}});
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["webhook"]["url"], "https://example.com/v2");
    assert_eq!(patched["webhook"]["active"], false);
    assert_eq!(patched["webhook"]["api_key"], "******");

    // The topic is the system of record: read it back and check the stored key.
    let registry = wire::Registry::bundled().unwrap();
    let topic = format!("{}endpoints", api.config.kafka.topic_prefix);
    let records = test_kit::read_topic(&api.config.kafka, &topic, Duration::from_secs(20), |r| {
        r.len() >= 2
    })
    .await;
    assert_eq!(records.len(), 2);
    let last: wire::Endpoint = registry.decode(records[1].value.as_ref().unwrap()).unwrap();
    assert_eq!(records[1].key.as_deref(), Some(id.as_str()));
    // Sealed at rest with the master key, bound to the endpoint.
    let sealed = last.api_key.as_deref().unwrap();
    assert!(signing::Sealer::is_sealed(sealed) && !sealed.contains("sk-live-secret"));
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).unwrap();
    assert_eq!(
        sealer
            .open(sealed, &signing::endpoint_context(&id, "api_key"))
            .unwrap(),
        b"sk-live-secret"
    );
    assert!(
        sealer
            .open(sealed, &signing::endpoint_context(&id, "secret"))
            .is_err(),
        "bound to its field"
    );
    assert_eq!(last.url, "https://example.com/v2");

    let (status, _) = api
        .call(reqwest::Method::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, missing) = api
        .call(reqwest::Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "HL-API-NOT-FOUND");
    let records = test_kit::read_topic(&api.config.kafka, &topic, Duration::from_secs(20), |r| {
        r.len() >= 3
    })
    .await;
    assert_eq!(records.len(), 3);
    assert!(records[2].value.is_none(), "DELETE writes a tombstone");

    // A second producer (another instance) sees what the first wrote.
    let (_, created) = api
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(webhook("https://example.com/other")),
        )
        .await;
    let other_id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(producer::serve(
        api.config.clone(),
        listener,
        api.shutdown.clone(),
    ));
    let mut seen = None;
    for _ in 0..600 {
        if let Ok(resp) = api
            .client
            .get(format!("{other}/webhooks/{other_id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            seen = Some(resp.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(StatusCode::OK));
}

#[tokio::test]
async fn invalid_webhooks_get_400_naming_the_field() {
    let api = Api::start("badhook").await;
    let cases = [
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "not a url", "events": ["transfer.error"]}}),
            "webhook.url",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "ftp://h/x", "events": ["transfer.error"]}}),
            "webhook.url",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "carrier_pigeon", "url": "https://h/x", "events": ["transfer.error"]}}),
            "webhook.vendor",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "pagerduty", "events": ["transfer.error"]}}),
            "webhook.api_key",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "slack", "url": "https://h/x", "events": ["*"], "body_template": "{{.Type}}"}}),
            "webhook.body_template",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["*"], "body_template": "{{if .Type}}"}}),
            "webhook.body_template",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/{{.Data.nope | len}}", "events": ["transfer.error"]}}),
            "webhook.url",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["*"], "header_template": "not a header"}}),
            "webhook.header_template",
        ),
        // Refused at creation (with the secret open), not dead-lettered later.
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/{{.Secret}}", "secret": "hush-hush", "events": ["*"], "signing_scheme": "none"}}),
            "webhook.url",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["*"], "method": "BREW"}}),
            "webhook.method",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["*"], "triggers": ["sometimes"]}}),
            "webhook.triggers[0]",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["nope.*"]}}),
            "webhook.events[0]",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.exploded"]}}),
            "webhook.events[0]",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": []}}),
            "webhook.events",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x"}}),
            "webhook.events",
        ),
        (
            json!({"webhook": {"vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"]}}),
            "webhook.name",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "colour": 1}}),
            "webhook.colour",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "active": "yes"}}),
            "webhook.active",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "validate_tls": "no"}}),
            "webhook.validate_tls",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "timeout_ms": 5}}),
            "webhook.timeout_ms",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "timeout_ms": "15s"}}),
            "webhook.timeout_ms",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "retry_on_failure": "no"}}),
            "webhook.retry_on_failure",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "retry_schedule": "5s,soon"}}),
            "webhook.retry_schedule",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "retry_schedule": "5s,8days"}}),
            "webhook.retry_schedule",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "retry_schedule": []}}),
            "webhook.retry_schedule",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "retry_schedule": ["5s", 30]}}),
            "webhook.retry_schedule[1]",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "max_in_flight": 0}}),
            "webhook.max_in_flight",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "max_in_flight": 1001}}),
            "webhook.max_in_flight",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "max_rps": 10001}}),
            "webhook.max_rps",
        ),
        (
            json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["transfer.error"], "max_rps": "5"}}),
            "webhook.max_rps",
        ),
        (json!({"name": "x"}), "name"),
        (json!([1, 2]), "webhook"),
    ];
    for (body, field) in cases {
        let (status, answer) = api
            .call(reqwest::Method::POST, "/webhooks", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "HL-API-INVALID");
    }
    // Wildcards, templates, triggers and filters that are right are accepted, secrets masked.
    let good = json!({"webhook": {"name": "tasks", "vendor": "generic_post", "url": "https://h/{{.Type}}", "events": ["transfer.*"],
        "method": "put", "header_template": "Authorization: Bearer {{.Secret}}", "headers": {"X-Id": "{{.Id}}"}, "secret": "s3",
        "body_template": "{\"t\": {{printf \"%q\" .Type}}}", "triggers": ["failure"], "destination_ids": ["d-1"],
        "timeout_ms": 2500, "validate_tls": false}});
    let (status, created) = api
        .call(reqwest::Method::POST, "/webhooks", Some(good))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["webhook"]["secret"], "******");
    assert_eq!(created["webhook"]["method"], "PUT");
    assert_eq!(
        (
            created["webhook"]["timeout_ms"].clone(),
            created["webhook"]["validate_tls"].clone()
        ),
        (json!(2500), json!(false))
    );
    let plain = api
        .call(reqwest::Method::POST, "/webhooks", Some(json!({"webhook": {"name": "p", "vendor": "generic_post", "url": "https://h/x", "events": ["*"]}})))
        .await
        .1;
    assert_eq!(
        (
            plain["webhook"]["timeout_ms"].clone(),
            plain["webhook"]["validate_tls"].clone()
        ),
        (Value::Null, json!(true)),
        "defaults: 15 s, verified"
    );
    assert!(!created.to_string().contains("\"s3\""));

    let resp = api
        .client
        .post(format!("{}/webhooks", api.base))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "HL-API-MALFORMED");
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            "/webhooks/does-not-exist",
            Some(json!({"webhook": {"name": "y"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_delivery_policy_round_trips_through_the_endpoints_topic() {
    let api = Api::start("policy").await;
    let policy = |hook: &Value| -> Value {
        let w = &hook["webhook"];
        json!([
            w["retry_on_failure"],
            w["retry_schedule"],
            w["max_in_flight"],
            w["max_rps"]
        ])
    };
    // Left out: retries on, the dispatcher's schedule and concurrency, no rate limit.
    let (status, plain) = api
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(webhook("https://example.com/plain")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(policy(&plain), json!([true, null, null, null]));

    let mut body = webhook("https://example.com/hook");
    body["webhook"].as_object_mut().unwrap().extend(
        json!({"retry_on_failure": false, "retry_schedule": ["0s", " 90s,1h 30m"], "max_in_flight": 10, "max_rps": 50}).as_object().unwrap().clone(),
    );
    let (status, created) = api
        .call(reqwest::Method::POST, "/webhooks", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        policy(&created),
        json!([false, "0s,1m30s,1h30m", 10, 50]),
        "stored canonical"
    );
    let (_, got) = api
        .call(reqwest::Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(policy(&got), json!([false, "0s,1m30s,1h30m", 10, 50]));

    // PATCH changes only what it names; null goes back to the default.
    let patch =
        json!({"webhook": {"retry_on_failure": true, "retry_schedule": "5s,5m", "max_rps": null}});
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(policy(&patched), json!([true, "5s,5m", 10, null]));
    // A bad value is refused and changes nothing.
    let (status, refused) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"webhook": {"max_in_flight": 5000, "max_rps": 7}})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("webhook.max_in_flight"))
    );
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"webhook": {"retry_schedule": null, "name": "renamed"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(policy(&patched), json!([true, null, 10, null]));
    let (_, list) = api.call(reqwest::Method::GET, "/webhooks", None).await;
    let listed = list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        policy(&json!({"webhook": listed})),
        json!([true, null, 10, null])
    );

    // What the renderer reads: the stored endpoints, retries stored inverted.
    let registry = wire::Registry::bundled().unwrap();
    let topic = format!("{}endpoints", api.config.kafka.topic_prefix);
    let stored: Vec<wire::Endpoint> = records_of(&api.config.kafka, &topic, &id, 3)
        .await
        .iter()
        .map(|r| registry.decode(r.as_ref().unwrap()).unwrap())
        .collect();
    let summary: Vec<Value> = stored
        .iter()
        .map(|e| {
            json!([
                e.single_attempt,
                e.retry_schedule,
                e.max_in_flight,
                e.max_rps
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!([true, "0s,1m30s,1h30m", 10, 50]),
            json!([false, "5s,5m", 10, null]),
            json!([false, null, 10, null])
        ]
    );
}

#[tokio::test]
async fn events_are_validated_and_produced_keyed_by_transfer() {
    let api = Api::start("events").await;
    let (status, accepted) = api
        .call(
            reqwest::Method::POST,
            "/events",
            Some(transfer_error("tr-42")),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();

    let topic = format!("{}events", api.config.kafka.topic_prefix);
    let records = test_kit::read_topic(&api.config.kafka, &topic, Duration::from_secs(20), |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some("tr-42"));
    let registry = wire::Registry::bundled().unwrap();
    let mut event = registry
        .decode_event(records[0].value.as_ref().unwrap())
        .unwrap();
    assert_eq!(event.id, id);
    // The transfer log reaches Kafka sealed, and opens with the master key.
    let raw = records[0].value.as_ref().unwrap();
    assert!(
        !raw.windows(18).any(|w| w == b"secret stack trace"),
        "the transfer log is in clear in Kafka"
    );
    assert!(signing::Sealer::is_sealed(
        event.data["error"]["transfer_log"].as_str().unwrap()
    ));
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).unwrap();
    service_kit::open_event(&sealer, &registry, &mut event).unwrap();
    assert_eq!(event.data["error"]["transfer_log"], "secret stack trace");

    let mut missing = transfer_error("tr-1");
    missing["data"]["error"]
        .as_object_mut()
        .unwrap()
        .remove("destination_id");
    let mut wrong = transfer_error("tr-1");
    wrong["data"]["error"]["models"] = json!("users");
    let cases = [
        (missing, "data.error.destination_id"),
        (wrong, "data.error.models"),
        (json!({"type": "nope.nope", "data": {}}), "type"),
        (json!({"data": {}}), "type"),
    ];
    let mut huge = transfer_error("tr-2");
    huge["data"]["error"]["transfer_log"] = json!("x".repeat(1024 * 1024 + 1));
    let (status, answer) = api.call(reqwest::Method::POST, "/events", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "HL-API-TOO-LARGE");

    for (body, field) in cases {
        let (status, answer) = api
            .call(reqwest::Method::POST, "/events", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            !answer.to_string().contains("secret stack trace"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn an_array_of_events_gets_one_result_each_in_order() {
    let api = Api::start("event-array").await;
    let mut missing = transfer_error("tr-b");
    missing["data"]["error"]
        .as_object_mut()
        .unwrap()
        .remove("destination_id");
    let batch = json!([transfer_error("tr-a"), missing, transfer_error("tr-c")]);
    let (status, answer) = api
        .call(reqwest::Method::POST, "/events", Some(batch))
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    let results = answer["events"].as_array().expect("one result per event");
    assert_eq!(results.len(), 3, "{answer}");
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[2]["status"], 202);
    assert_eq!(results[1]["status"], 400);
    assert_eq!(results[1]["error"]["code"], "HL-API-INVALID");
    assert_eq!(results[1]["error"]["field"], "data.error.destination_id");
    assert!(
        !answer.to_string().contains("secret stack trace"),
        "{answer}"
    );
    // The valid ones reached Kafka, with the ids answered; the invalid one did not.
    let topic = format!("{}events", api.config.kafka.topic_prefix);
    let records = test_kit::read_topic(&api.config.kafka, &topic, Duration::from_secs(20), |r| {
        r.len() >= 2
    })
    .await;
    let registry = wire::Registry::bundled().unwrap();
    let mut written: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let event = registry.decode_event(r.value.as_ref().unwrap()).unwrap();
            (r.key.clone().unwrap(), event.id)
        })
        .collect();
    written.sort();
    let answered = vec![
        (
            "tr-a".to_owned(),
            results[0]["id"].as_str().unwrap().to_owned(),
        ),
        (
            "tr-c".to_owned(),
            results[2]["id"].as_str().unwrap().to_owned(),
        ),
    ];
    assert_eq!(written, answered);

    // All valid: 202. Empty, or more than 1000: 400 naming `events`.
    let all = Value::Array(
        (0..50)
            .map(|i| transfer_error(&format!("tr-{i}")))
            .collect(),
    );
    let (status, answer) = api.call(reqwest::Method::POST, "/events", Some(all)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["events"].as_array().map(Vec::len), Some(50));
    for body in [json!([]), Value::Array(vec![json!({}); 1001])] {
        let (status, answer) = api.call(reqwest::Method::POST, "/events", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], "events", "{answer}");
    }
}

#[tokio::test]
async fn a_wrong_master_key_is_a_clear_start_up_error() {
    let api = Api::start("masterkey").await;
    let wrong = Config {
        master_key: Secret::new(signing::Sealer::new_master_key()),
        ..api.config.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = producer::serve(wrong, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("HOOKLINE_MASTER_KEY does not open"),
        "{err:#}"
    );
    let missing = Config {
        master_key: Secret::default(),
        ..api.config.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = producer::serve(missing, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("HOOKLINE_MASTER_KEY is not set"),
        "{err:#}"
    );
}

#[tokio::test]
async fn the_public_key_is_public_and_rotation_needs_the_token() {
    let api = Api::start("pubkey").await;
    let resp = api
        .client
        .get(format!("{}/public/signatures/webhook-public-key", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let key: Value = resp.json().await.unwrap();
    assert!(
        key["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let anonymous = api
        .client
        .post(format!("{}/signatures/webhook-key/rotate", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, rotated) = api
        .call(
            reqwest::Method::POST,
            "/signatures/webhook-key/rotate",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["kid"], key["kid"]);
    assert!(!rotated.to_string().contains("PRIVATE"));
}

#[tokio::test]
async fn changing_the_signing_scheme_changes_the_secret_with_it() {
    let api = Api::start("schemes").await;
    let hook = json!({"webhook": {"name": "x", "vendor": "generic_post", "url": "https://h/x", "events": ["*"],
        "signing_scheme": "fivetran_hmac", "secret": "plain-fivetran-secret"}});
    let (status, created) = api
        .call(reqwest::Method::POST, "/webhooks", Some(hook))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created.get("generated_secret").is_none());
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    // To standard_webhooks without a secret: the Fivetran one is dropped, a whsec_ one generated.
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"webhook": {"signing_scheme": "standard_webhooks"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(
        patched["generated_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    // To dataprep_hmac without a secret: refused, it needs one.
    let (status, refused) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"webhook": {"signing_scheme": "dataprep_hmac"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["field"], "webhook.secret");
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"webhook": {"secret": "not-whsec"}})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a standard_webhooks secret must be whsec_"
    );
}

/// The seed's two `POST /sensitive-trace-endpoints` bodies, verbatim.
const SEED_GENERIC: &str =
    include_str!("../../../crates/render/tests/fixtures/seed-generic-endpoint.json");
const SEED_SLACK: &str =
    include_str!("../../../crates/render/tests/fixtures/seed-slack-endpoint.json");
const SEED_SECRET: &str = "your-webhook-secret-token";

/// The values of `key`'s records on `topic`, in order (the endpoints of a test can be on
/// different partitions, so only one key's records are ordered), once there are `n`.
async fn records_of(
    kafka: &kafka_io::KafkaSettings,
    topic: &str,
    key: &str,
    n: usize,
) -> Vec<Option<Vec<u8>>> {
    let k = key.to_owned();
    let all = test_kit::read_topic(kafka, topic, Duration::from_secs(20), move |r| {
        r.iter()
            .filter(|r| r.key.as_deref() == Some(k.as_str()))
            .count()
            >= n
    })
    .await;
    let mine: Vec<Option<Vec<u8>>> = all
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key))
        .map(|r| r.value)
        .collect();
    assert_eq!(mine.len(), n, "records of {key}");
    mine
}

fn seed(body: &str) -> Value {
    serde_json::from_str(body).expect("the seed's example is JSON")
}

#[tokio::test]
async fn sensitive_trace_endpoints_crud_seals_and_masks_the_secret() {
    let api = Api::start("traces").await;
    let mut answers: Vec<Value> = Vec::new();
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/sensitive-trace-endpoints",
            Some(seed(SEED_GENERIC)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ep = &created["sensitive_trace_endpoint"];
    let id = ep["id"].as_str().unwrap().to_owned();
    assert_eq!(ep["secret"], "******");
    assert_eq!(ep["name"], "Production Error Webhook");
    assert_eq!(
        ep["description"],
        "Sends errors to our internal monitoring system"
    );
    assert_eq!(ep["url"], "https://your-domain.com/webhooks/prequel-errors");
    assert_eq!(
        ep["header_template"],
        seed(SEED_GENERIC)["sensitive_trace_endpoint"]["header_template"]
    );
    assert_eq!(
        ep["body_template"],
        seed(SEED_GENERIC)["sensitive_trace_endpoint"]["body_template"]
    );
    answers.push(created.clone());
    let (status, slack) = api
        .call(
            reqwest::Method::POST,
            "/sensitive-trace-endpoints",
            Some(seed(SEED_SLACK)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slack}");
    assert_eq!(
        slack["sensitive_trace_endpoint"]["secret"],
        Value::Null,
        "no secret is generated"
    );
    let slack_id = slack["sensitive_trace_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, got) = api
        .call(
            reqwest::Method::GET,
            &format!("/sensitive-trace-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["sensitive_trace_endpoint"],
        created["sensitive_trace_endpoint"]
    );
    answers.push(got);
    let (status, list) = api
        .call(reqwest::Method::GET, "/sensitive-trace-endpoints", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["sensitive_trace_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()) && ids.contains(&slack_id.as_str()));
    answers.push(list);

    // PATCH: the masked secret sent back leaves it unchanged.
    let patch = json!({"sensitive_trace_endpoint": {"url": "https://your-domain.com/v2", "secret": "******", "description": null}});
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/sensitive-trace-endpoints/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["sensitive_trace_endpoint"]["url"],
        "https://your-domain.com/v2"
    );
    assert_eq!(
        patched["sensitive_trace_endpoint"]["description"],
        Value::Null
    );
    assert_eq!(patched["sensitive_trace_endpoint"]["secret"], "******");
    assert_eq!(
        patched["sensitive_trace_endpoint"]["name"],
        "Production Error Webhook"
    );
    answers.push(patched);

    // The topic holds the endpoint as the renderer reads it, the secret sealed to it.
    let registry = wire::Registry::bundled().unwrap();
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).unwrap();
    let topic = format!("{}endpoints", api.config.kafka.topic_prefix);
    let records = records_of(&api.config.kafka, &topic, &id, 2).await;
    let stored: wire::Endpoint = registry.decode(records[1].as_ref().unwrap()).unwrap();
    assert_eq!(
        (
            stored.kind.as_str(),
            stored.vendor.as_str(),
            stored.signing_scheme.as_str()
        ),
        ("sensitive_trace", "sensitive_trace", "none")
    );
    assert!(stored.active && stored.events.is_empty());
    assert_eq!(stored.url, "https://your-domain.com/v2");
    let sealed = stored.secret.as_deref().unwrap();
    assert!(signing::Sealer::is_sealed(sealed) && !sealed.contains(SEED_SECRET));
    assert_eq!(
        sealer
            .open(sealed, &signing::endpoint_context(&id, "secret"))
            .unwrap(),
        SEED_SECRET.as_bytes()
    );
    for r in &records {
        assert!(
            !String::from_utf8_lossy(r.as_deref().unwrap_or_default()).contains(SEED_SECRET),
            "never in clear on the topic"
        );
    }

    // A new secret replaces it; null removes it.
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/sensitive-trace-endpoints/{id}"),
            Some(json!({"sensitive_trace_endpoint": {"secret": "second-secret"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let records = records_of(&api.config.kafka, &topic, &id, 3).await;
    let stored: wire::Endpoint = registry.decode(records[2].as_ref().unwrap()).unwrap();
    assert_eq!(
        sealer
            .open(
                stored.secret.as_deref().unwrap(),
                &signing::endpoint_context(&id, "secret")
            )
            .unwrap(),
        b"second-secret"
    );
    let (status, cleared) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/sensitive-trace-endpoints/{id}"),
            Some(json!({"sensitive_trace_endpoint": {"secret": null}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cleared["sensitive_trace_endpoint"]["secret"], Value::Null);

    let (status, deleted) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/sensitive-trace-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["deleted"], true);
    answers.push(deleted);
    let (status, missing) = api
        .call(
            reqwest::Method::GET,
            &format!("/sensitive-trace-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "HL-API-NOT-FOUND");
    let records = records_of(&api.config.kafka, &topic, &id, 5).await;
    assert!(records[4].is_none(), "DELETE writes a tombstone");
    let (_, list) = api
        .call(reqwest::Method::GET, "/sensitive-trace-endpoints", None)
        .await;
    assert_eq!(
        list["sensitive_trace_endpoints"].as_array().unwrap().len(),
        1
    );
    answers.push(list);
    for answer in answers {
        assert!(
            !answer.to_string().contains(SEED_SECRET)
                && !answer.to_string().contains("second-secret"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn invalid_sensitive_trace_endpoints_get_400_naming_the_field() {
    let api = Api::start("badtraces").await;
    let ok = |extra: Value| {
        let mut e = json!({"name": "x", "url": "https://h.example/traces"});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"sensitive_trace_endpoint": e})
    };
    let cases = [
        (
            ok(json!({"body_template": "{\"errors\": {{.SensitiveTraces}"})),
            "sensitive_trace_endpoint.body_template",
        ),
        (
            ok(json!({"body_template": "{{len .Part}}"})),
            "sensitive_trace_endpoint.body_template",
        ),
        (
            ok(json!({"header_template": "Hookline-Trace-Part: 1"})),
            "sensitive_trace_endpoint.header_template",
        ),
        (
            ok(json!({"header_template": "X-Ok: 1\nnot a header"})),
            "sensitive_trace_endpoint.header_template",
        ),
        (
            ok(json!({"url": "ftp://h/x"})),
            "sensitive_trace_endpoint.url",
        ),
        (
            ok(json!({"url": "https://user:pw@h/x"})),
            "sensitive_trace_endpoint.url",
        ),
        (
            ok(json!({"url": "https://h/{{.Secret}}", "secret": "in-the-url"})),
            "sensitive_trace_endpoint.url",
        ),
        (
            ok(json!({"url": "{{.DestinationId}}"})),
            "sensitive_trace_endpoint.url",
        ),
        (ok(json!({"secret": 12})), "sensitive_trace_endpoint.secret"),
        (
            ok(json!({"events": ["*"]})),
            "sensitive_trace_endpoint.events",
        ),
        (ok(json!({"name": ""})), "sensitive_trace_endpoint.name"),
        (
            ok(json!({"retry_on_failure": 0})),
            "sensitive_trace_endpoint.retry_on_failure",
        ),
        (
            ok(json!({"retry_schedule": "later"})),
            "sensitive_trace_endpoint.retry_schedule",
        ),
        (
            ok(json!({"max_in_flight": -3})),
            "sensitive_trace_endpoint.max_in_flight",
        ),
        (
            ok(json!({"max_rps": 0})),
            "sensitive_trace_endpoint.max_rps",
        ),
        (
            json!({"sensitive_trace_endpoint": {"url": "https://h/x"}}),
            "sensitive_trace_endpoint.name",
        ),
        (
            json!({"sensitive_trace_endpoint": {"name": "x"}}),
            "sensitive_trace_endpoint.url",
        ),
        (
            json!({"webhook": {"name": "x", "url": "https://h/x"}}),
            "webhook",
        ),
        (
            json!({"sensitive_trace_endpoint": "x"}),
            "sensitive_trace_endpoint",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api
            .call(
                reqwest::Method::POST,
                "/sensitive-trace-endpoints",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "HL-API-INVALID");
        assert!(!answer.to_string().contains("in-the-url"), "{answer}");
    }
    // A bad template names its line and column.
    let (_, answer) = api
        .call(
            reqwest::Method::POST,
            "/sensitive-trace-endpoints",
            Some(ok(
                json!({"body_template": "{\n\"errors\": {{.SensitiveTraces}\n}"}),
            )),
        )
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2, column "),
        "{answer}"
    );
    // A PATCH is checked the same way, and leaves the endpoint as it was.
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/sensitive-trace-endpoints",
            Some(ok(json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["sensitive_trace_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/sensitive-trace-endpoints/{id}"),
            Some(json!({"sensitive_trace_endpoint": {"body_template": "{{if .Part}}"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["error"]["field"],
        "sensitive_trace_endpoint.body_template"
    );
    let (_, got) = api
        .call(
            reqwest::Method::GET,
            &format!("/sensitive-trace-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(
        got["sensitive_trace_endpoint"]["body_template"],
        Value::Null
    );
    // The delivery policy: defaults shown, then set like a webhook's.
    let policy = |answer: &Value| {
        let e = &answer["sensitive_trace_endpoint"];
        json!([
            e["retry_on_failure"],
            e["retry_schedule"],
            e["max_in_flight"],
            e["max_rps"]
        ])
    };
    assert_eq!(policy(&got), json!([true, null, null, null]));
    let patch = json!({"sensitive_trace_endpoint": {"retry_on_failure": false, "retry_schedule": "1m, 1h", "max_in_flight": 1, "max_rps": 2}});
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/sensitive-trace-endpoints/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(policy(&patched), json!([false, "1m,1h", 1, 2]));
    let (_, got) = api
        .call(
            reqwest::Method::GET,
            &format!("/sensitive-trace-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(policy(&got), json!([false, "1m,1h", 1, 2]));
}

#[tokio::test]
async fn webhooks_and_sensitive_trace_endpoints_do_not_see_each_other() {
    let api = Api::start("kinds").await;
    let (_, hook) = api
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(webhook("https://example.com/hook")),
        )
        .await;
    let hook_id = hook["webhook"]["id"].as_str().unwrap().to_owned();
    let (_, trace) = api
        .call(
            reqwest::Method::POST,
            "/sensitive-trace-endpoints",
            Some(seed(SEED_SLACK)),
        )
        .await;
    let trace_id = trace["sensitive_trace_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (route, id) in [
        ("/sensitive-trace-endpoints", &hook_id),
        ("/webhooks", &trace_id),
    ] {
        let wrapper = if route == "/webhooks" {
            "webhook"
        } else {
            "sensitive_trace_endpoint"
        };
        for (method, body) in [
            (reqwest::Method::GET, None),
            (
                reqwest::Method::PATCH,
                Some(json!({ wrapper: {"name": "taken over"} })),
            ),
            (reqwest::Method::DELETE, None),
        ] {
            let (status, answer) = api
                .call(method.clone(), &format!("{route}/{id}"), body)
                .await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {route}/{id}: {answer}"
            );
        }
    }
    let (_, hooks) = api.call(reqwest::Method::GET, "/webhooks", None).await;
    assert_eq!(
        hooks["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [hook_id.as_str()]
    );
    let (_, traces) = api
        .call(reqwest::Method::GET, "/sensitive-trace-endpoints", None)
        .await;
    let names: Vec<&str> = traces["sensitive_trace_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Slack Sensitive Traces"], "nothing was taken over");
}

#[tokio::test]
async fn the_environment_must_be_prod_or_staging() {
    let config = Config {
        kafka: test_kit::kafka_settings("environment"),
        api_token: Secret::new(TOKEN),
        master_key: Secret::new(test_kit::MASTER_KEY),
        environment: "production".into(),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = producer::serve(config, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HOOKLINE_ENVIRONMENT"), "{err}");
}
