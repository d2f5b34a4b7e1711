//! A partition paused when it is revoked and assigned again to the same consumer must
//! be read again from its committed offset, not from where this consumer had read to:
//! records read but not finished before the revoke are handed back (`Abandoned`) on the
//! promise that the partition's next owner reads them again.

use std::time::Duration;

use kafka_io::TopicSpec;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// What the consumer does to the partition once it is assigned again.
#[derive(Debug, Clone, Copy)]
enum Step {
    Pause,
    Resume,
    Sleep(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_partition_assigned_again_resumes_from_the_commit() {
    use Step::*;
    // (paused when revoked, steps once assigned again); every case ends resumed.
    let cases: &[(bool, &[Step])] = &[
        (true, &[Resume]),
        (true, &[Resume, Pause, Sleep(500), Resume]),
        (true, &[Pause, Resume]),
        (false, &[Pause, Sleep(500), Resume]),
        (true, &[Sleep(500), Resume, Pause, Resume]),
    ];
    let mut failed = Vec::new();
    for (n, (paused_when_revoked, steps)) in cases.iter().enumerate() {
        let first = first_offset_after_reassignment(n, *paused_when_revoked, steps).await;
        println!(
            "pause-reassign: paused when revoked {paused_when_revoked}, then {steps:?}: first offset {first}"
        );
        if first != 5 {
            failed.push((n, first));
        }
    }
    assert!(
        failed.is_empty(),
        "not read again from the committed offset 5: {failed:?}"
    );
}

/// Reads ten records of twenty, commits offset 5, has the partition revoked and
/// assigned back (a subscription change), runs `steps`, and returns the offset of the
/// first record read after that.
async fn first_offset_after_reassignment(
    case: usize,
    paused_when_revoked: bool,
    steps: &[Step],
) -> i64 {
    let mut settings = test_kit::kafka_settings(&format!("pause-reassign{case}"));
    settings.topic_partitions = 1;
    let topic = format!("{}in", settings.topic_prefix);
    let other = format!("{}other", settings.topic_prefix);
    let spec = |name: &str| TopicSpec {
        name: name.to_owned(),
        compacted: false,
        retention: None,
    };
    kafka_io::ensure_topics(&settings, &[spec(&topic), spec(&other)])
        .await
        .expect("test setup");
    let records: Vec<(&str, Vec<u8>)> = (0..20).map(|i| ("k", vec![i])).collect();
    test_kit::produce(&settings, &topic, &records).await;
    let group = format!("{}group", settings.topic_prefix);
    let (consumer, _tracker) =
        kafka_io::group_consumer(&settings, "test", &group, &[&topic], None).expect("consumer");
    for want in 0..10 {
        assert_eq!(next_offset(&consumer).await, want);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(5))
        .expect("test setup");
    consumer.store_offsets(&tpl).expect("stored");
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("committed");
    let mut partition = TopicPartitionList::new();
    partition.add_partition(&topic, 0);
    if paused_when_revoked {
        consumer.pause(&partition).expect("paused");
    }
    // A rebalance that revokes the partition and assigns it back to this member.
    consumer.subscribe(&[&topic, &other]).expect("subscribed");
    let started = std::time::Instant::now();
    // A record read while the rebalance is served.
    let mut early = None;
    loop {
        let assigned = consumer.assignment().expect("assignment");
        if assigned.elements().iter().any(|e| e.topic() == other) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no rebalance in 60 s"
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            early = early.or(Some(m.offset()));
        }
    }
    if let Some(offset) = early {
        return offset;
    }
    for step in steps {
        match step {
            Step::Pause => consumer.pause(&partition).expect("paused"),
            Step::Resume => consumer.resume(&partition).expect("resumed"),
            Step::Sleep(ms) => {
                // Polls meanwhile, as a consume loop does.
                if let Ok(Ok(m)) =
                    tokio::time::timeout(Duration::from_millis(*ms), consumer.recv()).await
                {
                    return m.offset();
                }
            }
        }
    }
    next_offset(&consumer).await
}

/// The offset of the next record read.
async fn next_offset(consumer: &kafka_io::GroupConsumer) -> i64 {
    tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("no consume error")
        .offset()
}
