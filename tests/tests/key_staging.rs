//! A staged key on one node: it decrypts what another node already
//! encrypts with it, it is never used for Encrypt, Status keeps the active
//! key_id, and the metrics say a key is staged and which ring is served.

use e2e::conformance::{dec, enc};
use e2e::nodes::KmsNode;

fn gauge(node: &KmsNode, name: &str) -> i64 {
    let (_, body) = e2e::http_get(node.plugin().health_port.unwrap(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_key_decrypts_and_is_never_used_to_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = KmsNode::new(dir.path(), "a", "software");
    let mut b = KmsNode::new(dir.path(), "b", "software");
    let k1 = a.init();
    a.give(&b, false);
    b.activate(&k1);
    a.serve();
    b.serve();
    assert_eq!(gauge(&b, "kms_plugin_staged_keys"), 0);

    let k2 = a.add();
    a.give(&b, true);
    let (mut ca, mut cb) = (a.plugin().client().await, b.plugin().client().await);
    // Both still report and use k1.
    let t = std::time::Instant::now();
    while gauge(&b, "kms_plugin_staged_keys") != 1 || gauge(&a, "kms_plugin_staged_keys") != 1 {
        assert!(t.elapsed().as_secs() < 10, "staged key never counted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for c in [&mut ca, &mut cb] {
        let st = c
            .status(kms_proto::v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.key_id, k1);
        for _ in 0..5 {
            let w = c.encrypt(enc(&[7; 32])).await.unwrap().into_inner();
            assert_eq!(w.key_id, k1, "a staged key was used for Encrypt");
        }
    }
    assert_eq!(a.metrics_fingerprint(), b.metrics_fingerprint());
    assert_eq!(a.metrics_fingerprint(), a.fingerprint());

    // a activates first: what it now wraps with k2, b (k2 still staged) reads.
    a.activate(&k2);
    a.wait_key_id(&k2).await;
    let w = ca.encrypt(enc(&[8; 32])).await.unwrap().into_inner();
    assert_eq!(w.key_id, k2);
    let d = cb
        .decrypt(dec(&w.ciphertext, &k2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, [8; 32]);
    assert_eq!(b.status_key_id().await, k1);
    assert_ne!(
        a.fingerprint(),
        b.fingerprint(),
        "a rotation half done shows"
    );
    b.activate(&k2);
    b.wait_key_id(&k2).await;
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(gauge(&b, "kms_plugin_staged_keys"), 0);

    // `key rotate` is add + activate, and says when not to use it.
    let o = a.key("rotate", &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("right for a single node") && out.contains("key activate"),
        "{out}"
    );
}
