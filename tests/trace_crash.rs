//! Guarantee 2 the hard way: many concurrent transfers stream sensitive traces while
//! the renderer is `kill -9`ed and restarted; then two renderers share the work and
//! one is killed for good. Every endpoint must get exactly one request per transfer,
//! holding every trace of it in arrival order: counted, not assumed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{Value, json};
use test_kit::{Captured, Receiver};
use tests::{Pipeline, Service};

/// What a transfer sends: its traces (some are model validation errors, which must not
/// be forwarded).
fn transfer_events(n: usize) -> (Vec<Value>, Vec<String>) {
    let transfer = format!("tr-{n}");
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for i in 0..(1 + n % 7) {
        let context = if (n + i) % 5 == 4 {
            "model_validation"
        } else {
            "write_destination"
        };
        let text = format!("trace {n}.{i}");
        if context != "model_validation" {
            expected.push(text.clone());
        }
        events.push(json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": transfer, "destination_id": format!("dest-{n}"),
            "model_id": format!("m-{}", i % 3), "execution_context": context, "trace": text}}));
    }
    (events, expected)
}

fn completed(n: usize) -> Value {
    json!({"type": "transfer.completed", "data": {"transfer_id": format!("tr-{n}"), "destination_id": format!("dest-{n}"),
        "status": "PARTIAL_ERROR", "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T10:30:00Z"}})
}

