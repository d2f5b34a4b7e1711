//! What rendering costs next to what delivering costs: the seed's Slack template
//! rendered into a full request, against one HTTP POST to a local receiver.
//! `cargo bench -p render`; figures in docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wire::{Endpoint, Registry};

const SEED_SLACK: &str = "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*<https://YOUR_ADMIN_HOST/destinations/%s|View Destination>*\\n\\n*Environment:* %s\\n\\n*Timestamp:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .DestinationId .Environment .Timestamp .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\", \"mrkdwn_in\": [\"text\"]}]}";

fn bench(c: &mut Criterion) {
    let registry = Registry::bundled().expect("bundled schemas");
    // A realistic trace: a driver error of about 1.5 KiB with quotes and newlines.
    let trace = format!("ERROR: duplicate key value violates unique constraint \"users_pkey\"\nDETAIL: Key (id)=(42) already exists.\n{}", "  at org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2676)\n".repeat(15));
    let (event, _) = registry
        .event_from_json(&json!({"type": "transfer.sensitive_trace", "data": {"transfer_id": "t-1", "destination_id": "dest-123",
            "source_id": "src-456", "model_id": "model-789", "model_name": "users_table", "source_vendor": "postgres",
            "destination_vendor": "snowflake", "execution_context": "write_destination", "trace": trace}}))
        .expect("a valid sample event");
    let endpoint = Endpoint {
        id: "ep".into(),
        kind: "webhook".into(),
        vendor: "generic_post".into(),
        url: "https://hooks.slack.com/services/T/B/X".into(),
        events: vec!["*".into()],
        active: true,
        header_template: Some("Content-Type: application/json".into()),
        body_template: Some(SEED_SLACK.into()),
        ..Endpoint::default()
    };
    let compiled = render::compile(endpoint.clone()).expect("the seed template compiles");
    c.bench_function("render seed Slack template (full request)", |b| {
        b.iter(|| {
            render::render(black_box(&event), &compiled, "prod", "2024-01-15T10:30:00Z")
                .expect("renders")
        })
    });
    // The common webhook: a plain URL, no templates, the event's envelope as the body.
    let error = registry
        .sample_event("transfer.error")
        .expect("a sample transfer.error");
    let plain = render::compile(Endpoint {
        id: "ep-plain".into(),
        kind: "webhook".into(),
        vendor: "generic_post".into(),
        url: "https://hooks.example.com/in/transfers".into(),
        events: vec!["*".into()],
        active: true,
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        signing_scheme: "standard_webhooks".into(),
        ..Endpoint::default()
    })
    .expect("a plain webhook compiles");
    c.bench_function(
        "render a transfer.error for a plain webhook (no templates)",
        |b| {
            b.iter(|| {
                render::render(black_box(&error), &plain, "prod", "2024-01-15T10:30:00Z")
                    .expect("renders")
            })
        },
    );
    // A fan-out: one event for ten such webhooks, rendered alone for each of them and
    // through one EventRender (the renderer's way, which serialises the body once).
    let ten: Vec<render::Compiled> = (0..10)
        .map(|i| {
            let mut c = plain.endpoint.clone();
            c.id = format!("ep-plain-{i}");
            render::compile(c).expect("a plain webhook compiles")
        })
        .collect();
    c.bench_function(
        "render a transfer.error for ten plain webhooks, each alone",
        |b| {
            b.iter(|| {
                for c in &ten {
                    black_box(
                        render::render(black_box(&error), c, "prod", "2024-01-15T10:30:00Z")
                            .expect("renders"),
                    );
                }
            })
        },
    );
    c.bench_function(
        "render a transfer.error for ten plain webhooks, one EventRender",
        |b| {
            b.iter(|| {
                let rendering = render::EventRender::new(black_box(&error));
                for c in &ten {
                    black_box(
                        rendering
                            .render(c, "prod", "2024-01-15T10:30:00Z")
                            .expect("renders"),
                    );
                }
            })
        },
    );
    c.bench_function("compile the seed Slack endpoint (parse templates)", |b| {
        b.iter(|| render::compile(black_box(endpoint.clone())).expect("compiles"))
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("its address");
        let app = axum::Router::new().fallback(|| async { "" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/hook");
    let body = render::render(&event, &compiled, "prod", "now")
        .expect("renders")
        .body;
    c.bench_function("one HTTP POST to a local receiver (keep-alive)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                client
                    .post(&url)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the local receiver answers")
                    .status()
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
