//! The KMS v2 provider against values written by the real kube-apiserver
//! (tests/vectors/kube-apiserver-at-rest.json), through an in-process plugin
//! that wraps as the vectors' plugin did; and our own seals checked for the
//! same layout.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod kms_test_plugin;

use std::collections::BTreeMap;
use std::time::Duration;

use kms_proto::envelope::EncryptedObject;
use kms_test_plugin::{Behaviour, TestPlugin, unwrap};
use prost::Message;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Prk};
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use secret_store::transform::{ProviderKind, TransformError, Transformer};
use serde_json::Value;

const KEY_ID: &str = "public-soft-kek-1";

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/kube-apiserver-at-rest.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("vectors file")).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn kek(doc: &Value) -> [u8; 32] {
    unhex(&doc["plugins"][0]["kek_hex"]).try_into().unwrap()
}

fn kms_vectors(doc: &Value) -> Vec<Value> {
    doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["provider_kind"] == "kms")
        .cloned()
        .collect()
}

/// The vectors' two plugins: plain, and one that adds annotations.
struct Plugins {
    plain: TestPlugin,
    annotated: TestPlugin,
}

fn plugins(doc: &Value) -> Plugins {
    let kek = kek(doc);
    let mut annotated = Behaviour::new(KEY_ID, kek);
    let v = kms_vectors(doc);
    let ann = v
        .iter()
        .find(|v| {
            v["kms"]["annotations_hex"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        })
        .unwrap();
    for (k, val) in ann["kms"]["annotations_hex"].as_object().unwrap() {
        annotated.annotations.insert(k.clone(), unhex(val));
    }
    Plugins {
        plain: TestPlugin::start(Behaviour::new(KEY_ID, kek)),
        annotated: TestPlugin::start(annotated),
    }
}

fn transformer_for(v: &Value, p: &Plugins) -> (KmsV2Transformer, &'static str) {
    let (plugin, which) = if v["kms"]["plugin_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("-ann.sock")
    {
        (&p.annotated, "annotated")
    } else {
        (&p.plain, "plain")
    };
    let name = v["provider_name"].as_str().unwrap();
    let t = KmsV2Transformer::new(
        &plugin.config(name, Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    (t, which)
}

#[test]
fn every_kms_vector_opens_to_its_plaintext() {
    let doc = vectors();
    let p = plugins(&doc);
    let vs = kms_vectors(&doc);
    assert_eq!(vs.len(), 5, "five kms vectors");
    for v in &vs {
        let id = v["id"].as_str().unwrap();
        let (t, which) = transformer_for(v, &p);
        let plugin = if which == "annotated" {
            &p.annotated
        } else {
            &p.plain
        };
        let stored = unhex(&v["stored_hex"]);
        let etcd_key = v["etcd_key"].as_str().unwrap();
        assert!(t.matches(&stored), "{id}");

        let opened = t
            .open(&stored, etcd_key)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            &opened.plaintext[..],
            &unhex(&v["plaintext_hex"])[..],
            "{id}"
        );
        assert_eq!(
            opened.stale,
            v["expect"]["read_stale"].as_bool().unwrap(),
            "{id}: stale"
        );

        // The plugin saw the stored key_id and annotations.
        let req = plugin.served.last_decrypt.lock().unwrap().clone().unwrap();
        assert_eq!(req.key_id, KEY_ID, "{id}");
        assert_eq!(
            req.ciphertext,
            unhex(&v["kms"]["encrypted_dek_source_hex"]),
            "{id}"
        );
        let want_ann: BTreeMap<String, Vec<u8>> = v["kms"]["annotations_hex"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), unhex(x)))
            .collect();
        assert_eq!(req.annotations, want_ann, "{id}");
        assert!(!req.uid.is_empty(), "{id}: uid");

        // Under the copy's key it fails, naming that key.
        let wrong = v["expect"]["wrong_etcd_key"].as_str().unwrap();
        assert!(v["expect"]["wrong_etcd_key_read_fails"].as_bool().unwrap());
        match t.open(&stored, wrong) {
            Err(TransformError::DecryptionFailed { etcd_key }) => {
                assert_eq!(etcd_key, wrong, "{id}")
            }
            other => panic!("{id}: expected DecryptionFailed, got {other:?}"),
        }

        // inspect reads the public facts without the plugin.
        let before = t.plugin_calls();
        let info = t.inspect(&stored, etcd_key).unwrap();
        assert_eq!(t.plugin_calls(), before);
        assert_eq!(info.provider_kind, ProviderKind::KmsV2);
        assert_eq!(info.provider_name, v["provider_name"].as_str().unwrap());
        assert_eq!(info.key_id.as_deref(), Some(KEY_ID));
        assert_eq!(
            info.dek_source_type.as_deref(),
            v["kms"]["encrypted_dek_source_type"].as_str()
        );
        assert_eq!(info.annotations, want_ann);
        assert_eq!(info.stored_len, v["stored_len"].as_u64().unwrap() as usize);
    }
}

#[test]
fn vectors_sharing_a_seed_cost_one_decrypt() {
    let doc = vectors();
    let p = plugins(&doc);
    let vs = kms_vectors(&doc);
    let shared: Vec<&Value> = vs
        .iter()
        .filter(|v| {
            v["provider_name"] == "public-kms" && v["kms"]["encrypted_dek_source_type_value"] == 1
        })
        .filter(|v| {
            v["kms"]["encrypted_dek_source_hex"] == vs[0]["kms"]["encrypted_dek_source_hex"]
        })
        .collect();
    assert!(shared.len() >= 2, "two vectors share one seed");
    let (t, _) = transformer_for(shared[0], &p);
    let before = t.plugin_calls().decrypt;
    for v in &shared {
        t.open(&unhex(&v["stored_hex"]), v["etcd_key"].as_str().unwrap())
            .unwrap();
    }
    assert_eq!(t.plugin_calls().decrypt - before, 1);
}

/// The top-level fields of a protobuf message, in order, with the byte
/// range each occupies (tag included).
fn fields(body: &[u8]) -> Vec<(u64, std::ops::Range<usize>)> {
    fn varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for i in 0.. {
            let x = b[*pos];
            *pos += 1;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let tag = varint(body, &mut pos);
        match tag & 7 {
            0 => {
                varint(body, &mut pos);
            }
            2 => {
                let n = varint(body, &mut pos) as usize;
                pos += n;
            }
            w => panic!("unexpected wire type {w}"),
        }
        out.push((tag >> 3, start..pos));
    }
    out
}

fn field_order(body: &[u8]) -> Vec<u64> {
    fields(body).into_iter().map(|(f, _)| f).collect()
}

/// Opens one of our values the way the apiserver would, from the spec
/// alone: unwrap the seed with the KEK, HKDF-Expand, AES-256-GCM.
fn open_independently(stored: &[u8], prefix: &[u8], kek: &[u8; 32], etcd_key: &str) -> Vec<u8> {
    let o = EncryptedObject::decode(&stored[prefix.len()..]).unwrap();
    let seed = unwrap(kek, &o.key_id, &o.encrypted_dek_source).unwrap();
    assert_eq!(seed.len(), 32);
    let (info, rest) = o.encrypted_data.split_at(32);
    let (nonce, ct) = rest.split_at(12);
    let prk = Prk::new_less_safe(HKDF_SHA256, &seed);
    let info = [info];
    let okm = prk.expand(&info, &AES_256_GCM).unwrap();
    let key = LessSafeKey::new(UnboundKey::from(okm));
    let mut buf = ct.to_vec();
    let pt = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce.try_into().unwrap()),
            Aad::from(etcd_key.as_bytes()),
            &mut buf,
        )
        .unwrap();
    pt.to_vec()
}

