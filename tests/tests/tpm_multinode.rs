//! Several control-plane nodes, each with its own TPM, share one KEK:
//! export-target on B, share on A, import on B with the digest A printed,
//! activate on B. A seed wrapped through A unwraps through B; a staged
//! rotation reaches B the same way; the bundle made for B does not import
//! into a third TPM (neither by the fingerprint check nor, forced, by the
//! TPM itself).

use std::path::Path;

use e2e::Plugin;
use e2e::swtpm::{Swtpm, init_tpm_ring, kms_tpm, serve_flags};
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

fn export_target(tpm: &Swtpm, out: &Path) -> String {
    let o = kms_tpm(
        &["key", "export-target", "-o", out.to_str().unwrap()],
        &tpm.tcti(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let fp = err
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("fingerprint printed")
        .to_string();
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    assert_eq!(file["fingerprint"], fp.as_str());
    fp
}

fn share_with(
    a: &Swtpm,
    ring: &Path,
    target: &Path,
    fp: &str,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "key",
        "share",
        "--keyring",
        ring.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--fingerprint",
        fp,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kms_tpm(&args, &a.tcti())
}

fn share(a: &Swtpm, ring: &Path, target: &Path, fp: &str, out: &Path) -> std::process::Output {
    share_with(a, ring, target, fp, out, &[])
}

fn import(tpm: &Swtpm, ring: &Path, bundle: &Path, digest: &str) -> std::process::Output {
    kms_tpm(
        &[
            "key",
            "import",
            bundle.to_str().unwrap(),
            "--keyring",
            ring.to_str().unwrap(),
            "--expect",
            digest,
        ],
        &tpm.tcti(),
    )
}

fn activate(tpm: &Swtpm, ring: &Path, key_id: &str) {
    let o = kms_tpm(
        &[
            "key",
            "activate",
            key_id,
            "--keyring",
            ring.to_str().unwrap(),
        ],
        &tpm.tcti(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn fingerprint(tpm: &Swtpm, ring: &Path) -> String {
    let o = kms_tpm(
        &[
            "key",
            "list",
            "--keyring",
            ring.to_str().unwrap(),
            "-o",
            "json",
        ],
        &tpm.tcti(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["fingerprint"].as_str().unwrap().to_string()
}

async fn serve_and(backend: &str, tpm: &Swtpm, ring: &Path, dir: &Path, name: &str) -> Plugin {
    let flags = serve_flags(backend, &tpm.tcti());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Plugin::start(
        ring,
        &dir.join(format!("{name}.sock")),
        &dir.join(format!("{name}.log")),
        &flags,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_kek_shared_between_two_nodes_and_not_to_a_third() {
    for backend in ["tpm-sealed", "tpm-resident"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (tpm_a, tpm_b, tpm_c) = (Swtpm::start(), Swtpm::start(), Swtpm::start());
        let (ring_a, ring_b, ring_c) = (d.join("ring-a"), d.join("ring-b"), d.join("ring-c"));
        let k1 = init_tpm_ring(&ring_a, backend, &tpm_a.tcti(), &["--shareable"]);

        // Node B: its storage key, fingerprint checked out of band.
        let fp_b = export_target(&tpm_b, &d.join("b.target.json"));
        let fp_c = export_target(&tpm_c, &d.join("c.target.json"));
        assert_ne!(fp_b, fp_c);

        // A fingerprint that was not verified is refused.
        let o = share(
            &tpm_a,
            &ring_a,
            &d.join("b.target.json"),
            &fp_c,
            &d.join("x.json"),
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to share"));
        assert!(!d.join("x.json").exists());

        let o = share(
            &tpm_a,
            &ring_a,
            &d.join("b.target.json"),
            &fp_b,
            &d.join("to-b.json"),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let digest_b = e2e::printed_digest(&o);
        let o = import(&tpm_b, &ring_b, &d.join("to-b.json"), &digest_b);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&format!("added key {k1}, staged")), "{out}");
        assert!(out.contains("no active key yet"), "{out}");
        // B's copy is staged until the operator says which key is active.
        activate(&tpm_b, &ring_b, &k1);
        assert_eq!(fingerprint(&tpm_a, &ring_a), fingerprint(&tpm_b, &ring_b));

        // Both nodes serve the same key_id; a seed wrapped by A unwraps on B.
        let pa = serve_and(backend, &tpm_a, &ring_a, d, "a").await;
        let pb = serve_and(backend, &tpm_b, &ring_b, d, "b").await;
        let (mut ca, mut cb) = (pa.client().await, pb.client().await);
        let sa = ca.status(StatusRequest {}).await.unwrap().into_inner();
        let sb = cb.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(sa.key_id, k1);
        assert_eq!(sb.key_id, k1, "{backend}: same key_id on both nodes");
        let seed = [0x42u8; 32];
        let w = ca
            .encrypt(EncryptRequest {
                plaintext: seed.to_vec(),
                uid: "u".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let back = cb
            .decrypt(DecryptRequest {
                ciphertext: w.ciphertext.clone(),
                uid: "u".into(),
                key_id: w.key_id.clone(),
                annotations: w.annotations.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            back.plaintext, seed,
            "{backend}: wrapped on A, unwrapped on B"
        );
        let wb = cb
            .encrypt(EncryptRequest {
                plaintext: seed.to_vec(),
                uid: "u".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let back = ca
            .decrypt(DecryptRequest {
                ciphertext: wb.ciphertext,
                uid: "u".into(),
                key_id: wb.key_id,
                annotations: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(back.plaintext, seed, "{backend}: and back");

        // A staged rotation: add on A, share the staged key, import on B,
        // fingerprints equal, activate on both (B keeps serving throughout).
        let o = kms_tpm(
            &["key", "add", "--keyring", ring_a.to_str().unwrap()],
            &tpm_a.tcti(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let k2 = e2e::created_key_id(&String::from_utf8_lossy(&o.stdout)).unwrap();
        let o = share_with(
            &tpm_a,
            &ring_a,
            &d.join("b.target.json"),
            &fp_b,
            &d.join("to-b2.json"),
            &["--staged"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let shared = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            shared.contains(&k2) && !shared.contains(&k1),
            "only the staged key: {shared}"
        );
        let o = import(
            &tpm_b,
            &ring_b,
            &d.join("to-b2.json"),
            &e2e::printed_digest(&o),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(fingerprint(&tpm_a, &ring_a), fingerprint(&tpm_b, &ring_b));
        // Staged: B still reports k1, and decrypts what A wraps with k2 once A activates.
        assert_eq!(
            cb.status(StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .key_id,
            k1
        );
        activate(&tpm_a, &ring_a, &k2);
        activate(&tpm_b, &ring_b, &k2);
        assert_eq!(fingerprint(&tpm_a, &ring_a), fingerprint(&tpm_b, &ring_b));
        let t = std::time::Instant::now();
        while cb
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id
            != k2
        {
            assert!(t.elapsed().as_secs() < 10, "B did not pick up {k2}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        // B's bundle does not import into a third TPM: refused by the
        // fingerprint check...
        let o = import(&tpm_c, &ring_c, &d.join("to-b.json"), &digest_b);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("made for the storage key") && err.contains(&fp_b),
            "{err}"
        );
        // ...and, with the check fooled, by TPM2_Import itself.
        let forged = std::fs::read_to_string(d.join("to-b.json"))
            .unwrap()
            .replace(&fp_b, &fp_c);
        std::fs::write(d.join("forged.json"), &forged).unwrap();
        // (Its forger would also have to get its digest past the operator.)
        let o = import(
            &tpm_c,
            &ring_c,
            &d.join("forged.json"),
            &e2e::sha256_digest(forged.as_bytes()),
        );
        assert!(
            !o.status.success(),
            "{backend}: a bundle for B imported into C"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("TPM2_Import"), "{err}");
        assert!(!ring_c.join("keyring.json").exists());

        // The bundle and the target file are private files.
        use std::os::unix::fs::PermissionsExt;
        for f in ["to-b.json", "b.target.json"] {
            let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}

#[test]
fn tpm_keys_made_without_shareable_cannot_leave_the_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tpm_a, tpm_b) = (Swtpm::start(), Swtpm::start());
    init_tpm_ring(&d.join("ring"), "tpm-sealed", &tpm_a.tcti(), &[]);
    let fp = export_target(&tpm_b, &d.join("t.json"));
    let o = share(
        &tpm_a,
        &d.join("ring"),
        &d.join("t.json"),
        &fp,
        &d.join("out.json"),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("without --shareable"), "{err}");
}
