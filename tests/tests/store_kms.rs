//! secret-store with the real kms-plugin binary: KEK rotation end to end,
//! a plugin outage, and what reaches the database files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Plugin, bin, init_ring, kms};
use secret_store::encryption_config::KmsProviderConfig;
use secret_store::secret::{Secret, SecretValue};
use secret_store::storage::rocks::RocksEngine;
use secret_store::store::SecretStore;
use secret_store::transform::chain::TransformerChain;
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use secret_store::transform::{TransformError, Transformer};

fn enc_config(dir: &Path, sock: &Path) -> std::path::PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms:\n      apiVersion: v2\n      name: e2e-kms\n      endpoint: unix://{}\n      timeout: 3s\n  - identity: {{}}\n",
            sock.display()
        ),
    )
    .unwrap();
    p
}

fn store(dir: &Path, cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("secret-store"))
        .env("SECRET_STORE_DB", dir.join("db"))
        .env("SECRET_STORE_ENCRYPTION_CONFIG", cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).unwrap();
    }
    drop(i);
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn inspect(dir: &Path, cfg: &Path, name: &str) -> serde_json::Value {
    let o = store(dir, cfg, &["inspect", name, "-o", "json"], None);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn manifest(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {tag}-{i:04}\nstringData:\n  v: KMSMARKER-{tag}-{i:04}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn wait_plugin_key(p: &Plugin, want: &str) {
    let t = Instant::now();
    loop {
        let o = kms(&["probe", "--listen-addr", &p.endpoint()]);
        if String::from_utf8_lossy(&o.stdout).contains(want) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "plugin never reported {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kek_rotation_end_to_end_rewrap_verify_retire() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let p = Plugin::start(&ring, &sock, &dir.path().join("plugin.log"), &[]);
    let cfg = enc_config(dir.path(), &sock);

    let o = store(
        dir.path(),
        &cfg,
        &["apply", "-f", "-"],
        Some(&manifest(150, "old")),
    );
    assert!(o.status.success(), "{}", text(&o));
    let before = inspect(dir.path(), &cfg, "old-0000");
    let k1 = before["keyID"].as_str().unwrap().to_string();
    assert_eq!(before["provider"], "kms-v2");
    assert_eq!(
        before["encryptedDEKSourceType"],
        "HKDF_SHA256_XNONCE_AES_GCM_SEED"
    );
    assert_eq!(before["stale"], false);

    let k2 = e2e::rotate(&ring);
    wait_plugin_key(&p, &k2);
    // The store sees the new key_id: old values are stale, new writes use k2.
    let old = inspect(dir.path(), &cfg, "old-0000");
    assert_eq!(old["keyID"], k1.as_str());
    assert_eq!(old["stale"], true);
    let o = store(
        dir.path(),
        &cfg,
        &["apply", "-f", "-"],
        Some(&manifest(5, "new")),
    );
    assert!(o.status.success(), "{}", text(&o));
    let new = inspect(dir.path(), &cfg, "new-0000");
    assert_eq!(new["keyID"], k2.as_str());
    assert_eq!(new["stale"], false);

    let o = store(dir.path(), &cfg, &["rewrap", "--dry-run"], None);
    assert!(
        text(&o).contains("150 of 155 secrets are stale"),
        "{}",
        text(&o)
    );
    let o = store(dir.path(), &cfg, &["rewrap"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("rewrapped 150 of 150 stale"),
        "{}",
        text(&o)
    );
    let o = store(dir.path(), &cfg, &["verify"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("155 ok (0 stale), 0 failed"),
        "{}",
        text(&o)
    );
    assert_eq!(inspect(dir.path(), &cfg, "old-0000")["keyID"], k2.as_str());

    // Nothing needs k1 now: retire it; everything still decrypts.
    let o = kms(&[
        "key",
        "retire",
        &k1,
        "--keyring",
        ring.to_str().unwrap(),
        "--yes",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    let o = store(dir.path(), &cfg, &["verify"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = store(dir.path(), &cfg, &["get", "old-0042", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["data"]["v"], "S01TTUFSS0VSLW9sZC0wMDQy"); // base64("KMSMARKER-old-0042")

    // No plaintext or base64 of a value in any database file.
    drop(p);
    for f in walk(&dir.path().join("db")) {
        let b = std::fs::read(&f).unwrap();
        for m in [&b"KMSMARKER"[..], b"S01TTUFSS0VS", b"old-0042\n"] {
            assert!(
                !b.windows(m.len()).any(|w| w == m),
                "{} contains {:?}",
                f.display(),
                String::from_utf8_lossy(m)
            );
        }
    }
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

fn secret(name: &str) -> Secret {
    let mut s = Secret::new("default", name);
    s.data
        .insert("v".into(), SecretValue::from_slice(b"outage-test-value"));
    s
}

#[test]
fn plugin_outage_warm_reads_work_writes_stop_after_the_window_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let log = dir.path().join("plugin.log");
    let mut p = Plugin::start(&ring, &sock, &log, &[]);

    let window = Duration::from_secs(2);
    let opts = KmsOptions {
        healthy_poll_interval: Duration::from_millis(200),
        unhealthy_poll_interval: Duration::from_millis(100),
        write_window: window,
        ..KmsOptions::default()
    };
    let cfg = KmsProviderConfig {
        api_version: "v2".into(),
        name: "outage".into(),
        endpoint: format!("unix://{}", sock.display()),
        timeout: Duration::from_millis(500),
    };
    let kms_t = Arc::new(KmsV2Transformer::new(&cfg, opts).unwrap());
    let t: Arc<dyn Transformer> = kms_t.clone();
    let chain = Arc::new(TransformerChain::new(vec![t]).unwrap());
    let engine = Arc::new(RocksEngine::open(&dir.path().join("db"), false).unwrap());
    let st = SecretStore::new(engine, chain);
    for i in 0..10 {
        st.create(secret(&format!("s{i}"))).unwrap();
    }
    for i in 0..10 {
        st.get("default", &format!("s{i}")).unwrap();
    }

    // The plugin dies.
    p.kill();
    let died = Instant::now();
    // Warm reads keep working: the seed is cached.
    for i in 0..10 {
        st.get("default", &format!("s{i}"))
            .expect("warm read during outage");
    }
    // Writes keep going inside the window, then are refused with a clear error.
    let mut refused = None;
    let mut n = 0;
    while died.elapsed() < window + Duration::from_secs(5) {
        match st.create(secret(&format!("during-{n}"))) {
            Ok(_) => n += 1,
            Err(e) => {
                refused = Some((died.elapsed(), e.to_string()));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (after, msg) = refused.expect("writes never refused during the outage");
    assert!(n > 0, "no write succeeded inside the window");
    assert!(
        after >= window - Duration::from_millis(400),
        "refused too early: {after:?}"
    );
    assert!(
        msg.contains("outage") && msg.contains(&sock.display().to_string()),
        "{msg}"
    );
    assert!(matches!(
        st.create(secret("still-down")),
        Err(secret_store::store::StoreError::Transform(
            TransformError::WriteRefused(_)
        ))
    ));
    for i in 0..10 {
        st.get("default", &format!("s{i}"))
            .expect("warm read after the window");
    }

    // The plugin comes back on the same socket: writes recover by themselves.
    let _p2 = Plugin::start(&ring, &sock, &log, &[]);
    let t0 = Instant::now();
    loop {
        match st.create(secret("after-recovery")) {
            Ok(_) => break,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(10), "no recovery: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(
        st.get("default", "after-recovery").unwrap().data["v"].expose(),
        b"outage-test-value"
    );
    // Cold reads (cache cleared) go to the plugin again and work.
    kms_t.clear_cache();
    for i in 0..n {
        st.get("default", &format!("during-{i}"))
            .expect("value written during the outage");
    }
}
