//! Without a signing key that opens, `prequel_rsa` deliveries wait in a retry tier, not
//! in the dispatcher's memory: other endpoints' deliveries go on, and the waiting ones
//! are sent once a key exists.

use std::time::Duration;

use base64::Engine as _;
use test_kit::{Answer, Receiver};
use tokio_util::sync::CancellationToken;
use wire::RenderedDelivery;

fn delivery(id: &str, endpoint: &str, url: String, scheme: &str) -> RenderedDelivery {
    RenderedDelivery {
        delivery_id: id.into(),
        event_id: format!("ev-{id}"),
        event_type: "transfer.error".into(),
        endpoint_id: endpoint.into(),
        rendered_at: wire::now_rfc3339(),
        method: "POST".into(),
        url,
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        signing_scheme: scheme.into(),
        ..RenderedDelivery::default()
    }
}

/// The account's signing key, sealed under the tests' master key, as the producer
/// writes it.
fn signing_key() -> wire::SigningKey {
    let kid = "kid-test".to_owned();
    let pair = signing::RsaKey::generate(2048, kid.clone()).expect("an RSA key");
    let sealer = service_kit::sealer(
        &service_kit::Secret::new(test_kit::MASTER_KEY),
        &service_kit::Secret::default(),
    )
    .expect("a sealer");
    let der = pair.pkcs8_der().expect("its DER");
    wire::SigningKey {
        kid: kid.clone(),
        algorithm: "RSASSA-PKCS1-v1_5-SHA256".to_owned(),
        public_key_pem: pair.public_key_pem().expect("its public key"),
        private_key_sealed: sealer.seal(
            base64::engine::general_purpose::STANDARD
                .encode(der)
                .as_bytes(),
            &signing::key_context(&kid),
        ),
        created_at: wire::now_rfc3339(),
        previous_keys: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_deliveries_without_a_key_do_not_hold_up_other_endpoints() {
    let (kafka, topics, registry) = test_kit::kafka_stack("no-key").await;
    let receiver = Receiver::scripted(|_, _| Answer::status(200)).await;

    // No signing key exists (no producer has started). On one partition, as many RSA
    // deliveries as the dispatcher holds at once, then one unsigned delivery.
    const IN_FLIGHT: usize = 8;
    let mut records = Vec::new();
    for i in 0..IN_FLIGHT {
        let d = delivery(
            &format!("r{i}"),
            "ep-rsa",
            receiver.url("/rsa"),
            "prequel_rsa",
        );
        records.push(("same", registry.encode(&d).unwrap()));
    }
    let plain = delivery("p0", "ep-plain", receiver.url("/plain"), "none");
    records.push(("same", registry.encode(&plain).unwrap()));
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;

    let shutdown = CancellationToken::new();
    let config = dispatcher::Config {
        kafka: kafka.clone(),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        allowed_networks: "127.0.0.0/8".to_owned(),
        admin_addr: "127.0.0.1:0".to_owned(),
        dispatcher_max_in_flight: IN_FLIGHT,
        shutdown_timeout: Duration::from_secs(1),
        ..dispatcher::Config::default()
    };
    let task = tokio::spawn(dispatcher::run(config, shutdown.clone()));

    // The unsigned delivery arrives although every slot first went to an RSA delivery.
    let got = receiver
        .wait_until(Duration::from_secs(30), |c| {
            c.iter().any(|c| c.uri == "/plain")
        })
        .await;
    let plain_arrived = got.iter().any(|c| c.uri == "/plain");

    // Then the key is written; the RSA deliveries waiting in a tier are sent, signed.
    let key = signing_key();
    test_kit::produce(
        &kafka,
        &topics.keys,
        &[(service_kit::SIGNING_KEY, registry.encode(&key).unwrap())],
    )
    .await;
    let got = receiver
        .wait_until(Duration::from_secs(90), |c| {
            c.iter().filter(|c| c.uri == "/rsa").count() >= IN_FLIGHT
        })
        .await;
    let rsa: Vec<_> = got.iter().filter(|c| c.uri == "/rsa").collect();
    let dead = test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(2), |r| {
        !r.is_empty()
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(40), task).await;

    assert!(
        plain_arrived,
        "the unsigned delivery waited behind RSA deliveries that had no key"
    );
    assert_eq!(
        rsa.len(),
        IN_FLIGHT,
        "every RSA delivery, once the key exists"
    );
    for c in &rsa {
        assert!(
            c.header("x-prequel-webhook-signature").is_some(),
            "signed with the key written late"
        );
    }
    assert!(dead.is_empty(), "nothing dead-lettered for want of a key");
}
