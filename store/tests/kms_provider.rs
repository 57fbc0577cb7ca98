//! The KMS v2 provider's life with its plugin: key_id rotation, outages and
//! the write window, recovery, and plugins that answer badly.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod kms_test_plugin;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kms_test_plugin::{Behaviour, TestPlugin};
use secret_store::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use secret_store::transform::{TransformError, Transformer};

const KEK1: [u8; 32] = [0x11; 32];
const KEK2: [u8; 32] = [0x22; 32];
const KEY: &str = "/registry/secrets/default/db";

/// Short intervals so a test sees several polls within a second.
fn fast(window: Duration) -> KmsOptions {
    KmsOptions {
        healthy_poll_interval: Duration::from_millis(50),
        unhealthy_poll_interval: Duration::from_millis(50),
        write_window: window,
        ..KmsOptions::default()
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key_id_of(t: &KmsV2Transformer, stored: &[u8]) -> String {
    t.inspect(stored, KEY).unwrap().key_id.unwrap()
}

#[test]
fn a_new_key_id_brings_a_new_seed() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("rot", Duration::from_secs(3)),
        fast(Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(t.current_key_id().as_deref(), Some("kek-1"));
    assert_eq!(t.plugin_calls().encrypt, 1);
    let old = t.seal(b"v1", KEY).unwrap();
    assert_eq!(key_id_of(&t, &old), "kek-1");

    // Polls with an unchanged key_id wrap nothing.
    wait_until("a few polls", Duration::from_secs(5), || {
        t.plugin_calls().status >= 4
    });
    assert_eq!(t.plugin_calls().encrypt, 1);

    p.set(|b| {
        b.key_id = "kek-2".into();
        b.keks.insert("kek-2".into(), KEK2);
    });
    wait_until("the rotation", Duration::from_secs(5), || {
        t.current_key_id().as_deref() == Some("kek-2")
    });
    let calls = t.plugin_calls();
    assert_eq!(calls.encrypt, 2, "one Encrypt for the new key_id");
    assert_eq!(p.served.encrypt.load(Ordering::SeqCst), 2);

    let new = t.seal(b"v2", KEY).unwrap();
    assert_eq!(key_id_of(&t, &new), "kek-2");
    let o = t.open(&new, KEY).unwrap();
    assert_eq!((&o.plaintext[..], o.stale), (&b"v2"[..], false));
    // The old value still opens (its seed is cached), and is stale.
    let o = t.open(&old, KEY).unwrap();
    assert_eq!((&o.plaintext[..], o.stale), (&b"v1"[..], true));
    // Even cold: the plugin still has the old KEK.
    t.clear_cache();
    let o = t.open(&old, KEY).unwrap();
    assert!(o.stale);
    assert_eq!(t.plugin_calls().decrypt, calls.decrypt + 1);
    assert_eq!(t.health().key_id.as_deref(), Some("kek-2"));
}

#[test]
fn an_outage_keeps_reads_and_writes_for_the_window_then_refuses_writes() {
    let window = Duration::from_millis(1000);
    let mut p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("outage", Duration::from_millis(200)),
        fast(window),
    )
    .unwrap();
    let warm = t.seal(b"warm", KEY).unwrap();
    assert_eq!(&t.open(&warm, KEY).unwrap().plaintext[..], b"warm");

    p.stop();
    let stopped = Instant::now();
    // Within the window writes go on with the current seed.
    let mut during = Vec::new();
    while stopped.elapsed() < window / 5 {
        during.push(
            t.seal(b"during", KEY)
                .expect("writes continue within the window"),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!during.is_empty());
    wait_until("a failed poll", Duration::from_secs(5), || {
        !t.health().healthy
    });

    wait_until("writes to be refused", window * 4, || {
        t.seal(b"x", KEY).is_err()
    });
    assert!(
        stopped.elapsed() >= window / 2,
        "not refused before the window"
    );
    let err = t.seal(b"late", KEY).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransformError::WriteRefused(_)), "{msg}");
    assert!(msg.contains("\"outage\""), "names the provider: {msg}");
    assert!(msg.contains(&p.endpoint()), "names the endpoint: {msg}");
    assert!(msg.contains("failing since"), "says since when: {msg}");
    assert!(msg.contains("Status failed"), "gives the last error: {msg}");
    assert!(!t.health().writable);

    // Warm reads keep working; a cold one needs the plugin and fails.
    for v in during.iter().chain([&warm]) {
        assert!(t.open(v, KEY).is_ok());
    }
    t.clear_cache();
    let e = t.open(&warm, KEY).unwrap_err();
    assert!(matches!(e, TransformError::Kms { .. }), "{e}");
    assert!(e.to_string().contains("Decrypt failed"), "{e}");

    // The plugin comes back on the same socket: everything recovers, with
    // the same seed (same key_id, no new Encrypt).
    p.restart();
    wait_until("writes to resume", Duration::from_secs(5), || {
        t.seal(b"x", KEY).is_ok()
    });
    assert!(t.health().healthy);
    assert_eq!(t.plugin_calls().encrypt, 1);
    let after = t.seal(b"after", KEY).unwrap();
    assert_eq!(&t.open(&after, KEY).unwrap().plaintext[..], b"after");
    assert_eq!(&t.open(&warm, KEY).unwrap().plaintext[..], b"warm");
}

