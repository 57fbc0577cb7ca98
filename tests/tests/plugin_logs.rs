//! The captured log never contains plaintext or key bytes: raw, hex or
//! base64, in plain and JSON formats, on success and failure paths, at debug.

use base64::Engine as _;
use e2e::{Plugin, init_ring, kms};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

fn forms(bytes: &[u8]) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v = vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        b64.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        format!("{bytes:?}"),
    ];
    // Also middle slices, in case something prints a prefix or truncates.
    v.push(hex::encode(&bytes[4..20]));
    v.push(b64.encode(&bytes[3..21]));
    if let Ok(s) = std::str::from_utf8(bytes) {
        v.push(s.to_string());
    }
    v
}

fn ring_keys(ring: &std::path::Path) -> Vec<Vec<u8>> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ring.join("keyring.json")).unwrap()).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["material"]["key"].as_str())
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
        .collect()
}

#[tokio::test]
async fn logs_never_carry_plaintext_or_key_bytes() {
    for format in ["plain", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ring");
        init_ring(&ring, &[]);
        let log = dir.path().join("log");
        let p = Plugin::start(
            &ring,
            &dir.path().join("kms.sock"),
            &log,
            &["--log-format", format],
        );
        let mut c = p.client().await;
        let plaintext = b"PLAINTEXT-SEED-0123456789-abcdef".to_vec();
        assert_eq!(plaintext.len(), 32);
        c.status(StatusRequest {}).await.unwrap();
        let w = c
            .encrypt(EncryptRequest {
                plaintext: plaintext.clone(),
                uid: "log-test".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let d = c
            .decrypt(DecryptRequest {
                ciphertext: w.ciphertext.clone(),
                uid: "log-test".into(),
                key_id: w.key_id.clone(),
                annotations: w.annotations.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, plaintext);
        // Failure paths: tamper, wrong key, oversize, unknown id.
        let mut bad = w.ciphertext.clone();
        bad[10] ^= 1;
        let _ = c
            .decrypt(DecryptRequest {
                ciphertext: bad,
                uid: "x".into(),
                key_id: w.key_id.clone(),
                annotations: Default::default(),
            })
            .await;
        let _ = c
            .encrypt(EncryptRequest {
                plaintext: plaintext.repeat(40),
                uid: "x".into(),
            })
            .await;
        let _ = c
            .decrypt(DecryptRequest {
                ciphertext: w.ciphertext.clone(),
                uid: "x".into(),
                key_id: "nope".into(),
                annotations: Default::default(),
            })
            .await;
        // A rotation while serving, and key commands' own output.
        let k2 = e2e::rotate(&ring);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            c.status(StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .key_id,
            k2
        );
        let list = kms(&["key", "list", "--keyring", ring.to_str().unwrap()]);
        let list_json = kms(&[
            "key",
            "list",
            "--keyring",
            ring.to_str().unwrap(),
            "-o",
            "json",
        ]);
        drop(p);

        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("kms-plugin serving"), "log captured: {text}");
        assert!(text.contains("log-test"), "debug call lines present");
        let mut haystacks = vec![text];
        haystacks.push(String::from_utf8_lossy(&list.stdout).to_string());
        haystacks.push(String::from_utf8_lossy(&list_json.stdout).to_string());
        let mut secrets = vec![plaintext.clone()];
        secrets.extend(ring_keys(&ring));
        assert!(secrets.len() >= 3);
        for h in &haystacks {
            for s in &secrets {
                for f in forms(s) {
                    assert!(
                        !h.contains(&f),
                        "{format}: secret form {f:?} found in output"
                    );
                }
            }
        }
    }
}