#[test]
fn our_seals_have_the_apiservers_layout() {
    let doc = vectors();
    let p = plugins(&doc);
    let kek = kek(&doc);
    for (plugin, name, want_order) in [
        (&p.plain, "public-kms", vec![1, 2, 3, 5]),
        (&p.annotated, "public-kms-ann", vec![1, 2, 3, 4, 5]),
    ] {
        let t = KmsV2Transformer::new(
            &plugin.config(name, Duration::from_secs(3)),
            KmsOptions::default(),
        )
        .unwrap();
        let calls = t.plugin_calls();
        assert_eq!(
            (calls.status, calls.encrypt, calls.decrypt),
            (1, 1, 0),
            "start: one Status, one Encrypt"
        );
        let prefix = format!("k8s:enc:kms:v2:{name}:");
        let key = "/registry/secrets/default/ours";
        let mut sources = Vec::new();
        for len in [0usize, 5, 1024, 100 * 1024] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let stored = t.seal(&pt, key).unwrap();
            assert!(stored.starts_with(prefix.as_bytes()));
            let body = &stored[prefix.len()..];
            assert_eq!(field_order(body), want_order, "{name}");
            let o = EncryptedObject::decode(body).unwrap();
            assert_eq!(o.encrypted_data.len(), 32 + 12 + len + 16);
            assert_eq!(o.key_id, KEY_ID);
            assert_eq!(o.encrypted_dek_source_type, 1);
            assert_eq!(o.annotations, plugin.behaviour.lock().unwrap().annotations);
            // Exactly what prost writes for the same object.
            assert_eq!(o.encode_to_vec(), body);
            assert_eq!(
                open_independently(&stored, prefix.as_bytes(), &kek, key),
                pt
            );
            let opened = t.open(&stored, key).unwrap();
            assert_eq!(&opened.plaintext[..], &pt[..]);
            assert!(!opened.stale);
            sources.push(o.encrypted_dek_source);
        }
        assert!(
            sources.windows(2).all(|w| w[0] == w[1]),
            "one seed per key_id"
        );
        assert_eq!(
            t.plugin_calls(),
            calls,
            "neither writes nor warm reads call the plugin"
        );
        assert_eq!(t.plugin_calls().encrypt, 1, "one seed for every write");
    }
}

