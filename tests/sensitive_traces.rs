//! Sensitive-trace endpoints through the real pipeline: the seed's two endpoints,
//! created verbatim (but for their URLs), get one request per transfer with every
//! trace; connection tests are sent at once; model validation traces never; and a
//! canary trace string is found nowhere in the broker's files or the services' output
//! while the receiver does get it.

use std::time::Duration;

use serde_json::{Value, json};
use test_kit::{Answer, Receiver};
use tests::Pipeline;

fn seed_endpoint(file: &str, url: &str) -> Value {
    let path = test_kit::repo_root()
        .join("crates/render/tests/fixtures")
        .join(file);
    let mut endpoint: Value =
        serde_json::from_slice(&std::fs::read(path).expect("seed fixture")).expect("json");
    endpoint["sensitive_trace_endpoint"]["url"] = json!(url);
    endpoint
}

fn trace(transfer: &str, model: &str, context: &str, text: &str) -> Value {
    json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": transfer, "destination_id": "dest-123",
        "source_id": "src-456", "model_id": model, "model_name": format!("{model}_table"), "source_vendor": "postgres",
        "destination_vendor": "snowflake", "execution_context": context, "trace": text}})
}

fn completed(transfer: &str) -> Value {
    json!({"type": "transfer.completed", "data": {"transfer_id": transfer, "destination_id": "dest-123", "status": "PARTIAL_ERROR",
        "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T10:30:00Z"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_endpoints_get_one_request_per_transfer_and_connection_tests_at_once() {
    let receiver = Receiver::ok().await;
    let pipeline = Pipeline::start("e2e-traces", &[]).await;
    pipeline
        .post(
            "/sensitive-trace-endpoints",
            &seed_endpoint("seed-generic-endpoint.json", &receiver.url("/generic")),
        )
        .await;
    pipeline
        .post(
            "/sensitive-trace-endpoints",
            &seed_endpoint("seed-slack-endpoint.json", &receiver.url("/slack")),
        )
        .await;

    // A connection test goes out at once, without any transfer ending.
    pipeline.post("/events", &json!({"type": "connection_test.sensitive_trace", "data": {"destination_id": "dest-123",
        "destination_vendor": "snowflake", "execution_context": "test_destination_connection", "trace": "FATAL: password authentication failed"}})).await;
    let got = receiver
        .wait_until(Duration::from_secs(60), |c| c.len() >= 2)
        .await;
    assert!(
        got.iter()
            .all(|r| r.header("hookline-trace-flush") == Some("connection_test")),
        "{got:?}"
    );

    // t-1: three models fail, one more fails validation (never forwarded); t-2 ends
    // without traces (nothing sent); t-1's traces interleave with t-3's.
    pipeline
        .post(
            "/events",
            &trace(
                "t-1",
                "m-1",
                "write_destination",
                "ERROR: duplicate key value violates unique constraint \"users_pkey\"",
            ),
        )
        .await;
    pipeline
        .post("/events", &trace("t-3", "m-9", "read_source", "t-3 trace"))
        .await;
    pipeline
        .post(
            "/events",
            &trace(
                "t-1",
                "m-2",
                "model_validation",
                "column \"x\" does not exist",
            ),
        )
        .await;
    pipeline
        .post(
            "/events",
            &trace(
                "t-1",
                "m-3",
                "read_source",
                "ERROR: permission denied for table orders\n\tat line 1",
            ),
        )
        .await;
    pipeline
        .post(
            "/events",
            &trace("t-1", "m-1", "write_destination", "second failure of m-1"),
        )
        .await;
    pipeline.post("/events", &completed("t-2")).await;
    pipeline.post("/events", &completed("t-1")).await;

    receiver
        .wait_until(Duration::from_secs(60), |c| c.len() >= 4)
        .await;
    // A second request for t-1, if there were one, is in before the pipeline is drained.
    pipeline.wait_drained(Duration::from_secs(60)).await;
    let got = receiver
        .captured()
        .into_iter()
        .filter(|r| r.header("hookline-trace-flush") == Some("completed"))
        .collect::<Vec<_>>();
    assert_eq!(
        got.len(),
        2,
        "one request per endpoint for t-1, none for t-2 or the open t-3: {got:?}"
    );
    let expected_traces = json!([
        {"destination_id": "dest-123", "source_id": "src-456", "model_id": "m-1", "model_name": "m-1_table", "source_vendor": "postgres",
         "destination_vendor": "snowflake", "execution_context": "write_destination", "trace": "ERROR: duplicate key value violates unique constraint \"users_pkey\""},
        {"destination_id": "dest-123", "source_id": "src-456", "model_id": "m-3", "model_name": "m-3_table", "source_vendor": "postgres",
         "destination_vendor": "snowflake", "execution_context": "read_source", "trace": "ERROR: permission denied for table orders\n\tat line 1"},
        {"destination_id": "dest-123", "source_id": "src-456", "model_id": "m-1", "model_name": "m-1_table", "source_vendor": "postgres",
         "destination_vendor": "snowflake", "execution_context": "write_destination", "trace": "second failure of m-1"},
    ]);

    let generic = got
        .iter()
        .find(|r| r.uri == "/generic")
        .expect("the generic endpoint got t-1");
    assert_eq!(generic.method, "POST");
    assert_eq!(
        generic.header("authorization"),
        Some("Bearer your-webhook-secret-token")
    );
    assert_eq!(generic.header("content-type"), Some("application/json"));
    assert_eq!(
        (
            generic.header("hookline-trace-part"),
            generic.header("hookline-trace-last-part")
        ),
        (Some("1"), Some("true"))
    );
    let body = generic.json();
    assert_eq!(body["errors"], expected_traces);
    assert_eq!(body["environment"], "prod");
    assert_eq!(
        body["destination_url"],
        "https://YOUR_ADMIN_HOST/destinations/dest-123"
    );
    assert!(
        time::OffsetDateTime::parse(
            body["timestamp"].as_str().expect("timestamp"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );

    let slack = got
        .iter()
        .find(|r| r.uri == "/slack")
        .expect("Slack got t-1");
    assert_eq!(
        slack.header("authorization"),
        None,
        "the Slack endpoint has no secret"
    );
    let body = slack.json();
    assert_eq!(body["attachments"][0]["color"], "danger");
    assert_eq!(body["attachments"][0]["mrkdwn_in"], json!(["text"]));
    let text = body["attachments"][0]["text"].as_str().expect("Slack text");
    assert!(
        text.starts_with("*Prequel Sensitive Trace | Destination:* dest-123\n\n"),
        "{text}"
    );
    let traces = text
        .split("```json\n")
        .nth(1)
        .and_then(|t| t.strip_suffix("\n```"))
        .expect("traces block");
    assert_eq!(
        serde_json::from_str::<Value>(traces).expect("traces JSON"),
        expected_traces
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_trace_reaches_the_receiver_and_nothing_else() {
    let canary = format!("CANARY-{}", uuid::Uuid::new_v4().simple());
    let marker = format!("dest-{}", uuid::Uuid::new_v4().simple());
    // Uncompressed records, so a clear canary in a segment file would be found.
    let receiver = Receiver::scripted(|r, _| {
        if r.uri == "/gone" {
            Answer::status(410)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let pipeline = Pipeline::start(
        "e2e-canary",
        &[
            ("HOOKLINE_KAFKA_COMPRESSION", "none"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    pipeline
        .post("/sensitive-trace-endpoints", &json!({"sensitive_trace_endpoint": {"name": "ok", "url": receiver.url("/ok"), "secret": "s3cret-token"}}))
        .await;
    pipeline
        .post(
            "/sensitive-trace-endpoints",
            &json!({"sensitive_trace_endpoint": {"name": "gone", "url": receiver.url("/gone")}}),
        )
        .await;
    pipeline
        .post("/webhooks", &json!({"webhook": {"name": "errors", "vendor": "generic_post", "url": receiver.url("/webhook"), "events": ["transfer.error"]}}))
        .await;

    // A URL template that would put the transfer log in a URL: refused when rendered.
    let leaky = pipeline
        .post("/webhooks", &json!({"webhook": {"name": "leaky", "vendor": "generic_post", "events": ["transfer.error"],
            "url": format!("{}?log={{{{.Data.error.transfer_log}}}}", receiver.url("/leaky"))}}))
        .await;
    let leaky_id = leaky["webhook"]["id"].as_str().expect("id").to_owned();

    let mut t = trace(
        "t-canary",
        "m-1",
        "write_destination",
        &format!("ERROR: row ({canary}) violates constraint"),
    );
    t["data"]["destination_id"] = json!(marker);
    pipeline.post("/events", &t).await;
    pipeline.post("/events", &completed("t-canary")).await;
    pipeline
        .post("/events", &json!({"type": "transfer.error", "data": {"error": {
            "destination_id": marker, "destination_name": "D", "id_in_provider_system": "x", "models": [], "is_full_refresh": false,
            "transfer_id": "t-canary", "transfer_status": "ERROR", "transfer_error_type": "host", "transfer_log": format!("log with {canary}"),
            "transfer_log_pretty": "", "transfer_started_at": "2024-01-15T10:00:00Z", "transfer_ended_at": null, "in_app_url": ""}}}))
        .await;

    let got = receiver
        .wait_until(Duration::from_secs(60), |c| {
            ["/ok", "/gone", "/webhook"]
                .iter()
                .all(|u| c.iter().any(|r| r.uri == *u))
        })
        .await;
    let ok = got.iter().find(|r| r.uri == "/ok").expect("delivered");
    assert!(
        String::from_utf8_lossy(&ok.body).contains(&canary),
        "the receiver gets the trace unchanged"
    );
    assert_eq!(
        ok.json()["sensitive_traces"][0]["destination_id"],
        json!(marker)
    );
    assert_eq!(ok.header("authorization"), Some("Bearer s3cret-token"));
    let webhook = got
        .iter()
        .find(|r| r.uri == "/webhook")
        .expect("webhook delivered");
    assert!(String::from_utf8_lossy(&webhook.body).contains(&canary));

    // The 410 is final: dead-lettered, its request sealed, its metadata plain.
    let topic = format!("{}dead-letter", pipeline.kafka.topic_prefix);
    let records = test_kit::read_topic(&pipeline.kafka, &topic, Duration::from_secs(60), |r| {
        r.len() >= 2
    })
    .await;
    let mut dead = test_kit::dead_letters(&records);
    assert_eq!(dead.len(), 2, "{dead:?}");
    dead.sort_by_key(|d| d.endpoint_id.as_deref() != Some(leaky_id.as_str()));
    assert_eq!(
        (dead[0].reason_code.as_str(), dead[0].endpoint_id.as_deref()),
        ("HL-RENDER-INVALID", Some(leaky_id.as_str()))
    );
    assert!(dead[0].reason.starts_with("url:"), "{}", dead[0].reason);
    assert!(
        receiver
            .captured()
            .iter()
            .all(|r| !r.uri.starts_with("/leaky"))
    );
    dead.remove(0);
    assert_eq!(dead[0].reason_code, "HL-DELIVERY-REJECTED");
    let delivery = dead[0].delivery.as_ref().expect("the request is kept");
    assert_eq!(delivery.transfer_id.as_deref(), Some("t-canary"));
    assert!(delivery.body_sealed);
    assert_eq!(
        dead[0]
            .attempts
            .iter()
            .filter_map(|a| a.status)
            .collect::<Vec<_>>(),
        [410]
    );

    // Nothing in clear on disk: events, changelog, deliveries, dead letters. The marker
    // (not sensitive) is found, so the search does see the records.
    let dir = test_kit::broker_log_dir().await;
    let prefix = pipeline.kafka.topic_prefix.clone();
    let with_marker = test_kit::segments_containing(&dir, &prefix, marker.as_bytes());
    assert!(
        with_marker
            .iter()
            .any(|p| p.to_string_lossy().contains("events-")),
        "the search found no record of this test in {}",
        dir.display()
    );
    for secret in [canary.as_str(), "s3cret-token"] {
        let leaked = test_kit::segments_containing(&dir, &prefix, secret.as_bytes());
        assert!(leaked.is_empty(), "{secret} is in clear in {leaked:?}");
    }
    let output = pipeline.output();
    assert!(!output.is_empty());
    assert!(
        !test_kit::contains(&output, canary.as_bytes()),
        "a service printed the canary"
    );
    assert!(
        !test_kit::contains(&output, b"s3cret-token"),
        "a service printed the secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_never_ends_is_flushed_after_the_maximum_age_marked_as_such() {
    let receiver = Receiver::ok().await;
    let pipeline = Pipeline::start(
        "e2e-trace-age",
        &[("HOOKLINE_SENSITIVE_TRACE_MAX_AGE", "3s")],
    )
    .await;
    pipeline
        .create_trace_endpoint(json!({"name": "aged", "url": receiver.url("/aged")}))
        .await;
    let sent_at = std::time::Instant::now();
    pipeline
        .post(
            "/events",
            &trace("t-stuck", "m-1", "write_destination", "first"),
        )
        .await;
    pipeline
        .post(
            "/events",
            &trace("t-stuck", "m-2", "write_destination", "second"),
        )
        .await;
    let got = receiver
        .wait_until(Duration::from_secs(60), |c| !c.is_empty())
        .await;
    assert!(
        sent_at.elapsed() >= Duration::from_secs(3),
        "flushed before its maximum age"
    );
    pipeline.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(receiver.captured().len(), 1, "{got:?}");
    let request = &got[0];
    assert_eq!(request.header("hookline-trace-flush"), Some("max_age"));
    let body = request.json();
    assert_eq!(body["flush_reason"], "max_age");
    let texts: Vec<&str> = body["sensitive_traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["trace"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["first", "second"]);
    // Its end, arriving late, sends nothing more.
    pipeline.post("/events", &completed("t-stuck")).await;
    pipeline.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(receiver.captured().len(), 1);
}
