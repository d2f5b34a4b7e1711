//! Admission under bad endpoints, with the services as child processes: a healthy
//! endpoint's deliveries take about as long beside 1, 2 and 10 black-holed endpoints
//! (they accept connections and never answer) as alone, and a black hole holds a
//! handful of connections, not its `max_in_flight`. Ratios against the same run's
//! baseline, never an absolute time.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use test_kit::{Captured, Receiver};
use tests::{Pipeline, send_events};
use tokio::io::AsyncReadExt as _;

/// Events per stage (each to the healthy endpoint and to every black hole), sent at
/// `RATE` a second: a pace the debug builds keep up with when every event also goes to
/// ten black holes, so a stage's time shows whether the black holes hold the healthy
/// endpoint back, not how much CPU their deliveries take. At 100/s the ten-black-hole
/// stage had become CPU-bound (4.7 to 7.6 s against 3.0 alone, over 2x once in CI); at
/// 60/s it takes 3.3 s.
const EVENTS: usize = 180;
const RATE: f64 = 60.0;

/// Posts events `range` at `RATE` a second (each in its own task, retried until
/// accepted by `send_events`).
async fn send_paced(pipeline: &Pipeline, range: std::ops::Range<usize>) -> usize {
    let started = Instant::now();
    let sends: Vec<_> = range
        .enumerate()
        .map(|(i, n)| {
            let (client, base) = (pipeline.client.clone(), pipeline.base.clone());
            let at = started + Duration::from_secs_f64(i as f64 / RATE);
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                send_events(&client, &base, n..n + 1, 1, |_| {}).await.len()
            })
        })
        .collect();
    let mut sent = 0;
    for send in sends {
        sent += send.await.expect("sender");
    }
    sent
}

fn distinct(got: &[Captured]) -> HashSet<String> {
    got.iter()
        .filter_map(|c| c.header("hookline-delivery-id").map(str::to_owned))
        .collect()
}

/// What a black hole saw: connections open now, the most open at once, and how many
/// the dispatcher closed (an attempt that timed out).
#[derive(Default)]
struct Hole {
    open: AtomicUsize,
    peak: AtomicUsize,
    closed: AtomicUsize,
}

/// A listener that accepts connections, reads them and never answers.
async fn black_hole() -> (String, Arc<Hole>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let url = format!("http://{}/hole", listener.local_addr().expect("test setup"));
    let hole = Arc::new(Hole::default());
    tokio::spawn({
        let hole = hole.clone();
        async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let open = hole.open.fetch_add(1, Ordering::SeqCst) + 1;
                hole.peak.fetch_max(open, Ordering::SeqCst);
                let hole = hole.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    hole.open.fetch_sub(1, Ordering::SeqCst);
                    hole.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
    });
    (url, hole)
}

async fn webhook(pipeline: &Pipeline, url: &str, timeout_ms: Option<u64>) {
    let mut hook = json!({"name": "admission", "vendor": "generic_post", "url": url,
        "events": ["transfer.started"]});
    if let Some(ms) = timeout_ms {
        hook["timeout_ms"] = json!(ms);
    }
    pipeline
        .post("/webhooks", &json!({ "webhook": hook }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_endpoint_keeps_its_pace_beside_1_2_and_10_black_holes() {
    test_kit::init_logs();
    let pipeline = Pipeline::start(
        "admission",
        &[
            ("HOOKLINE_RETRY_SCHEDULE", "1s,1s"),
            ("HOOKLINE_RETRY_THROTTLE_MIN", "1s"),
            ("HOOKLINE_CIRCUIT_COOLDOWN", "2s"),
        ],
    )
    .await;
    let healthy = Receiver::ok().await;
    webhook(&pipeline, &healthy.url("/ok"), None).await;
    let mut next = 0;
    let mut stage = |n: usize| {
        let range = next..next + n;
        next += n;
        range
    };
    // Warm-up, then the baseline: the healthy endpoint alone.
    let mut delivered = 0;
    let mut timed = Vec::new();
    for (holes_now, events) in [(0, 50), (0, EVENTS)] {
        let started = Instant::now();
        delivered += send_paced(&pipeline, stage(events)).await;
        healthy
            .wait_until(Duration::from_secs(120), |got| {
                distinct(got).len() >= delivered
            })
            .await;
        timed.push((holes_now, started.elapsed()));
    }
    let alone = timed[1].1;
    // Then beside 1, 2 and 10 black holes (10 s timeouts), added as it goes.
    let mut holes = Vec::new();
    for total in [1, 2, 10] {
        while holes.len() < total {
            let (url, held) = black_hole().await;
            webhook(&pipeline, &url, Some(10_000)).await;
            holes.push(held);
        }
        let started = Instant::now();
        delivered += send_paced(&pipeline, stage(EVENTS)).await;
        let got = healthy
            .wait_until(Duration::from_secs(120), |got| {
                distinct(got).len() >= delivered
            })
            .await;
        assert_eq!(distinct(&got).len(), delivered, "every delivery arrived");
        timed.push((total, started.elapsed()));
    }
    // The black holes' deliveries that waited for a turn get it once the first attempts
    // time out: the peak is read after every black hole saw an attempt time out (its
    // connection closed by the dispatcher), and the retries due a second later.
    let deadline = Instant::now() + Duration::from_secs(60);
    while holes.iter().any(|h| h.closed.load(Ordering::SeqCst) == 0) {
        assert!(
            Instant::now() < deadline,
            "a black hole's attempt never timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connections: Vec<usize> = holes
        .iter()
        .map(|h| h.peak.load(Ordering::SeqCst))
        .collect();
    let figures: Vec<String> = timed[1..]
        .iter()
        .map(|(holes, took)| format!("{holes} black holes {:.2} s", took.as_secs_f64()))
        .collect();
    println!(
        "admission: {EVENTS} events at {RATE}/s to a healthy endpoint, first send to last arrival: {}; most connections each black hole held at once: {connections:?}",
        figures.join(", ")
    );
    for (holes, took) in &timed[2..] {
        assert!(
            took.as_secs_f64() <= 2.0 * alone.as_secs_f64(),
            "beside {holes} black holes the healthy endpoint took {took:?}, alone {alone:?}"
        );
    }
    // Each black hole held a handful of requests at once (adaptive concurrency and its
    // circuit), far fewer than the 50 of HOOKLINE_ENDPOINT_MAX_IN_FLIGHT.
    assert!(
        connections.iter().all(|&c| c <= 20),
        "most connections a black hole held at once: {connections:?}"
    );
}
