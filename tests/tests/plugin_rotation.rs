//! Rotation while serving, restart, retirement: with the built binary.

use std::time::{Duration, Instant};

use e2e::{Plugin, init_ring, kms};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

async fn wait_key_id(
    c: &mut kms_proto::v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
    want: &str,
    within: Duration,
) -> Duration {
    let t = Instant::now();
    loop {
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        if st.key_id == want {
            assert_eq!(st.healthz, "ok");
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "key_id still {} after {within:?}",
            st.key_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dec(ct: &[u8], key_id: &str) -> DecryptRequest {
    DecryptRequest {
        ciphertext: ct.to_vec(),
        uid: "u".into(),
        key_id: key_id.into(),
        annotations: Default::default(),
    }
}

/// Rotation, restart and retirement are in the conformance suite (every
/// backend); what is the software ring's own: a rotation may switch the
/// AEAD, and both keys keep serving.
#[tokio::test]
async fn a_rotation_can_switch_the_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let p = Plugin::start(
        &ring,
        &dir.path().join("kms.sock"),
        &dir.path().join("log"),
        &[],
    );
    let mut c = p.client().await;
    let w1 = c
        .encrypt(EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let out = kms(&[
        "key",
        "rotate",
        "--keyring",
        ring.to_str().unwrap(),
        "--algorithm",
        "xchacha20-poly1305",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("xchacha20-poly1305"), "{stdout}");
    let k2 = e2e::created_key_id(&stdout).unwrap();
    wait_key_id(&mut c, &k2, Duration::from_secs(5)).await;
    let w2 = c
        .encrypt(EncryptRequest {
            plaintext: vec![2; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w2.key_id, k2);
    // XChaCha20-Poly1305 ciphertexts carry a 24-byte nonce: 2 + 24 + 32 + 16.
    assert_eq!(w2.ciphertext.len(), 74);
    assert_eq!(w1.ciphertext.len(), 62);
    for (w, v) in [(&w1, 1u8), (&w2, 2)] {
        let d = c
            .decrypt(dec(&w.ciphertext, &w.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![v; 32]);
    }
}

#[tokio::test]
async fn a_corrupted_ring_edit_while_serving_keeps_the_old_keys_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let p = Plugin::start(
        &ring,
        &dir.path().join("kms.sock"),
        &dir.path().join("log"),
        &[],
    );
    let mut c = p.client().await;
    let k1 = c
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    // Someone truncates the ring by hand (not through the CLI).
    let path = ring.join("keyring.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let st = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.key_id, k1);
    assert_eq!(st.healthz, "ok");
    let w = c
        .encrypt(EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.key_id, k1);
    assert!(
        p.log_text().contains("key ring reload failed"),
        "{}",
        p.log_text()
    );
    // And a restart with the broken ring fails clearly before binding.
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &format!("unix://{}/other.sock", dir.path().display()),
            "--keyring",
            ring.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is invalid"));
    assert!(!dir.path().join("other.sock").exists());
}