#[test]
fn a_plugin_back_with_a_new_key_id_brings_a_new_seed() {
    let mut p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("back", Duration::from_millis(200)),
        fast(Duration::from_millis(300)),
    )
    .unwrap();
    let old = t.seal(b"old", KEY).unwrap();
    p.stop();
    wait_until("writes to be refused", Duration::from_secs(5), || {
        t.seal(b"x", KEY).is_err()
    });
    p.set(|b| {
        b.key_id = "kek-2".into();
        b.keks.insert("kek-2".into(), KEK2);
    });
    p.restart();
    wait_until("writes to resume", Duration::from_secs(5), || {
        t.seal(b"x", KEY).is_ok()
    });
    assert_eq!(t.current_key_id().as_deref(), Some("kek-2"));
    assert_eq!(t.plugin_calls().encrypt, 2);
    assert!(t.open(&old, KEY).unwrap().stale);
}

#[test]
fn a_failed_rotation_keeps_the_old_seed_until_its_deadline() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("stuck", Duration::from_secs(1)),
        KmsOptions {
            write_window: Duration::from_millis(1000),
            ..KmsOptions::default()
        },
    )
    .unwrap();
    // Status moves to kek-2 but Encrypt still answers kek-1: refused.
    p.set(|b| {
        b.key_id = "kek-2".into();
        b.keks.insert("kek-2".into(), KEK2);
        b.encrypt_key_id = Some("kek-1".into());
    });
    let e = t.check_now().unwrap_err().to_string();
    assert!(e.contains("\"kek-1\"") && e.contains("\"kek-2\""), "{e}");
    assert_eq!(t.current_key_id().as_deref(), Some("kek-1"));
    assert!(t.seal(b"x", KEY).is_ok(), "the old seed stays usable");
    // The failed check did not move the deadline.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(matches!(
        t.seal(b"x", KEY),
        Err(TransformError::WriteRefused(_))
    ));
    p.set(|b| b.encrypt_key_id = None);
    t.check_now().unwrap();
    assert_eq!(t.current_key_id().as_deref(), Some("kek-2"));
    assert!(t.seal(b"x", KEY).is_ok());
}

