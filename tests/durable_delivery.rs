//! Durable delivery against the real broker, with the services as child processes:
//! receivers that fail then recover, time out, cut the connection mid-response or
//! answer 410, while the dispatcher is `kill -9`ed with deliveries in the retry tiers;
//! and an endpoint disabled after failing too long. (Black holes: `admission.rs`.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_kit::{Answer, Captured, Receiver};
use tests::{Pipeline, send_events};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: usize = 30;

/// Requests so far per delivery id.
type Counts = Arc<Mutex<HashMap<String, usize>>>;

fn count(counts: &Counts, req: &Captured) -> usize {
    let id = req
        .header("hookline-delivery-id")
        .unwrap_or_default()
        .to_owned();
    let mut counts = counts.lock().expect("test setup");
    let n = counts.entry(id).or_insert(0);
    *n += 1;
    *n
}

/// A receiver that cuts the connection in the middle of its first answer to each
/// delivery (half a status line), and answers 200 after that.
async fn cutting_receiver() -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let url = format!("http://{}/cut", listener.local_addr().expect("test setup"));
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Headers, then the body by Content-Length.
                let (head_end, length) = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let id = head
                    .lines()
                    .find_map(|l| l.strip_prefix("hookline-delivery-id:"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let first = {
                    let mut log = log.lock().expect("test setup");
                    let first = !log.iter().any(|(seen, _)| *seen == id);
                    log.push((id, !first));
                    first
                };
                if first {
                    let _ = socket.write_all(b"HTTP/1.1 20").await;
                } else {
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

async fn webhook(pipeline: &Pipeline, url: &str, extra: Value) -> String {
    let mut body = json!({"name": "durable", "vendor": "generic_post", "url": url, "events": ["transfer.started"]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let created = pipeline
        .post("/webhooks", &json!({ "webhook": body }))
        .await;
    created["webhook"]["id"].as_str().expect("id").to_owned()
}

fn timestamp(req: &Captured) -> time::OffsetDateTime {
    let ts = req
        .header("x-prequel-webhook-timestamp")
        .expect("signed with a timestamp");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_is_delivered_or_dead_lettered_through_faults_and_a_kill() {
    test_kit::init_logs();
    // Retries through the tiers (6 s goes through the 5 s tier), quick timeouts; the
    // circuit breaker is out of the way here (its own test is below).
    let mut pipeline = Pipeline::start(
        "durable",
        &[
            ("HOOKLINE_RETRY_SCHEDULE", "2s,6s,2s"),
            ("HOOKLINE_RETRY_THROTTLE_MIN", "1s"),
            ("HOOKLINE_CIRCUIT_FAILURES", "100000"),
        ],
    )
    .await;
    let counts: Counts = Arc::default();
    let flaky_counts = counts.clone();
    // 500 twice for each delivery, then 200.
    let flaky = Receiver::scripted(move |req, _| {
        if count(&flaky_counts, req) <= 2 {
            Answer::status(500)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let slow = Receiver::scripted(|_, _| Answer {
        delay: Duration::from_secs(3),
        ..Answer::status(200)
    })
    .await;
    let gone = Receiver::scripted(|_, _| Answer::status(410)).await;
    let (cut_url, cut) = cutting_receiver().await;
    let flaky_id = webhook(&pipeline, &flaky.url("/flaky"), json!({})).await;
    let slow_id = webhook(&pipeline, &slow.url("/slow"), json!({"timeout_ms": 1000})).await;
    let gone_id = webhook(&pipeline, &gone.url("/gone"), json!({})).await;
    let cut_id = webhook(&pipeline, &cut_url, json!({})).await;

    let sent = send_events(&pipeline.client, &pipeline.base, 0..EVENTS, 8, |_| {}).await;
    assert_eq!(sent.len(), EVENTS);
    // Every flaky delivery failed once at least: they sit in the retry tiers now.
    flaky
        .wait_until(Duration::from_secs(60), |got| distinct(got).len() >= EVENTS)
        .await;
    // Past the offset commit (250 ms), before the first retry is due (2 s, -20%).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let kill_at = flaky.captured().len();
    assert!(
        pipeline.dispatcher.kill9_and_restart(),
        "the dispatcher had exited before the kill"
    );

    let topics = kafka_io::Topics::new(&pipeline.kafka.topic_prefix);
    // Waited for, not a bound on speed: a kill landing between a timed-out attempt's
    // re-queue and its commit leaves two retry chains of that delivery (same id), and
    // the CI runs took 138 to 190 s.
    let deadline = Instant::now() + Duration::from_secs(300);
    let dead = loop {
        let records = test_kit::read_topic(
            &pipeline.kafka,
            &topics.dead_letter,
            Duration::from_secs(5),
            |_| false,
        )
        .await;
        let dead = test_kit::dead_letters(&records);
        let ids: HashSet<_> = dead.iter().filter_map(|d| d.delivery_id.clone()).collect();
        // The flaky receiver's third request for a delivery is its first 200.
        let delivered = |got: &[Captured]| {
            group(got)
                .values()
                .filter(|requests| requests.len() >= 3)
                .count()
        };
        let cut_done = cut
            .lock()
            .expect("test setup")
            .iter()
            .filter(|(_, answered)| *answered)
            .map(|(id, _)| id.clone())
            .collect::<HashSet<_>>()
            .len();
        if (ids.len() >= 2 * EVENTS && delivered(&flaky.captured()) >= EVENTS && cut_done >= EVENTS)
            || Instant::now() > deadline
        {
            break dead;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Flaky: each delivery got its 200 after two 500s, always under one delivery id,
    // each retry signed afresh.
    let got = flaky.captured();
    let by_id = group(&got);
    assert_eq!(by_id.len(), EVENTS, "one delivery id per event");
    let mut duplicates = 0;
    for (id, requests) in &by_id {
        let ok = requests.len().saturating_sub(2);
        assert!(ok >= 1, "{id} never delivered: {} requests", requests.len());
        duplicates += ok - 1;
        let (first, last) = (
            requests.first().expect("test setup"),
            requests.last().expect("test setup"),
        );
        assert!(
            timestamp(last) > timestamp(first),
            "{id}: a retry seconds later carries a fresh timestamp"
        );
        assert!(
            requests.iter().all(|r| r.body == first.body),
            "{id}: the same request every time"
        );
    }
    // Cut mid-response: retried, then delivered.
    let cut = cut.lock().expect("test setup").clone();
    let cut_ids: HashSet<_> = cut.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(cut_ids.len(), EVENTS);
    assert!(
        cut_ids
            .iter()
            .all(|id| cut.iter().any(|(i, answered)| i == id && *answered)),
        "every cut delivery retried and answered"
    );

    // Dead letters: the slow ones exhausted after 4 timeouts, the gone ones at once.
    let of = |endpoint: &str| {
        dead.iter()
            .filter(|d| d.endpoint_id.as_deref() == Some(endpoint))
            .collect::<Vec<_>>()
    };
    let slow_dead = of(&slow_id);
    let slow_ids: HashSet<_> = slow_dead
        .iter()
        .filter_map(|d| d.delivery_id.clone())
        .collect();
    assert_eq!(
        slow_ids.len(),
        EVENTS,
        "every timed-out delivery dead-lettered"
    );
    for d in &slow_dead {
        assert_eq!(d.reason_code, "HL-DELIVERY-EXHAUSTED");
        assert_eq!(
            d.attempts.len(),
            4,
            "the first attempt and the schedule's 3 retries"
        );
        assert!(
            d.attempts
                .iter()
                .all(|a| a.error_code.as_deref() == Some("HL-HTTP-TIMEOUT"))
        );
    }
    let gone_dead = of(&gone_id);
    assert_eq!(
        gone_dead
            .iter()
            .filter_map(|d| d.delivery_id.clone())
            .collect::<HashSet<_>>()
            .len(),
        EVENTS
    );
    assert!(
        gone_dead
            .iter()
            .all(|d| d.reason_code == "HL-DELIVERY-REJECTED"
                && d.attempts.len() == 1
                && d.attempts[0].status == Some(410))
    );
    assert!(
        of(&flaky_id).is_empty() && of(&cut_id).is_empty(),
        "nothing delivered was dead-lettered"
    );

    // The attempt log saw every outcome.
    let log: Vec<wire::DeliveryAttempt> = test_kit::read_topic(
        &pipeline.kafka,
        &topics.delivery_attempts,
        Duration::from_secs(5),
        |_| false,
    )
    .await
    .iter()
    .filter_map(|r| {
        wire::Registry::bundled()
            .expect("test setup")
            .decode(r.value.as_deref()?)
            .ok()
    })
    .collect();
    let outcomes = |endpoint: &str, outcome: &str| {
        log.iter()
            .filter(|a| a.endpoint_id == endpoint && a.outcome == outcome)
            .map(|a| a.delivery_id.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    assert_eq!(outcomes(&flaky_id, "delivered"), EVENTS);
    assert_eq!(outcomes(&flaky_id, "retrying"), EVENTS);
    assert_eq!(outcomes(&slow_id, "dead_lettered"), EVENTS);
    println!(
        "durable delivery: {EVENTS} events x 4 endpoints, 1 dispatcher kill after {kill_at} flaky requests; flaky {} requests, {duplicates} duplicate 200s; cut {} requests; dead letters {} (timeouts {}, 410s {}); attempt log {} records",
        got.len(),
        cut.len(),
        dead.len(),
        slow_dead.len(),
        gone_dead.len(),
        log.len()
    );
}

/// Requests by delivery id, in arrival order.
fn group(got: &[Captured]) -> HashMap<String, Vec<Captured>> {
    let mut by: HashMap<String, Vec<Captured>> = HashMap::new();
    for c in got {
        by.entry(
            c.header("hookline-delivery-id")
                .unwrap_or_default()
                .to_owned(),
        )
        .or_default()
        .push(c.clone());
    }
    by
}

fn distinct(got: &[Captured]) -> HashSet<String> {
    got.iter()
        .filter_map(|c| c.header("hookline-delivery-id").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled_announced_and_recovered() {
    test_kit::init_logs();
    // Disabled after 3 s of failing (5 days by default), its circuit quick to retry.
    let pipeline = Pipeline::start(
        "disable",
        &[
            ("HOOKLINE_ENDPOINT_DISABLE_AFTER", "3s"),
            ("HOOKLINE_CIRCUIT_FAILURES", "2"),
            ("HOOKLINE_CIRCUIT_COOLDOWN", "1s"),
            ("HOOKLINE_CIRCUIT_MAX_COOLDOWN", "1s"),
            ("HOOKLINE_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"),
        ],
    )
    .await;
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = Receiver::scripted({
        let fixed = fixed.clone();
        move |_, _| {
            Answer::status(if fixed.load(std::sync::atomic::Ordering::SeqCst) {
                200
            } else {
                500
            })
        }
    })
    .await;
    let watcher = Receiver::ok().await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("test setup");
    let failing = webhook(&pipeline, &down.url("/down"), json!({})).await;
    // Another webhook is told, through the pipeline, that the first was disabled.
    let body = json!({"webhook": {"name": "watch", "vendor": "generic_post", "url": watcher.url("/watch"), "events": ["endpoint.disabled"]}});
    pipeline.post("/webhooks", &body).await;
    let sent = send_events(&pipeline.client, &pipeline.base, 0..5, 5, |_| {}).await;
    assert_eq!(sent.len(), 5);

    let told = watcher
        .wait_until(Duration::from_secs(90), |got| !got.is_empty())
        .await;
    let announced = told
        .first()
        .map(Captured::json)
        .expect("endpoint.disabled delivered to the watcher");
    assert_eq!(announced["type"], "endpoint.disabled");
    assert_eq!(announced["data"]["endpoint_id"], failing.as_str());
    let got: Value = pipeline
        .client
        .get(format!("{}/webhooks/{failing}", pipeline.base))
        .bearer_auth(tests::TOKEN)
        .send()
        .await
        .expect("test setup")
        .json()
        .await
        .expect("test setup");
    assert_eq!(got["webhook"]["active"], false, "marked inactive: {got}");

    // Every delivery ends dead-lettered; those after the disabling say so.
    let topics = kafka_io::Topics::new(&pipeline.kafka.topic_prefix);
    let read = test_kit::read_topic(
        &pipeline.kafka,
        &topics.dead_letter,
        Duration::from_secs(60),
        |r| {
            test_kit::dead_letters(r)
                .iter()
                .filter_map(|d| d.delivery_id.clone())
                .collect::<HashSet<_>>()
                .len()
                >= 5
        },
    )
    .await;
    let dead = test_kit::dead_letters(&read);
    assert!(
        dead.iter().any(|d| d.reason_code == "HL-ENDPOINT-DISABLED"),
        "{:?}",
        dead.iter().map(|d| &d.reason_code).collect::<Vec<_>>()
    );

    // Fixed and enabled again: recover replays what was dead-lettered.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = pipeline
        .client
        .patch(format!("{}/webhooks/{failing}", pipeline.base))
        .bearer_auth(tests::TOKEN)
        .json(&json!({"webhook": {"active": true}}))
        .send()
        .await
        .expect("test setup");
    assert!(resp.status().is_success(), "{}", resp.status());
    let before = down.captured().len();
    let summary = pipeline
        .post(
            &format!("/webhooks/{failing}/recover"),
            &json!({ "since": since }),
        )
        .await;
    let after = down
        .wait_until(Duration::from_secs(60), |got| {
            distinct(&got[before..]).len() >= 5
        })
        .await;
    println!(
        "disable: 5 events; endpoint.disabled announced; {} dead letters ({} HL-ENDPOINT-DISABLED); recover matched {} and re-queued {}; {} requests after it",
        dead.len(),
        dead.iter()
            .filter(|d| d.reason_code == "HL-ENDPOINT-DISABLED")
            .count(),
        summary["matched"],
        summary["requeued"],
        after.len() - before
    );
    assert_eq!(
        distinct(&after[before..]).len(),
        5,
        "every delivery recovered once the endpoint is back"
    );
}
