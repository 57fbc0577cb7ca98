//! The stored form: `k8s:enc:kms:v2:<provider>:` ‖ protobuf `EncryptedObject`.
//!
//! Decoding is zero-copy: an [`EncryptedObjectRef`] borrows every field from
//! the stored bytes, so opening a value copies its ciphertext exactly once
//! (into the plaintext buffer). Any protobuf encoding of the message is
//! accepted as Go's decoder accepts it (fields in any order, the last
//! occurrence wins, unknown fields skipped); then the object is validated as
//! upstream `ValidateEncryptedObject` does.
//!
//! Encoding is split for the seal hot path: everything after
//! `encryptedData` (fields 2-5) depends only on the write state and is
//! encoded once per DEK seed (`encode_tail`); each seal writes the prefix,
//! the field-1 header (`put_encrypted_data_header`), the sealed data and
//! that tail. The bytes are the same as a proto3 encoder writes in field
//! order: 1, 2, 3, 4 (map entries sorted by key), 5.

use std::collections::BTreeMap;
use std::fmt;

use kms_proto::contract::{validate_annotations, validate_ciphertext, validate_key_id};

/// The prefix every KMS v2 value starts with, before the provider name.
pub const KMS_V2_PREFIX: &[u8] = crate::transform::ProviderKind::KmsV2.prefix().as_bytes();

