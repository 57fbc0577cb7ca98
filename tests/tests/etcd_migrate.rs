//! `secret-store migrate` RocksDB → etcd → RocksDB keeps every byte: the
//! raw values (the at-rest bytes) are compared key by key in all three
//! stores, etcdctl sees the apiserver's layout, the Secrets decrypt on etcd;
//! and a destination holding different values is refused unless told.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use e2e::etcd::Cluster;
use secret_store::storage::etcd::{EtcdConfig, EtcdEngine, split_endpoints};
use secret_store::storage::rocks::RocksEngine;
use secret_store::storage::{StorageEngine, for_each};

fn config(dir: &Path) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {}\n  - secretbox:\n      keys:\n      - name: sb\n        secret: {}\n",
            b64.encode([3u8; 32]),
            b64.encode([4u8; 32])
        ),
    )
    .unwrap();
    p
}

fn cli(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(e2e::bin("secret-store"));
    c.arg("--encryption-config")
        .arg(cfg)
        .args(args)
        .env_remove("SECRET_STORE_DB")
        .env_remove("SECRET_STORE_ETCD_ENDPOINTS")
        .env_remove("SECRET_STORE_ETCD_PREFIX");
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn apply(cfg: &Path, engine: &[&str], manifest: &str) {
    let mut args = engine.to_vec();
    args.extend(["apply", "-f", "-"]);
    let mut child = cli(cfg, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn raw(e: &dyn StorageEngine) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for_each(e, "/registry/secrets/", 100, |v| {
        m.insert(v.key, v.value);
        Ok(())
    })
    .unwrap();
    m
}

fn manifest(n: usize, tag: &str) -> String {
    let mut y = String::new();
    for i in 0..n {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i:03}\n  namespace: ns{}\ntype: kubernetes.io/basic-auth\nstringData:\n  username: u{i}\n  password: {tag}-{i}\n",
            i % 3
        ));
    }
    y
}

#[test]
fn rocksdb_to_etcd_to_rocksdb_keeps_every_byte() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let a_s = a.to_str().unwrap();
    let b_s = b.to_str().unwrap();
    apply(&cfg, &["--db", a_s], &manifest(120, "pw"));
    // A value stored with the second provider (stale), and a binary one.
    {
        let e = RocksEngine::open(&a, false).unwrap();
        let mut v = b"k8s:enc:aesgcm:v1:k1:".to_vec();
        v.extend((0..=255u8).cycle().take(3000));
        e.put(
            "/registry/secrets/raw/binary",
            &v,
            secret_store::storage::Precondition::None,
        )
        .unwrap();
    }

    let to_etcd = format!("etcd:{eps}");
    let o = run(cli(
        &cfg,
        &["migrate", "--from", &format!("db:{a_s}"), "--to", &to_etcd],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "121 values at the source: 121 copied, 0 overwritten, 0 already identical; verified 121 of 121 byte for byte, 0 failed"
        ),
        "{}",
        text(&o)
    );
    let o = run(cli(
        &cfg,
        &["migrate", "--from", &to_etcd, "--to", &format!("db:{b_s}")],
    ));
    assert!(o.status.success(), "{}", text(&o));

    let ra = raw(&RocksEngine::open(&a, false).unwrap());
    let etcd = EtcdEngine::open(
        &EtcdConfig::new(split_endpoints(&eps), None, Duration::from_secs(10)).unwrap(),
    )
    .unwrap();
    let re = raw(&etcd);
    let rb = raw(&RocksEngine::open(&b, false).unwrap());
    assert_eq!(ra.len(), 121);
    assert!(ra == re, "RocksDB and etcd differ");
    assert!(ra == rb, "the round trip changed bytes");
    // etcdctl sees the apiserver's layout and the same bytes.
    let out = c.etcdctl(&["get", "/registry/secrets/ns1/s001", "--print-value-only"]);
    assert_eq!(
        &out.stdout[..out.stdout.len() - 1],
        &ra["/registry/secrets/ns1/s001"][..]
    );
    // The copied Secrets decrypt and verify on etcd (the key is the AAD).
    let o = run(cli(
        &cfg,
        &[
            "--etcd-endpoints",
            &eps,
            "get",
            "s001",
            "-n",
            "ns1",
            "-o",
            "json",
        ],
    ));
    assert!(text(&o).contains("\"username\": \"dTE=\""), "{}", text(&o));
    let o = run(cli(&cfg, &["--etcd-endpoints", &eps, "verify"]));
    // The hand-made binary value is not a Secret: exactly that one fails.
    assert!(
        text(&o).contains("verified 121 secrets: 120 ok (0 stale), 1 failed"),
        "{}",
        text(&o)
    );

    // A destination that holds a different value is refused, and nothing is
    // written; a dry run says what would happen; --overwrite replaces.
    apply(&cfg, &["--db", b_s], &manifest(1, "changed"));
    let before = raw(&RocksEngine::open(&b, false).unwrap());
    let o = run(cli(
        &cfg,
        &["migrate", "--from", &to_etcd, "--to", &format!("db:{b_s}")],
    ));
    assert!(!o.status.success());
    assert!(
        text(&o).contains(
            "error: refusing to overwrite: 1 value(s) already at the destination differ from the source (/registry/secrets/ns0/s000); nothing was copied. Pass --overwrite"
        ),
        "{}",
        text(&o)
    );
    assert!(raw(&RocksEngine::open(&b, false).unwrap()) == before);
    let o = run(cli(
        &cfg,
        &[
            "migrate",
            "--from",
            &to_etcd,
            "--to",
            &format!("db:{b_s}"),
            "--dry-run",
        ],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 different at the destination"),
        "{}",
        text(&o)
    );
    let o = run(cli(
        &cfg,
        &[
            "migrate",
            "--from",
            &to_etcd,
            "--to",
            &format!("db:{b_s}"),
            "--overwrite",
        ],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("0 copied, 1 overwritten, 120 already identical"),
        "{}",
        text(&o)
    );
    assert!(raw(&RocksEngine::open(&b, false).unwrap()) == re);

    // Bad sides name themselves.
    let o = run(cli(&cfg, &["migrate", "--from", "s3:x", "--to", &to_etcd]));
    assert!(
        text(&o).contains("--from=\"s3:x\" is not valid"),
        "{}",
        text(&o)
    );
    let o = run(cli(
        &cfg,
        &["migrate", "--from", &to_etcd, "--to", &to_etcd],
    ));
    assert!(text(&o).contains("name the same store"), "{}", text(&o));
}