#[test]
fn a_key_activated_between_status_and_encrypt_is_taken_not_refused() {
    // Status says kek-1; the operator's `key activate kek-2` lands before
    // the Encrypt of the new seed, which comes back under kek-2. A second
    // Status confirms kek-2, so the seed is good: start-up does not fail.
    let mut b = Behaviour::new("kek-1", KEK1);
    b.keks.insert("kek-2".into(), KEK2);
    b.activate_on_encrypt = Some("kek-2".into());
    let p = TestPlugin::start(b);
    let t = KmsV2Transformer::new(
        &p.config("race", Duration::from_secs(1)),
        KmsOptions::default(),
    )
    .expect("a rotation during start-up is not an error");
    assert_eq!(t.current_key_id().as_deref(), Some("kek-2"));
    let sealed = t.seal(b"x", KEY).unwrap();
    assert_eq!(key_id_of(&t, &sealed), "kek-2");
    assert_eq!(p.served.status.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn bad_answers_are_refused_at_start_with_a_clear_error() {
    type Bend = fn(&mut Behaviour);
    let cases: Vec<(&str, Bend, &str)> = vec![
        (
            "wrong version",
            |b| b.version = "v1beta1".into(),
            "version \"v1beta1\"",
        ),
        (
            "unhealthy",
            |b| b.healthz = "degraded".into(),
            "healthz \"degraded\"",
        ),
        (
            "empty key_id",
            |b| b.key_id = String::new(),
            "keyID is empty",
        ),
        (
            "empty ciphertext",
            |b| b.encrypt_ciphertext = Some(vec![]),
            "encrypted DEK source is empty",
        ),
        (
            "oversized ciphertext",
            |b| b.encrypt_ciphertext = Some(vec![1; 1025]),
            "1025 bytes",
        ),
        (
            "key_id mismatch",
            |b| b.encrypt_key_id = Some("other".into()),
            "Encrypt answered key_id \"other\" but Status reported \"kek-1\"",
        ),
        (
            "non-FQDN annotation",
            |b| {
                b.annotations.insert("version".into(), b"1".to_vec());
            },
            "invalid key \"version\"",
        ),
        (
            "oversized annotations",
            |b| {
                b.annotations
                    .insert("big.example.io".into(), vec![0; 33 * 1024]);
            },
            "total size of annotations",
        ),
        (
            "status error",
            |b| b.status_error = Some(tonic::Code::PermissionDenied),
            "PermissionDenied",
        ),
    ];
    for (what, bend, want) in cases {
        let mut b = Behaviour::new("kek-1", KEK1);
        bend(&mut b);
        let p = TestPlugin::start(b);
        let e = KmsV2Transformer::new(
            &p.config("bad", Duration::from_secs(1)),
            KmsOptions::default(),
        )
        .expect_err(what);
        let msg = e.to_string();
        assert!(matches!(e, TransformError::Kms { .. }), "{what}: {msg}");
        assert!(
            msg.contains(want),
            "{what}: {msg:?} should contain {want:?}"
        );
        assert!(
            msg.contains(&p.endpoint()),
            "{what}: names the endpoint: {msg}"
        );
    }
}

#[test]
fn a_plugin_that_goes_bad_later_is_marked_unhealthy() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("later", Duration::from_secs(1)),
        KmsOptions::default(),
    )
    .unwrap();
    p.set(|b| b.healthz = "not ok".into());
    let e = t.check_now().unwrap_err().to_string();
    assert!(e.contains("healthz \"not ok\""), "{e}");
    let h = t.health();
    assert!(!h.healthy && h.failing_since.is_some());
    assert!(h.writable, "still within the window");
    p.set(|b| b.healthz = "ok".into());
    t.check_now().unwrap();
    assert!(t.health().healthy);
    assert_eq!(t.plugin_calls().encrypt, 1);
}

#[test]
fn degraded_start_writes_once_the_plugin_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let cfg = secret_store::encryption_config::KmsProviderConfig {
        api_version: "v2".into(),
        name: "late".into(),
        endpoint: format!("unix://{}", socket.display()),
        timeout: Duration::from_millis(100),
    };
    assert!(KmsV2Transformer::new(&cfg, KmsOptions::default()).is_err());
    let t = KmsV2Transformer::new_degraded(&cfg, fast(Duration::from_secs(60))).unwrap();
    let e = t.seal(b"x", KEY).unwrap_err().to_string();
    assert!(e.contains("no DEK seed") && e.contains("late.sock"), "{e}");
    let _p = TestPlugin::start_at(&socket, Behaviour::new("kek-1", KEK1));
    wait_until("the first seed", Duration::from_secs(5), || {
        t.seal(b"x", KEY).is_ok()
    });
    assert_eq!(t.current_key_id().as_deref(), Some("kek-1"));
}