/// How `encryptedDEKSource` is to be interpreted (`EncryptedDEKSourceType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DekSourceType {
    /// `AES_GCM_KEY` (0): the plugin wrapped a 32-byte AES-GCM key that
    /// encrypts the data directly. Written before Kubernetes 1.29; read only.
    AesGcmKey,
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED` (1): the plugin wrapped a 32-byte
    /// seed; each value's key is HKDF-SHA256-Expand(seed, info).
    HkdfSha256XnonceAesGcmSeed,
}

impl DekSourceType {
    /// The protobuf enum number.
    pub fn wire_value(self) -> i32 {
        match self {
            DekSourceType::AesGcmKey => 0,
            DekSourceType::HkdfSha256XnonceAesGcmSeed => 1,
        }
    }

    /// The protobuf enum name, as upstream prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DekSourceType::AesGcmKey => "AES_GCM_KEY",
            DekSourceType::HkdfSha256XnonceAesGcmSeed => "HKDF_SHA256_XNONCE_AES_GCM_SEED",
        }
    }

    fn from_wire(v: i32) -> Option<Self> {
        match v {
            0 => Some(DekSourceType::AesGcmKey),
            1 => Some(DekSourceType::HkdfSha256XnonceAesGcmSeed),
            _ => None,
        }
    }
}

impl fmt::Display for DekSourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded and validated `EncryptedObject`, borrowing from the stored
/// bytes. Nothing here is secret: it is all stored in plaintext (the data is
/// still encrypted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedObjectRef<'a> {
    /// Field 1: the sealed data (layout depends on the source type).
    pub encrypted_data: &'a [u8],
    /// Field 2: the plugin's key_id when the DEK source was wrapped.
    pub key_id: &'a str,
    /// Field 3: the plugin's ciphertext of the seed or DEK.
    pub encrypted_dek_source: &'a [u8],
    /// Field 4: the plugin's annotations, by key.
    pub annotations: BTreeMap<&'a str, &'a [u8]>,
    /// Field 5: how to read `encrypted_dek_source`.
    pub dek_source_type: DekSourceType,
}

/// A parsed stored value: provider name plus the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The provider name between `k8s:enc:kms:v2:` and the next `:`.
    pub provider_name: &'a str,
    /// The decoded, validated object.
    pub object: EncryptedObjectRef<'a>,
}

/// Why stored bytes are not a KMS v2 value. The message names what is wrong
/// and never contains stored data beyond short, quoted public fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes do not start with `k8s:enc:kms:v2:<name>:`.
    #[error("not a KMS v2 value: {0}")]
    Prefix(String),
    /// The protobuf does not decode.
    #[error("the EncryptedObject does not decode: {0}")]
    Protobuf(String),
    /// The object decodes but fails upstream's validation.
    #[error("invalid EncryptedObject: {0}")]
    Invalid(String),
}

/// Parses a complete stored value (prefix included) without decrypting
/// anything: the entry point for `inspect` and for fuzzing. Never panics.
pub fn parse_envelope(stored: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let rest = stored.strip_prefix(KMS_V2_PREFIX).ok_or_else(|| {
        EnvelopeError::Prefix(format!(
            "it does not start with {:?}",
            String::from_utf8_lossy(KMS_V2_PREFIX)
        ))
    })?;
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| EnvelopeError::Prefix("no ':' ends the provider name".into()))?;
    let provider_name = std::str::from_utf8(&rest[..colon])
        .map_err(|_| EnvelopeError::Prefix("the provider name is not UTF-8".into()))?;
    if provider_name.is_empty() {
        return Err(EnvelopeError::Prefix("the provider name is empty".into()));
    }
    let object = decode_encrypted_object(&rest[colon + 1..])?;
    Ok(Envelope {
        provider_name,
        object,
    })
}

/// Decodes the protobuf `EncryptedObject` (no prefix) and validates it as
/// upstream `ValidateEncryptedObject`: known source type, non-empty
/// `encryptedData`, `encryptedDEKSource` of 1..=1024 bytes, `keyID` of
/// 1..=1024 bytes, annotation keys fully qualified domain names and at most
/// 32 kB of annotations.
pub fn decode_encrypted_object(bytes: &[u8]) -> Result<EncryptedObjectRef<'_>, EnvelopeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut encrypted_data: &[u8] = &[];
    let mut key_id: &[u8] = &[];
    let mut encrypted_dek_source: &[u8] = &[];
    let mut annotations = BTreeMap::new();
    let mut source_type: i32 = 0;
    while !r.at_end() {
        let (field, wire) = r.tag()?;
        match (field, wire) {
            (1, WIRE_LEN) => encrypted_data = r.len_delimited()?,
            (2, WIRE_LEN) => key_id = r.len_delimited()?,
            (3, WIRE_LEN) => encrypted_dek_source = r.len_delimited()?,
            (4, WIRE_LEN) => {
                let (k, v) = decode_map_entry(r.len_delimited()?)?;
                annotations.insert(k, v);
            }
            // Go and prost both truncate an enum varint to int32.
            (5, WIRE_VARINT) => source_type = r.varint()? as i32,
            (1..=5, w) => {
                return Err(EnvelopeError::Protobuf(format!(
                    "field {field} has wire type {w}, expected {}",
                    if field == 5 { WIRE_VARINT } else { WIRE_LEN }
                )));
            }
            (_, w) => r.skip(field, w)?,
        }
    }
    let key_id = std::str::from_utf8(key_id)
        .map_err(|_| EnvelopeError::Protobuf("keyID (field 2) is not valid UTF-8".into()))?;
    let dek_source_type = DekSourceType::from_wire(source_type).ok_or_else(|| {
        EnvelopeError::Invalid(format!("unknown encryptedDEKSourceType: {source_type}"))
    })?;
    let obj = EncryptedObjectRef {
        encrypted_data,
        key_id,
        encrypted_dek_source,
        annotations,
        dek_source_type,
    };
    validate_object(&obj)?;
    Ok(obj)
}

fn validate_object(o: &EncryptedObjectRef<'_>) -> Result<(), EnvelopeError> {
    if o.encrypted_data.is_empty() {
        return Err(EnvelopeError::Invalid("encrypted data is empty".into()));
    }
    validate_ciphertext(o.encrypted_dek_source).map_err(|e| {
        EnvelopeError::Invalid(format!("failed to validate encrypted DEK source: {e}"))
    })?;
    validate_key_id(o.key_id)
        .map_err(|e| EnvelopeError::Invalid(format!("failed to validate key id: {e}")))?;
    validate_annotations(o.annotations.iter().map(|(k, v)| (*k, *v)))
        .map_err(|e| EnvelopeError::Invalid(format!("failed to validate annotations: {e}")))?;
    Ok(())
}

fn decode_map_entry(entry: &[u8]) -> Result<(&str, &[u8]), EnvelopeError> {
    let mut r = Reader { buf: entry, pos: 0 };
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    while !r.at_end() {
        match r.tag()? {
            (1, WIRE_LEN) => key = r.len_delimited()?,
            (2, WIRE_LEN) => value = r.len_delimited()?,
            (f @ (1 | 2), w) => {
                return Err(EnvelopeError::Protobuf(format!(
                    "annotations entry field {f} has wire type {w}, expected {WIRE_LEN}"
                )));
            }
            (f, w) => r.skip(f, w)?,
        }
    }
    let key = std::str::from_utf8(key).map_err(|_| {
        EnvelopeError::Protobuf("an annotation key (field 4) is not valid UTF-8".into())
    })?;
    Ok((key, value))
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_SGROUP: u8 = 3;
const WIRE_EGROUP: u8 = 4;
const WIRE_I32: u8 = 5;

/// Deepest nesting of unknown groups we skip (Go's default recursion limit
/// is 10 000; nothing legitimate nests at all).
const MAX_GROUP_DEPTH: usize = 100;

/// A bounds-checked cursor over protobuf wire data.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, EnvelopeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| EnvelopeError::Protobuf("truncated varint".into()))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(EnvelopeError::Protobuf("varint overflows 64 bits".into()));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(EnvelopeError::Protobuf(
            "varint longer than 10 bytes".into(),
        ))
    }

    fn tag(&mut self) -> Result<(u32, u8), EnvelopeError> {
        let t = self.varint()?;
        let field = t >> 3;
        let wire = (t & 7) as u8;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(EnvelopeError::Protobuf(format!(
                "invalid field number {field}"
            )));
        }
        Ok((field as u32, wire))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], EnvelopeError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(EnvelopeError::Protobuf(format!(
                "a field claims {n} bytes, only {left} remain"
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], EnvelopeError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// Skips one unknown field (groups included, nested up to a limit).
    fn skip(&mut self, field: u32, wire: u8) -> Result<(), EnvelopeError> {
        let mut open: Vec<u32> = Vec::new();
        let (mut field, mut wire) = (field, wire);
        loop {
            match wire {
                WIRE_VARINT => {
                    self.varint()?;
                }
                WIRE_I64 => {
                    self.take(8)?;
                }
                WIRE_LEN => {
                    self.len_delimited()?;
                }
                WIRE_I32 => {
                    self.take(4)?;
                }
                WIRE_SGROUP => {
                    if open.len() >= MAX_GROUP_DEPTH {
                        return Err(EnvelopeError::Protobuf("groups nested too deeply".into()));
                    }
                    open.push(field);
                }
                WIRE_EGROUP => match open.pop() {
                    Some(f) if f == field => {}
                    _ => {
                        return Err(EnvelopeError::Protobuf(format!(
                            "unmatched end of group {field}"
                        )));
                    }
                },
                w => {
                    return Err(EnvelopeError::Protobuf(format!("invalid wire type {w}")));
                }
            }
            if open.is_empty() {
                return Ok(());
            }
            if self.at_end() {
                return Err(EnvelopeError::Protobuf("unterminated group".into()));
            }
            (field, wire) = self.tag()?;
        }
    }
}

/// Bytes of `v` as a protobuf varint.
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// How many bytes a length-delimited field's tag and length take (field
/// numbers below 16) for a payload of `len` bytes.
pub(crate) fn field_header_len(len: usize) -> usize {
    1 + varint_len(len as u64)
}

/// Writes the field-1 (`encryptedData`) tag and length; the data follows.
pub(crate) fn put_encrypted_data_header(out: &mut Vec<u8>, encrypted_data_len: usize) {
    out.push((1 << 3) | WIRE_LEN);
    put_varint(out, encrypted_data_len as u64);
}

/// Encodes fields 2-5 (`keyID`, `encryptedDEKSource`, sorted annotations,
/// `encryptedDEKSourceType` when not 0): the part of every sealed value that
/// depends only on the write state.
///
/// The annotations come as `(key, value)` pairs, in key order.
pub(crate) fn encode_tail<'a, I>(
    key_id: &str,
    encrypted_dek_source: &[u8],
    annotations: I,
    source_type: DekSourceType,
) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = Vec::with_capacity(
        16 + key_id.len()
            + encrypted_dek_source.len()
            + annotations
                .clone()
                .map(|(k, v)| 16 + k.len() + v.len())
                .sum::<usize>(),
    );
    put_bytes_field(&mut out, 2, key_id.as_bytes());
    put_bytes_field(&mut out, 3, encrypted_dek_source);
    for (k, v) in annotations {
        // A map entry is a message { string key = 1; bytes value = 2; }.
        let entry_len = field_header_len(k.len()) + k.len() + field_header_len(v.len()) + v.len();
        out.push((4 << 3) | WIRE_LEN);
        put_varint(&mut out, entry_len as u64);
        put_bytes_field(&mut out, 1, k);
        put_bytes_field(&mut out, 2, v);
    }
    let t = source_type.wire_value();
    if t != 0 {
        out.push(5 << 3);
        put_varint(&mut out, t as u64);
    }
    out
}

/// A stored object in the layout this crate and upstream write: field 1
/// (`encryptedData`, non-empty) first, then the rest, which is returned
/// unread. `None` for any other layout.
///
/// This is the read hot path's shortcut: when the rest is byte for byte
/// the [`encode_tail`] of a source already decoded and validated (the write
/// state's, or a cached seed's), the whole object decodes to that source
/// with this data, as Go's decoder would read it (the tail holds no field
/// 1, so this data is the last and only one), and needs neither decoding
/// nor validating again. Anything else takes [`decode_encrypted_object`].
pub(crate) fn split_data(body: &[u8]) -> Option<(&[u8], &[u8])> {
    if body.first() != Some(&((1 << 3) | WIRE_LEN)) {
        return None;
    }
    let mut r = Reader { buf: body, pos: 1 };
    let data = r.len_delimited().ok()?;
    if data.is_empty() {
        return None;
    }
    Some((data, &body[r.pos..]))
}

/// The `encryptedDEKSource` of a tail in [`encode_tail`]'s layout (field 2
/// then field 3), without validating anything: the cache's index into its
/// entries, whose own tails are then compared in full.
pub(crate) fn tail_dek_source(tail: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { buf: tail, pos: 0 };
    if r.tag().ok()? != (2, WIRE_LEN) {
        return None;
    }
    r.len_delimited().ok()?;
    if r.tag().ok()? != (3, WIRE_LEN) {
        return None;
    }
    r.len_delimited().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_proto::envelope::{EncryptedDekSourceType, EncryptedObject};
    use proptest::prelude::*;
    use prost::Message;

    fn sample(annotations: BTreeMap<String, Vec<u8>>) -> EncryptedObject {
        EncryptedObject {
            encrypted_data: vec![7; 300],
            key_id: "kek-1".into(),
            encrypted_dek_source: vec![9; 60],
            annotations,
            encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
        }
    }

    fn tail_of(o: &EncryptedObject) -> Vec<u8> {
        encode_tail(
            &o.key_id,
            &o.encrypted_dek_source,
            o.annotations
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice())),
            DekSourceType::HkdfSha256XnonceAesGcmSeed,
        )
    }

    fn ours(o: &EncryptedObject) -> Vec<u8> {
        let mut out = Vec::new();
        put_encrypted_data_header(&mut out, o.encrypted_data.len());
        out.extend_from_slice(&o.encrypted_data);
        out.extend(tail_of(o));
        out
    }

    #[test]
    fn encoding_matches_prost_byte_for_byte() {
        let mut ann = BTreeMap::new();
        ann.insert("version.kms.example.io".to_string(), b"1".to_vec());
        ann.insert("a.example.io".to_string(), vec![0xff; 200]);
        for o in [sample(BTreeMap::new()), sample(ann)] {
            assert_eq!(ours(&o), o.encode_to_vec());
        }
    }

    #[test]
    fn decodes_what_prost_writes() {
        let mut ann = BTreeMap::new();
        ann.insert("version.kms.example.io".to_string(), b"1".to_vec());
        let o = sample(ann);
        let bytes = o.encode_to_vec();
        let d = decode_encrypted_object(&bytes).unwrap();
        assert_eq!(d.encrypted_data, &o.encrypted_data[..]);
        assert_eq!(d.key_id, "kek-1");
        assert_eq!(d.encrypted_dek_source, &o.encrypted_dek_source[..]);
        assert_eq!(
            d.annotations.get("version.kms.example.io"),
            Some(&&b"1"[..])
        );
        assert_eq!(d.dek_source_type, DekSourceType::HkdfSha256XnonceAesGcmSeed);
    }

    #[test]
    fn accepts_any_order_duplicates_and_unknown_fields() {
        let mut b = Vec::new();
        put_bytes_field(&mut b, 2, b"old");
        b.extend([5 << 3, 1]);
        put_bytes_field(&mut b, 3, &[1; 10]);
        // unknown: varint 6, fixed64 7, fixed32 8, bytes 9, group 10 { 11: varint }
        b.extend([6 << 3, 0x96, 0x01]);
        b.push((7 << 3) | 1);
        b.extend([0; 8]);
        b.push((8 << 3) | 5);
        b.extend([0; 4]);
        put_bytes_field(&mut b, 9, b"zz");
        b.extend([(10 << 3) | 3, 11 << 3, 1, (10 << 3) | 4]);
        put_bytes_field(&mut b, 1, b"data");
        put_bytes_field(&mut b, 2, b"new");
        let d = decode_encrypted_object(&b).unwrap();
        assert_eq!(d.key_id, "new");
        assert_eq!(d.encrypted_data, b"data");
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        let base = sample(BTreeMap::new());
        let cases: Vec<(EncryptedObject, &str)> = vec![
            (
                EncryptedObject {
                    encrypted_data: vec![],
                    ..base.clone()
                },
                "encrypted data is empty",
            ),
            (
                EncryptedObject {
                    key_id: String::new(),
                    ..base.clone()
                },
                "keyID is empty",
            ),
            (
                EncryptedObject {
                    key_id: "k".repeat(1025),
                    ..base.clone()
                },
                "keyID is 1025 bytes",
            ),
            (
                EncryptedObject {
                    encrypted_dek_source: vec![],
                    ..base.clone()
                },
                "DEK source is empty",
            ),
            (
                EncryptedObject {
                    encrypted_dek_source: vec![1; 1025],
                    ..base.clone()
                },
                "encrypted DEK source is 1025 bytes",
            ),
            (
                EncryptedObject {
                    encrypted_dek_source_type: 2,
                    ..base.clone()
                },
                "unknown encryptedDEKSourceType: 2",
            ),
            (
                EncryptedObject {
                    annotations: [("nodots".to_string(), vec![])].into(),
                    ..base.clone()
                },
                "nodots",
            ),
        ];
        for (o, want) in cases {
            let err = decode_encrypted_object(&o.encode_to_vec()).unwrap_err();
            assert!(matches!(err, EnvelopeError::Invalid(_)), "{err}");
            assert!(err.to_string().contains(want), "{err} !~ {want}");
        }
    }

    #[test]
    fn refuses_broken_protobuf() {
        let good = sample(BTreeMap::new()).encode_to_vec();
        for cut in 1..good.len() {
            // Every strict prefix fails to decode or fails validation, except
            // the one that drops field 5 whole: that is a valid AES_GCM_KEY
            // object (only the data's AEAD can tell).
            let r = decode_encrypted_object(&good[..cut]);
            if cut == good.len() - 2 {
                assert_eq!(r.unwrap().dek_source_type, DekSourceType::AesGcmKey);
            } else {
                assert!(r.is_err(), "cut {cut}");
            }
        }
        for bad in [
            &[0x0a, 0xff][..],
            &[0x0b][..],
            &[0x00, 0x01][..],
            &[0x08, 0x01][..],
            &[(10 << 3) | 4][..],
            &[(10 << 3) | 3][..],
            &[0xff; 11][..],
            &[(5 << 3) | 2, 0][..],
        ] {
            assert!(matches!(
                decode_encrypted_object(bad),
                Err(EnvelopeError::Protobuf(_))
            ));
        }
        let mut bad_utf8 = Vec::new();
        put_bytes_field(&mut bad_utf8, 2, &[0xc3, 0x28]);
        assert!(
            decode_encrypted_object(&bad_utf8)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn parses_the_prefix() {
        let body = sample(BTreeMap::new()).encode_to_vec();
        let mut stored = b"k8s:enc:kms:v2:my-kms:".to_vec();
        stored.extend(&body);
        assert_eq!(parse_envelope(&stored).unwrap().provider_name, "my-kms");
        for bad in [
            &b"k8s:enc:kms:v1:x:"[..],
            b"k8s:enc:kms:v2:",
            b"k8s:enc:kms:v2::",
            b"k8s:enc:kms:v2:noend",
        ] {
            assert!(
                matches!(parse_envelope(bad), Err(EnvelopeError::Prefix(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn split_data_takes_only_the_layout_writers_use() {
        let mut ann = BTreeMap::new();
        ann.insert("version.kms.example.io".to_string(), b"1".to_vec());
        let o = sample(ann);
        let tail = tail_of(&o);
        let body = ours(&o);
        let (data, rest) = split_data(&body).unwrap();
        assert_eq!(data, &o.encrypted_data[..]);
        assert_eq!(rest, &tail[..]);
        assert_eq!(tail_dek_source(rest), Some(&o.encrypted_dek_source[..]));
        // The tail first, then the data: not this layout.
        let mut reordered = tail.clone();
        reordered.extend(&body[..body.len() - tail.len()]);
        assert_eq!(split_data(&reordered), None);
        assert_eq!(tail_dek_source(&reordered[3..]), None);
        // Empty data, a length past the end, an unterminated varint, nothing.
        for bad in [
            &[0x0a, 0x00, 0x12][..],
            &[0x0a, 0x05, 1, 2],
            &[0x0a, 0x80],
            &[],
        ] {
            assert_eq!(split_data(bad), None, "{bad:?}");
        }
        // A tail without keyID first, or without encryptedDEKSource second.
        assert_eq!(tail_dek_source(&[0x1a, 0x01, 9]), None);
        assert_eq!(tail_dek_source(&[0x12, 0x01, b'k', 0x22, 0x00]), None);
        assert_eq!(tail_dek_source(&[0x12, 0x05, b'k']), None);
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), n);
            assert_eq!(Reader { buf: &b, pos: 0 }.varint().unwrap(), v);
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_encrypted_object(&bytes);
            let mut stored = b"k8s:enc:kms:v2:p:".to_vec();
            stored.extend(&bytes);
            let _ = parse_envelope(&stored);
        }

        #[test]
        fn mutated_valid_objects_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut b = sample([("a.b".to_string(), b"v".to_vec())].into()).encode_to_vec();
            let i = pos % b.len();
            b[i] = byte;
            let _ = decode_encrypted_object(&b);
        }
    }
}
