//! The known-answer vectors (tests/vectors/kube-apiserver-at-rest.json)
//! through the binary: `secret-store --encryption-config CFG raw decrypt`
//! must print exactly the recorded plaintext for every value kube-apiserver
//! wrote, say on stderr which provider opened it and whether it is stale,
//! and fail (naming the key) under the wrong etcd key wherever the value is
//! bound to it. KMS values go through the in-process test plugin, which
//! wraps as the vectors' plugin did, on a socket in a temporary directory.
//!
//! Garbage (random bytes, truncated kms values, a kms prefix before a
//! broken protobuf) must fail with a clear message, never a panic.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod kms_test_plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kms_test_plugin::{Behaviour, TestPlugin};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_secret-store");

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/kube-apiserver-at-rest.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("vectors file")).expect("vectors JSON")
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no string field {field}", v["id"]))
}

fn unhex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(s(v, field)).unwrap_or_else(|e| panic!("{}: {field}: {e}", v["id"]))
}

/// The vectors' plugins, running here, by the endpoint the vectors name.
struct Plugins {
    running: BTreeMap<String, TestPlugin>,
}

impl Plugins {
    fn start(doc: &Value) -> Self {
        let mut running = BTreeMap::new();
        for p in doc["plugins"].as_array().expect("plugins[]") {
            let kek: [u8; 32] = unhex(p, "kek_hex").try_into().expect("32-byte KEK");
            let mut behaviour = Behaviour::new(s(p, "key_id"), kek);
            if p["annotations"].as_bool() == Some(true) {
                // The annotations that plugin added (Decrypt does not need
                // them, but Encrypt answers as it did).
                for v in doc["vectors"].as_array().unwrap() {
                    if let Some(ann) = v["kms"]["annotations_hex"].as_object() {
                        for (k, x) in ann {
                            behaviour
                                .annotations
                                .insert(k.clone(), hex::decode(x.as_str().unwrap()).unwrap());
                        }
                    }
                }
            }
            running.insert(s(p, "endpoint").to_owned(), TestPlugin::start(behaviour));
        }
        Plugins { running }
    }

    /// `yaml` with every vector endpoint pointed at the running plugin.
    fn rewrite(&self, yaml: &str) -> String {
        let mut out = yaml.to_owned();
        for (endpoint, plugin) in &self.running {
            out = out.replace(
                &format!("endpoint: {endpoint}\n"),
                &format!("endpoint: {}\n", plugin.endpoint()),
            );
        }
        assert!(
            !out.contains("/var/run/kms-vectors/"),
            "an endpoint was not rewritten:\n{out}"
        );
        out
    }
}

/// A temporary directory for configs and values.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// `secret-store --encryption-config CFG raw decrypt --etcd-key KEY --in FILE`.
fn decrypt(cfg: &Path, etcd_key: &str, input: &Path) -> Output {
    Command::new(BIN)
        .env_remove("SECRET_STORE_ENCRYPTION_CONFIG")
        .env_remove("SECRET_STORE_DB")
        .env("RUST_BACKTRACE", "0")
        .arg("--encryption-config")
        .arg(cfg)
        .args(["raw", "decrypt", "--etcd-key", etcd_key, "--in"])
        .arg(input)
        .output()
        .expect("run secret-store")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: non-zero, an `error:` line, no panic.
fn assert_clean_failure(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: succeeded; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    assert!(err.contains("error: "), "{what}: no error line: {err}");
    assert!(o.stdout.is_empty(), "{what}: printed to stdout on failure");
    err
}

/// The provider kind as `raw decrypt` names it.
fn kind_label(v: &Value) -> &'static str {
    match s(v, "provider_kind") {
        "kms" => "kms-v2",
        "aesgcm" => "aesgcm",
        "aescbc" => "aescbc",
        "secretbox" => "secretbox",
        "identity" => "identity",
        other => panic!("unknown provider kind {other}"),
    }
}

