//! What a default kube-apiserver stores (tests/vectors/protobuf-public.json:
//! 10 Secrets, each as the upstream storage codec wrote it in both media
//! types and as kms v2 sealed it) and a real etcd 3.4 snapshot holding them
//! (tests/vectors/etcd-snapshot-public.db): every stored value decrypts
//! through a plugin that wraps as the vectors' plugin did, to exactly the
//! recorded plaintext, which decodes to the recorded object; the snapshot
//! verifies offline through the library and through the binary, and a
//! damaged one fails clearly.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod kms_test_plugin;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use kms_test_plugin::{Behaviour, TestPlugin};
use secret_store::secret::{Secret, StorageFormat};
use secret_store::storage::snapshot::{HashCheck, SnapshotEngine};
use secret_store::store::SecretStore;
use secret_store::transform::Transformer;
use secret_store::transform::chain::TransformerChain;
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_secret-store");

fn vector_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors")
        .join(name)
}

fn doc() -> Value {
    serde_json::from_slice(&std::fs::read(vector_path("protobuf-public.json")).unwrap()).unwrap()
}

fn unhex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap()).unwrap()
}

fn plugin(doc: &Value) -> TestPlugin {
    let p = &doc["plugins"][0];
    let kek: [u8; 32] = unhex(p, "kek_hex").try_into().unwrap();
    TestPlugin::start(Behaviour::new(p["key_id"].as_str().unwrap(), kek))
}

fn transformer(plugin: &TestPlugin, name: &str) -> Arc<KmsV2Transformer> {
    Arc::new(
        KmsV2Transformer::new(
            &plugin.config(name, Duration::from_secs(3)),
            KmsOptions::default(),
        )
        .unwrap(),
    )
}

#[test]
fn every_stored_value_decrypts_to_its_plaintext_and_object() {
    let doc = doc();
    let plugin = plugin(&doc);
    let records = doc["records"].as_array().unwrap();
    let t = transformer(&plugin, records[0]["provider_name"].as_str().unwrap());
    for r in records {
        let id = r["id"].as_str().unwrap();
        let key = r["etcd_key"].as_str().unwrap();
        for (stored, plain, format) in [
            (
                "stored_protobuf_hex",
                "plaintext_protobuf_hex",
                StorageFormat::Protobuf,
            ),
            ("stored_json_hex", "plaintext_json_hex", StorageFormat::Json),
        ] {
            let opened = t
                .open(&unhex(r, stored), key)
                .unwrap_or_else(|e| panic!("{id} {stored}: {e}"));
            assert_eq!(&opened.plaintext[..], &unhex(r, plain)[..], "{id} {stored}");
            assert!(!opened.stale, "{id}");
            assert_eq!(StorageFormat::detect(&opened.plaintext), Ok(format));
            let s = Secret::from_storage_bytes(&opened.plaintext).unwrap();
            let json: Value = serde_json::from_slice(&s.to_storage_json()).unwrap();
            assert_eq!(json, r["object"], "{id}");
            // Under another key it does not open.
            let wrong = r["expect"]["wrong_etcd_key"].as_str().unwrap();
            assert!(t.open(&unhex(r, stored), wrong).is_err(), "{id}");
        }
    }
}

#[test]
fn the_public_snapshot_verifies_through_the_library() {
    let doc = doc();
    let plugin = plugin(&doc);
    let name = doc["records"][0]["provider_name"].as_str().unwrap();
    let kms: Arc<dyn Transformer> = transformer(&plugin, name);
    let chain = Arc::new(TransformerChain::new(vec![kms]).unwrap());
    let engine =
        SnapshotEngine::open(&vector_path("etcd-snapshot-public.db"), HashCheck::Require).unwrap();
    assert_eq!(engine.info().keys, 18);
    let store = SecretStore::new(Arc::new(engine), chain);
    let options = secret_store::verify::VerifyOptions { per_key: true };
    let r = secret_store::verify::verify_with(&store, options, &()).unwrap();
    assert_eq!((r.checked, r.ok), (10, 10), "{:?}", r.failed);
    assert!(r.failed.is_empty());
    assert_eq!(r.formats.get("protobuf"), Some(&10));
    assert!(
        r.keys
            .iter()
            .all(|k| k.provider == format!("kms-v2:{name}"))
    );
    // Non-Secret keys (namespaces, configmaps) are not Secrets to check.
    assert!(
        r.keys
            .iter()
            .all(|k| k.key.starts_with("/registry/secrets/"))
    );
    // Every Secret reads as its record's object.
    for rec in doc["records"].as_array().unwrap() {
        let s = store
            .get(
                rec["namespace"].as_str().unwrap(),
                rec["name"].as_str().unwrap(),
            )
            .unwrap();
        let json: Value = serde_json::from_slice(&s.to_storage_json()).unwrap();
        assert_eq!(json, rec["object"]);
    }
}

