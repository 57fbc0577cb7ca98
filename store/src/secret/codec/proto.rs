//! The protobuf kube-apiserver stores by default: the magic `k8s\0`, then a
//! `runtime.Unknown` (`typeMeta` = 1 {`apiVersion` = 1, `kind` = 2},
//! `raw` = 2, `contentEncoding` = 3, `contentType` = 4) whose `raw` is a
//! `k8s.io.api.core.v1.Secret` (`metadata` = 1, `data` = 2, `type` = 3,
//! `stringData` = 4, `immutable` = 5; `ObjectMeta`: `name` = 1,
//! `generateName` = 2, `namespace` = 3, `selfLink` = 4, `uid` = 5,
//! `resourceVersion` = 6, `generation` = 7, `creationTimestamp` = 8
//! {`seconds` = 1, `nanos` = 2}, `labels` = 11, `annotations` = 12).
//!
//! Written as the apiserver's gogo-generated marshallers write it: every
//! non-pointer field even when empty (strings, `generation`, the
//! timestamp message, which is empty for an unset time), maps sorted by key
//! with both key and value written, `immutable` only when set, fields in
//! tag order. Maps are declared as repeated entry messages, which is what
//! they are on the wire, so that empty values are written as gogo writes
//! them. Reading ignores every field not listed (owner references,
//! finalizers, managed fields, …).

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;

use super::error::DecodeError;
use crate::k8s::time as timefmt;
use crate::secret::model::{ObjectMeta, SECRET_TYPE_OPAQUE, Secret, SecretValue};
use crate::wipe::{Wipe, Wiped};

/// The four bytes before a kube-apiserver protobuf object.
pub(crate) const PROTOBUF_MAGIC: &[u8; 4] = b"k8s\x00";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// `runtime.Unknown`; its `raw` holds the encoded Secret and is wiped.
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

impl fmt::Debug for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unknown")
            .field("type_meta", &self.type_meta)
            .field("raw", &self.raw.as_ref().map(|r| r.len()))
            .finish_non_exhaustive()
    }
}

impl Drop for Unknown {
    fn drop(&mut self) {
        if let Some(raw) = &mut self.raw {
            raw.wipe();
        }
    }
}

/// `metav1.Timestamp`.
#[derive(Clone, PartialEq, Message)]
struct Time {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

/// An entry of a `map<string, string>`.
#[derive(Clone, PartialEq, Message)]
struct StringEntry {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// An entry of `map<string, bytes> data`; the value is wiped.
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct BytesEntry {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    value: Option<Vec<u8>>,
}

impl fmt::Debug for BytesEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesEntry")
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Drop for BytesEntry {
    fn drop(&mut self) {
        if let Some(v) = &mut self.value {
            v.wipe();
        }
    }
}

#[derive(Clone, PartialEq, Message)]
struct ProtoObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "4")]
    self_link: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(int64, optional, tag = "7")]
    generation: Option<i64>,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Time>,
    #[prost(message, repeated, tag = "11")]
    labels: Vec<StringEntry>,
    #[prost(message, repeated, tag = "12")]
    annotations: Vec<StringEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoSecret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ProtoObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    data: Vec<BytesEntry>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(message, repeated, tag = "4")]
    string_data: Vec<StringEntry>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

