//! Concurrency on etcd as the apiserver sees it: concurrent updates of one
//! Secret from the same resourceVersion (separate processes): exactly one
//! wins, the others get the apiserver's conflict; and `rewrap` running
//! beside a live writer never overwrites a newer value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use e2e::etcd::Cluster;
use secret_store::secret::{Secret, SecretValue};
use secret_store::storage::etcd::{EtcdConfig, EtcdEngine, split_endpoints};
use secret_store::store::{SecretStore, StoreError};
use secret_store::transform::Transformer;
use secret_store::transform::aesgcm::AesGcmTransformer;
use secret_store::transform::chain::TransformerChain;

const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];

fn config(dir: &Path, name: &str, keys: &[(&str, [u8; 32])]) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut y = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n",
    );
    for (n, k) in keys {
        y.push_str(&format!(
            "      - name: {n}\n        secret: {}\n",
            b64.encode(k)
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, y).unwrap();
    p
}

fn store(endpoints: &str, keys: &[(&str, [u8; 32])]) -> SecretStore {
    let cfg = EtcdConfig::new(split_endpoints(endpoints), None, Duration::from_secs(10)).unwrap();
    let engine = Arc::new(EtcdEngine::open(&cfg).unwrap());
    let ts: Vec<Arc<dyn Transformer>> = keys
        .iter()
        .map(|(n, k)| Arc::new(AesGcmTransformer::new(n, k).unwrap()) as Arc<dyn Transformer>)
        .collect();
    SecretStore::new(engine, Arc::new(TransformerChain::new(ts).unwrap()))
}

fn cli(endpoints: &str, cfg: &Path) -> Command {
    let mut c = Command::new(e2e::bin("secret-store"));
    c.args(["--etcd-endpoints", endpoints])
        .arg("--encryption-config")
        .arg(cfg)
        .env_remove("SECRET_STORE_DB")
        .env_remove("SECRET_STORE_ETCD_PREFIX");
    c
}

#[test]
fn concurrent_updates_from_one_resource_version_one_wins() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "enc.yaml", &[("k1", K1)]);
    let st = store(&eps, &[("k1", K1)]);
    let mut s = Secret::new("team", "shared");
    s.data.insert("v".into(), SecretValue::new(b"0".to_vec()));
    st.create(s).unwrap();
    for round in 0..3 {
        let rv = st
            .get("team", "shared")
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        // Six processes update from the same resourceVersion at once.
        let children: Vec<_> = (0..6)
            .map(|w| {
                let m = dir.path().join(format!("m{round}-{w}.yaml"));
                std::fs::write(
                    &m,
                    format!(
                        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: shared\n  namespace: team\n  resourceVersion: \"{rv}\"\nstringData:\n  v: round-{round}-writer-{w}\n"
                    ),
                )
                .unwrap();
                cli(&eps, &cfg)
                    .arg("apply")
                    .arg("-f")
                    .arg(&m)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outs:?}");
        assert_eq!(
            String::from_utf8_lossy(&winners[0].stdout),
            "secret/shared configured\n"
        );
        for o in outs.iter().filter(|o| !o.status.success()) {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                e.contains(
                    "Error from server (Conflict): Operation cannot be fulfilled on secrets \"shared\": the object has been modified; please apply your changes to the latest version and try again"
                ),
                "{e}"
            );
        }
        let now = st.get("team", "shared").unwrap();
        assert_ne!(now.metadata.resource_version.as_deref(), Some(rv.as_str()));
        assert!(
            String::from_utf8_lossy(now.data["v"].expose()).starts_with(&format!("round-{round}-"))
        );
    }
    // In-process too: eight threads, one resourceVersion.
    let base = st.get("team", "shared").unwrap();
    let results: Vec<_> = std::thread::scope(|sc| {
        (0..8)
            .map(|t| {
                let mut s = base.clone();
                let st = &st;
                sc.spawn(move || {
                    s.data
                        .insert("v".into(), SecretValue::new(format!("t{t}").into_bytes()));
                    st.apply(s).map(|_| ())
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Conflict { .. })),
        "{results:?}"
    );
}

#[test]
fn rewrap_beside_a_live_writer_never_overwrites_a_newer_value() {
    const N: usize = 300;
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let dir = tempfile::tempdir().unwrap();
    // Everything written with k1 first.
    let old = store(&eps, &[("k1", K1)]);
    for i in 0..N {
        let mut s = Secret::new("app", format!("s{i:03}"));
        s.data.insert("gen".into(), SecretValue::new(b"0".to_vec()));
        old.create(s).unwrap();
    }
    // The configuration rotates: k2 first, k1 still readable. A "live
    // apiserver" (this writer) writes with it while rewrap runs.
    let cfg2 = config(dir.path(), "enc2.yaml", &[("k2", K2), ("k1", K1)]);
    let live = Arc::new(store(&eps, &[("k2", K2), ("k1", K1)]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last: HashMap<usize, u64> = HashMap::new();
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut generation = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % N as u64) as usize;
                generation += 1;
                let name = format!("s{i:03}");
                let mut s = live.get("app", &name).unwrap();
                s.data.insert(
                    "gen".into(),
                    SecretValue::new(generation.to_string().into_bytes()),
                );
                match live.apply(s) {
                    Ok(_) => {
                        last.insert(i, generation);
                    }
                    // rewrap got there between our read and our write.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("writer: {e}"),
                }
            }
            last
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let out = cli(&eps, &cfg2).arg("rewrap").output().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}writer updated {} secrets", last.len());
    assert!(!last.is_empty());
    // Every Secret holds the writer's last acknowledged value: rewrap never
    // put back an older one. And nothing is stale.
    for i in 0..N {
        let s = live.get("app", &format!("s{i:03}")).unwrap();
        let want = last.get(&i).copied().unwrap_or(0).to_string();
        assert_eq!(
            String::from_utf8_lossy(s.data["gen"].expose()),
            want,
            "s{i:03}"
        );
    }
    let out = cli(&eps, &cfg2).arg("verify").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("verified {N} secrets: {N} ok (0 stale), 0 failed")),
        "{stdout}"
    );
}
