//! Guarantee 1, the hard way: the three binaries run as processes against the real
//! broker and a real HTTP receiver; the renderer and the dispatcher are `kill -9`ed
//! mid-stream and restarted; every event must arrive. Duplicates are allowed, counted
//! and must carry the same delivery id; a loss fails the test.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tests::{Pipeline, create_webhook, send_events};

const EVENTS: usize = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_across_kill_9() {
    let receiver = test_kit::Receiver::ok().await;
    let mut pipeline = Pipeline::start("e2e-kill", &[]).await;
    let base = pipeline.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let endpoint_id = create_webhook(
        &client,
        &base,
        &receiver.url("/hook"),
        &["transfer.started"],
    )
    .await;

    // Events stream in from a task of their own while, here, the services are killed
    // at points of the delivery stream itself, so each kill lands mid-work.
    let sender = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { send_events(&client, &base, 0..EVENTS, 32, |_| {}).await })
    };
    let transfers = |c: &[test_kit::Captured]| -> HashSet<String> {
        c.iter()
            .map(|r| {
                r.json()["data"]["transfer_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    // Each kill: the service, whether it was running (it died of the SIGKILL), and how
    // many events had arrived then.
    let mut kills: Vec<(&str, bool, usize)> = Vec::new();
    for (fraction, victims) in [(1, "renderer"), (2, "dispatcher"), (3, "both")] {
        let goal = EVENTS * fraction / 5;
        let got = receiver
            .wait_until(Duration::from_secs(120), |c| transfers(c).len() >= goal)
            .await;
        let arrived = transfers(&got).len();
        assert!(
            arrived >= goal,
            "the pipeline stalled before {goal} deliveries"
        );
        if victims != "dispatcher" {
            kills.push(("renderer", pipeline.renderer.kill9_and_restart(), arrived));
        }
        if victims != "renderer" {
            kills.push((
                "dispatcher",
                pipeline.dispatcher.kill9_and_restart(),
                arrived,
            ));
        }
    }
    let sent = sender.await.unwrap();
    assert_eq!(sent.len(), EVENTS);
    let got = receiver
        .wait_until(Duration::from_secs(240), |c| transfers(c).len() >= EVENTS)
        .await;

    // Every event arrived, each with the delivery id derived from (event, endpoint).
    let expected: HashMap<String, String> = sent
        .iter()
        .map(|(n, id)| (format!("tr-{n}"), render::delivery_id(id, &endpoint_id)))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in &got {
        let body = request.json();
        let transfer = body["data"]["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(
            request.header("hookline-delivery-id"),
            expected.get(&transfer).map(String::as_str),
            "{transfer}"
        );
        *seen.entry(transfer).or_default() += 1;
    }
    let missing: Vec<_> = expected.keys().filter(|t| !seen.contains_key(*t)).collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "at-least-once: {EVENTS} events, kills {kills:?}, {} requests, {duplicates} duplicates, {} missing",
        got.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Every kill hit a running service with deliveries still to come: it interrupted
    // work, rather than a process that had already exited or a finished stream.
    assert!(
        kills.iter().all(|&(_, running, _)| running),
        "a kill found its service already exited: {kills:?}"
    );
    assert!(
        kills.iter().all(|&(_, _, arrived)| arrived < EVENTS),
        "a kill came after every event had arrived: {kills:?}"
    );

    // Nothing was dead-lettered: the receiver always answered 200.
    let topic = format!("{}dead-letter", pipeline.kafka.topic_prefix);
    let dead =
        test_kit::read_topic(&pipeline.kafka, &topic, Duration::from_secs(2), |_| false).await;
    assert!(dead.is_empty(), "{} dead letters", dead.len());

    // Graceful shutdown: SIGTERM, and each exits 0 within its bound.
    for (name, service) in [
        ("producer", &mut pipeline.producer),
        ("renderer", &mut pipeline.renderer),
        ("dispatcher", &mut pipeline.dispatcher),
    ] {
        let status = service.terminate(Duration::from_secs(40));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not exit cleanly: {status:?}"
        );
    }
}
