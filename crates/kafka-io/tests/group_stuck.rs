//! `consume_group` replaces a group consumer stuck out of its group. A consumer that
//! reaches no broker never finds its coordinator, as a consumer left behind by a broker
//! restart never did (ARCHITECTURE "Known gaps"): its statistics say so, and a new one
//! made from the good settings joins and reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_io::{Lane, Outcome, TopicSpec};
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stuck_out_of_its_group_is_replaced() {
    let settings = test_kit::kafka_settings("group-stuck");
    let topic = format!("{}in", settings.topic_prefix);
    kafka_io::ensure_topics(
        &settings,
        &[TopicSpec {
            name: topic.clone(),
            compacted: false,
            retention: None,
        }],
    )
    .await
    .expect("test setup");
    test_kit::produce(&settings, &topic, &[("k", b"v".to_vec())]).await;
    let group = format!("{}group", settings.topic_prefix);
    // The first consumer's bootstrap is a port nothing listens on.
    let lost = kafka_io::KafkaSettings {
        kafka_brokers: "127.0.0.1:1".to_owned(),
        ..settings.clone()
    };
    let made = AtomicUsize::new(0);
    let make = || {
        let which = if made.fetch_add(1, Ordering::SeqCst) == 0 {
            &lost
        } else {
            &settings
        };
        let (consumer, tracker) = kafka_io::group_consumer(which, "test", &group, &[&topic], None)?;
        consumer
            .context()
            .health()
            .set_stuck_after(Duration::from_secs(3));
        Ok((consumer, tracker))
    };
    let lanes = [Lane {
        topic: topic.clone(),
        delay: None,
        max_in_flight: 10,
        max_in_flight_bytes: 1 << 20,
    }];
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let run = kafka_io::consume_group(make, &lanes, Duration::from_secs(5), &shutdown, |record| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .expect("test setup")
                .push(record.payload.unwrap_or_default());
            Outcome::Done
        }
    });
    let started = std::time::Instant::now();
    let watch = async {
        while seen.lock().expect("test setup").is_empty()
            && started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, watch);
    let seen = seen.lock().expect("test setup").clone();
    println!(
        "group-stuck: {} consumer(s) made, {} record(s) read after {:.1} s",
        made.load(Ordering::SeqCst),
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    result.expect("consumers made");
    assert_eq!(seen, vec![b"v".to_vec()], "read by the replacement");
    assert_eq!(
        made.load(Ordering::SeqCst),
        2,
        "replaced once, then in its group"
    );
}
