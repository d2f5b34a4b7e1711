//! A transfer with 10,000 sensitive traces (some of 64 KiB) is gathered without holding
//! it in memory and arrives as numbered requests, each within the maximum body, with
//! every trace once and in order. Prints the renderer's peak memory (docs/BENCHMARKS.md).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_kit::Receiver;
use tests::Pipeline;

const TRACES: usize = 10_000;
const MAX_BODY: usize = 1024 * 1024;

/// Trace sizes: every hundredth 64 KiB, the others 200 B to 4 KiB (times
/// `LARGE_TRANSFER_SCALE`, default 1, to see memory stay flat as transfers grow).
fn trace_len(i: usize) -> usize {
    let scale: usize = std::env::var("LARGE_TRANSFER_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if i % 100 == 7 {
        64 * 1024
    } else {
        (200 + (i * 7919) % 3800) * scale
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_traces_arrive_as_numbered_parts_within_the_maximum_body() {
    let receiver = Receiver::ok().await;
    let pipeline = Pipeline::start(
        "e2e-large",
        &[(
            "HOOKLINE_SENSITIVE_TRACE_MAX_BODY_BYTES",
            &MAX_BODY.to_string(),
        )],
    )
    .await;
    pipeline
        .create_trace_endpoint(json!({"name": "big", "url": receiver.url("/big"), "secret": "tok"}))
        .await;
    let rss_before = peak_rss_kib(pipeline.renderer.pid());

    // The engine writes Avro to `events` itself (sealing the trace, as the API does).
    let registry = wire::Registry::bundled().expect("schemas");
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).expect("key");
    let topic = format!("{}events", pipeline.kafka.topic_prefix);
    let started = Instant::now();
    let mut total_bytes = 0;
    for chunk in (0..TRACES).collect::<Vec<_>>().chunks(500) {
        let records: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|&i| {
                let text = format!("{i:05}:{}", "e".repeat(trace_len(i)));
                total_bytes += text.len();
                let json = json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": "big-1", "destination_id": "dest-1",
                    "model_id": format!("m-{}", i % 40), "source_id": "s-1", "execution_context": "write_destination", "trace": text}});
                let (mut event, _) = registry.event_from_json(&json).expect("valid");
                service_kit::seal_event(&sealer, &registry, &mut event);
                (event.key.clone(), registry.encode_event(&event).expect("encodes"))
            })
            .collect();
        let borrowed: Vec<(&str, Vec<u8>)> = records
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        test_kit::produce(&pipeline.kafka, &topic, &borrowed).await;
    }
    pipeline
        .post("/events", &json!({"type": "transfer.completed", "data": {"transfer_id": "big-1", "destination_id": "dest-1",
            "status": "PARTIAL_ERROR", "started_at": "2024-01-15T10:00:00Z", "ended_at": "2024-01-15T11:00:00Z"}}))
        .await;

    let got = receiver
        .wait_until(Duration::from_secs(300), |c| {
            c.iter()
                .any(|r| r.header("hookline-trace-last-part") == Some("true"))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed();
    let mut parts = receiver.captured();
    assert!(parts.len() >= got.len());
    parts.sort_by_key(|r| {
        r.header("hookline-trace-part")
            .and_then(|p| p.parse::<u32>().ok())
            .expect("numbered")
    });
    let mut seen = Vec::with_capacity(TRACES);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(
            part.header("hookline-trace-part"),
            Some((i + 1).to_string().as_str()),
            "parts are numbered 1..n once each"
        );
        assert_eq!(
            part.header("hookline-trace-last-part"),
            Some(if i + 1 == parts.len() {
                "true"
            } else {
                "false"
            })
        );
        assert!(
            part.body.len() <= MAX_BODY,
            "part {} is {} bytes",
            i + 1,
            part.body.len()
        );
        let body: Value = part.json();
        assert_eq!(body["part"], json!(i + 1));
        assert_eq!(body["last_part"], json!(i + 1 == parts.len()));
        for t in body["sensitive_traces"].as_array().expect("traces") {
            let text = t["trace"].as_str().expect("trace");
            seen.push(text[..5].parse::<usize>().expect("numbered trace"));
            assert_eq!(
                text.len(),
                6 + trace_len(seen[seen.len() - 1]),
                "traces arrive whole"
            );
        }
    }
    assert_eq!(
        seen,
        (0..TRACES).collect::<Vec<_>>(),
        "every trace once, in order"
    );
    let rss_after = peak_rss_kib(pipeline.renderer.pid());
    println!(
        "large transfer: {TRACES} traces, {:.1} MiB of trace text, {} parts of at most {} KiB, {:.1} s from first write to last part; renderer peak RSS {} MiB before, {} MiB after",
        total_bytes as f64 / 1048576.0,
        parts.len(),
        MAX_BODY / 1024,
        elapsed.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024
    );
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: Option<u32>) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.expect("running")))
        .expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
