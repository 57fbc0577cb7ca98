//! The bytes kube-apiserver puts inside the encryption for a Secret, in
//! both of its storage formats: JSON (`json`) and the default protobuf
//! (`proto`); `error`: [`DecodeError`]. Reading detects the format; the
//! output buffers are wiped on drop.

mod error;
mod json;
mod proto;

pub use error::DecodeError;
pub(crate) use json::push_json_string;

use crate::secret::model::Secret;
use crate::wipe::Wiped;

/// Which format stored bytes are in. The default is kube-apiserver's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageFormat {
    /// `application/json`.
    Json,
    /// `application/vnd.kubernetes.protobuf` (the apiserver's default).
    #[default]
    Protobuf,
}

/// A `--storage-media-type` that is neither of the two.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "storage-media-type={0:?} is not valid: choose application/vnd.kubernetes.protobuf (kube-apiserver's default) or application/json"
)]
pub struct UnknownMediaType(pub String);

impl std::str::FromStr for StorageFormat {
    type Err = UnknownMediaType;

    /// The media type as kube-apiserver's `--storage-media-type` takes it
    /// (also `protobuf` and `json` for short).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "application/vnd.kubernetes.protobuf" | "protobuf" => Ok(StorageFormat::Protobuf),
            "application/json" | "json" => Ok(StorageFormat::Json),
            other => Err(UnknownMediaType(other.to_owned())),
        }
    }
}

impl std::fmt::Display for StorageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.media_type())
    }
}

impl StorageFormat {
    /// The media type, as kube-apiserver names it.
    pub fn media_type(self) -> &'static str {
        match self {
            StorageFormat::Json => "application/json",
            StorageFormat::Protobuf => "application/vnd.kubernetes.protobuf",
        }
    }

    /// `protobuf` or `json`, for tables and counts.
    pub fn short_name(self) -> &'static str {
        match self {
            StorageFormat::Json => "json",
            StorageFormat::Protobuf => "protobuf",
        }
    }

    /// Detects the format of `bytes` from their first bytes.
    pub fn detect(bytes: &[u8]) -> Result<StorageFormat, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.starts_with(proto::PROTOBUF_MAGIC) {
            return Ok(StorageFormat::Protobuf);
        }
        if bytes.starts_with(b"k8s:enc:") {
            return Err(DecodeError::Encrypted);
        }
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(StorageFormat::Json),
            _ => Err(DecodeError::UnknownFormat),
        }
    }
}

impl Secret {
    /// The compact JSON kube-apiserver stores for this Secret (with
    /// `--storage-media-type=application/json`), trailing newline included,
    /// `resourceVersion` left out.
    pub fn to_storage_json(&self) -> Wiped<Vec<u8>> {
        json::encode(self)
    }

    /// The protobuf kube-apiserver stores for this Secret by default
    /// (`k8s\0` + `runtime.Unknown`), `resourceVersion` left out.
    pub fn to_storage_protobuf(&self) -> Wiped<Vec<u8>> {
        proto::encode(self)
    }

    /// The stored bytes in `format`.
    pub fn to_storage_bytes(&self, format: StorageFormat) -> Wiped<Vec<u8>> {
        match format {
            StorageFormat::Json => self.to_storage_json(),
            StorageFormat::Protobuf => self.to_storage_protobuf(),
        }
    }

