//! What the Avro codec costs per event on the pipeline's hot path: the renderer decodes
//! an event and encodes a rendered delivery, the dispatcher decodes it, `POST /events`
//! validates and encodes one.
//! `cargo bench -p wire`; figures in docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wire::{EventReader, Header, Read, Registry, RenderedDelivery, schema_registry_frame};

fn bench(c: &mut Criterion) {
    let registry = Registry::bundled().expect("bundled schemas");
    // The load generator's event (ops/bench/hlbench/event.go).
    let sample = json!({"id": "bench-1", "type": "transfer.error", "api_version": "2023-10-15",
        "data": {"error": {"destination_id": "00000000-0000-0000-0000-000000000000",
            "destination_name": "Foo Bar", "id_in_provider_system": "acme", "models": ["users"],
            "is_full_refresh": true, "transfer_id": "bench-1", "transfer_status": "PARTIAL_ERROR",
            "transfer_error_type": "first_party",
            "transfer_log": "Exception in thread \"main\" org.apache.spark.SparkException: Job aborted due to stage failure",
            "transfer_log_pretty": "", "transfer_started_at": "2023-10-15T16:19:08+00:00",
            "transfer_ended_at": "2023-10-15T18:19:08+00:00", "in_app_url": ""}}});
    let (_, event_bytes) = registry.event_from_json(&sample).expect("a valid event");
    let delivery = RenderedDelivery {
        delivery_id: "0190f1a2-7c3e-7d4b-9a8e-3f2b1c0d9e8f".into(),
        event_id: "bench-1".into(),
        event_type: "transfer.error".into(),
        endpoint_id: "0190f1a2-7c3e-7d4b-9a8e-000000000001".into(),
        rendered_at: "2026-12-01T20:00:00Z".into(),
        method: "POST".into(),
        url: "http://127.0.0.1:9000/ok/endpoint-1".into(),
        headers: vec![Header::new("Content-Type", "application/json")],
        signing_scheme: "standard_webhooks".into(),
        signing_secrets: vec![format!("hl1:{}", "A".repeat(80))],
        body: serde_json::to_vec(&sample).expect("json"),
        ..RenderedDelivery::default()
    };
    let delivery_bytes = registry.encode(&delivery).expect("encodes");

    c.bench_function("decode a transfer.error event", |b| {
        b.iter(|| {
            registry
                .decode_event(black_box(&event_bytes))
                .expect("decodes")
        })
    });
    // The same event framed for a Schema Registry: under the id of hookline's own
    // schema, and under the id of an engine's copy with one more field (resolved).
    let reader = EventReader::new(&registry, None).expect("a reader");
    let own = include_str!("../../../schemas/event.v1.avsc");
    let mut evolved: serde_json::Value = serde_json::from_str(own).expect("json");
    evolved["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "engine_region", "type": "string", "default": ""}));
    reader.learn(&registry, 1, own);
    reader.learn(&registry, 2, &evolved.to_string());
    let datum = &event_bytes[10..];
    let framed_own = schema_registry_frame(1, datum);
    let mut evolved_datum = datum.to_vec();
    evolved_datum.extend_from_slice(&[4, b'e', b'u']);
    let framed_evolved = schema_registry_frame(2, &evolved_datum);
    for (name, bytes) in [
        ("read a transfer.error event: single object", &event_bytes),
        (
            "read a transfer.error event: registry id of hookline's schema",
            &framed_own,
        ),
        (
            "read a transfer.error event: registry id of an evolved schema",
            &framed_evolved,
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| match reader.read_cached(&registry, black_box(bytes)) {
                Read::Done(Ok(event)) => event,
                other => panic!("not read: {other:?}"),
            })
        });
    }
    c.bench_function("peek a transfer.error event's type", |b| {
        b.iter(|| {
            reader
                .peek_type(&registry, black_box(&event_bytes))
                .expect("peeked")
        })
    });
    c.bench_function("encode a rendered delivery", |b| {
        b.iter(|| registry.encode(black_box(&delivery)).expect("encodes"))
    });
    c.bench_function("decode a rendered delivery", |b| {
        b.iter(|| {
            registry
                .decode::<RenderedDelivery>(black_box(&delivery_bytes))
                .expect("decodes")
        })
    });
    c.bench_function("validate a JSON event and encode it (POST /events)", |b| {
        b.iter(|| registry.event_from_json(black_box(&sample)).expect("valid"))
    });
    // What `POST /events` keeps of it: the encoding, id, type and key, no data JSON.
    c.bench_function("validate a JSON event and encode it, API's part", |b| {
        b.iter(|| {
            registry
                .encode_event_json_sealing(black_box(&sample), |_, _, _| None)
                .expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
