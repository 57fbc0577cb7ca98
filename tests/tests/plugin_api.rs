//! The KMS v2 contract, checked with a tonic client against the built
//! binary on a real socket: what kube-apiserver checks of every answer, and
//! what the plugin must refuse.

use std::collections::BTreeMap;

use e2e::{Plugin, init_ring};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;

struct Env {
    _dir: tempfile::TempDir,
    plugin: Plugin,
}

fn start(algorithm: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &["--algorithm", algorithm]);
    let plugin = Plugin::start(
        &ring,
        &dir.path().join("run/kms.sock"),
        &dir.path().join("log"),
        &[],
    );
    Env { _dir: dir, plugin }
}

fn is_fqdn(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn enc(pt: &[u8]) -> EncryptRequest {
    EncryptRequest {
        plaintext: pt.to_vec(),
        uid: "e2e-uid".into(),
    }
}

#[tokio::test]
async fn status_encrypt_decrypt_satisfy_the_apiserver_checks() {
    for alg in ["aes-256-gcm", "xchacha20-poly1305"] {
        let env = start(alg);
        let mut c = env.plugin.client().await;
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.version, "v2");
        assert_eq!(st.healthz, "ok");
        assert!(!st.key_id.is_empty() && st.key_id.len() <= 1024);

        let seed = [0x5au8; 32];
        let r = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_eq!(
            r.key_id, st.key_id,
            "Encrypt key_id must equal Status key_id"
        );
        assert!(
            !r.ciphertext.is_empty() && r.ciphertext.len() <= 1024,
            "{}",
            r.ciphertext.len()
        );
        assert!(!r.annotations.is_empty());
        let mut total = 0;
        for (k, v) in &r.annotations {
            assert!(is_fqdn(k), "annotation key {k:?} is not an FQDN");
            assert!(k.ends_with("kms-plugin.k8s-at-rest.io"), "{k}");
            total += k.len() + v.len();
        }
        assert!(total <= 32 * 1024);
        assert_ne!(&r.ciphertext[..], &seed[..]);

        let d = c
            .decrypt(DecryptRequest {
                ciphertext: r.ciphertext.clone(),
                uid: "e2e-uid".into(),
                key_id: r.key_id.clone(),
                annotations: r.annotations.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed);

        // Two encrypts of the same seed differ (random nonces).
        let r2 = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_ne!(r.ciphertext, r2.ciphertext);
    }
}

#[tokio::test]
async fn every_single_byte_flip_of_a_ciphertext_is_refused() {
    let env = start("aes-256-gcm");
    let mut c = env.plugin.client().await;
    let r = c.encrypt(enc(&[1u8; 32])).await.unwrap().into_inner();
    for i in 0..r.ciphertext.len() {
        let mut bad = r.ciphertext.clone();
        bad[i] ^= 0x01;
        let e = c
            .decrypt(DecryptRequest {
                ciphertext: bad,
                uid: String::new(),
                key_id: r.key_id.clone(),
                annotations: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "byte {i}: {e:?}");
        if i >= 2 {
            // Past the header every failure is the same opaque message: no oracle.
            assert_eq!(e.message(), "decryption failed", "byte {i}");
        }
    }
}

#[tokio::test]
async fn wrong_and_unknown_key_ids() {
    let env = start("aes-256-gcm");
    let mut c = env.plugin.client().await;
    let r = c.encrypt(enc(&[2u8; 32])).await.unwrap().into_inner();
    let e = c
        .decrypt(DecryptRequest {
            ciphertext: r.ciphertext.clone(),
            uid: String::new(),
            key_id: "soft-0000000000000000-v9-000000000000".into(),
            annotations: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message()
            .contains("soft-0000000000000000-v9-000000000000"),
        "{}",
        e.message()
    );

    // A key that exists, but not the one that wrapped it: authentication fails.
    let ring = env
        .plugin
        .sock
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("ring");
    let new_id = e2e::rotate(&ring);
    let t = std::time::Instant::now();
    loop {
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        if st.key_id == new_id {
            break;
        }
        assert!(t.elapsed().as_secs() < 5, "rotation not picked up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = c
        .decrypt(DecryptRequest {
            ciphertext: r.ciphertext.clone(),
            uid: String::new(),
            key_id: new_id,
            annotations: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "decryption failed");
}

#[tokio::test]
async fn empty_oversized_and_garbage_inputs_are_invalid_argument() {
    let env = start("aes-256-gcm");
    let mut c = env.plugin.client().await;
    let r = c.encrypt(enc(&[3u8; 32])).await.unwrap().into_inner();

    let e = c.encrypt(enc(b"")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("empty"));

    // The largest plaintext that fits, and one byte more.
    let ok = c.encrypt(enc(&vec![1u8; 994])).await.unwrap().into_inner();
    assert_eq!(ok.ciphertext.len(), 1024);
    let e = c.encrypt(enc(&vec![1u8; 995])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("1024"),
        "must name the limit: {}",
        e.message()
    );

    let dec = |ct: Vec<u8>, key_id: &str| DecryptRequest {
        ciphertext: ct,
        uid: String::new(),
        key_id: key_id.to_string(),
        annotations: BTreeMap::new(),
    };
    for (req, want) in [
        (dec(vec![], &r.key_id), "empty"),
        (dec(vec![1u8; 1025], &r.key_id), "1024"),
        (dec(r.ciphertext.clone(), ""), "key_id is empty"),
        (dec(r.ciphertext.clone(), &"k".repeat(1025)), "key_id"),
        (dec(vec![0xff; 40], &r.key_id), "malformed"),
        (dec(vec![1], &r.key_id), "malformed"),
    ] {
        let e = c.decrypt(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(want),
            "{want:?} not in {:?}",
            e.message()
        );
    }

    // Bad annotations on Decrypt.
    let mut bad = dec(r.ciphertext.clone(), &r.key_id);
    bad.annotations.insert("NotAnFQDN".into(), b"x".to_vec());
    let e = c.decrypt(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut big = dec(r.ciphertext.clone(), &r.key_id);
    big.annotations
        .insert("a.example.com".into(), vec![0u8; 33 * 1024]);
    assert_eq!(
        c.decrypt(big).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // An oversized uid.
    let e = c
        .encrypt(EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".repeat(2000),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // 4 MiB of garbage in either call: refused by the request bound, not a crash.
    let garbage: Vec<u8> = (0..4usize << 20).map(|i| (i * 7 + 13) as u8).collect();
    let e = c.encrypt(enc(&garbage)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .decrypt(dec(garbage.clone(), &r.key_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Still healthy and serving afterwards.
    let st = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.healthz, "ok");
    let d = c
        .decrypt(dec(r.ciphertext.clone(), &r.key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, [3u8; 32]);
}

#[tokio::test]
async fn a_32_byte_seed_wraps_into_at_most_1kib_for_both_algorithms() {
    for alg in ["aes-256-gcm", "xchacha20-poly1305"] {
        let env = start(alg);
        let mut c = env.plugin.client().await;
        for _ in 0..20 {
            let r = c.encrypt(enc(&[9u8; 32])).await.unwrap().into_inner();
            assert!(r.ciphertext.len() <= 1024);
            assert!(
                r.ciphertext.len() < 100,
                "{alg}: {} bytes for a seed",
                r.ciphertext.len()
            );
        }
    }
}