/// Every single-bit flip fails: in the prefix or the protobuf framing
/// (malformed), the data (AEAD), the key_id or the DEK source (the plugin
/// refuses to unwrap). Annotations are bound only as far as the plugin binds
/// them in its Decrypt (upstream authenticates the etcd key alone); the
/// vectors' plugin does not, so a flipped annotation byte may still open,
/// but never to other plaintext.
#[test]
fn a_single_flipped_byte_anywhere_fails() {
    let doc = vectors();
    let p = plugins(&doc);
    for (plugin, name) in [(&p.plain, "public-kms"), (&p.annotated, "public-kms-ann")] {
        let t = KmsV2Transformer::new(
            &plugin.config(name, Duration::from_secs(3)),
            KmsOptions::default(),
        )
        .unwrap();
        let key = "/registry/secrets/default/flip";
        let pt = b"{\"kind\":\"Secret\"}";
        let stored = t.seal(pt, key).unwrap();
        let prefix_len = format!("k8s:enc:kms:v2:{name}:").len();
        let annotation_bytes: Vec<std::ops::Range<usize>> = fields(&stored[prefix_len..])
            .into_iter()
            .filter(|(f, _)| *f == 4)
            .map(|(_, r)| r.start + prefix_len..r.end + prefix_len)
            .collect();
        let mut opened_anyway = 0;
        for i in 0..stored.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = stored.clone();
                bad[i] ^= bit;
                if let Ok(o) = t.open(&bad, key) {
                    assert!(
                        annotation_bytes.iter().any(|r| r.contains(&i)),
                        "{name}: byte {i} ^ {bit:#x} still opens"
                    );
                    assert_eq!(&o.plaintext[..], pt);
                    opened_anyway += 1;
                }
            }
        }
        if annotation_bytes.is_empty() {
            assert_eq!(opened_anyway, 0);
        }
        // The intact value still opens, and every truncation fails.
        assert!(t.open(&stored, key).is_ok());
        for cut in 0..stored.len() {
            assert!(t.open(&stored[..cut], key).is_err(), "{name}: cut at {cut}");
        }
    }
}

#[test]
fn legacy_and_foreign_values_are_refused_by_the_wrong_provider() {
    let doc = vectors();
    let p = plugins(&doc);
    let t = KmsV2Transformer::new(
        &p.plain.config("public-kms", Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    let legacy = kms_vectors(&doc)
        .into_iter()
        .find(|v| v["provider_name"] == "public-kms-legacy")
        .unwrap();
    let stored = unhex(&legacy["stored_hex"]);
    assert!(!t.matches(&stored));
    assert!(matches!(
        t.open(&stored, legacy["etcd_key"].as_str().unwrap()),
        Err(TransformError::Malformed { .. })
    ));
}
