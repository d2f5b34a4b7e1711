//! The admin routes over HTTP: liveness always, readiness from conditions and probes,
//! metrics in Prometheus' text format 0.0.4.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use admin::{Readiness, Registry};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn readiness_follows_start_up_and_probes_and_metrics_are_served() {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    registry.register("hookline_test_things", "Things counted", counter.clone());
    counter.inc_by(3);
    let readiness = Readiness::new();
    let up = Arc::new(AtomicBool::new(false));
    let probe_up = up.clone();
    readiness.probe(
        "kafka",
        Arc::new(move || {
            let up = probe_up.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("does not answer".to_owned())
                }
            })
        }),
    );
    let shutdown = CancellationToken::new();
    let addr = admin::serve("127.0.0.1:0", registry, readiness.clone(), shutdown.clone())
        .await
        .expect("bound");
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://{addr}{path}")).send();

    assert_eq!(get("/health/live").await.unwrap().status(), 200);

    // Starting, and the probe fails: 503, the first failure as the reason.
    let resp = get("/health/ready").await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["reason"], "kafka: does not answer");
    assert_eq!(body["checks"]["started"], "starting");

    // Started, probe still failing: still 503.
    readiness.started();
    assert_eq!(get("/health/ready").await.unwrap().status(), 503);

    // Both hold: 200.
    up.store(true, Ordering::SeqCst);
    let resp = get("/health/ready").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"kafka": "ok", "started": "ok"}})
    );

    // A condition the service sets can take it out again.
    readiness.set("consumer", Err("no assignment".to_owned()));
    assert_eq!(get("/health/ready").await.unwrap().status(), 503);

    let resp = get("/metrics").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE hookline_test_things_total counter\nhookline_test_things_total 3\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "not OpenMetrics: {text}");
    shutdown.cancel();
}

#[tokio::test]
async fn an_address_in_use_fails_start_up_with_the_setting_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = admin::serve(
        &addr,
        Registry::default(),
        Readiness::new(),
        CancellationToken::new(),
    )
    .await
    .expect_err("in use");
    assert!(
        format!("{err:#}").contains("HOOKLINE_ADMIN_ADDR"),
        "{err:#}"
    );
}
