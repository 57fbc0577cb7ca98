//! The non-KMS known-answer vectors written by kube-apiserver
//! (`tests/vectors/kube-apiserver-at-rest.json`): aesgcm, aescbc, secretbox
//! and identity values must open to exactly the recorded plaintext through
//! a chain built from the recorded EncryptionConfiguration, with the
//! recorded staleness and etcd-key binding; what we seal must have the same
//! layout and open again.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use secret_store::encryption_config::EncryptionConfiguration;
use secret_store::transform::chain::TransformerChain;
use secret_store::transform::{ProviderKind, TransformError};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/kube-apiserver-at-rest.json"
);

const LOCAL_KINDS: [&str; 4] = ["aesgcm", "aescbc", "secretbox", "identity"];

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(VECTORS).expect("read the vectors file");
    let all: Value = serde_json::from_str(&text).expect("parse the vectors file");
    assert_eq!(all["format"], "k8s-encryption-at-rest-vectors/v1");
    let local: Vec<Value> = all["vectors"]
        .as_array()
        .expect("vectors[]")
        .iter()
        .filter(|v| LOCAL_KINDS.contains(&v["provider_kind"].as_str().unwrap()))
        .cloned()
        .collect();
    // aesgcm ×2, aescbc ×2, secretbox ×2, identity ×1 (README).
    assert_eq!(local.len(), 7, "unexpected number of local vectors");
    local
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no string field {field}", v["id"]))
}

fn hex_of(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(s(v, field)).unwrap_or_else(|e| panic!("{}: {field}: {e}", v["id"]))
}

fn chain_for(v: &Value, field: &str) -> TransformerChain {
    let cfg = EncryptionConfiguration::parse(s(v, field))
        .unwrap_or_else(|e| panic!("{}: {field}: {e}", v["id"]));
    TransformerChain::from_config_without_kms(&cfg)
        .unwrap_or_else(|e| panic!("{}: chain: {e}", v["id"]))
        // The identity vector's config writes plaintext, as the apiserver did.
        .with_plaintext_allowed(true)
}

