//! The store on a three-member etcd cluster through member failures: kill
//! the leader during a bulk load and writes go on with no acknowledged write
//! lost; kill a second member and writes fail with a clear "no quorum"
//! error; restart both on their data directories and everything committed
//! still reads back and verifies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::etcd::Cluster;
use secret_store::secret::{Secret, SecretValue};
use secret_store::storage::StorageError;
use secret_store::storage::etcd::{EtcdConfig, EtcdEngine, split_endpoints};
use secret_store::store::{SecretStore, StoreError};
use secret_store::transform::Transformer;
use secret_store::transform::aesgcm::AesGcmTransformer;
use secret_store::transform::chain::TransformerChain;

const KEY: [u8; 32] = [0x42; 32];

fn store(endpoints: &str, timeout: Duration) -> SecretStore {
    let cfg = EtcdConfig::new(split_endpoints(endpoints), None, timeout).unwrap();
    let engine = Arc::new(EtcdEngine::open(&cfg).unwrap());
    let t: Arc<dyn Transformer> = Arc::new(AesGcmTransformer::new("k1", &KEY).unwrap());
    SecretStore::new(engine, Arc::new(TransformerChain::new(vec![t]).unwrap()))
}

fn config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {}\n",
            base64::engine::general_purpose::STANDARD.encode(KEY)
        ),
    )
    .unwrap();
    p
}

fn secret(i: usize) -> Secret {
    let mut s = Secret::new("load", format!("s-{i:05}"));
    s.data.insert(
        "n".into(),
        SecretValue::new(format!("value-{i}").into_bytes()),
    );
    s
}

/// The member index of the current leader, as etcd reports it.
fn leader(c: &Cluster) -> usize {
    for (i, m) in c.members.iter().enumerate() {
        if !m.is_running() {
            continue;
        }
        let out = e2e::etcd::etcdctl(&m.client_url(), &["endpoint", "status", "-w", "json"]);
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        let st = &doc[0]["Status"];
        if st["leader"].as_u64().is_some() && st["leader"] == st["header"]["member_id"] {
            return i;
        }
    }
    panic!("no leader found");
}

#[test]
fn member_failures_during_a_bulk_load() {
    let mut c = Cluster::start(3);
    let endpoints = c.endpoints();
    let st = Arc::new(store(&endpoints, Duration::from_secs(10)));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Four writers, as a bulk load.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (st, acked, errors, stop, next) = (
                st.clone(),
                acked.clone(),
                errors.clone(),
                stop.clone(),
                next.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    match st.create(secret(i)) {
                        Ok(_) => acked.lock().unwrap().push(i),
                        Err(e) => errors.lock().unwrap().push(format!("s-{i:05}: {e}")),
                    }
                }
            })
        })
        .collect();
    let wait_for = |n: usize| {
        let t = Instant::now();
        while acked.lock().unwrap().len() < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "only {} writes acknowledged; errors: {:?}",
                acked.lock().unwrap().len(),
                errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(150);
    let first = leader(&c);
    c.kill(first);
    let at_kill = acked.lock().unwrap().len();
    // Writes continue on the two others (after a quick election).
    wait_for(at_kill + 300);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "a write failed while a quorum was up: {:?}",
        errors.lock().unwrap()
    );
    let acked: BTreeSet<usize> = acked.lock().unwrap().iter().copied().collect();
    eprintln!(
        "{} writes acknowledged, {at_kill} before the leader (m{first}) was killed",
        acked.len()
    );
    // Every acknowledged write reads back (linearizably) from the survivors.
    let listed: BTreeSet<usize> = st
        .list(Some("load"))
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.name[2..].parse().unwrap())
        .collect();
    assert!(
        acked.is_subset(&listed),
        "lost: {:?}",
        acked.difference(&listed)
    );

    // A second member down: no quorum. Writes fail, clearly and in time.
    let second = (0..3).find(|i| *i != first).unwrap();
    c.kill(second);
    let short = store(&endpoints, Duration::from_secs(2));
    let t = Instant::now();
    let err = short.create(secret(99_999)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Storage(StorageError::Unavailable(_))),
        "{msg}"
    );
    assert!(msg.contains("etcd has no quorum"), "{msg}");
    // The same through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let manifest = dir.path().join("s.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: late\n  namespace: load\nstringData:\n  a: b\n",
    )
    .unwrap();
    let out = Command::new(e2e::bin("secret-store"))
        .args(["--etcd-endpoints", &endpoints, "--etcd-timeout", "2s"])
        .arg("--encryption-config")
        .arg(&cfg)
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .env_remove("SECRET_STORE_DB")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("etcd has no quorum"), "{stderr}");
    assert!(stderr.contains(": no leader"), "{stderr}");
    assert!(stderr.contains(": unreachable"), "{stderr}");

    // Recovery: both killed members restart on their data directories.
    c.restart(first);
    c.restart(second);
    c.wait_healthy(Duration::from_secs(30));
    let out = Command::new(e2e::bin("secret-store"))
        .args(["--etcd-endpoints", &endpoints])
        .arg("--encryption-config")
        .arg(&cfg)
        .args(["verify", "--json"])
        .env_remove("SECRET_STORE_DB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = &stdout[stdout.find('{').unwrap()..];
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(r["failed"].as_array().unwrap().len(), 0);
    assert!(r["ok"].as_u64().unwrap() >= acked.len() as u64);
    // Each member holds every acknowledged write (read from each alone).
    for m in &c.members {
        let one = store(&m.client_url(), Duration::from_secs(10));
        for i in acked.iter().step_by(37) {
            let s = one.get("load", &format!("s-{i:05}")).unwrap();
            assert_eq!(s.data["n"].expose(), format!("value-{i}").as_bytes());
        }
        let n = one.list(Some("load")).unwrap().len();
        assert!(n >= acked.len(), "{} holds {n} of {}", m.name, acked.len());
    }
}
