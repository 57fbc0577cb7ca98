//! The TPM goes away while serving (swtpm killed): healthz says why, calls
//! answer UNAVAILABLE, the plugin stays up; swtpm comes back on the same
//! state and ports: the plugin recovers by itself, and everything wrapped
//! before still unwraps.

use std::time::{Duration, Instant};

use e2e::Plugin;
use e2e::swtpm::{Swtpm, init_tpm_ring, serve_flags};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;

fn enc() -> EncryptRequest {
    EncryptRequest {
        plaintext: vec![4; 32],
        uid: "u".into(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_outage_is_reported_and_recovered_without_restart() {
    for backend in ["tpm-sealed", "tpm-resident"] {
        let mut tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ring");
        init_tpm_ring(&ring, backend, &tpm.tcti(), &[]);
        let flags = serve_flags(backend, &tpm.tcti());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut p = Plugin::start(
            &ring,
            &dir.path().join("kms.sock"),
            &dir.path().join("log"),
            &flags,
        );
        let port = p.health_port.unwrap();
        let mut c = p.client().await;
        let w = c.encrypt(enc()).await.unwrap().into_inner();
        assert_eq!(
            c.status(StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .healthz,
            "ok"
        );

        tpm.kill();
        // Within a few health-cache periods, healthz is not ok and says why.
        let t = Instant::now();
        let reason = loop {
            let st = c.status(StatusRequest {}).await.unwrap().into_inner();
            if st.healthz != "ok" {
                break st.healthz;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{backend}: healthz still ok with the TPM gone"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(reason.contains("TPM unavailable"), "{backend}: {reason}");
        assert!(reason.contains(backend), "{reason}");
        let (code, body) = e2e::http_get(port, "/healthz");
        assert_eq!(code, 503, "{body}");
        let e = c.encrypt(enc()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{backend}: {e:?}");
        let e = c.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{backend}: {e:?}");
        assert!(
            p.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the plugin crashed"
        );

        tpm.restart();
        let t = Instant::now();
        loop {
            let st = c.status(StatusRequest {}).await.unwrap().into_inner();
            if st.healthz == "ok" {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{backend}: not recovered: {}",
                st.healthz
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let d = c
            .decrypt(dec(&w.ciphertext, &w.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![4; 32]);
        let w2 = c.encrypt(enc()).await.unwrap().into_inner();
        assert_eq!(w2.key_id, w.key_id);
        let (code, _) = e2e::http_get(port, "/healthz");
        assert_eq!(code, 200);
        let log = p.log_text();
        assert!(
            log.contains("TPM unavailable") && log.contains("TPM reachable again"),
            "{log}"
        );
        assert!(p.terminate().success());
    }
}