#[test]
fn every_vector_decrypts_through_the_binary() {
    let doc = vectors();
    let plugins = Plugins::start(&doc);
    let scratch = Scratch::new();
    let all = doc["vectors"].as_array().expect("vectors[]");
    assert_eq!(all.len(), 12, "the README lists 12 vectors");
    for v in all {
        let id = s(v, "id");
        let cfg = scratch.write(
            &format!("{id}.yaml"),
            plugins
                .rewrite(s(v, "read_encryption_config_yaml"))
                .as_bytes(),
        );
        let stored = scratch.write(&format!("{id}.bin"), &unhex(v, "stored_hex"));
        let plaintext = unhex(v, "plaintext_hex");
        let etcd_key = s(v, "etcd_key");

        let o = decrypt(&cfg, etcd_key, &stored);
        let err = stderr(&o);
        assert!(o.status.success(), "{id}: {err}");
        assert!(o.stdout == plaintext, "{id}: stdout is not the plaintext");
        assert!(!err.contains("panicked"), "{id}: {err}");

        // Which provider opened it, and whether it is stale.
        let note = err
            .lines()
            .find(|l| l.starts_with("decrypted with "))
            .unwrap_or_else(|| panic!("{id}: no provider note on stderr: {err}"));
        assert!(
            note.starts_with(&format!("decrypted with {}", kind_label(v))),
            "{id}: {note}"
        );
        let name = s(v, "provider_name");
        if !name.is_empty() {
            assert!(note.contains(&format!("{name:?}")), "{id}: {note}");
        }
        if s(v, "provider_kind") == "kms" {
            let key_id = s(&v["kms"], "key_id");
            assert!(note.contains(&format!("key_id {key_id}")), "{id}: {note}");
        }
        let stale = v["expect"]["read_stale"].as_bool().expect("read_stale");
        assert_eq!(note.contains("stale"), stale, "{id}: {note}");
        assert_eq!(err.contains("stale"), stale, "{id}: {err}");

        // The same value under another etcd key.
        let wrong_key = s(&v["expect"], "wrong_etcd_key");
        let must_fail = v["expect"]["wrong_etcd_key_read_fails"]
            .as_bool()
            .expect("wrong_etcd_key_read_fails");
        let o = decrypt(&cfg, wrong_key, &stored);
        if must_fail {
            let err = assert_clean_failure(&o, &format!("{id} under {wrong_key}"));
            assert!(
                err.contains(wrong_key),
                "{id}: the error does not name {wrong_key}: {err}"
            );
        } else {
            assert!(o.status.success(), "{id} under {wrong_key}: {}", stderr(&o));
            assert!(
                o.stdout == plaintext,
                "{id} under {wrong_key}: wrong plaintext"
            );
        }
    }
}

/// A small deterministic generator (xorshift64*), so that a failure repeats.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn garbage_fails_cleanly() {
    let doc = vectors();
    let plugins = Plugins::start(&doc);
    let scratch = Scratch::new();
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "kmsv2-seed-5b")
        .expect("kmsv2-seed-5b");
    let yaml = plugins.rewrite(s(v, "read_encryption_config_yaml"));
    let with_identity = scratch.write("kms-identity.yaml", yaml.as_bytes());
    // Without identity, so that bytes without a prefix are not plaintext.
    let yaml_no_identity = yaml.replace("  - identity: {}\n", "");
    assert_ne!(yaml, yaml_no_identity);
    let kms_only = scratch.write("kms.yaml", yaml_no_identity.as_bytes());
    let stored = unhex(v, "stored_hex");
    let prefix = s(v, "stored_prefix").as_bytes();
    let etcd_key = s(v, "etcd_key");

    let mut cases: Vec<(String, Vec<u8>, &Path)> = Vec::new();
    for (i, len) in [0usize, 1, 16, 100, 4096].into_iter().enumerate() {
        cases.push((
            format!("{len} random bytes"),
            random_bytes(i as u64 + 1, len),
            &kms_only,
        ));
    }
    for cut in [
        prefix.len() - 3,
        prefix.len(),
        prefix.len() + 1,
        prefix.len() + 5,
        stored.len() / 2,
        stored.len() - 2,
        stored.len() - 1,
    ] {
        cases.push((
            format!("the kms value cut to {cut} of {} bytes", stored.len()),
            stored[..cut].to_vec(),
            &with_identity,
        ));
    }
    for (what, body) in [
        ("a varint longer than 10 bytes", vec![0xff; 11]),
        (
            "a field claiming more bytes than follow",
            vec![0x0a, 0xff, 0x01, 0x00],
        ),
        ("an unknown wire type", vec![0x0f, 0x00]),
        ("an end of group without a start", vec![0x54]),
        ("random bytes", random_bytes(99, 200)),
    ] {
        cases.push((
            format!("the kms prefix before {what}"),
            [prefix, &body].concat(),
            &with_identity,
        ));
    }
    // A well-formed value with one byte of the DEK source flipped: the
    // plugin's Decrypt refuses it.
    let mut flipped = stored.clone();
    let i = flipped.len() - 20;
    flipped[i] ^= 0x01;
    cases.push(("a flipped byte".into(), flipped, &with_identity));

    for (i, (what, bytes, cfg)) in cases.iter().enumerate() {
        let input = scratch.write(&format!("garbage-{i}.bin"), bytes);
        let o = decrypt(cfg, etcd_key, &input);
        let err = assert_clean_failure(&o, what);
        assert!(
            err.contains(etcd_key),
            "{what}: the error does not name the etcd key: {err}"
        );
    }

    // With identity configured, bytes without a `k8s:enc:` prefix are a
    // plaintext value, as the apiserver reads them (stale: identity is not
    // the first provider).
    let plain = random_bytes(7, 64);
    assert!(!plain.starts_with(b"k8s:enc:"));
    let input = scratch.write("plain.bin", &plain);
    let o = decrypt(&with_identity, etcd_key, &input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, plain);
    assert!(
        stderr(&o).contains("decrypted with identity"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("stale"), "{}", stderr(&o));
}
