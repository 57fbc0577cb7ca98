//! Rotation while serving, restart, retirement: with the built binary.

use std::time::{Duration, Instant};

use e2e::{Plugin, init_ring, kms, rotate};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;

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

// Multi-threaded: the client must keep answering HTTP/2 pings while the
// test thread blocks waiting for the plugin to drain and exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_serving_restart_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let log = dir.path().join("log");
    let mut p = Plugin::start(&ring, &sock, &log, &[]);
    let mut c = p.client().await;

    let k1 = c
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    let w1 = c
        .encrypt(EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w1.key_id, k1);

    // Rotate with the CLI while serving: the new key_id shows within 5 s.
    let k2 = rotate(&ring);
    assert_ne!(k1, k2);
    let took = wait_key_id(&mut c, &k2, Duration::from_secs(5)).await;
    eprintln!("rotation picked up in {took:?}");
    let w2 = c
        .encrypt(EncryptRequest {
            plaintext: vec![2; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w2.key_id, k2, "new Encrypts use the new key");
    assert_eq!(
        c.decrypt(dec(&w1.ciphertext, &w1.key_id))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        vec![1; 32]
    );

    // A switch of algorithm on rotation.
    let out = kms(&[
        "key",
        "rotate",
        "--keyring",
        ring.to_str().unwrap(),
        "--algorithm",
        "xchacha20-poly1305",
    ]);
    assert!(out.status.success());
    let k3 = e2e::created_key_id(&String::from_utf8_lossy(&out.stdout)).unwrap();
    wait_key_id(&mut c, &k3, Duration::from_secs(5)).await;
    let w3 = c
        .encrypt(EncryptRequest {
            plaintext: vec![3; 32],
            uid: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w3.key_id, k3);

    // Metrics saw the rotations.
    let (code, body) = e2e::http_get(p.health_port.unwrap(), "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("kms_plugin_key_rotations_total 2"), "{body}");

    // Restart: everything still decrypts, key_id stable.
    assert!(p.terminate().success());
    assert!(!sock.exists(), "socket removed on SIGTERM");
    let p2 = Plugin::start(&ring, &sock, &log, &[]);
    let mut c = p2.client().await;
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        k3
    );
    for (w, v) in [(&w1, 1u8), (&w2, 2), (&w3, 3)] {
        let d = c
            .decrypt(dec(&w.ciphertext, &w.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![v; 32]);
    }

    // Retire: refused for the active key; without --yes nothing changes.
    let out = kms(&[
        "key",
        "retire",
        &k3,
        "--keyring",
        ring.to_str().unwrap(),
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("active key"));
    let out = kms(&["key", "retire", &k1, "--keyring", ring.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreadable") && err.contains("--yes"), "{err}");
    assert_eq!(
        c.decrypt(dec(&w1.ciphertext, &w1.key_id))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        vec![1; 32]
    );

    let out = kms(&[
        "key",
        "retire",
        &k1,
        "--keyring",
        ring.to_str().unwrap(),
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running plugin picks up the retirement: k1 data is now unreadable.
    let t = Instant::now();
    loop {
        match c.decrypt(dec(&w1.ciphertext, &w1.key_id)).await {
            Err(e) => {
                assert_eq!(e.code(), Code::NotFound);
                assert!(e.message().contains("retired"), "{}", e.message());
                break;
            }
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "retirement not picked up"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        c.decrypt(dec(&w2.ciphertext, &w2.key_id))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        vec![2; 32]
    );

    // key list shows the states and never material.
    let out = kms(&[
        "key",
        "list",
        "--keyring",
        ring.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<_> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["retired", "enabled", "active"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("material"));

    // key_ids are never reused: the next rotation gets version 4.
    let k4 = rotate(&ring);
    assert!(k4.contains("-v4-"), "{k4}");
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
