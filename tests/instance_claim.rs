//! Renderer replicas and their instance ids (issue 17, item 3). The id is the
//! aggregator's transactional id and static member id: a second live renderer given
//! the same id must refuse to start and name the holder, not fence it. The holder,
//! killed with `kill -9` and started again on this host, takes its id back without
//! waiting (its predecessor's process is gone), and sensitive traces go on flowing.

use std::time::Duration;

use serde_json::{Value, json};
use test_kit::Receiver;
use tests::{Pipeline, Service};

const ID: &str = "renderer-1";

fn transfer(n: usize) -> [Value; 2] {
    let transfer = format!("tr-claim-{n}");
    [
        json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": transfer, "destination_id": "dest-1",
            "model_id": "m-1", "execution_context": "write_destination", "trace": format!("trace {n}")}}),
        json!({"type": "transfer.completed", "data": {"transfer_id": transfer, "destination_id": "dest-1",
            "status": "PARTIAL_ERROR", "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T10:30:00Z"}}),
    ]
}

/// Sends transfer `n` and waits until its traces arrived.
async fn traces_flow(pipeline: &Pipeline, receiver: &Receiver, n: usize) {
    for event in transfer(n) {
        pipeline.post("/events", &event).await;
    }
    let needle = format!("trace {n}");
    receiver
        .wait_until(Duration::from_secs(90), |got| {
            got.iter()
                .any(|c| String::from_utf8_lossy(&c.body).contains(&needle))
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_renderer_with_a_live_renderers_id_refuses_to_start() {
    let receiver = Receiver::ok().await;
    let mut pipeline = Pipeline::start("e2e-instance-claim", &[("HOOKLINE_INSTANCE_ID", ID)]).await;
    pipeline
        .create_trace_endpoint(json!({"name": "claims", "url": receiver.url("/traces")}))
        .await;
    pipeline
        .renderer
        .wait_for_output("instance id claimed", Duration::from_secs(60))
        .await;

    let mut second = Service::start(
        "hookline-renderer",
        &pipeline.env,
        &pipeline.logs.join("second"),
    );
    let status = second
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("a second renderer with a live renderer's id kept running");
    let said = second.output();
    assert!(!status.success(), "it exited with success: {said}");
    assert!(
        said.contains(&format!(
            "HOOKLINE_INSTANCE_ID {ID} is held by another live renderer"
        )) && said.contains(&format!("pid {}", pipeline.renderer.pid().expect("pid"))),
        "the refusal does not name the id and its holder: {said}"
    );
    // The holder was not fenced: it still runs and still aggregates.
    assert!(pipeline.renderer.running(), "the holder stopped");
    traces_flow(&pipeline, &receiver, 1).await;
    assert!(
        !pipeline
            .renderer
            .output()
            .contains("fatal transactional error"),
        "the holder was fenced"
    );

    // Killed and started again on this host: its predecessor is gone, no wait.
    assert!(
        pipeline.renderer.kill9_and_restart(),
        "the renderer had exited"
    );
    pipeline
        .renderer
        .wait_for_output("instance id claimed", Duration::from_secs(60))
        .await;
    assert!(
        !pipeline
            .renderer
            .output()
            .contains("waiting to see whether its holder is alive"),
        "the restart waited for its own dead predecessor"
    );
    traces_flow(&pipeline, &receiver, 2).await;
    println!(
        "instance claim: second renderer refused with {status}; the holder kept its id; restart after kill -9 claimed at once"
    );
}
