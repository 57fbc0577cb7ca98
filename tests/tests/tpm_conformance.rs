//! The KMS v2 contract for both TPM backends, with the tonic client checks
//! the software backend passes (plugin_api.rs, plugin_rotation.rs): Status,
//! limits, tamper, wrong key_ids, rotation while serving, restart on the
//! same TPM state, retirement. Each test starts its own swtpm.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::Plugin;
use e2e::swtpm::{Swtpm, init_tpm_ring, kms_tpm, rotate_tpm, serve_flags};
use kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;
use tonic::transport::Channel;

const BACKENDS: [&str; 2] = ["tpm-sealed", "tpm-resident"];

struct Env {
    tpm: Swtpm,
    dir: tempfile::TempDir,
    plugin: Plugin,
}

impl Env {
    fn ring(&self) -> std::path::PathBuf {
        self.dir.path().join("ring")
    }
}

fn start(backend: &str, init: &[&str]) -> Env {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_tpm_ring(&ring, backend, &tpm.tcti(), init);
    let flags = serve_flags(backend, &tpm.tcti());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let plugin = Plugin::start(
        &ring,
        &dir.path().join("kms.sock"),
        &dir.path().join("log"),
        &flags,
    );
    Env { tpm, dir, plugin }
}

fn enc(pt: &[u8]) -> EncryptRequest {
    EncryptRequest {
        plaintext: pt.to_vec(),
        uid: "e2e-uid".into(),
    }
}

fn dec(ct: &[u8], key_id: &str) -> DecryptRequest {
    DecryptRequest {
        ciphertext: ct.to_vec(),
        uid: "e2e-uid".into(),
        key_id: key_id.into(),
        annotations: BTreeMap::new(),
    }
}

