//! Untrusted stored bytes on stable: the entry points of the cargo-fuzz
//! targets `kms_envelope` and `stored_value` (see `fuzz/`), driven by
//! proptest so that every `cargo test` run exercises them.
//!
//! - [`parse_envelope`] on garbage, and on mutated well-formed envelopes:
//!   never panics, and what it accepts reads the same everywhere (parsed
//!   again, by the chain's prefix parser, re-encoded by prost, inspected by
//!   the KMS v2 provider and a chain).
//! - A [`TransformerChain`] of kms v2 (fixed seed, no plugin), aesgcm,
//!   aescbc, secretbox and identity: `open`, `inspect` and `is_stale` on
//!   garbage behind every provider's prefix, and on mutations of values that
//!   open (our own seals and the upstream vectors): never panic, and agree.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use kms_proto::envelope::EncryptedObject;
use proptest::prelude::*;
use prost::Message;
use secret_store::encryption_config::{EncryptionConfiguration, KmsProviderConfig};
use secret_store::transform::chain::{TransformerChain, parse_envelope_prefix};
use secret_store::transform::kmsv2::{DekSourceType, KmsV2Transformer, parse_envelope};
use secret_store::transform::{ProviderKind, TransformError, Transformer};
use secret_store::wipe::Wiped;

const KMS_PREFIX: &[u8] = b"k8s:enc:kms:v2:";
const KEY_ID: &str = "garbage-kek";
const ETCD_KEY: &str = "/registry/secrets/default/api-token";

/// A KMS v2 provider with a fixed seed and no plugin.
fn kms(name: &str) -> KmsV2Transformer {
    KmsV2Transformer::from_seed_for_bench(name, KEY_ID, &[7; 60], Wiped::new(vec![1; 32]))
        .expect("bench kms provider")
}

/// What the `kms_envelope` fuzz target checks of every accepted envelope.
fn check_envelope(data: &[u8]) -> Result<(), TestCaseError> {
    let Ok(env) = parse_envelope(data) else {
        return Ok(());
    };
    let again = parse_envelope(data);
    prop_assert_eq!(again.as_ref(), Ok(&env));

    let name = env.provider_name;
    let header_len = KMS_PREFIX.len() + name.len() + 1;
    prop_assert!(data.starts_with(KMS_PREFIX));
    prop_assert_eq!(&data[KMS_PREFIX.len()..header_len - 1], name.as_bytes());
    prop_assert_eq!(data[header_len - 1], b':');
    prop_assert!(!name.is_empty() && !name.contains(':'));

    match parse_envelope_prefix(data) {
        Some(p) => {
            prop_assert_eq!(p.kind, Some(ProviderKind::KmsV2));
            prop_assert_eq!(p.name.as_str(), name);
            prop_assert_eq!(p.len, header_len);
        }
        None => prop_assert!(name.len() > 400, "prefix of {:?} not recognised", name),
    }

    let o = &env.object;
    let reencoded = EncryptedObject {
        encrypted_data: o.encrypted_data.to_vec(),
        key_id: o.key_id.to_owned(),
        encrypted_dek_source: o.encrypted_dek_source.to_vec(),
        annotations: o
            .annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
        encrypted_dek_source_type: o.dek_source_type.wire_value(),
    }
    .encode_to_vec();
    let stored = [&data[..header_len], &reencoded].concat();
    let reparsed = parse_envelope(&stored);
    prop_assert_eq!(reparsed.as_ref(), Ok(&env));

    let t = kms(name);
    prop_assert!(t.matches(data));
    let info = t
        .inspect(data, ETCD_KEY)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(info.provider_kind, ProviderKind::KmsV2);
    prop_assert_eq!(info.provider_name.as_str(), name);
    prop_assert_eq!(info.key_id.as_deref(), Some(o.key_id));
    prop_assert_eq!(
        info.dek_source_type.as_deref(),
        Some(o.dek_source_type.as_str())
    );
    prop_assert_eq!(info.stored_len, data.len());
    let annotations: BTreeMap<&str, &[u8]> = info
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    prop_assert_eq!(&annotations, &o.annotations);
    let current =
        o.key_id == KEY_ID && o.dek_source_type == DekSourceType::HkdfSha256XnonceAesGcmSeed;
    prop_assert_eq!(t.is_current(data), current);
    let _ = t.open(data, ETCD_KEY);

    let chain = TransformerChain::new(vec![Arc::new(t)]).expect("chain");
    prop_assert_eq!(chain.inspect(data, ETCD_KEY).ok(), Some(info));
    prop_assert_eq!(chain.is_stale(data, ETCD_KEY).ok(), Some(!current));
    Ok(())
}

