//! A delivery's sealed parts are opened for its attempt: a receiver gets the body and
//! the secret header in the clear, and a delivery sealed under a master key this
//! dispatcher does not have is dead-lettered (`HL-SEAL-OPEN`) as it was written.

use std::time::Duration;

use test_kit::{Answer, Receiver};
use tokio_util::sync::CancellationToken;
use wire::{Header, RenderedDelivery};

fn sealed(sealer: &signing::Sealer, id: &str, url: String) -> RenderedDelivery {
    let delivery = RenderedDelivery {
        delivery_id: id.into(),
        event_id: format!("ev-{id}"),
        event_type: "transfer.error".into(),
        endpoint_id: format!("ep-{id}"),
        rendered_at: wire::now_rfc3339(),
        method: "POST".into(),
        url,
        headers: vec![Header::new("Content-Type", "application/json")],
        sensitive_headers: vec![Header::new("Authorization", "Bearer sk-test")],
        body_sealed: true,
        body: format!("{{\"trace\":\"secret of {id}\"}}").into_bytes(),
        ..RenderedDelivery::default()
    };
    service_kit::seal_delivery(sealer, delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_parts_open_for_the_attempt_or_the_delivery_is_dead_lettered() {
    let (kafka, topics, registry) = test_kit::kafka_stack("sealed-parts").await;
    let receiver = Receiver::scripted(|_, _| Answer::status(200)).await;
    let ours = signing::Sealer::from_base64(test_kit::MASTER_KEY).unwrap();
    let other = signing::Sealer::from_base64(&signing::Sealer::new_master_key()).unwrap();
    let good = sealed(&ours, "d-good", receiver.url("/good"));
    let foreign = sealed(&other, "d-foreign", receiver.url("/foreign"));
    let records: Vec<(&str, Vec<u8>)> = [&good, &foreign]
        .iter()
        .map(|d| (d.endpoint_id.as_str(), registry.encode(*d).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;

    let shutdown = CancellationToken::new();
    let config = dispatcher::Config {
        kafka: kafka.clone(),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        allowed_networks: "127.0.0.0/8".to_owned(),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..dispatcher::Config::default()
    };
    let task = tokio::spawn(dispatcher::run(config, shutdown.clone()));
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            !r.is_empty()
        })
        .await,
    );
    let got = receiver
        .wait_until(Duration::from_secs(30), |got| !got.is_empty())
        .await;

    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].uri, "/good");
    assert_eq!(got[0].body, b"{\"trace\":\"secret of d-good\"}");
    assert_eq!(got[0].header("authorization"), Some("Bearer sk-test"));

    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.reason_code, "HL-SEAL-OPEN");
    assert_eq!(letter.delivery_id.as_deref(), Some("d-foreign"));
    assert!(letter.attempts.is_empty(), "no attempt without its parts");
    // Kept as it was written: still sealed, and it opens under the key that sealed it.
    let kept = letter.delivery.clone().expect("the delivery is kept");
    assert_eq!(kept, foreign);
    let opened = service_kit::open_delivery(&other, &kept).unwrap();
    assert_eq!(opened.body, b"{\"trace\":\"secret of d-foreign\"}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops within its bound")
        .unwrap()
        .unwrap();
}
