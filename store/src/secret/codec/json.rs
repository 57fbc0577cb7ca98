//! The JSON kube-apiserver stores for a Secret with
//! `--storage-media-type=application/json`: Go's `encoding/json` output of a
//! v1 Secret, compact, with a trailing newline.
//!
//! Field order follows the Go structs: `kind`, `apiVersion`,
//! `metadata{name, namespace, uid, creationTimestamp, labels, annotations}`,
//! `immutable`, `data`, `type`. Map keys are sorted (bytewise, as Go sorts
//! them); empty fields are omitted, except `creationTimestamp`, which Go
//! writes as `null` when unset. `resourceVersion` is not stored (the
//! apiserver clears it before writing). Strings are escaped as Go escapes
//! them: `\"`, `\\`, `\b \f \n \r \t`, other control characters and `<`,
//! `>`, `&` as `\u00XX`, U+2028 and U+2029 as `\u2028` / `\u2029`.

use std::collections::BTreeMap;

use super::error::DecodeError;
use crate::k8s::base64 as gobase64;
use crate::k8s::time as timefmt;
use crate::secret::model::{ObjectMeta, SECRET_TYPE_OPAQUE, Secret, SecretValue};
use crate::secret::node::Node;
use crate::wipe::Wiped;

/// Appends `s` as a Go JSON string (quotes included).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_string_map(out: &mut String, field: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    out.push_str(&format!(",\"{field}\":{{"));
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, k);
        out.push(':');
        push_json_string(out, v);
    }
    out.push('}');
}

/// `metadata` as the apiserver stores it (without `resourceVersion`).
fn metadata_json(meta: &ObjectMeta) -> String {
    let mut out = String::from("{");
    let mut first = true;
    let mut field = |out: &mut String, name: &str, value: &str| {
        if value.is_empty() {
            return;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&format!("\"{name}\":"));
        push_json_string(out, value);
    };
    field(&mut out, "name", &meta.name);
    field(&mut out, "namespace", &meta.namespace);
    field(&mut out, "uid", meta.uid.as_deref().unwrap_or(""));
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str("\"creationTimestamp\":");
    match meta.creation_timestamp.as_deref() {
        None => out.push_str("null"),
        Some(ts) => {
            let canonical = timefmt::canonical_rfc3339(ts);
            push_json_string(&mut out, canonical.as_deref().unwrap_or(ts));
        }
    }
    push_string_map(&mut out, "labels", &meta.labels);
    push_string_map(&mut out, "annotations", &meta.annotations);
    out.push('}');
    out
}

/// Writes `secret` as the apiserver's JSON serializer does, into a buffer
/// that is wiped when dropped and never reallocated while being filled.
pub(crate) fn encode(secret: &Secret) -> Wiped<Vec<u8>> {
    let mut head = String::from("{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":");
    head.push_str(&metadata_json(&secret.metadata));
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

fn string_field<'a>(node: &'a Node, key: &str, path: &str) -> Result<Option<&'a str>, DecodeError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

fn entries<'a>(node: Option<&'a Node>, path: &str) -> Result<&'a [(String, Node)], DecodeError> {
    match node {
        None | Some(Node::Null) => Ok(&[]),
        Some(Node::Map(entries)) => Ok(entries),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected an object, found {}", other.kind()),
        )),
    }
}

