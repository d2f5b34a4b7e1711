//! The dispatcher against the real broker and a real HTTP receiver: deliveries arrive
//! with their id header, transient failures are retried, final and exhausted ones are
//! dead-lettered with every attempt, and a slow endpoint does not hold up a healthy one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use test_kit::{Answer, Receiver};
use tokio_util::sync::CancellationToken;
use wire::{Header, RenderedDelivery};

fn delivery(id: &str, endpoint: &str, url: String) -> RenderedDelivery {
    RenderedDelivery {
        delivery_id: id.into(),
        event_id: format!("ev-{id}"),
        event_type: "transfer.error".into(),
        endpoint_id: endpoint.into(),
        rendered_at: wire::now_rfc3339(),
        method: "POST".into(),
        url,
        headers: vec![Header::new("Content-Type", "application/json")],
        sensitive_headers: vec![Header::new("Authorization", "Bearer sk-test")],
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        ..wire::RenderedDelivery::default()
    }
}

fn config(kafka: kafka_io::KafkaSettings) -> dispatcher::Config {
    dispatcher::Config {
        kafka,
        // Three attempts, the retries slept out in place (shorter than the first tier).
        retry_schedule: "50ms,100ms".to_owned(),
        // Timeouts and 429s would wait 30 s at least.
        retry_throttle_min: Duration::from_millis(100),
        delivery_timeout: Duration::from_secs(2),
        master_key: service_kit::Secret::new(test_kit::MASTER_KEY),
        // The receivers are local.
        allowed_networks: "127.0.0.0/8".to_owned(),
        admin_addr: "127.0.0.1:0".to_owned(),
        ..dispatcher::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retries_and_dead_letters() {
    let (kafka, topics, registry) = test_kit::kafka_stack("dispatcher").await;

    // /ok answers 200; /flaky 503 twice (with Retry-After) then 200; /gone 410; /down always 500.
    let receiver = Receiver::scripted(|req, n| match req.uri.as_str() {
        "/flaky" if n < 2 => Answer {
            retry_after: Some("0".into()),
            ..Answer::status(503)
        },
        "/gone" => Answer::status(410),
        "/down" => Answer::status(500),
        _ => Answer::status(200),
    })
    .await;
    let closed = format!("http://127.0.0.1:{}/nothing", test_kit::free_port());
    let deliveries = [
        delivery("d-ok", "ep-ok", receiver.url("/ok")),
        delivery("d-flaky", "ep-flaky", receiver.url("/flaky")),
        delivery("d-gone", "ep-gone", receiver.url("/gone")),
        delivery("d-down", "ep-down", receiver.url("/down")),
        delivery("d-closed", "ep-closed", closed),
    ];
    let records: Vec<(&str, Vec<u8>)> = deliveries
        .iter()
        .map(|d| (d.endpoint_id.as_str(), registry.encode(d).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;
    test_kit::produce(
        &kafka,
        &topics.rendered_deliveries,
        &[("ep-x", b"garbage".to_vec())],
    )
    .await;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dispatcher::run(config(kafka.clone()), shutdown.clone()));

    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            r.len() >= 4
        })
        .await,
    );
    // The dead letters can be written before /flaky's third attempt lands.
    let got = receiver
        .wait_until(Duration::from_secs(30), |got| {
            got.iter().filter(|c| c.uri == "/flaky").count() >= 3
                && got.iter().any(|c| c.uri == "/ok")
        })
        .await;
    let count = |path: &str| got.iter().filter(|c| c.uri == path).count();
    assert_eq!(count("/ok"), 1);
    assert_eq!(count("/flaky"), 3, "two 503s then a 200");
    assert_eq!(count("/gone"), 1, "410 is final");
    assert_eq!(count("/down"), 3, "every attempt used");

    // Every attempt carries the delivery id and the secret header, and the body as rendered.
    for c in &got {
        let path = c.uri.trim_start_matches('/');
        assert_eq!(
            c.header("hookline-delivery-id"),
            Some(format!("d-{path}").as_str()),
            "{c:?}"
        );
        assert_eq!(c.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.body, format!("{{\"id\":\"d-{path}\"}}").into_bytes());
    }

    let by_delivery = |id: &str| {
        dead.iter()
            .find(|d| d.delivery_id.as_deref() == Some(id))
            .cloned()
    };
    let gone = by_delivery("d-gone").expect("410 dead-lettered");
    assert_eq!(gone.reason_code, "HL-DELIVERY-REJECTED");
    assert_eq!(
        gone.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(410)]
    );
    assert_eq!(gone.delivery.as_ref().unwrap().url, receiver.url("/gone"));

    let down = by_delivery("d-down").expect("exhausted dead-lettered");
    assert_eq!(down.reason_code, "HL-DELIVERY-EXHAUSTED");
    assert_eq!(
        down.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(500); 3]
    );
    assert!(!down.reason.contains("sk-test"));

    let closed = by_delivery("d-closed").expect("connection refused dead-lettered");
    assert_eq!(closed.reason_code, "HL-DELIVERY-EXHAUSTED");
    assert!(
        closed
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error_code.as_deref() == Some("HL-HTTP-CONNECT"))
    );

    let garbage = dead
        .iter()
        .find(|d| d.delivery.is_none())
        .expect("undecodable record dead-lettered");
    assert_eq!(garbage.reason_code, "HL-WIRE-UNKNOWN-FORMAT");
    assert_eq!(garbage.payload.as_deref(), Some(&b"garbage"[..]));
    assert!(by_delivery("d-ok").is_none() && by_delivery("d-flaky").is_none());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops within its bound")
        .unwrap()
        .unwrap();
}

