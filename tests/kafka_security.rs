//! Kafka with SASL/SCRAM (issue 17): a broker of the test's own with a SASL_PLAINTEXT
//! listener (`ops/kafka/broker`, `HOOKLINE_KAFKA_SASL_PORT`). The three services, given
//! only that listener and `HOOKLINE_KAFKA_SECURITY_PROTOCOL`, `_SASL_MECHANISM`,
//! `_SASL_USERNAME` and `_SASL_PASSWORD`, deliver an event; a wrong password gets
//! nothing from the broker; the password appears in no log.

use std::time::Duration;

use kafka_io::{KafkaSecurity, SaslMechanism, Secret, SecurityProtocol};
use serde_json::json;
use test_kit::Receiver;
use tests::{Broker, Pipeline};

const PASSWORD: &str = "hookline-secret";

fn scram(password: &str) -> KafkaSecurity {
    KafkaSecurity {
        kafka_security_protocol: SecurityProtocol::SaslPlaintext,
        kafka_sasl_mechanism: Some(SaslMechanism::ScramSha256),
        kafka_sasl_username: "hookline".to_owned(),
        kafka_sasl_password: Secret::new(password),
        ..KafkaSecurity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_delivers_through_a_sasl_scram_listener() {
    let broker = Broker::start_with_sasl();
    let sasl_port = broker.sasl_port.expect("a SASL listener");
    let mut kafka = test_kit::kafka_settings("e2e-sasl");
    kafka.kafka_brokers = format!("127.0.0.1:{sasl_port}");

    // The broker refuses a wrong password.
    kafka.security = scram("not-the-password");
    let refused = kafka_io::co_partitioned(&kafka, &[format!("{}refused", kafka.topic_prefix)])
        .await
        .expect_err("a wrong password");
    // librdkafka logs the broker's "Authentication failed"; its API reports the
    // broker as unreachable.
    println!("kafka_security: a wrong password: {refused}");

    kafka.security = scram(PASSWORD);
    let receiver = Receiver::ok().await;
    let pipeline = Pipeline::start_on(
        kafka,
        &[
            ("HOOKLINE_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("HOOKLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("HOOKLINE_KAFKA_SASL_USERNAME", "hookline"),
            ("HOOKLINE_KAFKA_SASL_PASSWORD", PASSWORD),
        ],
    )
    .await;
    pipeline
        .post(
            "/webhooks",
            &json!({"webhook": {"name": "sasl", "vendor": "generic_post", "url": receiver.url("/sasl"),
                "events": ["transfer.started"]}}),
        )
        .await;
    pipeline.post("/events", &tests::event(7)).await;
    let got = receiver
        .wait_until(Duration::from_secs(120), |r| !r.is_empty())
        .await;
    println!(
        "kafka_security: {} request(s) delivered through SASL/SCRAM on port {sasl_port}",
        got.len()
    );
    assert_eq!(got.len(), 1, "the event was delivered");
    assert_eq!(got[0].json()["data"]["transfer_id"], "tr-7");
    let logs = pipeline.output();
    assert!(
        !test_kit::contains(&logs, PASSWORD.as_bytes()),
        "the SASL password was logged"
    );
    drop(pipeline);
    drop(broker);
}
