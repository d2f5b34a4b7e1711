//! One writer of `endpoints`: endpoint versions, `If-Match` (412 on a stale version),
//! conditional writes that stay exclusive across producer replicas, and the
//! dispatcher's disable requests applied only to the version they were judged on.

mod common;

use std::time::{Duration, Instant};

use common::Api;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn webhook(name: &str) -> Value {
    json!({"webhook": {"name": name, "vendor": "generic_post", "url": "https://example.com/hook", "events": ["transfer.error"]}})
}

fn etag(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_owned()
}

async fn create(api: &Api, name: &str) -> (String, String) {
    let (status, headers, body) = api
        .call_with(Method::POST, "/webhooks", &[], Some(webhook(name)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["webhook"]["id"].as_str().expect("an id").to_owned();
    (id, etag(&headers))
}

fn rename(name: &str) -> Option<Value> {
    Some(json!({"webhook": {"name": name}}))
}

#[tokio::test]
async fn if_match_guards_patch_and_delete() {
    let api = Api::start("ifmatch").await;
    let (id, created) = create(&api, "first").await;
    assert_eq!(created, "\"1\"");
    let path = format!("/webhooks/{id}");
    let (_, headers, body) = api.call_with(Method::GET, &path, &[], None).await;
    assert_eq!(etag(&headers), "\"1\"");
    assert_eq!(body["webhook"]["version"], 1);

    let (status, headers, _) = api
        .call_with(
            Method::PATCH,
            &path,
            &[("if-match", "\"1\"")],
            rename("second"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag(&headers), "\"2\"");

    // Another operator, still holding version 1: refused, the newer change stands.
    let (status, _, body) = api
        .call_with(
            Method::PATCH,
            &path,
            &[("if-match", "\"1\"")],
            rename("stale"),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(body["error"]["code"], "HL-API-PRECONDITION");
    let (status, _, _) = api
        .call_with(Method::DELETE, &path, &[("if-match", "\"1\"")], None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, body) = api.call_with(Method::GET, &path, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["webhook"]["name"], "second");

    let (status, _, body) = api
        .call_with(
            Method::PATCH,
            &path,
            &[("if-match", "yesterday")],
            rename("x"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "If-Match");
    // A weak tag never matches (RFC 9110 compares strongly); `*` matches any version.
    let (status, _, _) = api
        .call_with(
            Method::PATCH,
            &path,
            &[("if-match", "W/\"2\"")],
            rename("x"),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, headers, _) = api
        .call_with(Method::PATCH, &path, &[("if-match", "*")], rename("third"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag(&headers), "\"3\"");
    let (status, _, _) = api
        .call_with(Method::DELETE, &path, &[("if-match", "\"7\", \"3\"")], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api.call_with(Method::GET, &path, &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Sensitive-trace endpoints are versioned the same way.
    let (status, headers, body) = api
        .call_with(
            Method::POST,
            "/sensitive-trace-endpoints",
            &[],
            Some(
                json!({"sensitive_trace_endpoint": {"name": "t", "url": "https://example.com/t"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(etag(&headers), "\"1\"");
    let path = format!(
        "/sensitive-trace-endpoints/{}",
        body["sensitive_trace_endpoint"]["id"]
            .as_str()
            .expect("an id")
    );
    let change = Some(json!({"sensitive_trace_endpoint": {"name": "u"}}));
    let (status, _, _) = api
        .call_with(
            Method::PATCH,
            &path,
            &[("if-match", "\"1\"")],
            change.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api
        .call_with(Method::PATCH, &path, &[("if-match", "\"1\"")], change)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}

/// Two replicas, eight operators holding version 1, all changing at once: exactly one
/// wins, every other one is told its version is stale (before the one writer, each
/// replica checked and wrote on its own and all eight "succeeded", each overwriting
/// the last).
#[tokio::test]
async fn conditional_writes_are_exclusive_across_replicas() {
    let a = Api::start("replicas").await;
    let b = Api::start_with(a.config.clone()).await;
    let (id, version) = create(&a, "original").await;
    let path = format!("/webhooks/{id}");
    let writes = (0..8).map(|i| {
        let (api, path, version) = (if i % 2 == 0 { &a } else { &b }, &path, &version);
        async move {
            let name = format!("operator-{i}");
            let (status, _, body) = api
                .call_with(Method::PATCH, path, &[("if-match", version)], rename(&name))
                .await;
            (status, name, body)
        }
    });
    let outcomes = futures::future::join_all(writes).await;
    let won: Vec<&String> = outcomes
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .map(|(_, name, _)| name)
        .collect();
    let stale = outcomes
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::PRECONDITION_FAILED)
        .count();
    let others: Vec<_> = outcomes
        .iter()
        .filter(|(s, _, _)| *s != StatusCode::OK && *s != StatusCode::PRECONDITION_FAILED)
        .collect();
    assert!(others.is_empty(), "only 200 or 412: {others:?}");
    assert_eq!(won.len(), 1, "exactly one write wins: {won:?}");
    assert_eq!(stale, 7);
    for api in [&a, &b] {
        let (_, headers, body) = api.call_with(Method::GET, &path, &[], None).await;
        assert_eq!(body["webhook"]["name"], won[0].as_str());
        assert_eq!(etag(&headers), "\"2\"");
    }
    println!(
        "replicas: 8 conditional writes, 1 won ({}), {stale} answered 412",
        won[0]
    );
}

/// Writes a disable request as the dispatcher does.
async fn request_disable(api: &Api, id: &str, version: i64) {
    let registry = wire::Registry::bundled().expect("schemas");
    let request = wire::EndpointRequest {
        endpoint_id: id.to_owned(),
        action: "disable".to_owned(),
        version,
        reason: "failing since 2026-12-01T00:00:00Z without a success".to_owned(),
        failing_since: Some("2026-12-01T00:00:00Z".to_owned()),
        requested_at: wire::now_rfc3339(),
    };
    let topic = format!("{}endpoint-requests", api.config.kafka.topic_prefix);
    let bytes = registry.encode(&request).expect("encode");
    test_kit::produce(&api.config.kafka, &topic, &[(id, bytes)]).await;
}

/// Waits until the producer has applied every request written so far.
async fn requests_applied(api: &Api) {
    let kafka = api.config.kafka.clone();
    let group = format!("{}hookline-producer-endpoint-requests", kafka.topic_prefix);
    let topic = format!("{}endpoint-requests", kafka.topic_prefix);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (k, g, t) = (kafka.clone(), group.clone(), topic.clone());
        let behind = tokio::task::spawn_blocking(move || test_kit::group_behind(&k, &g, &t))
            .await
            .expect("the check ran");
        if matches!(behind, Ok(0)) {
            return;
        }
        assert!(
            Instant::now() < until,
            "endpoint requests not applied in 60 s: {behind:?} behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn disable_requests_apply_only_to_the_version_judged() {
    let api = Api::start("disablereq").await;
    // Judged on version 1, but an operator changed the endpoint meanwhile: it stays.
    let (patched, _) = create(&api, "patched").await;
    let path = format!("/webhooks/{patched}");
    let (status, _, _) = api
        .call_with(Method::PATCH, &path, &[], rename("fixed by an operator"))
        .await;
    assert_eq!(status, StatusCode::OK);
    request_disable(&api, &patched, 1).await;
    // Deleted meanwhile: it does not come back.
    let (deleted, _) = create(&api, "deleted").await;
    let (status, _, _) = api
        .call_with(Method::DELETE, &format!("/webhooks/{deleted}"), &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    request_disable(&api, &deleted, 1).await;
    // Judged on the version it has: disabled, and announced once.
    let (judged, _) = create(&api, "judged").await;
    request_disable(&api, &judged, 1).await;
    request_disable(&api, &judged, 1).await;
    requests_applied(&api).await;

    let (_, headers, body) = api.call_with(Method::GET, &path, &[], None).await;
    assert_eq!(body["webhook"]["active"], true, "{body}");
    assert_eq!(etag(&headers), "\"2\"");
    let (status, _, _) = api
        .call_with(Method::GET, &format!("/webhooks/{deleted}"), &[], None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted endpoint stays deleted"
    );
    let (_, headers, body) = api
        .call_with(Method::GET, &format!("/webhooks/{judged}"), &[], None)
        .await;
    assert_eq!(body["webhook"]["active"], false, "{body}");
    assert_eq!(etag(&headers), "\"2\"");

    let registry = wire::Registry::bundled().expect("schemas");
    let events = format!("{}events", api.config.kafka.topic_prefix);
    let records = test_kit::read_topic(&api.config.kafka, &events, Duration::from_secs(5), |_| {
        false
    })
    .await;
    let announced: Vec<String> = records
        .iter()
        .filter_map(|r| r.value.as_deref())
        .filter_map(|p| registry.decode_event(p).ok())
        .filter(|e| e.event_type == "endpoint.disabled")
        .map(|e| {
            e.data["endpoint_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        announced,
        vec![judged],
        "one endpoint.disabled, for the judged endpoint only"
    );
}