fn string_entries(map: &BTreeMap<String, String>) -> Vec<StringEntry> {
    map.iter()
        .map(|(k, v)| StringEntry {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

fn to_proto(secret: &Secret) -> ProtoSecret {
    let meta = &secret.metadata;
    let seconds = meta
        .creation_timestamp
        .as_deref()
        .and_then(timefmt::parse_rfc3339)
        .map(|(seconds, _)| seconds);
    ProtoSecret {
        metadata: Some(ProtoObjectMeta {
            name: Some(meta.name.clone()),
            generate_name: Some(String::new()),
            namespace: Some(meta.namespace.clone()),
            self_link: Some(String::new()),
            uid: Some(meta.uid.clone().unwrap_or_default()),
            // Not stored: the apiserver clears it before writing.
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(match seconds {
                Some(seconds) => Time {
                    seconds: Some(seconds),
                    nanos: Some(0),
                },
                None => Time::default(),
            }),
            labels: string_entries(&meta.labels),
            annotations: string_entries(&meta.annotations),
        }),
        data: secret
            .data
            .iter()
            .map(|(k, v)| BytesEntry {
                key: Some(k.clone()),
                value: Some(v.expose().to_vec()),
            })
            .collect(),
        type_: Some(secret.type_.clone()),
        string_data: Vec::new(),
        immutable: secret.immutable,
    }
}

/// Encodes `message` into a wiped buffer of exactly its size.
fn encode_exact(message: &impl Message) -> Wiped<Vec<u8>> {
    let mut out = Wiped::new(Vec::with_capacity(message.encoded_len()));
    message.encode_raw(&mut *out);
    out
}

/// Writes `secret` as the apiserver's protobuf serializer does.
pub(crate) fn encode(secret: &Secret) -> Wiped<Vec<u8>> {
    let mut raw = encode_exact(&to_proto(secret));
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".to_owned()),
            kind: Some("Secret".to_owned()),
        }),
        // Moved, not copied: `Unknown` wipes it on drop.
        raw: Some(std::mem::take(&mut *raw)),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = Wiped::new(Vec::with_capacity(
        PROTOBUF_MAGIC.len() + unknown.encoded_len(),
    ));
    out.extend_from_slice(PROTOBUF_MAGIC);
    unknown.encode_raw(&mut *out);
    out
}

fn string_map(entries: &[StringEntry]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|e| {
            (
                e.key.clone().unwrap_or_default(),
                e.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

/// Reads a Secret from the bytes after [`PROTOBUF_MAGIC`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Secret, DecodeError> {
    let unknown = Unknown::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let type_meta = unknown.type_meta.clone().unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if kind != "Secret" || api_version != "v1" {
        return Err(DecodeError::WrongKind { api_version, kind });
    }
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(DecodeError::Protobuf(
            "unsupported content encoding".to_owned(),
        ));
    }
    if unknown
        .content_type
        .as_deref()
        .is_some_and(|t| !t.is_empty() && t != "application/vnd.kubernetes.protobuf")
    {
        return Err(DecodeError::Protobuf("unsupported content type".to_owned()));
    }
    let raw = unknown.raw.as_deref().unwrap_or_default();
    let proto = ProtoSecret::decode(raw).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let meta = proto.metadata.clone().unwrap_or_default();
    let creation_timestamp = match meta.creation_timestamp {
        Some(Time {
            seconds: None,
            nanos: None,
        })
        | None => None,
        Some(t) => Some(timefmt::format_rfc3339(t.seconds.unwrap_or(0))),
    };
    let mut data = BTreeMap::new();
    for entry in &proto.data {
        let value = entry.value.as_deref().unwrap_or_default();
        data.insert(
            entry.key.clone().unwrap_or_default(),
            SecretValue::from_slice(value),
        );
    }
    for entry in &proto.string_data {
        let value = entry.value.as_deref().unwrap_or_default();
        data.insert(
            entry.key.clone().unwrap_or_default(),
            SecretValue::from(value),
        );
    }
    let type_ = match proto.type_.as_deref() {
        None | Some("") => SECRET_TYPE_OPAQUE.to_owned(),
        Some(t) => t.to_owned(),
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            labels: string_map(&meta.labels),
            annotations: string_map(&meta.annotations),
            uid: non_empty(&meta.uid),
            resource_version: non_empty(&meta.resource_version),
            creation_timestamp,
        },
        type_,
        data,
        immutable: proto.immutable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_gogo_layout_byte_for_byte() {
        let mut s = Secret::new("ns", "x");
        s.metadata.uid = Some("u".into());
        s.metadata.creation_timestamp = Some("1970-01-01T00:02:00Z".into());
        s.metadata.labels.insert("a".into(), "b".into());
        s.data.insert("k".into(), SecretValue::from(""));
        s.data.insert("p".into(), SecretValue::from("v"));
        s.immutable = Some(true);
        let got = encode(&s);
        let meta: &[u8] = &[
            0x0a, 1, b'x', // name
            0x12, 0, // generateName
            0x1a, 2, b'n', b's', // namespace
            0x22, 0, // selfLink
            0x2a, 1, b'u', // uid
            0x32, 0, // resourceVersion
            0x38, 0, // generation
            0x42, 4, 0x08, 120, 0x10, 0, // creationTimestamp {seconds, nanos}
            0x5a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', // labels
        ];
        let mut secret = vec![0x0a, meta.len() as u8];
        secret.extend_from_slice(meta);
        secret.extend_from_slice(&[0x12, 5, 0x0a, 1, b'k', 0x12, 0]);
        secret.extend_from_slice(&[0x12, 6, 0x0a, 1, b'p', 0x12, 1, b'v']);
        secret.extend_from_slice(&[0x1a, 6]);
        secret.extend_from_slice(b"Opaque");
        secret.extend_from_slice(&[0x28, 1]);
        let mut want = b"k8s\x00".to_vec();
        want.extend_from_slice(&[0x0a, 12, 0x0a, 2, b'v', b'1', 0x12, 6]);
        want.extend_from_slice(b"Secret");
        want.extend_from_slice(&[0x12, secret.len() as u8]);
        want.extend_from_slice(&secret);
        want.extend_from_slice(&[0x1a, 0, 0x22, 0]);
        assert_eq!(got.as_slice(), want.as_slice());
        assert_eq!(decode(&got[4..]).unwrap(), s);
    }

    #[test]
    fn an_unset_timestamp_is_an_empty_message() {
        let s = Secret::new("ns", "x");
        let got = encode(&s);
        let needle: &[u8] = &[0x38, 0, 0x42, 0];
        assert!(got.windows(4).any(|w| w == needle));
        assert_eq!(decode(&got[4..]).unwrap().metadata.creation_timestamp, None);
    }

    #[test]
    fn refuses_other_kinds_and_garbage() {
        let mut other = Unknown::default();
        other.type_meta = Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        });
        let bytes = other.encode_to_vec();
        assert!(matches!(decode(&bytes), Err(DecodeError::WrongKind { .. })));
        assert!(matches!(
            decode(&[0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
