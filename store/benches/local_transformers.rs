//! Seal/open throughput of the local (non-KMS) transformers at 1 KiB and
//! 64 KiB: aesgcm (ring for AES-128/256, RustCrypto for AES-192), aescbc and
//! secretbox.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use secret_store::transform::Transformer;
use secret_store::transform::aescbc::AesCbcTransformer;
use secret_store::transform::aesgcm::AesGcmTransformer;
use secret_store::transform::secretbox::SecretboxTransformer;

const ETCD_KEY: &str = "/registry/secrets/default/bench";

fn bench(c: &mut Criterion) {
    let transformers: Vec<(&str, Box<dyn Transformer>)> = vec![
        (
            "aesgcm-128",
            Box::new(AesGcmTransformer::new("k", &[1u8; 16]).unwrap()),
        ),
        (
            "aesgcm-192",
            Box::new(AesGcmTransformer::new("k", &[1u8; 24]).unwrap()),
        ),
        (
            "aesgcm-256",
            Box::new(AesGcmTransformer::new("k", &[1u8; 32]).unwrap()),
        ),
        (
            "aescbc-256",
            Box::new(AesCbcTransformer::new("k", &[1u8; 32]).unwrap()),
        ),
        (
            "secretbox",
            Box::new(SecretboxTransformer::new("k", &[1u8; 32]).unwrap()),
        ),
    ];
    for size in [1024usize, 64 * 1024] {
        let plaintext = vec![0x5au8; size];
        let mut seal = c.benchmark_group(format!("seal/{size}"));
        seal.throughput(Throughput::Bytes(size as u64));
        for (name, t) in &transformers {
            seal.bench_with_input(BenchmarkId::from_parameter(name), &plaintext, |b, p| {
                b.iter(|| t.seal(black_box(p), ETCD_KEY).unwrap())
            });
        }
        seal.finish();
        let mut open = c.benchmark_group(format!("open/{size}"));
        open.throughput(Throughput::Bytes(size as u64));
        for (name, t) in &transformers {
            let stored = t.seal(&plaintext, ETCD_KEY).unwrap();
            open.bench_with_input(BenchmarkId::from_parameter(name), &stored, |b, s| {
                b.iter(|| t.open(black_box(s), ETCD_KEY).unwrap())
            });
        }
        open.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
