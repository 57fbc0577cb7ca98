//! KMS v2 seal and open: the per-value hot path (one random draw, one HKDF
//! expand, one AES key schedule, one AEAD pass, one encode) at 1, 4 and 64
//! KiB; warm opens (seed cached); and a cold open through an in-process
//! plugin (one Decrypt over the unix socket per value).
//!
//! `cargo bench -p secret-store --bench kmsv2_seal`

#[path = "../tests/kms_test_plugin/mod.rs"]
mod kms_test_plugin;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use secret_store::transform::Transformer;
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use zeroize::Zeroizing;

const KEY: &str = "/registry/secrets/default/bench-secret";
const SIZES: [usize; 3] = [1024, 4 * 1024, 64 * 1024];

fn transformer() -> KmsV2Transformer {
    let mut seed = Zeroizing::new(vec![0u8; 32]);
    secret_store::rand::fill(&mut seed);
    KmsV2Transformer::from_seed_for_bench("bench", "bench-kek-1", &[0x5a; 60], seed).unwrap()
}

fn seal(c: &mut Criterion) {
    let t = transformer();
    let mut g = c.benchmark_group("kmsv2_seal");
    for size in SIZES {
        let pt = vec![0x42u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &pt, |b, pt| {
            b.iter(|| t.seal(black_box(pt), KEY).unwrap())
        });
    }
    g.finish();
}

fn open_warm(c: &mut Criterion) {
    let t = transformer();
    let mut g = c.benchmark_group("kmsv2_open_warm");
    for size in SIZES {
        let stored = t.seal(&vec![0x42u8; size], KEY).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &stored, |b, s| {
            b.iter(|| t.open(black_box(s), KEY).unwrap())
        });
    }
    g.finish();
}

fn open_cold(c: &mut Criterion) {
    let plugin = kms_test_plugin::TestPlugin::start(kms_test_plugin::Behaviour::new(
        "bench-kek-1",
        [0x11; 32],
    ));
    let t = KmsV2Transformer::new(
        &plugin.config("bench-cold", Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    let stored = t.seal(&[0x42u8; 1024], KEY).unwrap();
    let mut g = c.benchmark_group("kmsv2_open_cold");
    g.bench_function("1024", |b| {
        b.iter(|| {
            t.clear_cache();
            t.open(black_box(&stored), KEY).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, seal, open_warm, open_cold);
criterion_main!(benches);
