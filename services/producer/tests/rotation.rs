//! Rotating the master key against the real broker: a producer holding only a new key
//! refuses to start on secrets sealed under the old one; with the old key as previous
//! it starts, reports what is sealed under which key, and reseals `endpoints` and
//! `keys`; after that the old key is no longer needed.

mod common;

use std::time::Duration;

use common::Api;
use producer::Config;
use reqwest::{Method, StatusCode};
use serde_json::json;
use service_kit::Secret;
use signing::Sealer;
use tokio_util::sync::CancellationToken;

fn with_keys(config: &Config, newest: &str, previous: &str) -> Config {
    Config {
        master_key: Secret::new(newest),
        master_keys_previous: Secret::new(previous),
        ..config.clone()
    }
}

#[tokio::test]
async fn the_master_key_rotates_and_old_values_are_resealed() {
    let old_key = test_kit::MASTER_KEY;
    let new_key = Sealer::new_master_key();
    let (old_id, new_id) = (
        Sealer::from_base64(old_key)
            .expect("a key")
            .key_id()
            .to_owned(),
        Sealer::from_base64(&new_key)
            .expect("a key")
            .key_id()
            .to_owned(),
    );
    let api = Api::start("rotation").await;
    let (status, body) = api
        .call(
            Method::POST,
            "/webhooks",
            Some(json!({"webhook": {"name": "w", "vendor": "generic_post", "url": "https://example.com/w",
                "events": ["transfer.error"], "api_key": "sk-live-secret", "secret": "tmpl-secret"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["webhook"]["id"].as_str().expect("an id").to_owned();
    let config = api.config.clone();
    drop(api);

    // Only the new key: the secrets on the topics are not its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = producer::serve(
        with_keys(&config, &new_key, ""),
        listener,
        CancellationToken::new(),
    )
    .await
    .expect_err("a producer without the old key does not start");
    let said = format!("{refused:#}");
    assert!(said.contains(&old_id), "names the missing key: {said}");
    assert!(
        !said.contains(old_key) && !said.contains(&new_key),
        "{said}"
    );

    // The new key, the old one as previous: it starts and reseals.
    let api = Api::start_with(with_keys(&config, &new_key, &format!(" {old_key} "))).await;
    let (status, before) = api.call(Method::GET, "/keys/master", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before["sealing_key"], new_id.as_str());
    assert_eq!(before["opening_keys"], json!([new_id, old_id]));
    assert_eq!(before["sealed_values"]["endpoints"][&old_id], 2, "{before}");
    assert_eq!(
        before["sealed_values"]["keys"][&old_id], 2,
        "signing key and check: {before}"
    );
    let (status, report) = api.call(Method::POST, "/keys/master/reseal", None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["resealed"], 3, "one endpoint, two keys: {report}");
    assert_eq!(report["after"]["sealed_under_other_keys"], 0, "{report}");
    let (status, again) = api.call(Method::POST, "/keys/master/reseal", None).await;
    assert_eq!((status, &again["resealed"]), (StatusCode::OK, &json!(0)));
    // The endpoint's version moved on: a writer holding the old ETag is told.
    let (_, shown) = api
        .call(Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(shown["webhook"]["version"], 2);
    drop(api);

    // The old key is gone from the configuration, and nothing needs it.
    let api = Api::start_with(with_keys(&config, &new_key, "")).await;
    let topic = format!("{}endpoints", config.kafka.topic_prefix);
    let records =
        test_kit::read_topic(&config.kafka, &topic, Duration::from_secs(5), |_| false).await;
    let registry = wire::Registry::bundled().expect("schemas");
    let mut endpoint: wire::Endpoint = records
        .iter()
        .rev()
        .find_map(|r| r.value.as_deref())
        .map(|v| registry.decode(v).expect("an endpoint"))
        .expect("the endpoint record");
    assert!(
        endpoint
            .api_key
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("hl2:{new_id}:")))
    );
    let only_new = Sealer::from_base64(&new_key).expect("a key");
    service_kit::open_endpoint_secrets(&only_new, &mut endpoint).expect("opens with the new key");
    assert_eq!(endpoint.api_key.as_deref(), Some("sk-live-secret"));
    assert_eq!(endpoint.secret.as_deref(), Some("tmpl-secret"));
    let (status, _) = api
        .call(Method::GET, "/public/signatures/webhook-public-key", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
