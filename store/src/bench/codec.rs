//! The storage codecs alone, both media types: how long it takes to turn
//! the bench's Secret (as it is stored: uid, creationTimestamp, one
//! managedFields entry as kubectl records it, the payload) into the bytes
//! inside the encryption and back. One thread, no I/O, no crypto.

use std::time::Instant;

use super::PhaseFigures;
use crate::secret::{ManagedFieldsEntry, Secret, StorageFormat};

fn stored_secret(size: usize) -> Secret {
    let mut s = super::secret(0, size);
    s.metadata.uid = Some("2d5bb860-bd0b-4ca3-9fc9-e440a9c494bf".into());
    s.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
    s.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: "kubectl-create".into(),
        operation: "Update".into(),
        api_version: "v1".into(),
        time: Some("2024-05-01T10:00:00Z".into()),
        fields_type: "FieldsV1".into(),
        fields_v1: Some(r#"{"f:data":{".":{},"f:payload":{}},"f:type":{}}"#.into()),
        subresource: String::new(),
    }]);
    s
}

fn figures(
    format: StorageFormat,
    phase: &'static str,
    mut lat: Vec<u64>,
    size: usize,
) -> PhaseFigures {
    lat.sort_unstable();
    let seconds = lat.iter().sum::<u64>() as f64 / 1e9;
    let ops = lat.len();
    let pct = |p: f64| super::percentile(&lat, p);
    PhaseFigures {
        engine: "codec",
        provider: format.short_name().to_owned(),
        phase,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds.max(f64::MIN_POSITIVE),
        mb_per_sec: (ops * size) as f64 / seconds.max(f64::MIN_POSITIVE) / 1e6,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        plugin_calls: 0,
        crypto_share: 0.0,
        storage_share: 0.0,
    }
}

/// Encode and decode figures for both formats, `ops` of each.
pub(super) fn bench_codecs(size: usize, ops: usize) -> anyhow::Result<Vec<PhaseFigures>> {
    let s = stored_secret(size);
    let mut out = Vec::new();
    for format in [StorageFormat::Protobuf, StorageFormat::Json] {
        let bytes = s.to_storage_bytes(format);
        let (mut enc, mut dec) = (Vec::with_capacity(ops), Vec::with_capacity(ops));
        for _ in 0..ops {
            let t = Instant::now();
            let b = s.to_storage_bytes(format);
            enc.push(t.elapsed().as_nanos() as u64);
            drop(b);
            let t = Instant::now();
            let back = Secret::from_storage_bytes(&bytes)?;
            dec.push(t.elapsed().as_nanos() as u64);
            anyhow::ensure!(back.data.len() == 1, "the bench Secret did not decode");
        }
        out.push(figures(format, "encode", enc, size));
        out.push(figures(format, "decode", dec, size));
    }
    Ok(out)
}
