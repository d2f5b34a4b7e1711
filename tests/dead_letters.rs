//! Dead letters replayed through the real pipeline and the real `hookline` binary: a
//! receiver answers 410 (final), so each delivery is dead-lettered; once it answers 200,
//! `hookline dlq replay --endpoint ID` delivers each dead letter exactly once, with the
//! `Hookline-Delivery-Id` of the first attempt; a second replay delivers nothing more;
//! a dead letter replayed after the webhook's URL changed goes to the new URL; after
//! the webhook is deleted, replay refuses with `HL-REPLAY-ENDPOINT-DELETED`. Listing
//! and showing (CLI and API) never print the API key or the trace text.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Pipeline, TOKEN};

const CANARY_KEY: &str = "canary-key-4b1d70";
const CANARY_TRACE: &str = "canary-trace-9f2e11";

/// Runs `hookline dlq <args>` with the pipeline's settings: (exit code, stdout, stderr).
async fn hookline(pipeline: &Pipeline, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(tests::bin("hookline"));
    command.arg("dlq").args(args).envs(&pipeline.env);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run hookline");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hookline dlq replay --json <args>`: its exit code and summary.
async fn replay(pipeline: &Pipeline, args: &[&str]) -> (Option<i32>, Value) {
    let (code, stdout, stderr) = hookline(pipeline, &[&["replay", "--json"], args].concat()).await;
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("no summary (exit {code:?}): {stdout} {stderr}"));
    (code, summary)
}