fn kind_of(v: &Value) -> ProviderKind {
    match s(v, "provider_kind") {
        "aesgcm" => ProviderKind::AesGcm,
        "aescbc" => ProviderKind::AesCbc,
        "secretbox" => ProviderKind::Secretbox,
        "identity" => ProviderKind::Identity,
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn upstream_values_open_to_the_recorded_plaintext() {
    for v in vectors() {
        let id = s(&v, "id");
        let chain = chain_for(&v, "read_encryption_config_yaml");
        let stored = hex_of(&v, "stored_hex");
        let plaintext = hex_of(&v, "plaintext_hex");
        let etcd_key = s(&v, "etcd_key");
        assert_eq!(
            stored.len() as u64,
            v["stored_len"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            plaintext.len() as u64,
            v["plaintext_len"].as_u64().unwrap(),
            "{id}"
        );
        assert!(
            stored.starts_with(s(&v, "stored_prefix").as_bytes()),
            "{id}"
        );
        assert_eq!(hex_of(&v, "aad_hex"), etcd_key.as_bytes(), "{id}");

        let opened = chain
            .open(&stored, etcd_key)
            .unwrap_or_else(|e| panic!("{id}: open: {e}"));
        assert_eq!(&opened.plaintext[..], &plaintext[..], "{id}: plaintext");
        assert_eq!(
            opened.stale,
            v["expect"]["read_stale"].as_bool().unwrap(),
            "{id}: stale"
        );

        // Read by the expected provider (index in the read config).
        let index = v["read_provider_index"].as_u64().unwrap() as usize;
        assert_eq!(chain.transformers()[index].kind(), kind_of(&v), "{id}");
        let info = chain.inspect(&stored, etcd_key).unwrap();
        assert_eq!(info.provider_kind, kind_of(&v), "{id}");
        assert_eq!(info.provider_name, s(&v, "provider_name"), "{id}");
        assert_eq!(info.stored_len, stored.len(), "{id}");

        // The etcd-key binding.
        let wrong_key = s(&v["expect"], "wrong_etcd_key");
        let must_fail = v["expect"]["wrong_etcd_key_read_fails"].as_bool().unwrap();
        assert_eq!(must_fail, v["aad_bound"].as_bool().unwrap(), "{id}");
        match chain.open(&stored, wrong_key) {
            Ok(o) => {
                assert!(!must_fail, "{id}: opened under {wrong_key}");
                assert_eq!(&o.plaintext[..], &plaintext[..], "{id}");
            }
            Err(e) => {
                assert!(must_fail, "{id}: {e}");
                assert!(
                    matches!(e, TransformError::DecryptionFailed { .. }),
                    "{id}: {e:?}"
                );
            }
        }
    }
}

/// Where the README puts nonce, IV and tag.
#[test]
fn upstream_layouts_are_as_documented() {
    for v in vectors() {
        let id = s(&v, "id");
        let stored = hex_of(&v, "stored_hex");
        let body = &stored[s(&v, "stored_prefix").len()..];
        let layout = &v["layout"];
        match s(&v, "provider_kind") {
            "aesgcm" => {
                let nonce = hex::decode(s(layout, "nonce_hex")).unwrap();
                let tag = hex::decode(s(layout, "tag_hex")).unwrap();
                assert_eq!(nonce.len(), 12, "{id}");
                assert_eq!(&body[..12], &nonce[..], "{id}: nonce first");
                assert_eq!(&body[body.len() - 16..], &tag[..], "{id}: tag last");
                assert_eq!(
                    body.len() - 28,
                    layout["ciphertext_len"].as_u64().unwrap() as usize,
                    "{id}"
                );
            }
            "aescbc" => {
                let iv = hex::decode(s(layout, "iv_hex")).unwrap();
                assert_eq!(&body[..16], &iv[..], "{id}: IV first");
                let ct_len = layout["ciphertext_len"].as_u64().unwrap() as usize;
                assert_eq!(body.len() - 16, ct_len, "{id}");
                let pad = layout["padding_len"].as_u64().unwrap() as usize;
                assert_eq!(
                    ct_len,
                    v["plaintext_len"].as_u64().unwrap() as usize + pad,
                    "{id}"
                );
            }
            "secretbox" => {
                let nonce = hex::decode(s(layout, "nonce_hex")).unwrap();
                let tag = hex::decode(s(layout, "tag_hex")).unwrap();
                assert_eq!(nonce.len(), 24, "{id}");
                assert_eq!(&body[..24], &nonce[..], "{id}: nonce first");
                assert_eq!(&body[24..40], &tag[..], "{id}: tag before the ciphertext");
                assert_eq!(
                    body.len() - 40,
                    layout["ciphertext_len"].as_u64().unwrap() as usize,
                    "{id}"
                );
            }
            "identity" => assert_eq!(stored, hex_of(&v, "plaintext_hex"), "{id}"),
            other => panic!("{other}"),
        }
    }
}

/// What we seal with the vector's write config has the upstream layout,
/// opens again, and (aesgcm) is bound to its etcd key.
#[test]
fn our_values_round_trip_with_the_upstream_layout() {
    for v in vectors() {
        let id = s(&v, "id");
        let chain = chain_for(&v, "encryption_config_yaml");
        let plaintext = hex_of(&v, "plaintext_hex");
        let etcd_key = s(&v, "etcd_key");
        let sealed = chain.seal(&plaintext, etcd_key).unwrap();
        let prefix = s(&v, "stored_prefix").as_bytes();
        assert!(sealed.starts_with(prefix), "{id}: prefix");
        let upstream_len = v["stored_len"].as_u64().unwrap() as usize;
        // Same length as upstream's value: nonce/IV/tag sizes and padding match.
        assert_eq!(sealed.len(), upstream_len, "{id}: length");
        let opened = chain.open(&sealed, etcd_key).unwrap();
        assert_eq!(&opened.plaintext[..], &plaintext[..], "{id}");
        assert!(!opened.stale, "{id}");
        // Both our value and upstream's open through the read config.
        let read = chain_for(&v, "read_encryption_config_yaml");
        assert_eq!(
            &read.open(&sealed, etcd_key).unwrap().plaintext[..],
            &plaintext[..]
        );
        if kind_of(&v) != ProviderKind::Identity {
            // Random nonce / IV: two seals differ, and differ from upstream's.
            assert_ne!(sealed, chain.seal(&plaintext, etcd_key).unwrap(), "{id}");
            assert_ne!(sealed, hex_of(&v, "stored_hex"), "{id}");
        }
        let wrong_key = s(&v["expect"], "wrong_etcd_key");
        let must_fail = v["expect"]["wrong_etcd_key_read_fails"].as_bool().unwrap();
        assert_eq!(chain.open(&sealed, wrong_key).is_err(), must_fail, "{id}");
    }
}

/// Flipping any single byte of an aesgcm or secretbox value makes it fail
/// (or, inside `k8s:enc:`, turns it into an unencrypted value for identity).
#[test]
fn any_flipped_byte_of_an_authenticated_value_fails() {
    for v in vectors() {
        if !matches!(s(&v, "provider_kind"), "aesgcm" | "secretbox") {
            continue;
        }
        let id = s(&v, "id");
        let chain = chain_for(&v, "read_encryption_config_yaml");
        let etcd_key = s(&v, "etcd_key");
        for stored in [
            hex_of(&v, "stored_hex"),
            chain.seal(&hex_of(&v, "plaintext_hex"), etcd_key).unwrap(),
        ] {
            for i in 0..stored.len() {
                let mut bad = stored.clone();
                bad[i] ^= 0x04;
                match chain.open(&bad, etcd_key) {
                    Err(_) => {}
                    // A flip inside `k8s:enc:` makes it a plaintext value,
                    // which a later identity provider hands back as it is
                    // (upstream behaviour): never the decrypted plaintext.
                    Ok(o) => {
                        assert!(i < 8, "{id}: flip at {i} still opened");
                        assert_eq!(&o.plaintext[..], &bad[..], "{id}");
                        assert!(o.stale, "{id}");
                    }
                }
            }
        }
    }
}

/// With two keys, a value sealed with the second is read, and stale.
#[test]
fn a_value_sealed_with_the_second_key_is_stale() {
    for v in vectors() {
        let yaml = s(&v, "read_encryption_config_yaml");
        let cfg = EncryptionConfiguration::parse(yaml).unwrap();
        let providers = cfg.secrets_providers().unwrap();
        if providers[0].keys().len() < 2 {
            continue;
        }
        let id = s(&v, "id");
        let chain = chain_for(&v, "read_encryption_config_yaml");
        let etcd_key = s(&v, "etcd_key");
        let second = &chain.transformers()[1];
        assert_eq!(second.name(), providers[0].keys()[1].name(), "{id}");
        let sealed = second.seal(b"{\"kind\":\"Secret\"}", etcd_key).unwrap();
        let opened = chain.open(&sealed, etcd_key).unwrap();
        assert_eq!(&opened.plaintext[..], b"{\"kind\":\"Secret\"}");
        assert!(opened.stale, "{id}: read by the second key must be stale");
        // And the first key's values are not.
        let fresh = chain.seal(b"x", etcd_key).unwrap();
        assert!(!chain.open(&fresh, etcd_key).unwrap().stale, "{id}");
    }
}

/// A value written under one config is stale, not lost, after a rotation
/// that puts another provider first (upstream reads by prefix, in order).
#[test]
fn upstream_values_are_stale_after_a_rotation() {
    let rotated_first = "  - secretbox:\n      keys:\n      - name: rotated\n        secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
    for v in vectors() {
        let id = s(&v, "id");
        let read = s(&v, "read_encryption_config_yaml");
        let rotated = read.replacen(
            "  providers:\n",
            &format!("  providers:\n{rotated_first}"),
            1,
        );
        let cfg = EncryptionConfiguration::parse(&rotated).unwrap();
        let chain = TransformerChain::from_config_without_kms(&cfg).unwrap();
        let opened = chain
            .open(&hex_of(&v, "stored_hex"), s(&v, "etcd_key"))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            &opened.plaintext[..],
            &hex_of(&v, "plaintext_hex")[..],
            "{id}"
        );
        assert!(opened.stale, "{id}");
    }
}
