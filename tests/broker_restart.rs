//! Guarantee 1 across a broker restart: a broker of its own (on a free port, with its
//! own data folder) is restarted while events stream through the pipeline; every event
//! must still arrive. The receiver answers each delivery's first attempt with 503, so
//! every delivery also passes through a retry tier around the restart.

use std::collections::HashSet;
use std::time::Duration;

use tests::{Broker, Service, create_webhook, pipeline_env, send_events, wait_healthy};

const EVENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_across_a_broker_restart() {
    let broker = Broker::start();
    let port = broker.port;
    let mut kafka = test_kit::kafka_settings("e2e-broker");
    kafka.kafka_brokers = format!("127.0.0.1:{port}");

    let seen = std::sync::Mutex::new(HashSet::new());
    let receiver = test_kit::Receiver::scripted(move |req, _| {
        let first = seen.lock().unwrap().insert(
            req.header("hookline-delivery-id")
                .unwrap_or_default()
                .to_owned(),
        );
        test_kit::Answer::status(if first { 503 } else { 200 })
    })
    .await;
    let api_port = test_kit::free_port();
    let mut env = pipeline_env(&kafka, api_port);
    // The retry after the 503 goes through the shortest tier.
    env.insert("HOOKLINE_RETRY_SCHEDULE".into(), "2s".into());
    // Every delivery fails once: that is not an outage for the circuit breaker here.
    env.insert("HOOKLINE_CIRCUIT_FAILURES".into(), "100000".into());
    env.insert(
        "RUST_LOG".into(),
        "info,renderer=debug,kafka_io::table=debug".into(),
    );
    let logs = test_kit::repo_root()
        .join("target/e2e-logs")
        .join(kafka.topic_prefix.trim_end_matches('-'));
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Each service's admin listener on its own port, to read its readiness.
    let admin: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", test_kit::free_port()))
        .collect();
    let with_admin = |i: usize| {
        let mut env = env.clone();
        env.insert("HOOKLINE_ADMIN_ADDR".into(), admin[i].clone());
        env
    };
    let _producer = Service::start("hookline-producer", &with_admin(0), &logs);
    let _renderer = Service::start("hookline-renderer", &with_admin(1), &logs);
    let _dispatcher = Service::start("hookline-dispatcher", &with_admin(2), &logs);
    wait_healthy(&client, &base, Duration::from_secs(60)).await;
    create_webhook(
        &client,
        &base,
        &receiver.url("/hook"),
        &["transfer.started"],
    )
    .await;

    // The broker restarts mid-stream: half the events accepted, and deliveries already
    // under way (the first requests arrived), so the restart interrupts a pipeline that
    // runs. A restart while the services' consumers are still joining their groups is
    // another case (see the note in ARCHITECTURE's "Known gaps").
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let restart_when_flowing = |accepted: usize| {
        if accepted >= EVENTS / 2
            && !receiver.captured().is_empty()
            && !restarted.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            broker.run("restart");
        }
    };
    let sent = send_events(&client, &base, 0..EVENTS, 16, restart_when_flowing).await;
    assert_eq!(sent.len(), EVENTS);
    if !restarted.load(std::sync::atomic::Ordering::SeqCst) {
        receiver
            .wait_until(Duration::from_secs(120), |c| !c.is_empty())
            .await;
        restart_when_flowing(EVENTS);
    }
    assert!(
        restarted.into_inner(),
        "the broker was not restarted: nothing arrived"
    );

    // Delivered: a transfer's delivery got a second request (its first was the 503).
    let delivered = |c: &[test_kit::Captured]| -> HashSet<String> {
        let mut firsts = HashSet::new();
        c.iter()
            .filter(|r| {
                !firsts.insert(
                    r.header("hookline-delivery-id")
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .map(|r| {
                r.json()["data"]["transfer_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let got = receiver
        .wait_until(Duration::from_secs(240), |c| delivered(c).len() >= EVENTS)
        .await;
    let distinct = delivered(&got);
    let ids: HashSet<_> = got
        .iter()
        .filter_map(|r| r.header("hookline-delivery-id"))
        .collect();
    println!(
        "broker restart: {EVENTS} events, {} requests ({} first attempts answered 503), {} delivered, {} missing",
        got.len(),
        ids.len(),
        distinct.len(),
        EVENTS - distinct.len()
    );
    if distinct.len() < EVENTS {
        // Where the missing events wait: each service's consumer lag and work in flight.
        for addr in &admin {
            let metrics = client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .map(|r| r.text());
            let text = match metrics {
                Ok(body) => body.await.unwrap_or_default(),
                Err(e) => format!("unanswered: {e}"),
            };
            for line in text.lines().filter(|l| {
                (l.starts_with("hookline_consumer_lag_records") && !l.ends_with(" 0"))
                    || l.contains("_in_flight ")
                    || l.starts_with("hookline_dispatcher_in_flight")
                    || l.starts_with("hookline_renderer_in_flight")
                    // Counts along the path: ingested, rendered (or not subscribed),
                    // attempted, retried, deferred, dead-lettered.
                    || (!l.starts_with('#')
                        && [
                            "hookline_events_ingested",
                            "hookline_renderer_events",
                            "hookline_deliveries_rendered",
                            "hookline_delivery_attempts_total",
                            "hookline_retries_scheduled",
                            "hookline_deliveries_deferred",
                            "hookline_dead_letters",
                        ]
                        .iter()
                        .any(|m| l.starts_with(m)))
            }) {
                println!("{addr}: {line}");
            }
        }
    }
    assert_eq!(ids.len(), EVENTS, "one delivery id per event");
    assert_eq!(
        distinct.len(),
        EVENTS,
        "events lost across the broker restart"
    );

    // Readiness follows the broker: 503 with a reason while it is stopped, 200 once it
    // is back, on every service.
    broker.run("stop");
    for addr in &admin {
        let (status, body) = ready_within(&client, addr, 503, Duration::from_secs(30)).await;
        println!("broker stopped: {addr}/health/ready {status} {body}");
        assert_eq!(body["status"], "not_ready", "{addr}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("kafka: ")),
            "{addr}: {body}"
        );
    }
    broker.run("start");
    for addr in &admin {
        let (status, body) = ready_within(&client, addr, 200, Duration::from_secs(60)).await;
        println!("broker back: {addr}/health/ready {status} {body}");
        assert_eq!(body["status"], "ready", "{addr}: {body}");
        let live = client
            .get(format!("http://{addr}/health/live"))
            .send()
            .await
            .expect("live");
        assert_eq!(live.status(), 200);
    }
}

/// Polls `addr`'s `/health/ready` until it answers `want`; panics after `within`.
async fn ready_within(
    client: &reqwest::Client,
    addr: &str,
    want: u16,
    within: Duration,
) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let answer = client
            .get(format!("http://{addr}/health/ready"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let last = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                if status == want {
                    return (status, body);
                }
                format!("{status} {body}")
            }
            Err(e) => e.to_string(),
        };
        assert!(
            std::time::Instant::now() < deadline,
            "{addr}/health/ready never answered {want}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