/// How long the hanging endpoint takes to answer.
const HANG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_hold_up_a_healthy_one() {
    let (kafka, topics, registry) = test_kit::kafka_stack("isolation").await;
    let receiver = Receiver::scripted(|req, _| match req.uri.as_str() {
        "/hang" => Answer {
            delay: HANG,
            ..Answer::status(200)
        },
        _ => Answer::status(200),
    })
    .await;
    // All on one partition (one key): the hanging deliveries come first.
    let mut records = Vec::new();
    for i in 0..5 {
        records.push((
            "same",
            registry
                .encode(&delivery(
                    &format!("h{i}"),
                    "ep-hang",
                    receiver.url("/hang"),
                ))
                .unwrap(),
        ));
    }
    for i in 0..20 {
        records.push((
            "same",
            registry
                .encode(&delivery(&format!("k{i}"), "ep-ok", receiver.url("/ok")))
                .unwrap(),
        ));
    }
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;
    let shutdown = CancellationToken::new();
    let config = dispatcher::Config {
        delivery_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(1),
        ..config(kafka.clone())
    };
    let started = Instant::now();
    let task = tokio::spawn(dispatcher::run(config, shutdown.clone()));
    let got = receiver
        .wait_until(HANG, |c| {
            c.iter().filter(|c| c.uri == "/ok").count() == 20
                && c.iter().filter(|c| c.uri == "/hang").count() == 5
        })
        .await;
    // Causal, not a speed check: the healthy deliveries all arrived while the hanging
    // ones were still unanswered.
    assert_eq!(got.iter().filter(|c| c.uri == "/ok").count(), 20);
    assert_eq!(
        got.iter().filter(|c| c.uri == "/hang").count(),
        5,
        "the hanging deliveries were sent concurrently"
    );
    assert!(
        started.elapsed() < HANG,
        "healthy deliveries waited for the hanging ones"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_kafka_is_written_smaller_not_lost() {
    let (kafka, topics, registry) = test_kit::kafka_stack("dlq-large").await;
    let receiver = Receiver::scripted(|_, _| Answer::status(410)).await;
    // An incompressible body just under the record limit: the delivery fits, its dead
    // letter (delivery + reason + attempts, a few hundred bytes more) does not.
    let envelope = registry
        .encode(&delivery("d-big", "ep-big", receiver.url("/big")))
        .unwrap()
        .len();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let body: Vec<u8> = (0..kafka_io::MAX_RECORD_BYTES - envelope - 120)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut big = delivery("d-big", "ep-big", receiver.url("/big"));
    big.body = body;
    test_kit::produce(
        &kafka,
        &topics.rendered_deliveries,
        &[("ep-big", registry.encode(&big).unwrap())],
    )
    .await;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dispatcher::run(config(kafka.clone()), shutdown.clone()));
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            !r.is_empty()
        })
        .await,
    );
    assert_eq!(dead.len(), 1, "the dead letter was written");
    let letter = &dead[0];
    assert_eq!(letter.reason_code, "HL-DELIVERY-REJECTED");
    assert!(
        letter.reason.contains("request body dropped"),
        "{}",
        letter.reason
    );
    let kept = letter
        .delivery
        .as_ref()
        .expect("the request without its body");
    assert!(kept.body.is_empty());
    assert_eq!(kept.url, receiver.url("/big"));
    assert_eq!(letter.attempts.len(), 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_names_resolving_to_it_are_refused_unless_allowed() {
    let (kafka, topics, registry) = test_kit::kafka_stack("ssrf").await;
    let receiver = Receiver::ok().await;
    let by_name = receiver.url("/name").replace("127.0.0.1", "localhost");
    let deliveries = [
        delivery("d-literal", "ep-literal", receiver.url("/literal")),
        delivery("d-name", "ep-name", by_name),
        delivery(
            "d-metadata",
            "ep-metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
    ];
    let records: Vec<(&str, Vec<u8>)> = deliveries
        .iter()
        .map(|d| (d.endpoint_id.as_str(), registry.encode(d).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;

    let shutdown = CancellationToken::new();
    // Public addresses only: the default.
    let config = dispatcher::Config {
        allowed_networks: String::new(),
        ..config(kafka.clone())
    };
    let task = tokio::spawn(dispatcher::run(config, shutdown.clone()));
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            r.len() >= 3
        })
        .await,
    );
    assert!(
        receiver.captured().is_empty(),
        "a refused delivery must not connect"
    );
    for id in ["d-literal", "d-name", "d-metadata"] {
        let letter = dead
            .iter()
            .find(|d| d.delivery_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} dead-lettered"));
        assert_eq!(letter.reason_code, "HL-DELIVERY-REFUSED", "{id}");
        assert_eq!(letter.attempts.len(), 1, "{id}: final, not retried");
        assert_eq!(
            letter.attempts[0].error_code.as_deref(),
            Some("HL-DELIVERY-REFUSED")
        );
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops within its bound")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_timeouts_and_response_excerpts() {
    let (kafka, topics, registry) = test_kit::kafka_stack("transport").await;
    let receiver = Receiver::scripted(|req, _| match req.uri.as_str() {
        "/slow" => Answer {
            delay: Duration::from_secs(5),
            ..Answer::status(200)
        },
        _ => Answer {
            body: "gone for good: account 42 closed",
            ..Answer::status(410)
        },
    })
    .await;
    let sealer = signing::Sealer::from_base64(test_kit::MASTER_KEY).unwrap();
    // The endpoint's 300 ms, not the dispatcher's 60 s: the slow receiver times out.
    let slow = RenderedDelivery {
        timeout_ms: Some(300),
        ..delivery("d-slow", "ep-slow", receiver.url("/slow"))
    };
    let gone = delivery("d-gone", "ep-gone", receiver.url("/gone"));
    let mut sealed = delivery("d-sealed", "ep-sealed", receiver.url("/sealed"));
    sealed.body = sealer
        .seal(
            &sealed.body,
            &signing::delivery_context("d-sealed", "body", "POST", &sealed.url),
        )
        .into_bytes();
    sealed.body_sealed = true;
    sealed.sensitive_headers.clear();
    let records: Vec<(&str, Vec<u8>)> = [&slow, &gone, &sealed]
        .iter()
        .map(|d| (d.endpoint_id.as_str(), registry.encode(*d).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;
    let shutdown = CancellationToken::new();
    let config = dispatcher::Config {
        delivery_timeout: Duration::from_secs(60),
        ..config(kafka.clone())
    };
    let task = tokio::spawn(dispatcher::run(config, shutdown.clone()));
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            r.len() >= 3
        })
        .await,
    );
    let by = |id: &str| {
        dead.iter()
            .find(|d| d.delivery_id.as_deref() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} dead-lettered"))
    };
    let slow = by("d-slow");
    assert_eq!(slow.reason_code, "HL-DELIVERY-EXHAUSTED");
    assert!(
        slow.attempts
            .iter()
            .all(|a| a.error_code.as_deref() == Some("HL-HTTP-TIMEOUT")),
        "{:?}",
        slow.attempts
    );
    // Kept sealed, whatever the request: a receiver may echo what it got (its key).
    let gone = by("d-gone");
    let kept = gone.attempts[0].response.clone().expect("kept");
    let context = signing::delivery_context("d-gone", "response/1", "POST", &receiver.url("/gone"));
    assert_eq!(
        sealer.open(&kept, &context).unwrap(),
        b"gone for good: account 42 closed"
    );
    let sealed = by("d-sealed");
    let kept = sealed.attempts[0].response.clone().expect("kept");
    assert!(signing::Sealer::is_sealed(&kept), "{kept}");
    let context =
        signing::delivery_context("d-sealed", "response/1", "POST", &receiver.url("/sealed"));
    assert_eq!(
        sealer.open(&kept, &context).unwrap(),
        b"gone for good: account 42 closed"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops within its bound")
        .unwrap()
        .unwrap();
}

/// An HTTPS receiver with a self-signed certificate: answers 200 to every request and
/// counts them.
async fn self_signed_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("test receiver");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("test receiver");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test receiver");
    let url = format!(
        "https://127.0.0.1:{}/tls",
        listener.local_addr().expect("test receiver").port()
    );
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // A refused handshake (the verifying client) ends here.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_tls_false_accepts_a_self_signed_certificate_and_only_then() {
    let (kafka, topics, registry) = test_kit::kafka_stack("tls").await;
    let (url, served) = self_signed_receiver().await;
    // Both bodies are small JSON; the insecure one goes first in its own partition key.
    let insecure = RenderedDelivery {
        insecure_tls: true,
        ..delivery("d-insecure", "ep-insecure", url.clone())
    };
    let verified = delivery("d-verified", "ep-verified", url);
    let records: Vec<(&str, Vec<u8>)> = [&insecure, &verified]
        .iter()
        .map(|d| (d.endpoint_id.as_str(), registry.encode(*d).unwrap()))
        .collect();
    test_kit::produce(&kafka, &topics.rendered_deliveries, &records).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dispatcher::run(config(kafka.clone()), shutdown.clone()));
    let dead = test_kit::dead_letters(
        &test_kit::read_topic(&kafka, &topics.dead_letter, Duration::from_secs(60), |r| {
            !r.is_empty()
        })
        .await,
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].delivery_id.as_deref(),
        Some("d-verified"),
        "the verifying client refuses the certificate"
    );
    assert!(
        dead[0]
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error_code.as_deref() == Some("HL-HTTP-CONNECT"))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.load(std::sync::atomic::Ordering::SeqCst) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "validate_tls: false delivered once, over TLS"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("stops within its bound")
        .unwrap()
        .unwrap();
}
