//! Writing a Secret as Go's `encoding/json` writes a v1 Secret: fields in
//! struct order (`kind, apiVersion, metadata{name, generateName,
//! namespace, uid, generation, creationTimestamp, deletionTimestamp,
//! deletionGracePeriodSeconds, labels, annotations, ownerReferences,
//! finalizers, managedFields[{manager, operation, apiVersion, time,
//! fieldsType, fieldsV1, subresource}]}, immutable, data, type`), empty
//! fields omitted except `creationTimestamp` (`null` when unset) and the
//! strings of an owner reference, `fieldsV1` embedded as compacted JSON.

use super::push_json_string;
use crate::k8s::base64 as gobase64;
use crate::k8s::raw_json;
use crate::k8s::time as timefmt;
use crate::secret::model::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Secret, SecretValue};
use crate::wipe::Wiped;

/// An object being written: commas between its fields.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        // Escaped as Go escapes a map key: label and annotation keys are
        // not validated before a Secret is encoded (a `"` in one broke the
        // object; the manifest fuzz target found it).
        push_json_string(self.out, name);
        self.out.push(':');
        self.out
    }

    fn string(&mut self, name: &str, value: &str) {
        push_json_string(self.key(name), value);
    }

    /// A string field with `omitempty`.
    fn opt_string(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.string(name, value);
        }
    }

    fn raw(&mut self, name: &str, value: &str) {
        self.key(name).push_str(value);
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// A `metav1.Time`: RFC 3339, or `null` for an unset (zero) time.
fn time(out: &mut String, ts: Option<&str>) {
    match ts.map(timefmt::metav1_time) {
        Some(Ok(Some(t))) => push_json_string(out, &t),
        _ => out.push_str("null"),
    }
}

fn string_map<'m>(
    o: &mut Object<'_>,
    name: &str,
    map: impl ExactSizeIterator<Item = (&'m String, &'m String)>,
) {
    if map.len() == 0 {
        return;
    }
    let mut m = Object::open(o.key(name));
    for (k, v) in map {
        m.string(k, v);
    }
    m.close();
}

fn list<T>(o: &mut Object<'_>, name: &str, items: &[T], item: impl Fn(&mut String, &T)) {
    if items.is_empty() {
        return;
    }
    let out = o.key(name);
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, x);
    }
    out.push(']');
}

fn owner_reference(out: &mut String, r: &OwnerReference) {
    let mut o = Object::open(out);
    o.string("apiVersion", &r.api_version);
    o.string("kind", &r.kind);
    o.string("name", &r.name);
    o.string("uid", &r.uid);
    if let Some(c) = r.controller {
        o.raw("controller", if c { "true" } else { "false" });
    }
    if let Some(b) = r.block_owner_deletion {
        o.raw("blockOwnerDeletion", if b { "true" } else { "false" });
    }
    o.close();
}

fn managed_fields_entry(out: &mut String, e: &ManagedFieldsEntry) {
    let mut o = Object::open(out);
    o.opt_string("manager", &e.manager);
    o.opt_string("operation", &e.operation);
    o.opt_string("apiVersion", &e.api_version);
    if e.time.is_some() {
        time(o.key("time"), e.time.as_deref());
    }
    o.opt_string("fieldsType", &e.fields_type);
    if let Some(raw) = &e.fields_v1 {
        o.raw("fieldsV1", &raw_json::compact_for_go(raw));
    }
    o.opt_string("subresource", &e.subresource);
    o.close();
}

/// `metadata` as the apiserver stores it (without `resourceVersion`).
fn metadata(out: &mut String, m: &ObjectMeta) {
    let mut o = Object::open(out);
    o.opt_string("name", &m.name);
    o.opt_string("generateName", &m.generate_name);
    o.opt_string("namespace", &m.namespace);
    o.opt_string("uid", m.uid.as_deref().unwrap_or(""));
    if m.generation != 0 {
        o.raw("generation", &m.generation.to_string());
    }
    time(o.key("creationTimestamp"), m.creation_timestamp.as_deref());
    if m.deletion_timestamp.is_some() {
        time(o.key("deletionTimestamp"), m.deletion_timestamp.as_deref());
    }
    if let Some(g) = m.deletion_grace_period_seconds {
        o.raw("deletionGracePeriodSeconds", &g.to_string());
    }
    string_map(&mut o, "labels", m.labels.iter());
    string_map(&mut o, "annotations", m.annotations.iter());
    list(
        &mut o,
        "ownerReferences",
        m.owner_references(),
        owner_reference,
    );
    list(&mut o, "finalizers", m.finalizers(), |out, f| {
        push_json_string(out, f)
    });
    list(
        &mut o,
        "managedFields",
        m.managed_fields(),
        managed_fields_entry,
    );
    o.close();
}

/// Writes `secret` as the apiserver's JSON serializer does, into a buffer
/// that is wiped when dropped and never reallocated while being filled.
pub(crate) fn encode(secret: &Secret) -> Wiped<Vec<u8>> {
    let mut head = String::from("{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":");
    metadata(&mut head, &secret.metadata);
    if let Some(immutable) = secret.immutable {
        head.push_str(&format!(",\"immutable\":{immutable}"));
    }
    let keys: Vec<String> = secret
        .data
        .keys()
        .map(|k| {
            let mut s = String::new();
            push_json_string(&mut s, k);
            s
        })
        .collect();
    let mut tail = String::new();
    if !secret.type_.is_empty() {
        tail.push_str(",\"type\":");
        push_json_string(&mut tail, &secret.type_);
    }
    tail.push_str("}\n");

    let data_len: usize = if secret.data.is_empty() {
        0
    } else {
        ",\"data\":{}".len()
            + secret
                .data
                .values()
                .zip(&keys)
                .map(|(v, k)| k.len() + 3 + gobase64::encoded_len(v.len()))
                .sum::<usize>()
            + keys.len().saturating_sub(1)
    };
    let total = head.len() + data_len + tail.len();
    let mut out = Wiped::new(Vec::with_capacity(total));
    out.extend_from_slice(head.as_bytes());
    if !secret.data.is_empty() {
        out.extend_from_slice(b",\"data\":{");
        for (i, (value, key)) in secret.data.values().zip(&keys).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b":\"");
            push_base64(&mut out, value);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.extend_from_slice(tail.as_bytes());
    debug_assert_eq!(
        out.len(),
        total,
        "the buffer was sized exactly, so it never moved"
    );
    out
}

/// Appends the base64 of `value` in place (no intermediate copy).
fn push_base64(out: &mut Wiped<Vec<u8>>, value: &SecretValue) {
    use base64::Engine as _;
    let start = out.len();
    out.resize(start + gobase64::encoded_len(value.len()), 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(value.expose(), &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}