async fn wait_key_id(c: &mut KeyManagementServiceClient<Channel>, want: &str) {
    let t = Instant::now();
    loop {
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        if st.key_id == want {
            assert_eq!(st.healthz, "ok");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "key_id still {}",
            st.key_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_status_encrypt_decrypt_satisfy_the_apiserver_checks() {
    for backend in BACKENDS {
        let env = start(backend, &[]);
        let mut c = env.plugin.client().await;
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.version, "v2");
        assert_eq!(st.healthz, "ok", "{backend}");
        let prefix = if backend == "tpm-sealed" {
            "tpms-"
        } else {
            "tpmr-"
        };
        assert!(st.key_id.starts_with(prefix), "{}", st.key_id);
        assert!(st.key_id.len() <= 1024);

        let seed = [0x5au8; 32];
        let r = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_eq!(
            r.key_id, st.key_id,
            "Encrypt key_id must equal Status key_id"
        );
        assert!(
            !r.ciphertext.is_empty() && r.ciphertext.len() < 100,
            "{}",
            r.ciphertext.len()
        );
        assert_ne!(&r.ciphertext[..], &seed[..]);
        assert_eq!(
            r.annotations
                .get("backend.kms-plugin.k8s-at-rest.io")
                .map(|v| &v[..]),
            Some(backend.as_bytes())
        );
        let d = c
            .decrypt(dec(&r.ciphertext, &r.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed);
        let r2 = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_ne!(r.ciphertext, r2.ciphertext, "{backend}: random nonces/IVs");

        // The health endpoint agrees.
        let (code, body) = e2e::http_get(env.plugin.health_port.unwrap(), "/healthz");
        assert_eq!(code, 200, "{body}");
        let (_, metrics) = e2e::http_get(env.plugin.health_port.unwrap(), "/metrics");
        assert!(metrics.contains(backend), "{metrics}");
        let _ = &env.tpm;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_every_byte_flip_wrong_and_unknown_key_ids_are_refused() {
    for backend in BACKENDS {
        let env = start(backend, &[]);
        let mut c = env.plugin.client().await;
        let r = c.encrypt(enc(&[1u8; 32])).await.unwrap().into_inner();
        for i in 0..r.ciphertext.len() {
            let mut bad = r.ciphertext.clone();
            bad[i] ^= 0x01;
            let e = c.decrypt(dec(&bad, &r.key_id)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{backend} byte {i}: {e:?}");
            if i >= 2 {
                assert_eq!(e.message(), "decryption failed", "{backend} byte {i}");
            }
        }
        let e = c
            .decrypt(dec(&r.ciphertext, "tpms-0000000000000000-v9-000000000000"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(
            e.message()
                .contains("tpms-0000000000000000-v9-000000000000")
        );

        // Another key of the ring does not authenticate it.
        let new_id = rotate_tpm(&env.ring(), &env.tpm.tcti(), &[]);
        wait_key_id(&mut c, &new_id).await;
        let e = c.decrypt(dec(&r.ciphertext, &new_id)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{backend}");
        assert_eq!(e.message(), "decryption failed");
        // And a ciphertext of one backend is garbage to the other's format.
        let e = c
            .decrypt(dec(&[0x01, 0x01, 0, 0, 0], &new_id))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_empty_oversized_and_garbage_inputs_are_invalid_argument() {
    for backend in BACKENDS {
        let env = start(backend, &[]);
        let mut c = env.plugin.client().await;
        let r = c.encrypt(enc(&[3u8; 32])).await.unwrap().into_inner();
        let e = c.encrypt(enc(b"")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        // Find the limit from the refusal of 1024 bytes, then check it exactly.
        let e = c.encrypt(enc(&[1u8; 1024])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("1024"),
            "must name the limit: {}",
            e.message()
        );
        let max: usize = e
            .message()
            .split("at most ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no limit in {:?}", e.message()));
        assert!(max >= 900, "{backend}: {max}");
        let ok = c.encrypt(enc(&vec![1u8; max])).await.unwrap().into_inner();
        assert!(ok.ciphertext.len() <= 1024, "{}", ok.ciphertext.len());
        let d = c
            .decrypt(dec(&ok.ciphertext, &ok.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext.len(), max);
        let e = c.encrypt(enc(&vec![1u8; max + 1])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        for (req, want) in [
            (dec(&[], &r.key_id), "empty"),
            (dec(&[1u8; 1025], &r.key_id), "1024"),
            (dec(&r.ciphertext, ""), "key_id is empty"),
            (dec(&[0xff; 40], &r.key_id), "malformed"),
            (dec(&[1], &r.key_id), "malformed"),
        ] {
            let e = c.decrypt(req).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{backend}: {e:?}");
            assert!(
                e.message().contains(want),
                "{want:?} not in {:?}",
                e.message()
            );
        }
        let garbage: Vec<u8> = (0..4usize << 20).map(|i| (i * 7 + 13) as u8).collect();
        assert_eq!(
            c.encrypt(enc(&garbage)).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.healthz, "ok");
        let d = c
            .decrypt(dec(&r.ciphertext, &r.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, [3u8; 32]);
    }
}

// Multi-threaded: the client answers HTTP/2 pings while the test thread
// waits for the plugin to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_rotation_while_serving_restart_and_retire() {
    for backend in BACKENDS {
        let mut env = start(backend, &[]);
        let tcti = env.tpm.tcti();
        let ring = env.ring();
        let mut c = env.plugin.client().await;
        let k1 = c
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id;
        let w1 = c.encrypt(enc(&[1; 32])).await.unwrap().into_inner();
        assert_eq!(w1.key_id, k1);

        // Rotate with the CLI against the same TPM while serving, under load.
        let load = {
            let mut c = env.plugin.client().await;
            let log = env.plugin.log.clone();
            tokio::spawn(async move {
                let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
                let mut n = 0u32;
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(2) {
                    let r = c
                        .encrypt(enc(&[9; 32]))
                        .await
                        .unwrap_or_else(|e| {
                            panic!("encrypt while rotating: {e:?}\nlog:\n{}", log_text())
                        })
                        .into_inner();
                    let d = c
                        .decrypt(dec(&r.ciphertext, &r.key_id))
                        .await
                        .unwrap_or_else(|e| {
                            panic!("decrypt while rotating: {e:?}\nlog:\n{}", log_text())
                        });
                    assert_eq!(d.into_inner().plaintext, [9; 32]);
                    n += 1;
                }
                n
            })
        };
        let k2 = rotate_tpm(&ring, &tcti, &[]);
        assert_ne!(k1, k2);
        wait_key_id(&mut c, &k2).await;
        assert!(load.await.unwrap() > 0);
        let w2 = c.encrypt(enc(&[2; 32])).await.unwrap().into_inner();
        assert_eq!(w2.key_id, k2, "{backend}: new Encrypts use the new key");
        assert_eq!(
            c.decrypt(dec(&w1.ciphertext, &w1.key_id))
                .await
                .unwrap()
                .into_inner()
                .plaintext,
            vec![1; 32]
        );
        let k3 = rotate_tpm(&ring, &tcti, &[]);
        assert!(k3.contains("-v3-"), "{k3}");
        wait_key_id(&mut c, &k3).await;
        let w3 = c.encrypt(enc(&[3; 32])).await.unwrap().into_inner();

        // Restart on the same TPM state: everything decrypts, key_id stable.
        assert!(env.plugin.terminate().success());
        let flags = serve_flags(backend, &tcti);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        env.plugin = Plugin::start(
            &ring,
            &env.dir.path().join("kms.sock"),
            &env.dir.path().join("log"),
            &flags,
        );
        let mut c = env.plugin.client().await;
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
            assert_eq!(d.plaintext, vec![v; 32], "{backend}");
        }

        // Retire k1 (the CLI needs no TPM for that): refused as retired.
        let out = kms_tpm(
            &[
                "key",
                "retire",
                &k1,
                "--keyring",
                ring.to_str().unwrap(),
                "--yes",
            ],
            &tcti,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let out = kms_tpm(
            &[
                "key",
                "list",
                "--keyring",
                ring.to_str().unwrap(),
                "-o",
                "json",
            ],
            &tcti,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["backend"], backend);
        let states: Vec<_> = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["retired", "enabled", "active"]);
        // key_ids are never reused.
        let k4 = rotate_tpm(&ring, &tcti, &[]);
        assert!(k4.contains("-v4-"), "{k4}");
    }
}

#[test]
fn tpm_bad_tcti_and_missing_tpm_fail_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let sock = dir.path().join("kms.sock");
    // init without a TPM to talk to.
    let port = e2e::free_port();
    let out = kms_tpm(
        &[
            "key",
            "init",
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-sealed",
        ],
        &format!("swtpm:host=127.0.0.1,port={port}"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TPM unavailable"), "{err}");
    let out = kms_tpm(
        &[
            "key",
            "init",
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-sealed",
        ],
        "swtpm:path=/x",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcti=\"swtpm:path=/x\" is not valid"));
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &format!("unix://{}", sock.display()),
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-resident",
            "--tcti",
            "bogus",
        ])
        .env_remove("TCTI")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcti=\"bogus\" is not valid"));
    assert!(!sock.exists());
}
