//! The protobuf kube-apiserver stores by default: the magic `k8s\0`, then a
//! `runtime.Unknown` (`typeMeta` = 1 {`apiVersion` = 1, `kind` = 2},
//! `raw` = 2, `contentEncoding` = 3, `contentType` = 4) whose `raw` is a
//! `k8s.io.api.core.v1.Secret` with its whole `ObjectMeta`; the layout,
//! field by field, is `../shared/vectors/PROTOBUF.md`.
//!
//! - [`crate::protowire`]: varints, tags, the reader that skips unknown fields;
//! - `encode`: the gogo marshallers' output, byte for byte;
//! - `decode`: the gogo `Unmarshal` rules, every error naming its field.

mod decode;
mod encode;

pub(crate) use decode::decode;
pub(crate) use encode::encode;

/// The four bytes before a kube-apiserver protobuf object.
pub(crate) const PROTOBUF_MAGIC: &[u8; 4] = b"k8s\x00";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::{ManagedFieldsEntry, OwnerReference, Secret, SecretValue};

    /// `decode` of a whole value (magic stripped), as text.
    fn err(value: &[u8]) -> String {
        decode(&value[4..]).unwrap_err().to_string()
    }

    /// A value around `raw` (a v1.Secret message).
    fn value(raw: &[u8]) -> Vec<u8> {
        let mut v = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret".to_vec();
        v.push(0x12);
        v.push(raw.len() as u8);
        v.extend_from_slice(raw);
        v.extend_from_slice(&[0x1a, 0, 0x22, 0]);
        v
    }

    /// A Secret message whose metadata is `meta`.
    fn with_meta(meta: &[u8]) -> Vec<u8> {
        let mut raw = vec![0x0a, meta.len() as u8];
        raw.extend_from_slice(meta);
        raw
    }

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
        let mut secret = with_meta(meta);
        secret.extend_from_slice(&[0x12, 5, 0x0a, 1, b'k', 0x12, 0]);
        secret.extend_from_slice(&[0x12, 6, 0x0a, 1, b'p', 0x12, 1, b'v']);
        secret.extend_from_slice(&[0x1a, 6]);
        secret.extend_from_slice(b"Opaque");
        secret.extend_from_slice(&[0x28, 1]);
        assert_eq!(got.as_slice(), value(&secret).as_slice());
        assert_eq!(decode(&got[4..]).unwrap(), s);
    }

    #[test]
    fn every_object_meta_field_round_trips() {
        let mut s = Secret::new("ns", "x");
        let m = &mut s.metadata;
        m.generate_name = "x-".into();
        m.generation = 3;
        m.deletion_timestamp = Some("2024-05-01T10:00:00Z".into());
        m.deletion_grace_period_seconds = Some(0);
        m.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }]);
        m.finalizers = Some(vec!["example.com/a".into(), "example.com/b".into()]);
        m.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: "kubectl".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: Some("2024-05-01T10:00:01Z".into()),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(r#"{"f:data":{".":{}}}"#.into()),
            subresource: String::new(),
        }]);
        let bytes = encode(&s);
        assert_eq!(decode(&bytes[4..]).unwrap(), s);
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
        let other = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap";
        assert!(matches!(
            decode(&other[4..]),
            Err(crate::secret::DecodeError::WrongKind { .. })
        ));
        assert_eq!(
            err(b"k8s\x00\xff\xff"),
            "invalid stored protobuf: truncated varint"
        );
    }

    #[test]
    fn malformed_fields_are_named() {
        // name (1) sent as a varint.
        assert_eq!(
            err(&value(&with_meta(&[0x08, 1]))),
            "invalid stored protobuf: metadata.name: wrong wire type 0 (varint), expected 2 (length-delimited)"
        );
        // generation (7) sent as a string.
        assert_eq!(
            err(&value(&with_meta(&[0x3a, 0]))),
            "invalid stored protobuf: metadata.generation: wrong wire type 2 (length-delimited), expected 0 (varint)"
        );
        // creationTimestamp.seconds truncated.
        assert_eq!(
            err(&value(&with_meta(&[0x42, 2, 0x08, 0x80]))),
            "invalid stored protobuf: metadata.creationTimestamp.seconds: truncated varint"
        );
        // A time past year 9999.
        assert!(
            err(&value(&with_meta(&[
                0x42, 7, 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20
            ])))
            .contains(
                "metadata.creationTimestamp.seconds: 1099511627776 is outside the years 0000-9999"
            )
        );
        // A label value that is not UTF-8.
        assert_eq!(
            err(&value(&with_meta(&[
                0x5a, 7, 0x0a, 1, b'a', 0x12, 2, 0xff, 0xfe
            ]))),
            "invalid stored protobuf: metadata.labels[a]: not valid UTF-8"
        );
        // An owner reference whose uid runs past its message.
        assert_eq!(
            err(&value(&with_meta(&[0x6a, 2, 0x22, 5]))),
            "invalid stored protobuf: metadata.ownerReferences[0].uid: length 5 runs past the end of its message (0 bytes left)"
        );
        assert_eq!(
            err(&value(&with_meta(&[0x6a, 0, 0x6a, 2, 0x30, 0x80]))),
            "invalid stored protobuf: metadata.ownerReferences[1].controller: truncated varint"
        );
        // managedFields[0].fieldsV1 that is not JSON.
        assert_eq!(
            err(&value(&with_meta(&[0x8a, 0x01, 5, 0x3a, 3, 0x0a, 1, b'{']))),
            "invalid stored protobuf: metadata.managedFields[0].fieldsV1: not valid JSON: EOF while parsing an object at line 1 column 1"
        );
        // managedFields[0].time as a varint.
        assert_eq!(
            err(&value(&with_meta(&[0x8a, 0x01, 2, 0x20, 1]))),
            "invalid stored protobuf: metadata.managedFields[0].time: wrong wire type 0 (varint), expected 2 (length-delimited)"
        );
        // A data entry whose key is a varint; immutable as a string.
        assert_eq!(
            err(&value(&[0x12, 2, 0x08, 1])),
            "invalid stored protobuf: data.key: wrong wire type 0 (varint), expected 2 (length-delimited)"
        );
        assert_eq!(
            err(&value(&[0x2a, 0])),
            "invalid stored protobuf: immutable: wrong wire type 2 (length-delimited), expected 0 (varint)"
        );
        // Metadata longer than the Secret holding it.
        assert_eq!(
            err(&value(&[0x0a, 9, 0x0a, 1, b'x'])),
            "invalid stored protobuf: metadata: length 9 runs past the end of its message (3 bytes left)"
        );
        // The typeMeta kind as a varint.
        assert_eq!(
            err(b"k8s\x00\x0a\x02\x10\x01"),
            "invalid stored protobuf: typeMeta.kind: wrong wire type 0 (varint), expected 2 (length-delimited)"
        );
    }

    #[test]
    fn reads_as_gogo_does() {
        // Unknown fields of every wire type are skipped; a repeated
        // metadata merges; the last repeated scalar wins; map values may be
        // missing; stringData merges into data.
        let mut meta1 = vec![0x0a, 1, b'a', 0x98, 0x01, 7]; // name, unknown field 19 varint
        meta1.extend_from_slice(&[0xa1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]); // field 20 fixed64
        meta1.extend_from_slice(&[0xad, 0x01, 1, 2, 3, 4]); // field 21 fixed32
        meta1.extend_from_slice(&[0xb3, 0x01, 0x08, 1, 0xb4, 0x01]); // field 22 group
        let mut raw = with_meta(&meta1);
        raw.extend(with_meta(&[0x1a, 2, b'n', b's', 0x0a, 1, b'b']));
        raw.extend_from_slice(&[0x12, 3, 0x0a, 1, b'k']); // data k, no value
        raw.extend_from_slice(&[0x22, 6, 0x0a, 1, b's', 0x12, 1, b'v']); // stringData s=v
        raw.extend_from_slice(&[0x28, 1, 0x28, 0]); // immutable true, then false
        let s = decode(&value(&raw)[4..]).unwrap();
        assert_eq!(s.metadata.name, "b");
        assert_eq!(s.metadata.namespace, "ns");
        assert!(s.data["k"].is_empty());
        assert_eq!(s.data["s"].expose(), b"v");
        assert_eq!(s.immutable, Some(false));
        assert_eq!(s.type_, "Opaque");
    }
}