fn config(dir: &Path, plugin: &TestPlugin, name: &str) -> PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms:\n      apiVersion: v2\n      name: {name}\n      endpoint: {}\n      timeout: 3s\n  - identity: {{}}\n",
            plugin.endpoint()
        ),
    )
    .unwrap();
    p
}

fn run(cfg: &Path, snapshot: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("SECRET_STORE_DB")
        .env_remove("SECRET_STORE_ETCD_ENDPOINTS")
        .arg("--encryption-config")
        .arg(cfg)
        .arg("--etcd-snapshot")
        .arg(snapshot)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_binary_verifies_reads_and_refuses_snapshots() {
    let doc = doc();
    let plugin = plugin(&doc);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &plugin,
        doc["records"][0]["provider_name"].as_str().unwrap(),
    );
    let snap = vector_path("etcd-snapshot-public.db");

    let o = run(&cfg, &snap, &["verify"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("SHA-256 ok, revision 19, 18 keys"), "{t}");
    assert!(
        t.contains("verified 10 secrets: 10 ok (0 stale), 0 failed; storage formats: 10 protobuf"),
        "{t}"
    );
    assert_eq!(
        t.lines().filter(|l| l.starts_with("ok ")).count(),
        10,
        "{t}"
    );
    assert!(t.contains("Secrets/s"), "{t}");

    // get shows what kubectl shows: the object, with the mod revision.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(vector_path("etcd-snapshot-public.manifest.json")).unwrap(),
    )
    .unwrap();
    for rec in doc["records"].as_array().unwrap() {
        let (ns, name) = (
            rec["namespace"].as_str().unwrap(),
            rec["name"].as_str().unwrap(),
        );
        let o = run(&cfg, &snap, &["get", name, "-n", ns, "-o", "json"]);
        assert!(o.status.success(), "{}", text(&o));
        let mut shown: Value = serde_json::from_slice(&o.stdout).unwrap();
        let rv = shown["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion")
            .unwrap();
        assert_eq!(shown, rec["object"], "{ns}/{name}");
        let entry = manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == rec["etcd_key"])
            .unwrap();
        assert_eq!(rv, entry["mod_revision"].as_u64().unwrap().to_string());
    }
    let o = run(&cfg, &snap, &["list", "-A"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 11);
    let o = run(&cfg, &snap, &["inspect", "db-credentials", "-o", "json"]);
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i["storageFormat"], "application/vnd.kubernetes.protobuf");
    assert_eq!(i["provider"], "kms-v2");
    // Writes are refused.
    let o = run(&cfg, &snap, &["delete", "db-credentials"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("read-only"), "{}", text(&o));

    // Damaged snapshots.
    let good = std::fs::read(&snap).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x80;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated",
            good[..good.len() - 100].to_vec(),
            "no SHA-256 trailer",
        ),
        (
            "flipped",
            flipped,
            "the SHA-256 trailer does not match the data",
        ),
        (
            "random",
            (0..good.len()).map(|i| (i * 7919 % 251) as u8).collect(),
            "trailer does not match",
        ),
        ("empty", Vec::new(), "the file is empty"),
    ];
    for (what, bytes, want) in cases {
        let p = dir.path().join(format!("{what}.db"));
        std::fs::write(&p, bytes).unwrap();
        let o = run(&cfg, &p, &["verify"]);
        assert!(!o.status.success(), "{what}");
        assert!(text(&o).contains(want), "{what}: {}", text(&o));
    }
}
