//! Templated webhooks through the real pipeline: the seed's Slack template, pointed at a
//! local receiver, arrives rendered; a template that fails for a real event ends in
//! `dead-letter` with a coded reason and no secret; the pipeline goes on.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Pipeline, TOKEN};

const SEED_SLACK: &str = "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*<https://YOUR_ADMIN_HOST/destinations/%s|View Destination>*\\n\\n*Environment:* %s\\n\\n*Timestamp:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .DestinationId .Environment .Timestamp .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\", \"mrkdwn_in\": [\"text\"]}]}";

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON body");
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_requests_arrive_and_template_failures_are_dead_lettered() {
    let receiver = test_kit::Receiver::ok().await;
    let pipeline = Pipeline::start("e2e-tmpl", &[]).await;
    let (client, base, kafka) = (&pipeline.client, pipeline.base.clone(), &pipeline.kafka);

    post(client, format!("{base}/webhooks"), json!({"webhook": {
        "name": "slack traces", "vendor": "generic_post", "url": receiver.url("/slack"),
        "events": ["connection_test.sensitive_trace"], "secret": "hush-123",
        "header_template": "Content-Type: application/json\nX-Auth: {{.Secret}}", "body_template": SEED_SLACK}})).await;
    // Valid on the sample (one model) but not on an event without models.
    let fragile = post(client, format!("{base}/webhooks"), json!({"webhook": {
        "name": "fragile", "vendor": "generic_post", "url": receiver.url("/fragile"), "events": ["transfer.error"],
        "secret": "hush-456", "body_template": "{{.Secret}} {{index .Data.error.models 0}}"}})).await;
    let fragile_id = fragile["webhook"]["id"].as_str().unwrap().to_owned();

    post(client, format!("{base}/events"), json!({"type": "connection_test.sensitive_trace", "created_at": "2024-01-15T10:30:00Z",
        "data": {"destination_id": "dest-123", "execution_context": "test_destination_connection", "trace": "ERROR: password authentication failed \u{2028}"}})).await;
    post(client, format!("{base}/events"), json!({"type": "transfer.error", "data": {"error": {
        "destination_id": "d", "destination_name": "D", "id_in_provider_system": "x", "models": [], "is_full_refresh": false,
        "transfer_id": "t-9", "transfer_status": "ERROR", "transfer_error_type": "host", "transfer_log": "log",
        "transfer_log_pretty": "", "transfer_started_at": "2024-01-15T10:00:00Z", "transfer_ended_at": null, "in_app_url": ""}}})).await;

    let got = receiver
        .wait_until(Duration::from_secs(60), |c| {
            c.iter().any(|r| r.uri == "/slack")
        })
        .await;
    let slack = got
        .iter()
        .find(|r| r.uri == "/slack")
        .expect("the Slack message arrived");
    assert_eq!(slack.header("x-auth"), Some("hush-123"));
    assert_eq!(slack.header("content-type"), Some("application/json"));
    let body: Value = slack.json();
    let text = body["attachments"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("*Prequel Sensitive Trace | Destination:* dest-123\n\n*<https://YOUR_ADMIN_HOST/destinations/dest-123|View Destination>*"), "{text}");
    assert!(
        text.contains("*Environment:* prod\n\n*Timestamp:* 2024-01-15T10:30:00Z"),
        "{text}"
    );
    assert!(
        text.contains("password authentication failed \u{2028}"),
        "{text}"
    );
    assert_eq!(body["attachments"][0]["color"], "danger");

    let topic = format!("{}dead-letter", kafka.topic_prefix);
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(kafka, &topic, Duration::from_secs(60), |r| !r.is_empty()).await,
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason_code, "HL-TEMPLATE-EXEC");
    assert_eq!(dead[0].endpoint_id.as_deref(), Some(fragile_id.as_str()));
    assert!(
        dead[0].reason.starts_with("body_template:"),
        "{}",
        dead[0].reason
    );
    assert!(!dead[0].reason.contains("hush-456"), "{}", dead[0].reason);
    assert!(receiver.captured().iter().all(|r| r.uri != "/fragile"));
}