/// A well-formed envelope of provider `name` (prost's encoding).
fn envelope(name: &str, o: &EncryptedObject) -> Vec<u8> {
    [KMS_PREFIX, name.as_bytes(), b":", &o.encode_to_vec()].concat()
}

fn object() -> impl Strategy<Value = EncryptedObject> {
    (
        proptest::collection::vec(any::<u8>(), 0..80),
        prop_oneof![Just(KEY_ID.to_owned()), "[ -~]{0,12}"],
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::btree_map(
            "[a-z]{1,5}\\.[a-z]{1,5}",
            proptest::collection::vec(any::<u8>(), 0..8),
            0..3,
        ),
        prop_oneof![Just(0), Just(1), any::<i32>()],
    )
        .prop_map(
            |(data, key_id, source, annotations, source_type)| EncryptedObject {
                encrypted_data: data,
                key_id,
                encrypted_dek_source: source,
                annotations,
                encrypted_dek_source_type: source_type,
            },
        )
}

/// kms v2 `p` (writes; a fixed seed, no plugin), then the keys of the
/// upstream vectors, as the `stored_value` fuzz target has them: aesgcm
/// `key1` `gcm-2024` `gcm-2023`, aescbc `cbc-key-1` `cbc-key-2`, secretbox
/// `sb-key-2` `sb-key-1`, identity.
const CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - kms:
      apiVersion: v2
      name: p
      endpoint: unix:///nonexistent/kms.sock
  - aesgcm:
      keys:
      - name: key1
        secret: Q+yhvNRa4jPp/1hjT5yYv9r3NHrdsznnIFgDjBiI1EA=
      - name: gcm-2024
        secret: qRGwRx4KK0MkLWtofcOcpQ==
      - name: gcm-2023
        secret: YFzybl98A5gvrMgK5kkXm63sAyZ73JSdrF4CgIADk40=
  - aescbc:
      keys:
      - name: cbc-key-1
        secret: LY8mrCBEwRna5qhS7F7Cm+Chw3gYxQqfT8XPmp72ps0=
      - name: cbc-key-2
        secret: uiTOdiVLC5yttc/UbGPe0gDHP2CWkw9e
  - secretbox:
      keys:
      - name: sb-key-2
        secret: NFNIJAxflwY41iUZZHvjTWJ3S7Fyo6cxTazJM1PWIzY=
      - name: sb-key-1
        secret: ViJzOs0J2x8Caoi8IvoXRxCAwhijnJQ6jeSKI3e7dqw=
  - identity: {}
";

/// How many transformers `chain()` has, and how many of the first are
/// AEADs binding the etcd key (kms, aesgcm).
const TRANSFORMERS: usize = 9;
const AEADS: usize = 4;

fn chain() -> TransformerChain {
    let cfg = EncryptionConfiguration::parse(CONFIG).expect("config");
    let chain = TransformerChain::from_config(&cfg, &mut |k: &KmsProviderConfig| {
        Ok(Arc::new(kms(&k.name)) as Arc<dyn Transformer>)
    })
    .expect("chain");
    assert_eq!(chain.transformers().len(), TRANSFORMERS);
    chain
}

/// The prefixes of `chain()`, then some nobody owns, then none.
const PREFIXES: [&[u8]; 12] = [
    b"k8s:enc:kms:v2:p:",
    b"k8s:enc:aesgcm:v1:key1:",
    b"k8s:enc:aesgcm:v1:gcm-2024:",
    b"k8s:enc:aesgcm:v1:gcm-2023:",
    b"k8s:enc:aescbc:v1:cbc-key-1:",
    b"k8s:enc:aescbc:v1:cbc-key-2:",
    b"k8s:enc:secretbox:v1:sb-key-2:",
    b"k8s:enc:secretbox:v1:sb-key-1:",
    b"k8s:enc:kms:v2:other:",
    b"k8s:enc:kms:v1:old:",
    b"k8s:enc:",
    b"",
];

