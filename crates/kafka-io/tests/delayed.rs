//! A delay lane of `consume_lanes` (a retry tier) against the real broker: no record is handed over before its
//! timestamp plus the delay, every record is handed over once, a full loop keeps its
//! group (it pauses instead of not polling), and offsets follow.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_io::{Lane, Outcome, TopicSpec};
use tokio_util::sync::CancellationToken;

const DELAY: Duration = Duration::from_secs(2);

/// (partition, offset, record timestamp, handed-over time) of each record handed over.
type Seen = Vec<(i32, i64, i64, i64)>;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("test setup")
            .as_millis(),
    )
    .expect("test setup")
}

/// Runs a delayed consumer in `group` until it has handed over `expect` records or
/// `within` passes; returns (partition, offset, record timestamp, handed-over time) of each.
async fn consume(
    settings: &kafka_io::KafkaSettings,
    topic: &str,
    group: &str,
    expect: usize,
    within: Duration,
) -> Seen {
    let (consumer, tracker) =
        kafka_io::group_consumer(settings, "test", group, &[topic], None).expect("test setup");
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let shutdown = CancellationToken::new();
    // Two in flight: the loop is full most of the time and must pause, not stop polling.
    let lanes = [Lane {
        topic: topic.to_owned(),
        delay: Some(DELAY),
        max_in_flight: 2,
        max_in_flight_bytes: 1 << 20,
    }];
    let run = {
        let (seen, shutdown) = (seen.clone(), shutdown.clone());
        async move {
            let drain = Duration::from_secs(5);
            kafka_io::consume_lanes(&consumer, &tracker, &lanes, drain, &shutdown, |record| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("test setup").push((
                        record.partition,
                        record.offset,
                        record.timestamp_ms.unwrap_or_default(),
                        now_ms(),
                    ));
                    // A little work, so records overlap.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Outcome::Done
                }
            })
            .await;
        }
    };
    let watch = async {
        let deadline = tokio::time::Instant::now() + within;
        while seen.lock().expect("test setup").len() < expect
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let offsets be stored and committed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.cancel();
    };
    tokio::join!(run, watch);
    seen.lock().expect("test setup").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_handed_over_after_their_delay_once_each() {
    let settings = test_kit::kafka_settings("delayed");
    let topic = format!("{}tier", settings.topic_prefix);
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
    let group = format!("{}group", settings.topic_prefix);
    // Two waves a second apart, over every partition.
    let wave: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("k{i}"), vec![u8::try_from(i).expect("test setup")]))
        .collect();
    let records: Vec<(&str, Vec<u8>)> = wave.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let started = now_ms();
    test_kit::produce(&settings, &topic, &records).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    test_kit::produce(&settings, &topic, &records).await;

    let seen = consume(&settings, &topic, &group, 12, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 12, "every record handed over: {seen:?}");
    let mut offsets: Vec<_> = seen.iter().map(|(p, o, _, _)| (*p, *o)).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 12, "once each");
    for (_, offset, timestamp, handed) in &seen {
        assert!(
            *timestamp >= started - 1000,
            "offset {offset}: a timestamp of this run"
        );
        assert!(
            handed >= &(timestamp + i64::try_from(DELAY.as_millis()).expect("test setup")),
            "offset {offset} handed over {} ms after it was written",
            handed - timestamp
        );
    }
    // Offsets were committed: the group has nothing left to hand over.
    let again = consume(&settings, &topic, &group, 1, Duration::from_secs(6)).await;
    assert!(again.is_empty(), "read again: {again:?}");
}