    /// Reads a Secret from decrypted stored bytes, JSON or protobuf.
    /// Garbage never panics; it is an error.
    pub fn from_storage_bytes(bytes: &[u8]) -> Result<Secret, DecodeError> {
        match StorageFormat::detect(bytes)? {
            StorageFormat::Json => json::decode(bytes),
            StorageFormat::Protobuf => proto::decode(&bytes[proto::PROTOBUF_MAGIC.len()..]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::SecretValue;
    use proptest::prelude::*;

    /// Every `json-secret` plaintext of the upstream vectors.
    fn vector_plaintexts() -> Vec<(String, Vec<u8>)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/kube-apiserver-at-rest.json"
        );
        let text = std::fs::read_to_string(path).expect("vectors file");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["plaintext_format"] == "json-secret")
            .map(|v| {
                (
                    v["id"].as_str().unwrap().to_owned(),
                    hex::decode(v["plaintext_hex"].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn upstream_json_round_trips_byte_for_byte() {
        let vectors = vector_plaintexts();
        assert!(vectors.len() >= 9, "expected the json-secret vectors");
        for (id, plaintext) in vectors {
            let secret =
                Secret::from_storage_bytes(&plaintext).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(
                secret.to_storage_json().as_slice(),
                plaintext.as_slice(),
                "{id}"
            );
            // And through protobuf and back.
            let proto = secret.to_storage_protobuf();
            let again = Secret::from_storage_bytes(&proto).unwrap();
            assert_eq!(again, secret, "{id}");
            assert_eq!(
                again.to_storage_json().as_slice(),
                plaintext.as_slice(),
                "{id}"
            );
        }
    }

    /// The records of tests/vectors/protobuf-public.json: what the upstream
    /// storage codec wrote for 10 Secrets, in both media types.
    fn protobuf_records() -> Vec<serde_json::Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/protobuf-public.json"
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("vectors file")).unwrap();
        doc["records"].as_array().unwrap().clone()
    }

    #[test]
    fn upstream_protobuf_and_json_round_trip_byte_for_byte() {
        let records = protobuf_records();
        assert_eq!(records.len(), 10);
        for r in &records {
            let id = r["id"].as_str().unwrap();
            let proto = hex::decode(r["plaintext_protobuf_hex"].as_str().unwrap()).unwrap();
            let json = hex::decode(r["plaintext_json_hex"].as_str().unwrap()).unwrap();
            let from_proto =
                Secret::from_storage_bytes(&proto).unwrap_or_else(|e| panic!("{id}: {e}"));
            let from_json =
                Secret::from_storage_bytes(&json).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(
                from_proto, from_json,
                "{id}: both formats read to one object"
            );
            for s in [&from_proto, &from_json] {
                assert_eq!(
                    s.to_storage_protobuf().as_slice(),
                    proto.as_slice(),
                    "{id}: protobuf"
                );
                assert_eq!(
                    s.to_storage_json().as_slice(),
                    json.as_slice(),
                    "{id}: json"
                );
            }
            // The object is what the stored JSON says, field for field, and
            // what kubectl -o json shows (no resourceVersion: none is set).
            let stored: serde_json::Value =
                serde_json::from_slice(&from_proto.to_storage_json()).unwrap();
            assert_eq!(stored, r["object"], "{id}: object");
            let shown = crate::secret::render_object(
                &from_proto,
                crate::secret::OutputFormat::Json,
                std::time::SystemTime::now(),
            );
            let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
            assert_eq!(shown, r["object"], "{id}: kubectl -o json");
            assert_eq!(from_proto.metadata.name, r["name"].as_str().unwrap());
        }
    }

    #[test]
    fn detects_formats_and_refuses_the_rest() {
        assert_eq!(StorageFormat::detect(b" {"), Ok(StorageFormat::Json));
        assert_eq!(
            StorageFormat::detect(b"k8s\x00"),
            Ok(StorageFormat::Protobuf)
        );
        assert_eq!(StorageFormat::detect(b""), Err(DecodeError::Empty));
        assert_eq!(
            StorageFormat::detect(b"k8s:enc:aesgcm:v1:key1:xxxx"),
            Err(DecodeError::Encrypted)
        );
        assert_eq!(
            StorageFormat::detect(b"hello"),
            Err(DecodeError::UnknownFormat)
        );
        assert_eq!(
            Secret::from_storage_bytes(b"hello"),
            Err(DecodeError::UnknownFormat)
        );
    }

    #[test]
    fn media_types_parse_as_the_apiserver_names_them() {
        assert_eq!("application/json".parse(), Ok(StorageFormat::Json));
        assert_eq!(
            "application/vnd.kubernetes.protobuf".parse(),
            Ok(StorageFormat::Protobuf)
        );
        assert_eq!(StorageFormat::default(), StorageFormat::Protobuf);
        assert_eq!(StorageFormat::Json.to_string(), "application/json");
        assert!(
            "yaml"
                .parse::<StorageFormat>()
                .unwrap_err()
                .to_string()
                .contains("choose application/vnd.kubernetes.protobuf")
        );
    }

    #[test]
    fn storage_bytes_select_the_format() {
        let mut s = Secret::new("default", "x");
        s.data.insert("k".into(), SecretValue::from("v"));
        for format in [StorageFormat::Json, StorageFormat::Protobuf] {
            let bytes = s.to_storage_bytes(format);
            assert_eq!(StorageFormat::detect(&bytes), Ok(format));
            assert_eq!(Secret::from_storage_bytes(&bytes).unwrap(), s);
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Secret::from_storage_bytes(&bytes);
            let mut json = b"{".to_vec();
            json.extend_from_slice(&bytes);
            let _ = Secret::from_storage_bytes(&json);
            let mut proto = b"k8s\x00".to_vec();
            proto.extend_from_slice(&bytes);
            let _ = Secret::from_storage_bytes(&proto);
        }

        #[test]
        fn mutated_valid_bytes_never_panic(flip in 0usize..400, byte in any::<u8>()) {
            let mut s = Secret::new("default", "x");
            s.metadata.labels.insert("app".into(), "db".into());
            s.data.insert("password".into(), SecretValue::from("hunter2"));
            for format in [StorageFormat::Json, StorageFormat::Protobuf] {
                let mut bytes = s.to_storage_bytes(format).to_vec();
                let at = flip % bytes.len();
                bytes[at] = byte;
                let _ = Secret::from_storage_bytes(&bytes);
            }
        }

        #[test]
        fn any_secret_round_trips(
            name in "[a-z][a-z0-9-]{0,20}",
            data in proptest::collection::btree_map("[-._a-zA-Z0-9]{1,12}", proptest::collection::vec(any::<u8>(), 0..64), 0..5),
            annotation in "\\PC{0,40}",
            immutable in proptest::option::of(any::<bool>()),
        ) {
            let mut s = Secret::new("default", name);
            s.metadata.annotations.insert("example.com/note".into(), annotation);
            s.immutable = immutable;
            for (k, v) in data {
                s.data.insert(k, SecretValue::new(v));
            }
            for format in [StorageFormat::Json, StorageFormat::Protobuf] {
                let back = Secret::from_storage_bytes(&s.to_storage_bytes(format)).unwrap();
                prop_assert_eq!(&back, &s);
            }
        }
    }
}