#[test]
fn cold_reads_call_decrypt_once_per_seed() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("cold", Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    let values: Vec<Vec<u8>> = (0..10).map(|i| t.seal(&[i; 100], KEY).unwrap()).collect();
    t.clear_cache();
    assert_eq!(t.cached_keys(), 0);
    for v in &values {
        t.open(v, KEY).unwrap();
    }
    assert_eq!(t.plugin_calls().decrypt, 1);
    assert_eq!(t.cached_keys(), 1);
    // A tampered DEK source is refused by the plugin.
    let mut bad = values[0].clone();
    let at = bad.len() - 10;
    bad[at] ^= 1;
    assert!(t.open(&bad, KEY).is_err());
}

#[test]
fn concurrent_cold_reads_share_one_decrypt() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("herd", Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    let values: Vec<Vec<u8>> = (0..8).map(|i| t.seal(&[i; 100], KEY).unwrap()).collect();
    t.clear_cache();
    // A slow plugin: without sharing, every reader would be inside its own
    // Decrypt at the same time.
    p.set(|b| b.decrypt_delay = Some(Duration::from_millis(200)));
    let start = std::sync::Barrier::new(values.len());
    std::thread::scope(|s| {
        for (i, v) in values.iter().enumerate() {
            let (t, start) = (&t, &start);
            s.spawn(move || {
                start.wait();
                assert_eq!(&t.open(v, KEY).unwrap().plaintext[..], &[i as u8; 100][..]);
            });
        }
    });
    assert_eq!(t.plugin_calls().decrypt, 1);
    assert_eq!(
        p.served.decrypt.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // A failing Decrypt reaches every waiter, each naming its own key.
    t.clear_cache();
    p.set(|b| b.keks.clear());
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (t, v) = (&t, &values[0]);
                s.spawn(move || t.open(v, KEY).unwrap_err().to_string())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in &errors {
        assert!(
            e.contains("cannot unwrap the DEK source of") && e.contains(KEY),
            "{e}"
        );
        assert!(e.contains("unknown key_id"), "{e}");
    }
}

#[test]
fn cache_misses_work_from_inside_a_tokio_runtime() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let cfg = p.config("async", Duration::from_secs(3));
    for multi in [true, false] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(async {
            let t = KmsV2Transformer::new(&cfg, KmsOptions::default()).unwrap();
            let v = t.seal(b"in async", KEY).unwrap();
            t.clear_cache();
            assert_eq!(&t.open(&v, KEY).unwrap().plaintext[..], b"in async");
            assert_eq!(t.plugin_calls().decrypt, 1);
            t.check_now().unwrap();
        });
    }
}

#[test]
fn many_threads_seal_and_open_concurrently() {
    let p = TestPlugin::start(Behaviour::new("kek-1", KEK1));
    let t = KmsV2Transformer::new(
        &p.config("mt", Duration::from_secs(3)),
        KmsOptions::default(),
    )
    .unwrap();
    std::thread::scope(|s| {
        for n in 0..4u8 {
            let t = &t;
            s.spawn(move || {
                for i in 0..500u32 {
                    let key = format!("/registry/secrets/ns/{n}-{i}");
                    let pt = [n; 64];
                    let v = t.seal(&pt, &key).unwrap();
                    assert_eq!(&t.open(&v, &key).unwrap().plaintext[..], &pt[..]);
                }
            });
        }
    });
    let calls = t.plugin_calls();
    assert_eq!((calls.encrypt, calls.decrypt), (1, 0));
}
