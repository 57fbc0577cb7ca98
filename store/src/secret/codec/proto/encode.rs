//! Writing a Secret as the apiserver's gogo-generated marshallers do
//! (`../shared/vectors/PROTOBUF.md`): fields in ascending number order;
//! every proto2 string and `generation` even when empty or zero;
//! `creationTimestamp` always (an empty message for an unset time), the
//! other times and pointers only when set; times as `{seconds, nanos = 0}`;
//! map entries sorted by key with both key and value; lists in order; then
//! `contentEncoding` and `contentType`, empty. The result is byte for byte
//! the upstream storage codec's output for the same object.

use super::PROTOBUF_MAGIC;
use crate::k8s::time as timefmt;
use crate::protowire::{Counter, Sink, bytes_field, message_field, varint_field};
use crate::secret::model::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Secret};
use crate::wipe::Wiped;

/// Seconds since the epoch of a stored timestamp; `None` for an unset (or
/// Go zero) time, which is written as an empty message.
fn seconds(ts: Option<&str>) -> Option<i64> {
    let (s, _) = timefmt::parse_rfc3339(ts?)?;
    (s != timefmt::GO_ZERO_SECONDS).then_some(s)
}

/// `metav1.Time` as `Timestamp.Marshal` writes it: both fields, nanos 0.
fn time(out: &mut dyn Sink, seconds: Option<i64>) {
    if let Some(s) = seconds {
        varint_field(out, 1, s as u64);
        varint_field(out, 2, 0);
    }
}

fn string_entry(out: &mut dyn Sink, number: u32, key: &str, value: &[u8]) {
    message_field(out, number, &|o| {
        bytes_field(o, 1, key.as_bytes());
        bytes_field(o, 2, value);
    });
}

fn owner_reference(out: &mut dyn Sink, r: &OwnerReference) {
    bytes_field(out, 1, r.kind.as_bytes());
    bytes_field(out, 3, r.name.as_bytes());
    bytes_field(out, 4, r.uid.as_bytes());
    bytes_field(out, 5, r.api_version.as_bytes());
    if let Some(c) = r.controller {
        varint_field(out, 6, u64::from(c));
    }
    if let Some(b) = r.block_owner_deletion {
        varint_field(out, 7, u64::from(b));
    }
}

fn managed_fields_entry(out: &mut dyn Sink, e: &ManagedFieldsEntry) {
    bytes_field(out, 1, e.manager.as_bytes());
    bytes_field(out, 2, e.operation.as_bytes());
    bytes_field(out, 3, e.api_version.as_bytes());
    if e.time.is_some() {
        let s = seconds(e.time.as_deref());
        message_field(out, 4, &|o| time(o, s));
    }
    bytes_field(out, 6, e.fields_type.as_bytes());
    if let Some(raw) = &e.fields_v1 {
        message_field(out, 7, &|o| {
            if !raw.is_empty() {
                bytes_field(o, 1, raw.as_bytes());
            }
        });
    }
    bytes_field(out, 8, e.subresource.as_bytes());
}

fn object_meta(out: &mut dyn Sink, m: &ObjectMeta) {
    bytes_field(out, 1, m.name.as_bytes());
    bytes_field(out, 2, m.generate_name.as_bytes());
    bytes_field(out, 3, m.namespace.as_bytes());
    // selfLink and resourceVersion: cleared before storing.
    bytes_field(out, 4, b"");
    bytes_field(out, 5, m.uid.as_deref().unwrap_or("").as_bytes());
    bytes_field(out, 6, b"");
    varint_field(out, 7, m.generation as u64);
    let created = seconds(m.creation_timestamp.as_deref());
    message_field(out, 8, &|o| time(o, created));
    if m.deletion_timestamp.is_some() {
        let deleted = seconds(m.deletion_timestamp.as_deref());
        message_field(out, 9, &|o| time(o, deleted));
    }
    if let Some(g) = m.deletion_grace_period_seconds {
        varint_field(out, 10, g as u64);
    }
    for (k, v) in &m.labels {
        string_entry(out, 11, k, v.as_bytes());
    }
    for (k, v) in &m.annotations {
        string_entry(out, 12, k, v.as_bytes());
    }
    for r in m.owner_references() {
        message_field(out, 13, &|o| owner_reference(o, r));
    }
    for f in m.finalizers() {
        bytes_field(out, 14, f.as_bytes());
    }
    for e in m.managed_fields() {
        message_field(out, 17, &|o| managed_fields_entry(o, e));
    }
}

fn secret(out: &mut dyn Sink, s: &Secret) {
    message_field(out, 1, &|o| object_meta(o, &s.metadata));
    for (k, v) in &s.data {
        string_entry(out, 2, k, v.expose());
    }
    bytes_field(out, 3, s.type_.as_bytes());
    if let Some(i) = s.immutable {
        varint_field(out, 5, u64::from(i));
    }
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw = Secret, "", ""}`.
fn value(out: &mut dyn Sink, s: &Secret) {
    out.put(PROTOBUF_MAGIC);
    message_field(out, 1, &|o| {
        bytes_field(o, 1, b"v1");
        bytes_field(o, 2, b"Secret");
    });
    message_field(out, 2, &|o| secret(o, s));
    bytes_field(out, 3, b"");
    bytes_field(out, 4, b"");
}

/// Writes `secret` as the apiserver's protobuf serializer does, into a
/// buffer of exactly its size (so it never moves while being filled) that
/// is wiped when dropped.
pub(crate) fn encode(s: &Secret) -> Wiped<Vec<u8>> {
    let mut len = Counter::default();
    value(&mut len, s);
    let mut out = Wiped::new(Vec::with_capacity(len.0));
    value(&mut *out, s);
    debug_assert_eq!(out.len(), len.0, "measured exactly");
    out
}
