//! Secret manifests (YAML or JSON, multi-document, `List`s) on arbitrary
//! UTF-8. Parsing must never panic; and every Secret it reads must survive
//! the trip through both storage encodings (JSON and protobuf) with its
//! name, namespace, type and data intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_store::secret::{Secret, StorageFormat, parse_manifests};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(secrets) = parse_manifests(text) else {
        return;
    };
    for s in &secrets {
        for format in [StorageFormat::Json, StorageFormat::Protobuf] {
            let bytes = s.to_storage_bytes(format);
            let back = Secret::from_storage_bytes(&bytes)
                .unwrap_or_else(|e| panic!("{format:?} encoding does not decode: {e}"));
            assert_eq!(back.metadata.name, s.metadata.name, "{format:?}");
            assert_eq!(back.metadata.namespace, s.metadata.namespace, "{format:?}");
            assert_eq!(back.type_, s.type_, "{format:?}");
            assert_eq!(back.data, s.data, "{format:?}");
        }
    }
});
