//! KMS v2 seal and open: the per-value hot path (one random draw, one HKDF
//! expand, one AES key schedule, one AEAD pass, one encode) at 1, 4 and 64
//! KiB; warm opens (seed cached); and a cold open through an in-process
//! plugin (one Decrypt over the unix socket per value).
//!
//! `cargo bench -p secret-store --bench kmsv2_seal`
//!
//! On a shared machine wall-clock figures include time spent waiting for a
//! CPU. With `KMSV2_BENCH_CPU=1` the bench first prints the on-CPU time per
//! operation (from `/proc/thread-self/schedstat`), which other load does not
//! inflate.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "../tests/kms_test_plugin/mod.rs"]
mod kms_test_plugin;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use secret_store::transform::Transformer;
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use secret_store::wipe::Wiped;

const KEY: &str = "/registry/secrets/default/bench-secret";
const SIZES: [usize; 3] = [1024, 4 * 1024, 64 * 1024];

fn transformer() -> KmsV2Transformer {
    let mut seed = Wiped::new(vec![0u8; 32]);
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

/// Nanoseconds this thread has spent on a CPU (Linux schedstat).
fn on_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// On-CPU time per operation: the best of several rounds of `n` calls.
fn per_op_cpu(n: u32, mut f: impl FnMut()) -> Option<f64> {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = on_cpu_ns()?;
        for _ in 0..n {
            f();
        }
        best = best.min((on_cpu_ns()? - start) as f64 / f64::from(n));
    }
    Some(best)
}

fn cpu_report() {
    let t = transformer();
    println!("on-CPU time per operation (best of 7 rounds):");
    for size in SIZES {
        let pt = vec![0x42u8; size];
        let n = if size > 8192 { 5_000 } else { 100_000 };
        let stored = t.seal(&pt, KEY).unwrap();
        let report = |what: &str, ns: Option<f64>| match ns {
            Some(ns) => println!(
                "  {what:<10} {size:>6} B: {:>9.1} ns  {:>6.2} GB/s",
                ns,
                size as f64 / ns
            ),
            None => println!("  {what}: /proc/thread-self/schedstat is not readable"),
        };
        report(
            "seal",
            per_op_cpu(n, || drop(black_box(t.seal(black_box(&pt), KEY).unwrap()))),
        );
        report(
            "open warm",
            per_op_cpu(n, || {
                drop(black_box(t.open(black_box(&stored), KEY).unwrap()))
            }),
        );
    }
}

criterion_group!(benches, seal, open_warm, open_cold);

fn main() {
    if std::env::var_os("KMSV2_BENCH_CPU").is_some() {
        cpu_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
