//! Secret manifests (YAML or JSON, multi-document, `List`s) on arbitrary
//! UTF-8. Parsing must never panic; every Secret it reads must survive the
//! trip through both storage encodings (JSON and protobuf) with its name,
//! namespace, type and data intact; validating it and printing it in every
//! output format must never panic either, and what `-o yaml` and `-o json`
//! print reads back as the same Secret.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use secret_store::secret::{
    OutputFormat, Secret, StorageFormat, parse_manifests, render_object, validate_create,
};

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
        let _ = validate_create(s);
        for format in [OutputFormat::Table, OutputFormat::Name] {
            let _ = render_object(s, format, SystemTime::UNIX_EPOCH);
        }
        for format in [OutputFormat::Yaml, OutputFormat::Json] {
            let printed = render_object(s, format, SystemTime::UNIX_EPOCH);
            let back = parse_manifests(&printed)
                .unwrap_or_else(|e| panic!("-o {format} does not read back: {e}"));
            assert_eq!(back.len(), 1, "-o {format}");
            assert_eq!(back[0].metadata.name, s.metadata.name, "-o {format}");
            assert_eq!(back[0].type_, s.type_, "-o {format}");
            assert_eq!(back[0].data, s.data, "-o {format}");
        }
    }
});
