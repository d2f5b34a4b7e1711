//! The aggregator's consumer fenced (issue 14, item 2). It is a static group member;
//! when its session times out (a broker that stopped answering), it rejoins under a
//! new member id, and a request still carrying the old one is answered
//! `FENCED_INSTANCE_ID`, which librdkafka makes fatal to the consumer. The same fatal
//! error is raised here on purpose: another member joins the aggregator's group with
//! the renderer's instance id. The aggregator must join again and go on; before, it
//! polled its dead consumer for ever and the transfer's traces never left.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use test_kit::Receiver;
use tests::Pipeline;

const ID: &str = "renderer-fenced";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_aggregator_joins_again_and_its_traces_still_leave_once() {
    let receiver = Receiver::ok().await;
    let pipeline = Pipeline::start("e2e-aggregator-fenced", &[("HOOKLINE_INSTANCE_ID", ID)]).await;
    pipeline
        .create_trace_endpoint(json!({"name": "fenced", "url": receiver.url("/traces")}))
        .await;
    let event = |kind: &str, extra: serde_json::Value| {
        let mut data = json!({"transfer_id": "t-fenced", "destination_id": "dest-1"});
        data.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        json!({"type": kind, "data": data})
    };
    pipeline
        .post(
            "/events",
            &event(
                "transfer.sensitive_trace",
                json!({"model_id": "m-1", "execution_context": "write_destination", "trace": "before the fence"}),
            ),
        )
        .await;
    // The trace is committed on the changelog before the consumer is fenced.
    pipeline.wait_drained(Duration::from_secs(60)).await;

    // Another member with the renderer's instance id: the broker hands it the
    // renderer's membership, and the renderer's next heartbeat is fenced.
    let group = format!("{}hookline-aggregator", pipeline.kafka.topic_prefix);
    let impostor: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &pipeline.kafka.kafka_brokers)
        .set("group.id", &group)
        .set("group.instance.id", ID)
        .set("session.timeout.ms", "10000")
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("a consumer");
    impostor
        .subscribe(&[&format!("{}events", pipeline.kafka.topic_prefix)])
        .expect("subscribe");
    // It joined once it holds partitions: the renderer's membership is then its.
    let impostor = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while impostor.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(Instant::now() < deadline, "the impostor never joined");
            let _ = impostor.poll(Duration::from_millis(100));
        }
        impostor
    })
    .await
    .expect("impostor");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pipeline.renderer.output().contains("FencedInstanceId") {
        assert!(
            Instant::now() < deadline,
            "the renderer's aggregator was never fenced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(impostor);

    pipeline
        .post(
            "/events",
            &event(
                "transfer.completed",
                json!({"status": "PARTIAL_ERROR", "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T10:30:00Z"}),
            ),
        )
        .await;
    let got = receiver
        .wait_until(Duration::from_secs(90), |c| !c.is_empty())
        .await;
    assert!(
        !got.is_empty(),
        "the transfer's traces never left after the aggregator was fenced"
    );
    pipeline.wait_drained(Duration::from_secs(90)).await;
    let got = receiver.captured();
    assert_eq!(got.len(), 1, "one request for the transfer: {got:?}");
    assert_eq!(tests::trace_texts(&got[0]), ["before the fence"]);
    assert!(
        pipeline
            .renderer
            .output()
            .contains("the aggregator's consumer was fenced"),
        "the aggregator did not say it joined again"
    );
    println!("aggregator fenced: joined again, 1 request with the trace");
}
