//! Endpoint affinity with three dispatcher replicas (issue 17): every delivery of one
//! endpoint, first attempts and retries from two tiers, goes through the replica that
//! owns the endpoint's partition number, so its rate limit and its circuit are one,
//! not one per replica.
//!
//! A receiver counts the requests of a webhook limited to 20 a second while half of
//! its deliveries fail twice (retried after 1 s and 5 s): at most about 20 arrive in
//! any second. A second webhook always fails: its circuit opens on one replica only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use test_kit::{Answer, Receiver};
use tests::{Pipeline, Service};

const DISPATCHERS: usize = 3;
const EVENTS: usize = 200;
const MAX_RPS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_hold_one_rate_limit_and_one_circuit_per_endpoint() {
    // Arrival time and transfer of each request to /limited, with the answer given.
    let arrivals: Arc<Mutex<Vec<(Instant, String, u16)>>> = Arc::default();
    let receiver = {
        let arrivals = arrivals.clone();
        let tries: Mutex<HashMap<String, usize>> = Mutex::default();
        Receiver::scripted(move |request, _| {
            if !request.uri.starts_with("/limited") {
                return Answer::status(500);
            }
            let transfer = request.json()["data"]["transfer_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let number: usize = transfer
                .trim_start_matches("tr-")
                .parse()
                .unwrap_or_default();
            let tried = {
                let mut tries = tries.lock().expect("lock");
                let t = tries.entry(transfer.clone()).or_default();
                *t += 1;
                *t
            };
            // Half the deliveries fail twice: retried from two tiers.
            let status = if number.is_multiple_of(2) && tried <= 2 {
                500
            } else {
                200
            };
            arrivals
                .lock()
                .expect("lock")
                .push((Instant::now(), transfer, status));
            Answer::status(status)
        })
        .await
    };
    let pipeline = Pipeline::start(
        "affinity",
        &[
            ("HOOKLINE_LOG_FORMAT", "json"),
            // Retries wait in the 1 s and 5 s tiers, not in memory.
            ("HOOKLINE_RETRY_SCHEDULE", "1s,5s,1s,5s,1s"),
            // Two thirds of the limited webhook's attempts fail, interleaved: no run of
            // 30 in a row. The failing webhook's circuit opens after 30.
            ("HOOKLINE_CIRCUIT_FAILURES", "30"),
            // Longer than the test: a circuit opens at most once per replica.
            ("HOOKLINE_CIRCUIT_COOLDOWN", "10m"),
        ],
    )
    .await;
    let mut replicas: Vec<Service> = (2..=DISPATCHERS)
        .map(|i| {
            Service::start(
                "hookline-dispatcher",
                &pipeline.env,
                &pipeline.logs.join(format!("dispatcher-{i}")),
            )
        })
        .collect();
    let logs = |replicas: &[Service]| -> Vec<String> {
        std::iter::once(pipeline.dispatcher.output())
            .chain(replicas.iter().map(Service::output))
            .collect()
    };
    tests::wait_dispatchers_settled(
        || logs(&replicas),
        pipeline.kafka.topic_partitions,
        Duration::from_secs(90),
    )
    .await;

    let limited = pipeline
        .post(
            "/webhooks",
            &json!({"webhook": {"name": "limited", "vendor": "generic_post", "url": receiver.url("/limited"),
                "events": ["transfer.started"], "max_rps": MAX_RPS}}),
        )
        .await;
    let down = pipeline
        .post(
            "/webhooks",
            &json!({"webhook": {"name": "down", "vendor": "generic_post", "url": receiver.url("/down"),
                "events": ["transfer.started"]}}),
        )
        .await;
    let down_id = down["webhook"]["id"].as_str().expect("id").to_owned();
    assert!(limited["webhook"]["id"].is_string());
    tests::send_events(&pipeline.client, &pipeline.base, 0..EVENTS, 16, |_| {}).await;

    // Every transfer delivered to /limited.
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = loop {
        let delivered: HashSet<String> = arrivals
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, _, status)| *status == 200)
            .map(|(_, t, _)| t.clone())
            .collect();
        if delivered.len() == EVENTS || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let arrivals = arrivals.lock().expect("lock").clone();
    let retried = arrivals.iter().filter(|(_, _, s)| *s == 500).count();
    // The first requests open connections, so their arrivals bunch by connect time,
    // not by when they were sent: the count starts a second after the first arrival.
    let first = arrivals
        .iter()
        .map(|(at, _, _)| *at)
        .min()
        .expect("arrivals");
    let busiest = tests::busiest_second(
        arrivals
            .iter()
            .map(|(at, _, _)| *at)
            .filter(|at| *at >= first + Duration::from_secs(1))
            .collect(),
    );
    if std::env::var("AFFINITY_DEBUG").is_ok() {
        let t0 = arrivals[0].0;
        for (at, t, s) in &arrivals {
            println!("{:>6} {t} {s}", (*at - t0).as_millis());
        }
    }
    let openings: Vec<usize> = logs(&replicas)
        .iter()
        .map(|log| {
            tests::messages(log, "circuit opened")
                .iter()
                .filter(|f| f["endpoint_id"].as_str() == Some(down_id.as_str()))
                .filter(|f| {
                    f["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("circuit opened"))
                })
                .count()
        })
        .collect();
    println!(
        "affinity: {DISPATCHERS} dispatchers, {EVENTS} events, {} of them delivered to the limited webhook in {} requests ({retried} answered 500); busiest second {busiest} requests (max_rps {MAX_RPS}); the failing webhook's circuit opened {openings:?} times per replica",
        delivered.len(),
        arrivals.len(),
    );
    assert_eq!(
        delivered.len(),
        EVENTS,
        "every transfer delivered to /limited"
    );
    assert_eq!(retried, EVENTS, "half the deliveries failed twice");
    // The pacer spaces requests 50 ms apart; a second can hold 21, and timing jitter a
    // few more. A second replica sending the retries adds about 10 a second.
    assert!(
        busiest <= MAX_RPS + 3,
        "{busiest} requests to /limited within one second (max_rps {MAX_RPS})"
    );
    assert_eq!(
        openings.iter().sum::<usize>(),
        1,
        "the failing webhook's circuit opened once, on the replica that owns it: {openings:?}"
    );
    for replica in &mut replicas {
        assert!(replica.running(), "a replica exited");
    }
}