async fn post_event((client, base): (&reqwest::Client, &str), event: &Value) {
    while !tests::offer_event(client, base, event).await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two endpoints: the seed's default body (the transfer is told by its destination) and
/// a template naming the transfer.
async fn endpoints(pipeline: &Pipeline, receiver: &Receiver) {
    pipeline
        .create_trace_endpoint(
            json!({"name": "defaults", "url": receiver.url("/defaults"), "secret": "tok"}),
        )
        .await;
    pipeline
        .create_trace_endpoint(json!({"name": "templated", "url": receiver.url("/templated"),
            "body_template": "{\"transfer\": \"{{.TransferId}}\", \"traces\": {{.SensitiveTraces}}}"}))
        .await;
}

/// Checks every endpoint got exactly one request per transfer with all its traces;
/// returns the number of requests.
fn check(got: &[Captured], transfers: usize) -> usize {
    let mut per: HashMap<(String, String), Vec<Vec<String>>> = HashMap::new();
    for r in got {
        let body = r.json();
        let (transfer, traces) = match r.uri.as_str() {
            "/defaults" => (
                body["destination_id"]
                    .as_str()
                    .expect("destination")
                    .replace("dest-", "tr-"),
                body["sensitive_traces"].clone(),
            ),
            "/templated" => (
                body["transfer"].as_str().expect("transfer").to_owned(),
                body["traces"].clone(),
            ),
            other => panic!("unexpected request to {other}"),
        };
        let texts = traces
            .as_array()
            .expect("array")
            .iter()
            .map(|t| t["trace"].as_str().expect("trace").to_owned())
            .collect();
        per.entry((r.uri.clone(), transfer))
            .or_default()
            .push(texts);
    }
    let (mut lost, mut duplicated, mut incomplete) = (0, 0, 0);
    for uri in ["/defaults", "/templated"] {
        for n in 0..transfers {
            let (_, expected) = transfer_events(n);
            match per
                .get(&(uri.to_owned(), format!("tr-{n}")))
                .map(Vec::as_slice)
            {
                // Only model validation errors: nothing is forwarded, no request.
                None | Some([]) if expected.is_empty() => {}
                Some(_) if expected.is_empty() => duplicated += 1,
                None | Some([]) => lost += 1,
                Some([one]) => incomplete += usize::from(*one != expected),
                Some(_) => duplicated += 1,
            }
        }
    }
    println!(
        "traces: {transfers} transfers, {} requests, {lost} lost, {duplicated} duplicated or unexpected, {incomplete} incomplete",
        got.len()
    );
    assert_eq!((lost, duplicated, incomplete), (0, 0, 0));
    got.len()
}

async fn wait_for_all(
    pipeline: &Pipeline,
    receiver: &Receiver,
    transfers: usize,
    within: Duration,
) -> Vec<Captured> {
    let with_traces = (0..transfers)
        .filter(|n| !transfer_events(*n).1.is_empty())
        .count();
    receiver
        .wait_until(within, |c| c.len() >= 2 * with_traces)
        .await;
    // A duplicate, if there were one, is in before the pipeline is drained.
    pipeline.wait_drained(within).await;
    receiver.captured()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderer_kill9_loses_no_trace_and_sends_no_batch_twice() {
    const TRANSFERS: usize = 240;
    const KILLS: usize = 4;
    let receiver = Receiver::ok().await;
    let mut pipeline =
        Pipeline::start("e2e-trace-crash", &[("HOOKLINE_INSTANCE_ID", "renderer-1")]).await;
    endpoints(&pipeline, &receiver).await;

    let (client, base) = (pipeline.client.clone(), pipeline.base.clone());
    let api = (&client, base.as_str());
    let sent = AtomicUsize::new(0);
    let total: usize = (0..TRANSFERS).map(|n| transfer_events(n).0.len() + 1).sum();
    let streaming = async {
        stream::iter(0..TRANSFERS)
            .for_each_concurrent(8, |n| {
                let sent = &sent;
                async move {
                    // The end follows the last trace at once: both often fall in one
                    // transaction of the aggregator.
                    for (i, event) in transfer_events(n)
                        .0
                        .iter()
                        .chain([&completed(n)])
                        .enumerate()
                    {
                        if i > 0 && event["type"] != "transfer.completed" {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                        }
                        post_event(api, event).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .await;
    };
    let killing = async {
        // Each kill lands while the renderer is at work: after it took its partitions,
        // at a pseudo-random moment within the next 1.5 s.
        let seed = Instant::now().elapsed().subsec_nanos() as u64 ^ u64::from(std::process::id());
        let mut kills = Vec::new();
        for k in 0..KILLS {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !pipeline
                .renderer
                .output()
                .contains("aggregator partitions assigned")
            {
                assert!(
                    Instant::now() < deadline,
                    "the renderer never got its partitions"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200 + (seed >> (k * 8)) % 1300)).await;
            assert!(
                pipeline.renderer.kill9(),
                "the renderer had exited before kill {k}"
            );
            kills.push(sent.load(Ordering::SeqCst));
            pipeline.renderer.restart();
        }
        kills
    };
    let ((), kills) = tokio::join!(streaming, killing);
    println!("kills after events {kills:?} of {total}");
    assert!(
        kills.iter().all(|k| *k < total),
        "every kill happened while events were streaming: {kills:?}"
    );
    let got = wait_for_all(&pipeline, &receiver, TRANSFERS, Duration::from_secs(180)).await;
    let requests = check(&got, TRANSFERS);
    println!(
        "trace crash: {TRANSFERS} transfers, {total} events, {KILLS} kills, {requests} requests, 0 lost, 0 duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_renderer_takes_over_the_transfers_of_one_killed() {
    const TRANSFERS: usize = 90;
    let receiver = Receiver::ok().await;
    let mut pipeline = Pipeline::start(
        "e2e-trace-takeover",
        &[("HOOKLINE_INSTANCE_ID", "renderer-1")],
    )
    .await;
    let mut env = pipeline.env.clone();
    env.insert("HOOKLINE_INSTANCE_ID".into(), "renderer-2".into());
    let _second = Service::start("hookline-renderer", &env, &pipeline.logs.join("second"));
    endpoints(&pipeline, &receiver).await;
    // Both in the group, each with partitions: the first one's log shows an assignment
    // after the second joined.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_in(
        &pipeline,
        "hookline-renderer.1.log",
        "aggregator partitions assigned",
    ) < 2
    {
        assert!(
            Instant::now() < deadline,
            "the second renderer never joined the group"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The transfers stream; the first renderer is killed mid-stream, at work (it may
    // die inside a transaction), and never comes back.
    let (client, base) = (pipeline.client.clone(), pipeline.base.clone());
    let api = (&client, base.as_str());
    let sent = AtomicUsize::new(0);
    let total: usize = (0..TRANSFERS).map(|n| transfer_events(n).0.len() + 1).sum();
    let streaming = stream::iter(0..TRANSFERS).for_each_concurrent(12, |n| {
        let sent = &sent;
        async move {
            for event in transfer_events(n).0.iter().chain([&completed(n)]) {
                post_event(api, event).await;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
    });
    let killing = async {
        while sent.load(Ordering::SeqCst) < total * 2 / 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            pipeline.renderer.kill9(),
            "the renderer had exited before the kill"
        );
        sent.load(Ordering::SeqCst)
    };
    let ((), killed_at) = tokio::join!(streaming, killing);
    assert!(killed_at < total, "killed after the stream ended");
    let got = wait_for_all(&pipeline, &receiver, TRANSFERS, Duration::from_secs(120)).await;
    let requests = check(&got, TRANSFERS);
    assert!(
        count_in(
            &pipeline,
            "hookline-renderer.1.log",
            "aggregator partitions assigned"
        ) >= 2
    );
    println!(
        "trace takeover: {TRANSFERS} transfers, {total} events, 1 of 2 renderers killed after {killed_at}, {requests} requests, 0 lost, 0 duplicates"
    );
}

fn count_in(pipeline: &Pipeline, file: &str, needle: &str) -> usize {
    std::fs::read_to_string(pipeline.logs.join(file))
        .unwrap_or_default()
        .matches(needle)
        .count()
}
