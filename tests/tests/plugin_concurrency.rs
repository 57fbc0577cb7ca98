//! 16 concurrent clients, each on its own connection, thousands of round
//! trips each, while the key ring rotates underneath: no errors.

use e2e::{Plugin, init_ring};
use kms_proto::v2::{DecryptRequest, EncryptRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_thousands_of_round_trips_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let p = {
        // Per-call debug lines would dominate this test: log at info.
        let p = Plugin::spawn_env(
            &ring,
            &dir.path().join("kms.sock"),
            &dir.path().join("log"),
            &[],
            &[("RUST_LOG", "info")],
        );
        p.wait_ready();
        p
    };
    let rounds = 1500;
    let mut tasks = Vec::new();
    for worker in 0..16u8 {
        let mut c = p.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..rounds {
                let seed: Vec<u8> = (0..32).map(|j| worker ^ (i as u8) ^ j).collect();
                let w = c
                    .encrypt(EncryptRequest {
                        plaintext: seed.clone(),
                        uid: format!("w{worker}-{i}"),
                    })
                    .await
                    .expect("encrypt")
                    .into_inner();
                let d = c
                    .decrypt(DecryptRequest {
                        ciphertext: w.ciphertext,
                        uid: format!("w{worker}-{i}"),
                        key_id: w.key_id,
                        annotations: w.annotations,
                    })
                    .await
                    .expect("decrypt")
                    .into_inner();
                assert_eq!(d.plaintext, seed);
            }
        }));
    }
    // Rotate twice while they run.
    let r = ring.clone();
    let rot = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        e2e::rotate(&r);
        std::thread::sleep(std::time::Duration::from_millis(300));
        e2e::rotate(&r);
    });
    for t in tasks {
        t.await.unwrap();
    }
    rot.await.unwrap();
    let (_, metrics) = e2e::http_get(p.health_port.unwrap(), "/metrics");
    let ok_calls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kms_plugin_requests_total") && l.contains("code=\"OK\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(ok_calls >= (16 * rounds * 2) as f64, "{ok_calls}");
    assert!(!metrics.contains("code=\"Internal\""), "{metrics}");
}