fn string_map(node: Option<&Node>, path: &str) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(node, path)? {
        let value = match v {
            Node::Null => String::new(),
            Node::String(s) => s.to_string(),
            other => {
                return Err(DecodeError::field(
                    format!("{path}[{k}]"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// Reads a Secret from stored JSON. Fields the store does not keep are
/// ignored; `stringData` (never written by the apiserver) is merged into
/// `data` as the apiserver's conversion would; an absent `type` reads as
/// `Opaque` (v1 defaulting).
pub(crate) fn decode(bytes: &[u8]) -> Result<Secret, DecodeError> {
    let node: Node = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !matches!(node, Node::Map(_)) {
        return Err(DecodeError::Json(format!(
            "expected an object, found {}",
            node.kind()
        )));
    }
    let kind = string_field(&node, "kind", "kind")?.unwrap_or("");
    let api_version = string_field(&node, "apiVersion", "apiVersion")?.unwrap_or("");
    if kind != "Secret" || api_version != "v1" {
        return Err(DecodeError::WrongKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let empty = Node::Map(Vec::new());
    let meta_node = match node.get("metadata") {
        None | Some(Node::Null) => &empty,
        Some(m @ Node::Map(_)) => m,
        Some(other) => {
            return Err(DecodeError::field(
                "metadata",
                format!("expected an object, found {}", other.kind()),
            ));
        }
    };
    let owned = |key: &str, path: &str| -> Result<Option<String>, DecodeError> {
        Ok(string_field(meta_node, key, path)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    let creation_timestamp = match owned("creationTimestamp", "metadata.creationTimestamp")? {
        None => None,
        Some(ts) => Some(timefmt::canonical_rfc3339(&ts).ok_or_else(|| {
            DecodeError::field("metadata.creationTimestamp", "not an RFC 3339 time")
        })?),
    };
    let metadata = ObjectMeta {
        name: owned("name", "metadata.name")?.unwrap_or_default(),
        namespace: owned("namespace", "metadata.namespace")?.unwrap_or_default(),
        labels: string_map(meta_node.get("labels"), "metadata.labels")?,
        annotations: string_map(meta_node.get("annotations"), "metadata.annotations")?,
        uid: owned("uid", "metadata.uid")?,
        resource_version: owned("resourceVersion", "metadata.resourceVersion")?,
        creation_timestamp,
    };
    let immutable = match node.get("immutable") {
        None | Some(Node::Null) => None,
        Some(Node::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(DecodeError::field(
                "immutable",
                format!("expected a boolean, found {}", other.kind()),
            ));
        }
    };
    let mut data = BTreeMap::new();
    for (key, value) in entries(node.get("data"), "data")? {
        let bytes = match value {
            Node::Null => Wiped::new(Vec::new()),
            Node::String(text) => gobase64::decode(text.as_bytes())
                .map_err(|e| DecodeError::field(format!("data[{key}]"), e.to_string()))?,
            other => {
                return Err(DecodeError::field(
                    format!("data[{key}]"),
                    format!("expected a base64 string, found {}", other.kind()),
                ));
            }
        };
        data.insert(key.clone(), SecretValue::from(bytes));
    }
    for (key, value) in entries(node.get("stringData"), "stringData")? {
        let bytes = match value {
            Node::Null => Vec::new(),
            Node::String(text) => text.as_bytes().to_vec(),
            other => {
                return Err(DecodeError::field(
                    format!("stringData[{key}]"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        data.insert(key.clone(), SecretValue::new(bytes));
    }
    let type_ = match string_field(&node, "type", "type")? {
        None | Some("") => SECRET_TYPE_OPAQUE.to_owned(),
        Some(t) => t.to_owned(),
    };
    Ok(Secret {
        metadata,
        type_,
        data,
        immutable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &Secret) -> String {
        String::from_utf8(encode(s).to_vec()).unwrap()
    }

    #[test]
    fn writes_the_go_field_order_and_omissions() {
        let mut s = Secret::new("default", "x");
        assert_eq!(
            text(&s),
            "{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\",\"creationTimestamp\":null},\"type\":\"Opaque\"}\n"
        );
        s.metadata.uid = Some("u".into());
        s.metadata.resource_version = Some("9".into());
        s.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        s.metadata.labels.insert("b".into(), "2".into());
        s.metadata.labels.insert("a".into(), "1".into());
        s.metadata.annotations.insert("n".into(), "<&>".into());
        s.immutable = Some(false);
        s.data.insert("k2".into(), SecretValue::from("v"));
        s.data.insert("k1".into(), SecretValue::from(""));
        s.type_ = "kubernetes.io/tls".into();
        assert_eq!(
            text(&s),
            "{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\",\"uid\":\"u\",\"creationTimestamp\":\"2024-05-01T10:00:00Z\",\"labels\":{\"a\":\"1\",\"b\":\"2\"},\"annotations\":{\"n\":\"\\u003c\\u0026\\u003e\"}},\"immutable\":false,\"data\":{\"k1\":\"\",\"k2\":\"dg==\"},\"type\":\"kubernetes.io/tls\"}\n"
        );
    }

    #[test]
    fn escapes_strings_like_go() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}<>&\u{2028}\u{2029}é\u{7f}",
        );
        assert_eq!(
            out,
            "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\\u003c\\u003e\\u0026\\u2028\\u2029é\u{7f}\""
        );
    }

    #[test]
    fn reads_back_what_it_writes_and_tolerates_extra_fields() {
        let mut s = Secret::new("ns", "x");
        s.data.insert("a".into(), SecretValue::from("1"));
        s.metadata
            .annotations
            .insert("k".into(), "line\nbreak".into());
        let back = decode(&encode(&s)).unwrap();
        assert_eq!(back, s);
        let extra = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x","namespace":"ns","managedFields":[{"manager":"kubectl"}],"generation":1},"stringData":{"s":"t"}}"#;
        let back = decode(extra).unwrap();
        assert_eq!(back.type_, "Opaque");
        assert_eq!(back.data["s"].expose(), b"t");
    }

    #[test]
    fn refuses_other_kinds_and_bad_fields() {
        assert!(matches!(
            decode(br#"{"kind":"ConfigMap","apiVersion":"v1"}"#),
            Err(DecodeError::WrongKind { .. })
        ));
        let e = decode(br#"{"kind":"Secret","apiVersion":"v1","data":{"p":"c2Vj!"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data[p]: illegal base64 data at input byte 4"
        );
        assert!(matches!(decode(b"[1]"), Err(DecodeError::Json(_))));
    }
}
