//! RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second on one core, the costliest step
//! of a signed delivery. `ops/bench/rsa` runs this and `openssl speed rsa2048` in the
//! same run and prints the ratio (docs/BENCHMARKS.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use signing::RsaKey;

fn bench(c: &mut Criterion) {
    let key = RsaKey::generate(2048, "bench").expect("key");
    let message = [b"2024-01-15T10:30:00Z.".as_slice(), &[b'x'; 1024]].concat();
    c.bench_function("rsa2048 sign (aws-lc-rs)", |b| {
        b.iter(|| key.sign(black_box(&message)).expect("sign"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
