//! The KMS v2 envelope parser (`k8s:enc:kms:v2:<name>:` ‖ protobuf
//! `EncryptedObject`) on arbitrary bytes. It must never panic, and whatever
//! it accepts must be seen the same way by every other reader of the
//! envelope:
//!
//! - parsing again gives the same envelope;
//! - the chain's prefix parser names the same provider;
//! - the object, re-encoded by the reference (prost) encoder, parses back
//!   to the same object;
//! - the KMS v2 transformer of that provider inspects the same facts, and
//!   judges it current exactly when it is seed-mode under its key_id.
#![no_main]

use std::collections::BTreeMap;

use kms_proto::envelope::EncryptedObject;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use secret_store::transform::chain::{TransformerChain, parse_envelope_prefix};
use secret_store::transform::kmsv2::{DekSourceType, KmsV2Transformer, parse_envelope};
use secret_store::transform::{ProviderKind, Transformer};
use secret_store::wipe::Wiped;

const PREFIX: &[u8] = b"k8s:enc:kms:v2:";
const KEY_ID: &str = "fuzz-kek";

fuzz_target!(|data: &[u8]| {
    let Ok(env) = parse_envelope(data) else {
        return;
    };

    // Parsing is a pure function of the bytes.
    assert_eq!(parse_envelope(data).as_ref(), Ok(&env));

    // The prefix is exactly `k8s:enc:kms:v2:<name>:`.
    let name = env.provider_name;
    let header_len = PREFIX.len() + name.len() + 1;
    assert!(data.starts_with(PREFIX));
    assert_eq!(&data[PREFIX.len()..header_len - 1], name.as_bytes());
    assert_eq!(data[header_len - 1], b':');
    assert!(!name.is_empty() && !name.contains(':'));

    // The chain's prefix parser (used to name values of providers that are
    // not configured) agrees whenever the name fits in its window.
    match parse_envelope_prefix(data) {
        Some(p) => {
            assert_eq!(p.kind, Some(ProviderKind::KmsV2));
            assert_eq!(p.name, name);
            assert_eq!(p.len, header_len);
        }
        None => assert!(name.len() > 400, "prefix of {name:?} not recognised"),
    }

    // The reference encoder writes the same object; it parses back equal.
    let o = &env.object;
    let reencoded = EncryptedObject {
        encrypted_data: o.encrypted_data.to_vec(),
        key_id: o.key_id.to_owned(),
        encrypted_dek_source: o.encrypted_dek_source.to_vec(),
        annotations: o
            .annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        encrypted_dek_source_type: o.dek_source_type.wire_value(),
    }
    .encode_to_vec();
    let stored = [&data[..header_len], &reencoded].concat();
    let again = parse_envelope(&stored).expect("the re-encoded object parses");
    assert_eq!(&again, &env);

    // The provider itself (no plugin: a fixed seed) inspects the same facts,
    // alone and through a chain.
    let t = KmsV2Transformer::from_seed_for_bench(name, KEY_ID, &[7; 60], Wiped::new(vec![1; 32]))
        .expect("a parsed provider name is a valid one");
    assert!(t.matches(data));
    let info = t
        .inspect(data, "/registry/secrets/fuzz/x")
        .expect("inspect");
    assert_eq!(info.provider_kind, ProviderKind::KmsV2);
    assert_eq!(info.provider_name, name);
    assert_eq!(info.key_id.as_deref(), Some(o.key_id));
    assert_eq!(
        info.dek_source_type.as_deref(),
        Some(o.dek_source_type.as_str())
    );
    assert_eq!(info.stored_len, data.len());
    let annotations: BTreeMap<&str, &[u8]> = info
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(annotations, o.annotations);
    assert_eq!(
        t.is_current(data),
        o.key_id == KEY_ID && o.dek_source_type == DekSourceType::HkdfSha256XnonceAesGcmSeed
    );
    // Opening may fail (wrong seed, no plugin), but never panics.
    let _ = t.open(data, "/registry/secrets/fuzz/x");

    let chain = TransformerChain::new(vec![std::sync::Arc::new(t)]).expect("chain");
    assert_eq!(
        chain
            .inspect(data, "/registry/secrets/fuzz/x")
            .expect("chain inspect"),
        info
    );
    assert_eq!(
        chain
            .is_stale(data, "/registry/secrets/fuzz/x")
            .expect("is_stale"),
        !(o.key_id == KEY_ID && o.dek_source_type == DekSourceType::HkdfSha256XnonceAesGcmSeed)
    );
});