async fn call(
    pipeline: &Pipeline,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = pipeline
        .client
        .request(method, format!("{}{path}", pipeline.base))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the API lists `n` dead letters of `endpoint`, and returns them.
async fn dead_letters(pipeline: &Pipeline, endpoint: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, page) = call(
            pipeline,
            reqwest::Method::GET,
            &format!("/dead-letters?endpoint_id={endpoint}"),
            None,
        )
        .await;
        let letters = page["dead_letters"].as_array().cloned().unwrap_or_default();
        if letters.len() >= n || std::time::Instant::now() > deadline {
            assert_eq!(letters.len(), n, "dead letters of {endpoint}: {page}");
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn transfer_error(n: usize) -> Value {
    json!({"type": "transfer.error", "data": {"error": {
        "destination_id": "d-1", "destination_name": "D", "id_in_provider_system": "x", "models": ["m"],
        "is_full_refresh": false, "transfer_id": format!("tr-{n}"), "transfer_status": "ERROR",
        "transfer_error_type": "host", "transfer_log": format!("{CANARY_TRACE} row {n}"), "transfer_log_pretty": "",
        "transfer_started_at": "2024-01-15T10:00:00Z", "transfer_ended_at": null, "in_app_url": ""}}})
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [CANARY_KEY, CANARY_TRACE] {
        assert!(!text.contains(canary), "{canary} in {what}: {text}");
    }
}

/// The delivery ids of what `path` got with `status`.
fn delivery_ids(receiver: &test_kit::Receiver, path: &str) -> Vec<String> {
    receiver
        .captured()
        .iter()
        .filter(|r| r.uri == path)
        .filter_map(|r| r.header("hookline-delivery-id").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_replayed_once_to_the_current_url() {
    // What /hook and /v2 answer, changed as the test goes.
    let hook = Arc::new(AtomicU16::new(410));
    let v2 = Arc::new(AtomicU16::new(200));
    let receiver = {
        let (hook, v2) = (hook.clone(), v2.clone());
        test_kit::Receiver::scripted(move |r, _| match r.uri.as_str() {
            "/hook" => test_kit::Answer::status(hook.load(Ordering::SeqCst)),
            "/v2" => test_kit::Answer::status(v2.load(Ordering::SeqCst)),
            _ => test_kit::Answer::status(404),
        })
        .await
    };
    let pipeline = Pipeline::start("e2e-dlq", &[]).await;
    let created = pipeline
        .post("/webhooks", &json!({"webhook": {"name": "dlq", "vendor": "generic_post", "url": receiver.url("/hook"), "events": ["transfer.error"], "api_key": CANARY_KEY}}))
        .await;
    let webhook = created["webhook"]["id"].as_str().expect("id").to_owned();

    // 1. Three deliveries answered 410: three dead letters.
    for n in 0..3 {
        pipeline.post("/events", &transfer_error(n)).await;
    }
    let letters = dead_letters(&pipeline, &webhook, 3).await;
    let first_ids = delivery_ids(&receiver, "/hook");
    assert_eq!(
        first_ids.len(),
        3,
        "each delivery was tried once (410 is final)"
    );
    let mut listed_ids: Vec<String> = letters
        .iter()
        .map(|l| l["delivery_id"].as_str().expect("delivery id").to_owned())
        .collect();
    listed_ids.sort();
    let mut sorted_first = first_ids.clone();
    sorted_first.sort();
    assert_eq!(listed_ids, sorted_first);
    assert!(
        letters.iter().all(
            |l| l["reason_code"] == "HL-DELIVERY-REJECTED" && l["attempts"][0]["status"] == 410
        )
    );

    // Listing and showing, by the CLI and the API, print neither the key nor the trace.
    let letter_id = letters[0]["id"].as_str().expect("id").to_owned();
    for args in [
        vec!["list", "--endpoint", webhook.as_str()],
        vec!["list", "--json"],
        vec!["show", letter_id.as_str()],
        vec!["show", letter_id.as_str(), "--json"],
    ] {
        let (code, stdout, stderr) = hookline(&pipeline, &args).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stdout.contains(&letter_id), "{args:?}: {stdout}");
        assert_no_canary(
            &format!("hookline dlq {args:?}"),
            &format!("{stdout}{stderr}"),
        );
    }
    let (_, shown, _) = hookline(&pipeline, &["show", &letter_id]).await;
    assert!(
        shown.contains("Authorization: [redacted]") && shown.contains("[body sealed"),
        "{shown}"
    );
    let (status, shown) = call(
        &pipeline,
        reqwest::Method::GET,
        &format!("/dead-letters/{letter_id}"),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_no_canary("GET /dead-letters/{id}", &shown.to_string());
    let (_, listed) = call(&pipeline, reqwest::Method::GET, "/dead-letters", None).await;
    assert_no_canary("GET /dead-letters", &listed.to_string());

    // 2. The receiver is fixed: the CLI's replay delivers each once, same delivery id.
    hook.store(200, Ordering::SeqCst);
    let (code, summary) = replay(&pipeline, &["--endpoint", &webhook]).await;
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        (summary["matched"].as_u64(), summary["requeued"].as_u64()),
        (Some(3), Some(3)),
        "{summary}"
    );
    let got = receiver
        .wait_until(Duration::from_secs(90), |c| {
            c.iter().filter(|r| r.uri == "/hook").count() >= 6
        })
        .await;
    let mut replayed: Vec<String> = got
        .iter()
        .filter(|r| r.uri == "/hook")
        .skip(3)
        .filter_map(|r| r.header("hookline-delivery-id").map(str::to_owned))
        .collect();
    replayed.sort();
    assert_eq!(
        replayed, sorted_first,
        "the replays carry the first attempts' delivery ids"
    );

    // A second replay re-queues nothing.
    let (code, again) = replay(&pipeline, &["--endpoint", &webhook]).await;
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(
        (
            again["requeued"].as_u64(),
            again["already_replayed"].as_u64()
        ),
        (Some(0), Some(3)),
        "{again}"
    );

    // 3. A new dead letter at /hook; the webhook moves to /v2; the replay goes there.
    hook.store(410, Ordering::SeqCst);
    pipeline.post("/events", &transfer_error(3)).await;
    let letters = dead_letters(&pipeline, &webhook, 4).await;
    let fourth = letters
        .iter()
        .find(|l| l["replayed_at"].is_null())
        .expect("the new letter");
    let fourth_delivery = fourth["delivery_id"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let (status, patched) = call(
        &pipeline,
        reqwest::Method::PATCH,
        &format!("/webhooks/{webhook}"),
        Some(json!({"webhook": {"url": receiver.url("/v2")}})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{patched}");
    let (status, dry) = call(
        &pipeline,
        reqwest::Method::POST,
        &format!("/webhooks/{webhook}/recover"),
        Some(json!({"since": "1h", "dry_run": true})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{dry}");
    assert_eq!(
        (
            dry["dry_run"].as_bool(),
            dry["requeued"].as_u64(),
            dry["already_replayed"].as_u64()
        ),
        (Some(true), Some(1), Some(3)),
        "{dry}"
    );
    let (code, summary) = replay(&pipeline, &["--endpoint", &webhook]).await;
    assert_eq!(
        (code, summary["requeued"].as_u64()),
        (Some(0), Some(1)),
        "{summary}"
    );
    let got = receiver
        .wait_until(Duration::from_secs(90), |c| {
            c.iter().any(|r| r.uri == "/v2")
        })
        .await;
    let at_v2: Vec<&test_kit::Captured> = got.iter().filter(|r| r.uri == "/v2").collect();
    assert_eq!(at_v2.len(), 1);
    assert_eq!(
        at_v2[0].header("hookline-delivery-id"),
        Some(fourth_delivery.as_str())
    );
    assert_eq!(
        at_v2[0].header("authorization"),
        Some(format!("Bearer {CANARY_KEY}").as_str()),
        "the sealed header opened at the new URL"
    );
    assert!(
        at_v2[0].json()["data"]["error"]["transfer_log"]
            .as_str()
            .is_some_and(|t| t.starts_with(CANARY_TRACE)),
        "the sealed body opened at the new URL"
    );

    // 4. A dead letter of a webhook that is then deleted: refused, by the CLI and the API.
    v2.store(410, Ordering::SeqCst);
    pipeline.post("/events", &transfer_error(4)).await;
    dead_letters(&pipeline, &webhook, 5).await;
    let (status, _) = call(
        &pipeline,
        reqwest::Method::DELETE,
        &format!("/webhooks/{webhook}"),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let (code, summary) = replay(&pipeline, &["--endpoint", &webhook]).await;
    assert_eq!(code, Some(3), "some letters refused: {summary}");
    assert_eq!(
        (
            summary["matched"].as_u64(),
            summary["requeued"].as_u64(),
            summary["already_replayed"].as_u64()
        ),
        (Some(5), Some(0), Some(4)),
        "{summary}"
    );
    assert_eq!(summary["refused"], json!({"HL-REPLAY-ENDPOINT-DELETED": 1}));
    let (code, text, _) = hookline(&pipeline, &["replay", "--endpoint", &webhook]).await;
    assert_eq!(code, Some(3));
    assert!(text.contains("HL-REPLAY-ENDPOINT-DELETED"), "{text}");
    let (status, api) = call(
        &pipeline,
        reqwest::Method::POST,
        "/dead-letters/replay",
        Some(json!({"endpoint_id": webhook})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{api}");
    assert_eq!(api["refused"], json!({"HL-REPLAY-ENDPOINT-DELETED": 1}));
    let (status, gone) = call(
        &pipeline,
        reqwest::Method::POST,
        &format!("/webhooks/{webhook}/recover"),
        Some(json!({"since": "1h"})),
    )
    .await;
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (reqwest::StatusCode::NOT_FOUND, Some("HL-API-NOT-FOUND"))
    );

    // Exactly once, counted where it is decided: the re-queued deliveries on Kafka.
    let registry = wire::Registry::bundled().expect("schemas");
    let topic = format!("{}rendered-deliveries", pipeline.kafka.topic_prefix);
    // Read up to a sentinel written last on the webhook's key (its partition): every
    // re-queue, committed before, is read before it.
    test_kit::produce(
        &pipeline.kafka,
        &topic,
        &[(webhook.as_str(), b"sentinel".to_vec())],
    )
    .await;
    let is_sentinel = |r: &test_kit::ReadRecord| r.value.as_deref() == Some(b"sentinel".as_slice());
    let records =
        test_kit::read_topic(&pipeline.kafka, &topic, Duration::from_secs(60), move |r| {
            r.iter().any(is_sentinel)
        })
        .await;
    assert!(
        records.iter().any(is_sentinel),
        "the sentinel was not read back"
    );
    let mut requeued: HashMap<String, usize> = HashMap::new();
    for r in records
        .iter()
        .filter(|r| r.key.as_deref() == Some(webhook.as_str()) && !is_sentinel(r))
    {
        let d = registry
            .decode::<wire::RenderedDelivery>(r.value.as_ref().expect("value"))
            .expect("a delivery");
        if d.replay_of.is_some() {
            *requeued.entry(d.delivery_id).or_default() += 1;
        }
    }
    let mut expected: HashMap<String, usize> = first_ids.iter().map(|id| (id.clone(), 1)).collect();
    expected.insert(fourth_delivery.clone(), 1);
    assert_eq!(requeued, expected, "each dead letter re-queued once");
    // And received once each after the fix (the first attempts' 410s aside).
    let mut at_hook: HashMap<String, usize> = HashMap::new();
    for id in delivery_ids(&receiver, "/hook") {
        *at_hook.entry(id).or_default() += 1;
    }
    for id in &first_ids {
        assert_eq!(at_hook.get(id), Some(&2), "{id}: the 410, then the replay");
    }
    assert_eq!(
        at_hook.get(&fourth_delivery),
        Some(&1),
        "the fourth was replayed to /v2, not /hook"
    );
    assert_no_canary(
        "the services' logs",
        &String::from_utf8_lossy(&pipeline.output()),
    );
}
