//! Offline backup checks against snapshots made here by Debian's etcd
//! (`etcdctl snapshot save`) after creates, overwrites, deletes and a
//! compaction: `secret-store --etcd-snapshot FILE` shows exactly the live
//! values (the latest revision of each key, deleted keys skipped, other
//! resources ignored), as the live cluster shows them, and verifies them.
//! And the round trip through etcd: what the store writes it reads back
//! unchanged, and an `apply` that omits ownerReferences, finalizers and
//! managedFields keeps them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use e2e::etcd::Cluster;

fn config(dir: &Path) -> PathBuf {
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {key}\n"),
    )
    .unwrap();
    p
}

fn store(cfg: &Path, engine: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(e2e::bin("secret-store"));
    for v in [
        "SECRET_STORE_DB",
        "SECRET_STORE_ETCD_ENDPOINTS",
        "SECRET_STORE_ETCD_SNAPSHOT",
        "SECRET_STORE_STORAGE_MEDIA_TYPE",
    ] {
        c.env_remove(v);
    }
    c.arg("--encryption-config")
        .arg(cfg)
        .args(engine)
        .args(args);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn secret(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: prod\nstringData:\n  v: {value}\n"
    )
}

fn snapshot(c: &Cluster, path: &Path) {
    let o = c.etcdctl(&["snapshot", "save", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

fn revision(c: &Cluster) -> u64 {
    let o = c.etcdctl(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0]["Status"]["header"]["revision"].as_u64().unwrap()
}

#[test]
fn snapshots_show_the_live_values_after_overwrites_deletes_and_compaction() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let live = ["--etcd-endpoints", eps.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let apply = |m: &str, extra: &[&str]| {
        let mut a = extra.to_vec();
        a.extend(["apply", "-f", "-"]);
        let o = store(&cfg, &live, &a, Some(m));
        assert!(o.status.success(), "{}", text(&o));
    };
    for (n, v) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("d", "d1")] {
        apply(&secret(n, v), &[]);
    }
    apply(&secret("b", "b2"), &[]);
    apply(&secret("b", "b3"), &[]);
    let o = store(&cfg, &live, &["delete", "c", "-n", "prod"], None);
    assert!(o.status.success(), "{}", text(&o));
    // Compact everything so far: old revisions of b and c's tombstone go.
    let o = c.etcdctl(&["compact", &revision(&c).to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    apply(&secret("a", "a2"), &[]);
    apply(
        &secret("e", "e1"),
        &["--storage-media-type", "application/json"],
    );
    let o = store(&cfg, &live, &["delete", "d", "-n", "prod"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        c.etcdctl(&["put", "/registry/configmaps/prod/x", "not a secret"])
            .status
            .success()
    );

    let file = dir.path().join("backup.db");
    snapshot(&c, &file);
    let snap = ["--etcd-snapshot", file.to_str().unwrap()];

    let o = store(&cfg, &snap, &["verify"], None);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(
            "verified 3 secrets: 3 ok (0 stale), 0 failed; storage formats: 1 json, 2 protobuf"
        ),
        "{t}"
    );
    assert!(t.contains("deleted keys skipped"), "{t}");
    // Exactly the live Secrets, each as the live cluster shows it.
    let o = store(&cfg, &snap, &["list", "-n", "prod", "-o", "name"], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "secret/a\nsecret/b\nsecret/e\n",
        "{}",
        text(&o)
    );
    for name in ["a", "b", "e"] {
        let from_snap = store(
            &cfg,
            &snap,
            &["get", name, "-n", "prod", "-o", "json"],
            None,
        );
        let from_live = store(
            &cfg,
            &live,
            &["get", name, "-n", "prod", "-o", "json"],
            None,
        );
        assert!(from_snap.status.success(), "{}", text(&from_snap));
        assert_eq!(from_snap.stdout, from_live.stdout, "{name}");
    }
    let b: serde_json::Value = serde_json::from_slice(
        &store(&cfg, &snap, &["get", "b", "-n", "prod", "-o", "json"], None).stdout,
    )
    .unwrap();
    assert_eq!(
        b["data"]["v"],
        base64::engine::general_purpose::STANDARD.encode("b3")
    );
    for gone in ["c", "d"] {
        let o = store(&cfg, &snap, &["get", gone, "-n", "prod"], None);
        assert!(text(&o).contains("not found"), "{gone}: {}", text(&o));
    }
    // A damaged copy of a real snapshot is refused, naming why.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0x40;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let o = store(
        &cfg,
        &["--etcd-snapshot", bad.to_str().unwrap()],
        &["verify"],
        None,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the SHA-256 trailer does not match"),
        "{}",
        text(&o)
    );
    // A bare member database (no trailer) reads with the hash check skipped.
    let db = c.members[0].data_dir.join("member/snap/db");
    let copy = dir.path().join("member.db");
    std::fs::copy(&db, &copy).unwrap();
    let o = store(
        &cfg,
        &["--etcd-snapshot", copy.to_str().unwrap()],
        &["list", "-n", "prod", "-o", "name"],
        None,
    );
    if std::fs::metadata(&copy).unwrap().len() % 512 != 32 {
        assert!(
            text(&o).contains("--etcd-snapshot-skip-hash-check"),
            "{}",
            text(&o)
        );
    }
    let o = store(
        &cfg,
        &[
            "--etcd-snapshot",
            copy.to_str().unwrap(),
            "--etcd-snapshot-skip-hash-check",
        ],
        &["list", "-n", "prod", "-o", "name"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn what_other_actors_own_survives_an_apply_on_etcd() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let live = ["--etcd-endpoints", eps.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let full = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\n  namespace: prod\n  labels: {a: b}\n  ownerReferences:\n  - {apiVersion: cert-manager.io/v1, kind: Certificate, name: tls, uid: 46271bb2-e4ae-46cb-8705-9450922f3403, controller: true}\n  finalizers: [example.com/keep]\n  managedFields:\n  - {manager: cert-manager, operation: Update, apiVersion: v1, time: \"2024-05-01T10:00:00Z\", fieldsType: FieldsV1, fieldsV1: {\"f:data\": {}}}\ntype: kubernetes.io/tls\nstringData: {tls.crt: c, tls.key: k}\n";
    let o = store(&cfg, &live, &["apply", "-f", "-"], Some(full));
    assert!(o.status.success(), "{}", text(&o));
    let get = || -> serde_json::Value {
        let o = store(
            &cfg,
            &live,
            &["get", "tls", "-n", "prod", "-o", "json"],
            None,
        );
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let before = get();
    // The store wrote protobuf, as the apiserver would (the value reads back the same).
    let o = c.etcdctl(&["get", "/registry/secrets/prod/tls", "--print-value-only"]);
    assert!(o.stdout.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    let o = store(
        &cfg,
        &live,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\n  namespace: prod\ntype: kubernetes.io/tls\nstringData: {tls.crt: c2, tls.key: k2}\n",
        ),
    );
    assert!(text(&o).contains("configured"), "{}", text(&o));
    let after = get();
    for f in [
        "ownerReferences",
        "finalizers",
        "managedFields",
        "uid",
        "creationTimestamp",
    ] {
        assert_eq!(after["metadata"][f], before["metadata"][f], "{f}");
    }
    assert!(
        after["metadata"].get("labels").is_none(),
        "labels are the manifest's to set"
    );
    assert_ne!(after["data"], before["data"]);
}
