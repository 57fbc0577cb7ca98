//! The `secret-store` binary end to end with local providers (no plugin):
//! kubectl-style commands, validation through the CLI, conflicts,
//! immutability, the plaintext guard, a second opener, crash safety of a
//! bulk load, resumable rewrap, and what lands in the RocksDB files.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

const BIN: &str = env!("CARGO_BIN_EXE_secret-store");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }
    fn config(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }
    fn cmd(&self, cfg: Option<&Path>, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("SECRET_STORE_ENCRYPTION_CONFIG")
            .env("SECRET_STORE_DB", self.db());
        if let Some(cfg) = cfg {
            c.env("SECRET_STORE_ENCRYPTION_CONFIG", cfg);
        }
        c.args(args);
        c
    }
    fn run(&self, cfg: Option<&Path>, args: &[&str]) -> Output {
        self.cmd(cfg, args).output().unwrap()
    }
    fn apply(&self, cfg: Option<&Path>, manifest: &str) -> Output {
        let mut c = self
            .cmd(cfg, &["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        c.wait_with_output().unwrap()
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// An EncryptionConfiguration for Secrets with `providers` (YAML list
/// items, see [`keyed`]) in order.
fn config_of(providers: &[String]) -> String {
    let mut y = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n",
    );
    for p in providers {
        y.push_str(p);
    }
    y
}

/// One provider of `kind` (aesgcm, aescbc, secretbox) with `keys` in order.
fn keyed(kind: &str, keys: &[(&str, [u8; 32])]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut y = format!("  - {kind}:\n      keys:\n");
    for (name, k) in keys {
        y.push_str(&format!(
            "      - name: {name}\n        secret: {}\n",
            b64.encode(k)
        ));
    }
    y
}

const IDENTITY: &str = "  - identity: {}\n";

fn aesgcm_config(keys: &[(&str, [u8; 32])]) -> String {
    config_of(&[keyed("aesgcm", keys), IDENTITY.to_string()])
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\ntype: kubernetes.io/basic-auth\nstringData:\n  username: admin\n  password: MARKER-correct-horse-battery\n";

#[test]
fn kubectl_style_commands_round_trip() {
    let e = Env::new();
    let cfg = e.config("enc.yaml", &aesgcm_config(&[("k1", [7; 32])]));
    let o = e.apply(Some(&cfg), SECRET);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "secret/db created\n");
    let o = e.apply(Some(&cfg), SECRET);
    assert_eq!(out(&o), "secret/db unchanged\n");

    let o = e.run(Some(&cfg), &["get", "db", "-n", "prod", "-o", "json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type"], "kubernetes.io/basic-auth");
    assert_eq!(
        v["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode("MARKER-correct-horse-battery")
    );
    assert!(v.get("stringData").is_none(), "stringData is never stored");
    assert_eq!(v["metadata"]["resourceVersion"], "1");
    assert_eq!(v["metadata"]["uid"].as_str().unwrap().len(), 36);

    let o = e.run(Some(&cfg), &["list", "-A"]);
    assert!(
        out(&o).contains("prod        db     kubernetes.io/basic-auth   2"),
        "{}",
        out(&o)
    );
    let o = e.run(Some(&cfg), &["list"]);
    assert!(
        err(&o).contains("No resources found in default namespace."),
        "{}",
        err(&o)
    );

    let o = e.run(Some(&cfg), &["inspect", "db", "-n", "prod", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["provider"], "aesgcm");
    assert_eq!(v["providerName"], "k1");
    assert_eq!(v["stale"], false);

    // Update with stringData; data merged; resourceVersion moves.
    let updated = SECRET.replace("MARKER-correct-horse-battery", "MARKER-new-password");
    let o = e.apply(Some(&cfg), &updated);
    assert_eq!(out(&o), "secret/db configured\n", "{}", err(&o));
    let o = e.run(Some(&cfg), &["get", "db", "-n", "prod", "-o", "yaml"]);
    assert!(out(&o).contains("resourceVersion: \"2\""), "{}", out(&o));

    // A stale resourceVersion is a conflict.
    let stale = updated.replace(
        "namespace: prod\n",
        "namespace: prod\n  resourceVersion: \"1\"\n",
    );
    let o = e.apply(Some(&cfg), &stale);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("Error from server (Conflict)") && err(&o).contains("has been modified"),
        "{}",
        err(&o)
    );

    let o = e.run(Some(&cfg), &["delete", "db", "-n", "prod"]);
    assert_eq!(out(&o), "secret \"db\" deleted\n");
    let o = e.run(Some(&cfg), &["get", "db", "-n", "prod"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("Error from server (NotFound): secrets \"db\" not found"),
        "{}",
        err(&o)
    );
}

#[test]
fn validation_immutability_and_type_rules_through_the_cli() {
    let e = Env::new();
    let cfg = e.config("enc.yaml", &aesgcm_config(&[("k1", [7; 32])]));
    let bad = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: reg\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{\"auths\": MARKER-not-json'\n";
    let o = e.apply(Some(&cfg), bad);
    assert!(!o.status.success());
    let msg = err(&o);
    assert!(msg.contains("Secret \"reg\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\""), "{msg}");
    assert!(!msg.contains("MARKER"), "value leaked: {msg}");

    let imm = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: frozen\nimmutable: true\nstringData:\n  a: one\n";
    assert!(e.apply(Some(&cfg), imm).status.success());
    let o = e.apply(Some(&cfg), &imm.replace("a: one", "a: two"));
    assert!(!o.status.success());
    assert!(
        err(&o).contains("field is immutable when `immutable` is set"),
        "{}",
        err(&o)
    );
    let o = e.apply(
        Some(&cfg),
        &imm.replace("immutable: true", "immutable: false"),
    );
    assert!(!o.status.success());

    let t = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: typed\ntype: Opaque\nstringData:\n  a: one\n";
    assert!(e.apply(Some(&cfg), t).status.success());
    let o = e.apply(
        Some(&cfg),
        &t.replace("type: Opaque", "type: example.com/custom"),
    );
    assert!(!o.status.success());
    assert!(
        err(&o).contains("type: Invalid value: \"example.com/custom\": field is immutable"),
        "{}",
        err(&o)
    );

    // A manifest error names the document; nothing is applied from a broken file.
    let o = e.apply(
        Some(&cfg),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  k: '!!!'\n",
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("illegal base64"), "{}", err(&o));
}

#[test]
fn refuses_plaintext_without_configuration_unless_told() {
    let e = Env::new();
    let o = e.apply(None, SECRET);
    assert!(!o.status.success());
    assert!(err(&o).contains("unencrypted"), "{}", err(&o));
    let o = e.run(None, &["list", "-A"]);
    assert!(err(&o).contains("No resources found"));

    let mut c = e
        .cmd(None, &["apply", "-f", "-", "--allow-plaintext"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(SECRET.as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let o = e.run(None, &["inspect", "db", "-n", "prod"]);
    assert!(out(&o).contains("identity"), "{}", out(&o));
}

#[test]
fn a_second_process_on_the_same_database_gets_a_clear_error() {
    let e = Env::new();
    let cfg = e.config("enc.yaml", &aesgcm_config(&[("k1", [7; 32])]));
    assert!(e.apply(Some(&cfg), SECRET).status.success());
    // Hold the database open from this process, as a running store would.
    let engine = secret_store::storage::rocks::RocksEngine::open(&e.db(), false).unwrap();
    let o = e.run(Some(&cfg), &["list", "-A"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("in use by another process"), "{}", err(&o));
    drop(engine);
    assert!(e.run(Some(&cfg), &["list", "-A"]).status.success());
}

fn bulk_manifest(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bulk-{i:05}\nstringData:\n  value: MARKER-bulk-{i:05}-{}\n",
                "x".repeat(200)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn kill_9_during_a_bulk_load_keeps_every_acknowledged_write_whole() {
    let e = Env::new();
    let cfg = e.config("enc.yaml", &aesgcm_config(&[("k1", [7; 32])]));
    let manifest = bulk_manifest(4000);
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut c = e
            .cmd(Some(&cfg), &["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let stop_after = 300 + round * 700;
        let mut seen = 0;
        while reader.read_line(&mut line).unwrap() > 0 {
            if let Some(name) = line
                .trim()
                .strip_prefix("secret/")
                .and_then(|l| l.strip_suffix(" created"))
            {
                acknowledged.push(name.to_string());
            }
            seen += 1;
            line.clear();
            if seen == stop_after {
                c.kill().unwrap(); // SIGKILL mid-load
                break;
            }
        }
        let _ = c.wait();
    }
    assert!(acknowledged.len() >= 300);
    // Every acknowledged write is readable; verify finds no partial value.
    let o = e.run(Some(&cfg), &["verify"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let o = e.run(Some(&cfg), &["list", "-o", "name"]);
    let names = out(&o);
    for a in &acknowledged {
        assert!(
            names.contains(&format!("secret/{a}\n")),
            "acknowledged {a} lost"
        );
    }
}

#[test]
fn rewrap_migrates_to_a_new_key_and_resumes_after_a_kill() {
    let e = Env::new();
    let old = e.config("old.yaml", &aesgcm_config(&[("k1", [1; 32])]));
    let o = e.apply(Some(&old), &bulk_manifest(3000));
    assert!(o.status.success(), "{}", err(&o));
    // New key first, old key kept for reading: every value is now stale.
    let new = e.config(
        "new.yaml",
        &aesgcm_config(&[("k2", [2; 32]), ("k1", [1; 32])]),
    );
    let o = e.run(Some(&new), &["rewrap", "--dry-run"]);
    assert!(
        out(&o).contains("3000 of 3000 secrets are stale and would be rewrapped with aesgcm:k2 (the first provider)"),
        "{}",
        out(&o)
    );
    // Kill a rewrap part-way. How far it gets in a given time varies, so
    // try growing delays until a kill lands mid-way (0 < remaining < all);
    // a rewrap that finished first is undone by swapping the key order.
    let back = e.config(
        "back.yaml",
        &aesgcm_config(&[("k1", [1; 32]), ("k2", [2; 32])]),
    );
    let mut cfg = new.clone();
    let mut remaining = 0u64;
    let mut delay = 20u64;
    for _ in 0..12 {
        let mut c = e
            .cmd(Some(&cfg), &["rewrap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = c.kill();
        let _ = c.wait();
        let o = e.run(Some(&cfg), &["rewrap", "--dry-run"]);
        remaining = out(&o).split_whitespace().nth(2).unwrap().parse().unwrap();
        if remaining > 0 && remaining < 3000 {
            break;
        }
        if remaining == 0 {
            cfg = if cfg == new {
                back.clone()
            } else {
                new.clone()
            };
            delay = (delay / 2).max(5);
        } else {
            delay *= 2;
        }
    }
    assert!(
        remaining > 0 && remaining < 3000,
        "never interrupted a rewrap mid-way ({remaining} left)"
    );
    if cfg != new {
        // We were rewrapping back to k1: finish that, then migrate to k2 for real.
        assert!(e.run(Some(&cfg), &["rewrap"]).status.success());
        remaining = 3000;
    }
    let o = e.run(Some(&new), &["rewrap"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains(&format!("rewrapped {remaining} of {remaining} stale")),
        "{}",
        out(&o)
    );
    let o = e.run(Some(&new), &["rewrap", "--dry-run"]);
    assert!(out(&o).contains("0 of 3000"), "{}", out(&o));
    // Everything now reads with k2 alone.
    let only_new = e.config("only-new.yaml", &aesgcm_config(&[("k2", [2; 32])]));
    let o = e.run(Some(&only_new), &["verify"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("verified 3000 secrets: 3000 ok (0 stale), 0 failed"),
        "{}",
        out(&o)
    );
    // And the old key alone can no longer read them: verify says so, exit 1.
    let o = e.run(Some(&old), &["verify"]);
    assert!(!o.status.success());
    assert!(
        out(&o).contains("FAILED /registry/secrets/default/bulk-00000"),
        "{}",
        out(&o)
    );
}

#[test]
fn rewrap_says_current_values_were_not_decrypted_and_verify_finds_a_wrong_key() {
    let e = Env::new();
    let right = e.config("right.yaml", &aesgcm_config(&[("k1", [1; 32])]));
    let o = e.apply(Some(&right), &bulk_manifest(3));
    assert!(o.status.success(), "{}", err(&o));
    // The same key name with other key bytes: every envelope looks current.
    let wrong = e.config("wrong.yaml", &aesgcm_config(&[("k1", [9; 32])]));
    let o = e.run(Some(&wrong), &["rewrap"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).starts_with("rewrapped 0 of 0 stale secrets"),
        "{}",
        out(&o)
    );
    assert!(
        out(&o).contains("the 3 values already current were judged by their envelopes, not decrypted: `secret-store verify` checks that every value opens"),
        "{}",
        out(&o)
    );
    // verify decrypts: it names every value and exits 3 (findings).
    let o = e.run(Some(&wrong), &["verify"]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    for i in 0..3 {
        assert!(
            out(&o).contains(&format!("FAILED /registry/secrets/default/bulk-{i:05}")),
            "{}",
            out(&o)
        );
    }
    // With the right key, nothing is said to be missing.
    let o = e.run(Some(&right), &["verify"]);
    assert!(o.status.success(), "{}", out(&o));
}

#[test]
fn rewrap_refuses_a_value_copied_to_another_key_under_a_provider_without_aad() {
    for old in [
        keyed("aescbc", &[("cbc1", [3; 32])]),
        keyed("secretbox", &[("box1", [4; 32])]),
        IDENTITY.to_string(),
    ] {
        let e = Env::new();
        let before = e.config("before.yaml", &config_of(std::slice::from_ref(&old)));
        let plain = ["--allow-plaintext"];
        for name in ["a", "b"] {
            let m = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{owner: MARKER-{name}}}\n"
            );
            let mut c = e.cmd(Some(&before), &["apply", "-f", "-"]);
            c.args(plain)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut c = c.spawn().unwrap();
            c.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{old}: {}", err(&o));
        }
        // An attacker (or a bad restore) copies a's stored bytes over b and
        // to a key of its own: the provider has no AAD, so both still open.
        let (ka, kb, kc) = (
            "/registry/secrets/default/a",
            "/registry/secrets/default/b",
            "/registry/secrets/default/copy",
        );
        let copied = {
            use secret_store::storage::{Precondition, StorageEngine};
            let engine = secret_store::storage::rocks::RocksEngine::open(&e.db(), false).unwrap();
            let a = engine.get(ka).unwrap().unwrap().value;
            engine.put(kb, &a, Precondition::None).unwrap();
            engine.put(kc, &a, Precondition::None).unwrap();
            a
        };
        let raw = |key: &str| {
            e.run(Some(&before), &["raw", "get", "--etcd-key", key])
                .stdout
        };

        // Rotate to aesgcm: all three values are stale.
        let after = e.config(
            "after.yaml",
            &config_of(&[keyed("aesgcm", &[("gcm2", [5; 32])]), old.clone()]),
        );
        let o = e.run(Some(&after), &["rewrap"]);
        assert!(
            !o.status.success(),
            "{old}: a refused value fails the rewrap: {}",
            out(&o)
        );
        assert!(
            out(&o).starts_with("rewrapped 1 of 3 stale secrets") && out(&o).contains("2 refused)"),
            "{old}: {}",
            out(&o)
        );
        for key in [kb, kc] {
            assert!(
                err(&o).contains(&format!(
                    "REFUSED {key}: decrypts to Secret default/a, not the object its key names (copied from another key?): left as it is, not rewrapped"
                )),
                "{old}: {}",
                err(&o)
            );
            assert_eq!(raw(key), copied, "{old}: {key} was not rewritten");
        }
        assert!(
            raw(ka).starts_with(b"k8s:enc:aesgcm:v1:gcm2:"),
            "{old}: a is rewrapped"
        );

        // verify flags the same two; a second rewrap still refuses them.
        let o = e.run(Some(&after), &["verify"]);
        assert!(!o.status.success());
        for key in [kb, kc] {
            assert!(
                out(&o).contains(&format!("FAILED {key}: decrypts to Secret default/a")),
                "{}",
                out(&o)
            );
        }
        let o = e.run(Some(&after), &["rewrap"]);
        assert!(!o.status.success());
        assert!(
            out(&o).starts_with("rewrapped 0 of 2 stale secrets"),
            "{}",
            out(&o)
        );
        assert_eq!((raw(kb), raw(kc)), (copied.clone(), copied), "{old}");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files_under(&p));
        } else {
            v.push(p);
        }
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_or_base64_of_a_value_in_the_rocksdb_files() {
    let e = Env::new();
    let cfg = e.config("enc.yaml", &aesgcm_config(&[("k1", [7; 32])]));
    assert!(e.apply(Some(&cfg), &bulk_manifest(200)).status.success());
    assert!(e.apply(Some(&cfg), SECRET).status.success());
    // Flush memtables to SST files too: reopen, write more, let RocksDB close.
    assert!(e.apply(Some(&cfg), &bulk_manifest(10)).status.success());
    let b64 = base64::engine::general_purpose::STANDARD;
    let markers: Vec<Vec<u8>> = vec![
        b"MARKER".to_vec(),
        b"correct-horse-battery".to_vec(),
        b64.encode("MARKER-correct-horse-battery").into_bytes(),
        b64.encode("MARKER-bulk-00001").into_bytes()[..16].to_vec(),
        b"admin".to_vec(),
    ];
    let files = files_under(&e.db());
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains(".log") || f.to_string_lossy().ends_with(".sst"))
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for m in &markers {
            assert!(
                !contains(&bytes, m),
                "{} contains {:?}",
                f.display(),
                String::from_utf8_lossy(m)
            );
        }
    }
}