/// What the `stored_value` fuzz target checks: nothing panics, and a value
/// that opens can be inspected and is stale exactly when `is_stale` says so
/// (no two transformers of `chain()` share a prefix).
fn check_chain(chain: &TransformerChain, data: &[u8], etcd_key: &str) -> Result<(), TestCaseError> {
    let opened = chain.open(data, etcd_key);
    let inspected = chain.inspect(data, etcd_key);
    let stale = chain.is_stale(data, etcd_key);
    if let Ok(o) = &opened {
        prop_assert_eq!(stale.as_ref().ok(), Some(&o.stale));
        let info = inspected.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(info.stored_len, data.len());
    }
    if let Err(e) = &opened {
        // Displaying the error is part of every failed read.
        let _ = e.to_string();
    }
    Ok(())
}

/// Seals `plaintext` with the transformer at `index` of `chain`.
fn seal_with(chain: &TransformerChain, index: usize, plaintext: &[u8]) -> Vec<u8> {
    chain.transformers()[index]
        .seal(plaintext, ETCD_KEY)
        .expect("seal")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelope_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400), with_prefix in any::<bool>()) {
        let data = if with_prefix {
            [b"k8s:enc:kms:v2:p:".as_slice(), &bytes].concat()
        } else {
            bytes
        };
        check_envelope(&data)?;
    }

    #[test]
    fn envelope_mutations(
        o in object(),
        name in prop_oneof![Just("p".to_owned()), "[ -~]{0,8}"],
        pos in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let stored = envelope(&name, &o);
        check_envelope(&stored)?;
        let mut mutated = stored.clone();
        let i = pos % mutated.len();
        mutated[i] = byte;
        check_envelope(&mutated)?;
        check_envelope(&stored[..cut % (stored.len() + 1)])?;
    }

    #[test]
    fn chain_garbage(which in 0..PREFIXES.len(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let chain = chain();
        let stored = [PREFIXES[which], &body].concat();
        check_chain(&chain, &stored, ETCD_KEY)?;
        check_chain(&chain, &body, ETCD_KEY)?;
    }

    #[test]
    fn chain_mutations(
        index in 0..TRANSFORMERS,
        plaintext in proptest::collection::vec(any::<u8>(), 0..100),
        pos in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let chain = chain().with_plaintext_allowed(true);
        let sealed = seal_with(&chain, index, &plaintext);
        let opened = chain.open(&sealed, ETCD_KEY).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&opened.plaintext[..], &plaintext[..]);
        prop_assert_eq!(opened.stale, index != 0);
        check_chain(&chain, &sealed, ETCD_KEY)?;
        // Under another etcd key: the AEADs (kms, aesgcm) refuse it.
        let other = chain.open(&sealed, "/registry/secrets/default/other");
        if index < AEADS {
            prop_assert!(
                matches!(other, Err(TransformError::DecryptionFailed { .. })),
                "{:?}",
                other
            );
        }
        let mut mutated = sealed.clone();
        if !mutated.is_empty() {
            let i = pos % mutated.len();
            mutated[i] = byte;
        }
        check_chain(&chain, &mutated, ETCD_KEY)?;
        check_chain(&chain, &sealed[..cut % (sealed.len() + 1)], ETCD_KEY)?;
    }
}

/// The upstream vectors' stored values, each under its own etcd key, and
/// their truncations: never a panic, and the whole local values open.
#[test]
fn upstream_vectors_and_their_truncations() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/kube-apiserver-at-rest.json"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("vectors file")).unwrap();
    let chain = chain();
    let mut runner = proptest::test_runner::TestRunner::default();
    for v in doc["vectors"].as_array().unwrap() {
        let stored = hex::decode(v["stored_hex"].as_str().unwrap()).unwrap();
        let key = v["etcd_key"].as_str().unwrap();
        runner
            .run(&(0..=stored.len()), |cut| {
                check_chain(&chain, &stored[..cut], key)?;
                check_envelope(&stored[..cut])
            })
            .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        // The local values open whole (kms ones belong to another provider).
        if v["provider_kind"] != "kms" {
            let opened = chain
                .open(&stored, key)
                .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
            let plaintext = hex::decode(v["plaintext_hex"].as_str().unwrap()).unwrap();
            assert_eq!(&opened.plaintext[..], &plaintext[..], "{}", v["id"]);
        }
    }
}
