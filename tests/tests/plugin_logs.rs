//! The captured log never contains plaintext or key bytes (nor, for transit,
//! tokens and secret ids): raw, hex or base64, in plain and JSON formats, on
//! success and failure paths, at debug.

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

/// transit: the token (file and AppRole), the secret_id and the plaintext
/// never reach the log, at debug, in either format, on success and on the
/// failure paths (tamper, revoked token, a new token file, server gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_logs_never_carry_tokens_secret_ids_or_plaintext() {
    use e2e::openbao::{dev_with_key, serve_flags, start_plugin};
    for format in ["plain", "json"] {
        let (mut bao, token, token_file) = dev_with_key("k");
        let (role_id, secret_id) = bao.approle("kms-plugin", &["kms-plugin"], "1h");
        let dir = tempfile::tempdir().unwrap();
        let mut flags = serve_flags(&bao, "k", &token_file);
        flags.extend(["--log-format".into(), format.into()]);
        let p = start_plugin(dir.path(), &flags);
        let mut c = p.client().await;
        let plaintext = b"PLAINTEXT-SEED-0123456789-abcdef".to_vec();
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
        let mut bad = w.ciphertext.clone();
        bad[20] ^= 1;
        let _ = c
            .decrypt(DecryptRequest {
                ciphertext: bad,
                uid: "x".into(),
                key_id: w.key_id.clone(),
                annotations: Default::default(),
            })
            .await;
        bao.revoke(&token);
        let again = || EncryptRequest {
            plaintext: plaintext.clone(),
            uid: "x".into(),
        };
        assert!(c.encrypt(again()).await.is_err(), "revoked");
        let fresh = bao.create_token(&["kms-plugin"], "1h");
        bao.write_secret_file("token", &fresh);
        c.encrypt(again()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let _ = c.status(StatusRequest {}).await;

        // AppRole: the login's token and the secret_id.
        let role = bao.write_secret_file("role-id", &role_id);
        let secret = bao.write_secret_file("secret-id", &secret_id);
        let adir = dir.path().join("approle");
        std::fs::create_dir_all(&adir).unwrap();
        let mut aflags = serve_flags(&bao, "k", &role);
        let i = aflags
            .iter()
            .position(|f| f == "--transit-token-file")
            .unwrap();
        aflags.splice(
            i..i + 2,
            [
                "--transit-role-id-file".to_string(),
                role.display().to_string(),
                "--transit-secret-id-file".to_string(),
                secret.display().to_string(),
            ],
        );
        aflags.extend(["--log-format".into(), format.into()]);
        let a = start_plugin(&adir, &aflags);
        let mut ca = a.client().await;
        let _ = ca.status(StatusRequest {}).await.unwrap();
        bao.kill();
        let _ = c.status(StatusRequest {}).await;
        let _ = ca
            .encrypt(EncryptRequest {
                plaintext: plaintext.clone(),
                uid: "x".into(),
            })
            .await;
        drop((p, a));

        let logs = [
            std::fs::read_to_string(dir.path().join("plugin.log")).unwrap(),
            std::fs::read_to_string(adir.join("plugin.log")).unwrap(),
        ];
        assert!(logs[0].contains("log-test"), "debug call lines present");
        assert!(logs[0].contains("transit token file changed"));
        assert!(logs[1].contains("AppRole login"));
        let secrets = vec![
            plaintext.clone(),
            token.into_bytes(),
            fresh.into_bytes(),
            secret_id.into_bytes(),
        ];
        // (The AppRole login's own token is never seen by the test; the
        // secret_id that obtains it is checked.) forms() slices up to byte 21.
        assert!(secrets.iter().all(|s| s.len() >= 21));
        for h in &logs {
            for s in &secrets {
                for f in forms(s) {
                    assert!(
                        !h.contains(&f),
                        "{format}: secret form {f:?} found in the log"
                    );
                }
            }
        }
    }
}
