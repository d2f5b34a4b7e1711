//! What `POST /events` spends turning a JSON event with a sensitive field (the demo
//! `transfer.error`, whose `transfer_log` is sealed) into its record: validated and
//! encoded, sealed, validated and encoded again (before), or sealed while it is
//! encoded, once (now). `cargo bench -p service-kit`; figures in docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use service_kit::{seal_event, seal_field};

fn bench(c: &mut Criterion) {
    let registry = wire::Registry::bundled().expect("bundled schemas");
    let sealer =
        signing::Sealer::from_base64("ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=").expect("key");
    let demo = include_str!("../../../ops/demo/transfer-error.json");
    let sample: serde_json::Value = serde_json::from_str(demo).expect("JSON");
    c.bench_function("transfer.error: encode, seal, encode again (before)", |b| {
        b.iter(|| {
            let (mut event, _) = registry.event_from_json(black_box(&sample)).expect("valid");
            seal_event(&sealer, &registry, &mut event);
            registry.encode_event(&event).expect("encodes")
        })
    });
    c.bench_function("transfer.error: sealed while encoded, once (now)", |b| {
        b.iter(|| {
            registry
                .event_from_json_sealing(black_box(&sample), |id, path, value| {
                    seal_field(&sealer, id, path, value)
                })
                .expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
