//! KEKs bound to PCR values (`--pcrs`): they work while the PCRs hold the
//! values they had at creation; after a PCR is extended they give a clear
//! error naming the PCRs, never a crash.

use std::time::{Duration, Instant};

use e2e::Plugin;
use e2e::swtpm::{Swtpm, init_tpm_ring, kms_tpm, serve_flags};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;

fn enc() -> EncryptRequest {
    EncryptRequest {
        plaintext: vec![6; 32],
        uid: "u".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_pcr_bound_keys_fail_clearly_after_the_pcr_changes() {
    for backend in ["tpm-sealed", "tpm-resident"] {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ring");
        init_tpm_ring(&ring, backend, &tpm.tcti(), &["--pcrs", "sha256:16,23"]);
        let text = std::fs::read_to_string(ring.join("keyring.json")).unwrap();
        assert!(
            text.contains("\"pcrs\""),
            "the PCR selection is recorded with the key"
        );
        let flags = serve_flags(backend, &tpm.tcti());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut p = Plugin::start(
            &ring,
            &dir.path().join("kms.sock"),
            &dir.path().join("log"),
            &flags,
        );
        let mut c = p.client().await;
        let w = c.encrypt(enc()).await.unwrap().into_inner();
        let d = c
            .decrypt(DecryptRequest {
                ciphertext: w.ciphertext.clone(),
                uid: "u".into(),
                key_id: w.key_id.clone(),
                annotations: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![6; 32]);
        // Rotation keeps the binding.
        let out = kms_tpm(
            &["key", "rotate", "--keyring", ring.to_str().unwrap()],
            &tpm.tcti(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        tpm.pcr_extend(16);

        if backend == "tpm-resident" {
            // Every use is a TPM command under the policy: refused at once,
            // with the PCRs named, and healthz says so.
            let e = c.encrypt(enc()).await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(
                e.message().contains("sha256:16,23") && e.message().contains("PCR"),
                "{}",
                e.message()
            );
            let t = Instant::now();
            loop {
                let st = c.status(StatusRequest {}).await.unwrap().into_inner();
                if st.healthz != "ok" {
                    assert!(st.healthz.contains("PCR"), "{}", st.healthz);
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(
            p.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "no crash"
        );
        assert!(p.terminate().success());

        // A restart in the changed platform state refuses to serve, naming the PCRs.
        let out = std::process::Command::new(e2e::bin("kms-plugin"))
            .args([
                "serve",
                "--listen-addr",
                &format!("unix://{}/again.sock", dir.path().display()),
                "--keyring",
                ring.to_str().unwrap(),
            ])
            .args(&flags)
            .env_remove("TCTI")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sha256:16,23") && err.contains("changed since the key was created"),
            "{backend}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.path().join("again.sock").exists());

        // A new key made in the current state works: rotate and serve again.
        let out = kms_tpm(
            &["key", "rotate", "--keyring", ring.to_str().unwrap()],
            &tpm.tcti(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = Plugin::start(
            &ring,
            &dir.path().join("kms.sock"),
            &dir.path().join("log2"),
            &flags,
        );
        let mut c = p.client().await;
        c.encrypt(enc()).await.unwrap();
        if backend == "tpm-sealed" {
            // The old keys stay in the ring, reported as unusable, not fatal.
            let e = c
                .decrypt(DecryptRequest {
                    ciphertext: w.ciphertext.clone(),
                    uid: "u".into(),
                    key_id: w.key_id.clone(),
                    annotations: Default::default(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unavailable);
            assert!(e.message().contains("sha256:16,23"), "{}", e.message());
        }
    }
}
