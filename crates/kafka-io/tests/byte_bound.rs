//! `consume_concurrently` bounds what it holds in bytes, not only in records: large
//! records wait in Kafka while the bytes in flight are at the bound, and every record
//! is still handled once (one larger than the bound included).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_io::{ConsumeOptions, Outcome, TopicSpec};
use tokio_util::sync::CancellationToken;

const RECORD: usize = 256 * 1024;
const BOUND: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_wait_while_the_bytes_in_flight_are_at_the_bound() {
    let settings = test_kit::kafka_settings("bytebound");
    let topic = format!("{}large", settings.topic_prefix);
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
    // 24 records of 256 KiB and one of 3 MiB (over the bound on its own).
    let mut values: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("k{i}"), vec![b'x'; RECORD]))
        .collect();
    values.push(("big".to_owned(), vec![b'y'; 3 * BOUND]));
    let records: Vec<(&str, Vec<u8>)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    test_kit::produce(&settings, &topic, &records).await;

    let (consumer, tracker) = kafka_io::group_consumer(
        &settings,
        "test",
        &format!("{}group", settings.topic_prefix),
        &[topic.as_str()],
        None,
    )
    .expect("test setup");
    // A record bound far above what arrives: only the byte bound can hold the loop.
    let options = ConsumeOptions {
        max_in_flight: 1000,
        max_in_flight_bytes: BOUND,
        drain_timeout: Duration::from_secs(5),
    };
    let (held, peak, handled) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let shutdown = CancellationToken::new();
    let run = {
        let (held, peak, handled, shutdown) = (
            held.clone(),
            peak.clone(),
            handled.clone(),
            shutdown.clone(),
        );
        async move {
            kafka_io::consume_concurrently(&consumer, &tracker, &options, &shutdown, |record| {
                let (held, peak, handled) = (held.clone(), peak.clone(), handled.clone());
                async move {
                    let size = record.size();
                    let now = held.fetch_add(size, Ordering::SeqCst) + size;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Slow handlers: the loop fills before any finishes.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    held.fetch_sub(size, Ordering::SeqCst);
                    handled
                        .lock()
                        .expect("test setup")
                        .push((record.partition, record.offset));
                    Outcome::Done
                }
            })
            .await;
        }
    };
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while handled.lock().expect("test setup").len() < 25
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(run, watch);
    let mut handled = handled.lock().expect("test setup").clone();
    handled.sort_unstable();
    handled.dedup();
    assert_eq!(handled.len(), 25, "every record handled once");
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "byte bound {BOUND} B: peak {peak} B in flight ({:.1} records of {RECORD} B)",
        peak as f64 / RECORD as f64
    );
    // The loop pauses once it reaches the bound, so it holds at most the bound plus
    // the record that reached it (here the 3 MiB one, or a 256 KiB one).
    assert!(
        peak <= BOUND + 3 * BOUND,
        "peak {peak} B in flight, bound {BOUND} B"
    );
    assert!(
        peak < 24 * RECORD,
        "the 24 small records were never all in flight at once: peak {peak} B"
    );
}
