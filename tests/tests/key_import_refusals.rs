//! What arrives from another node may only add staged keys, and only when
//! the operator confirms where it came from: tampered, foreign, replayed,
//! conflicting and over-privileged files are each refused with a clear
//! error, and the ring (its file and its directory's record) is left byte
//! for byte as it was.

use std::path::Path;

use e2e::nodes::KmsNode;
use e2e::sha256_digest;

/// The ring file and the directory's record, to compare before and after.
fn snapshot(n: &KmsNode) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(n.ring().join("keyring.json")).unwrap(),
        std::fs::read(n.ring().join("keyring.seen")).unwrap(),
    )
}

fn refused(n: &KmsNode, file: &Path, digest: &str, want: &str) {
    let before = snapshot(n);
    let o = n.import(file, digest);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "imported: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.contains(want), "{want:?} not in {err}");
    assert_eq!(snapshot(n), before, "a refused import changed the ring");
}

/// `a` and `b` hold ring R (b imported it and activated k1); `a` has a
/// staged k2 exported for `b`.
struct Setup {
    _dir: tempfile::TempDir,
    a: KmsNode,
    b: KmsNode,
    k1: String,
    k2: String,
    export: std::path::PathBuf,
    digest: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let a = KmsNode::new(dir.path(), "a", "software");
    let b = KmsNode::new(dir.path(), "b", "software");
    let k1 = a.init();
    a.give(&b, false);
    b.activate(&k1);
    let k2 = a.add();
    let (export, digest) = a.send(&b, true);
    Setup {
        _dir: dir,
        a,
        b,
        k1,
        k2,
        export,
        digest,
    }
}

#[test]
fn a_good_export_adds_one_staged_key_and_nothing_else() {
    let s = setup();
    let o = s.b.import(&s.export, &s.digest);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("added key {}, staged", s.k2)),
        "{out}"
    );
    assert!(
        out.contains(&format!("active key (unchanged): {}", s.k1)),
        "{out}"
    );
    assert_eq!(s.a.fingerprint(), s.b.fingerprint());
    // The export is a private file; importing it twice adds nothing.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.export).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = snapshot(&s.b);
    let o = s.b.import(&s.export, &s.digest);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to add"));
    assert_eq!(snapshot(&s.b), before);
}

#[test]
fn a_tampered_file_or_a_wrong_digest_is_refused() {
    let s = setup();
    // One byte changed: its digest is no longer the one the sender printed.
    let mut bytes = std::fs::read(&s.export).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let tampered = s.b.dir.join("tampered.json");
    std::fs::write(&tampered, &bytes).unwrap();
    refused(&s.b, &tampered, &s.digest, "refusing it");
    // The right file with a digest that is not its own, or no real digest.
    refused(
        &s.b,
        &s.export,
        &sha256_digest(b"something else"),
        "refusing it",
    );
    refused(&s.b, &s.export, "sha256:abc", "give the full digest");
    refused(&s.b, &s.export, &s.digest[..20], "give the full digest");
}

#[test]
fn a_planted_key_is_refused_even_with_its_own_digest() {
    let s = setup();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.export).unwrap()).unwrap();
    // An attacker's own key for ring R: its key_id does not follow from the
    // material (they cannot make one that does without the key check
    // value's preimage)...
    v["keys"][0]["material"]["key"] =
        serde_json::Value::String("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into());
    let planted = s.b.dir.join("planted.json");
    std::fs::write(&planted, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(
        &s.b,
        &planted,
        &sha256_digest(&std::fs::read(&planted).unwrap()),
        "does not match its material",
    );
    // ...and a file that claims a state (active) or carries a retirement is
    // not a file `key export` writes: refused as such.
    for (field, value) in [("state", "active"), ("retired", "2026-01-01T00:00:00Z")] {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&s.export).unwrap()).unwrap();
        v["keys"][0][field] = serde_json::Value::String(value.into());
        let f = s.b.dir.join(format!("with-{field}.json"));
        std::fs::write(&f, serde_json::to_vec(&v).unwrap()).unwrap();
        refused(
            &s.b,
            &f,
            &sha256_digest(&std::fs::read(&f).unwrap()),
            "unknown field",
        );
    }
}

#[test]
fn a_file_of_another_ring_is_refused() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let stranger = KmsNode::new(dir.path(), "x", "software");
    stranger.init();
    let (file, digest) = stranger.send(&s.b, false);
    refused(&s.b, &file, &digest, "refusing to mix rings");
}

#[test]
fn a_replay_after_a_retirement_is_refused() {
    let s = setup();
    let o = s.b.import(&s.export, &s.digest);
    assert!(o.status.success());
    // b retires the staged k2 (never activated there); the old file comes back.
    s.b.retire(&s.k2);
    refused(&s.b, &s.export, &s.digest, "was retired on this node");
}

#[test]
fn a_version_the_ring_holds_with_other_material_is_refused() {
    let s = setup();
    // c: another copy of ring R (from b, which holds only version 1) that
    // made its own version 2.
    let dir = tempfile::tempdir().unwrap();
    let c = KmsNode::new(dir.path(), "c", "software");
    s.b.give(&c, false);
    c.activate(&s.k1);
    let kc = c.add();
    assert_ne!(kc, s.k2);
    assert!(kc.contains("-v2-"), "{kc}");
    // b takes a's version 2; then c's version 2 arrives.
    let o = s.b.import(&s.export, &s.digest);
    assert!(o.status.success());
    let (file, digest) = c.send(&s.b, true);
    refused(&s.b, &file, &digest, "rings diverged");
}

#[test]
fn an_old_share_bundle_with_states_is_refused_without_a_tpm() {
    let s = setup();
    let v1 = serde_json::json!({
        "format": "kms-plugin-tpm-share/v1",
        "target": "sha256:00",
        "ring_id": "0011223344556677",
        "backend": "tpm-sealed",
        "next_version": 2,
        "keys": [{"version": 1, "key_id": "tpms-0011223344556677-v1-000000000000",
                  "algorithm": "aes-256-gcm", "created": "2026-01-01T00:00:00Z",
                  "state": "active", "objects": {}}]
    });
    let f = s.b.dir.join("v1.json");
    std::fs::write(&f, serde_json::to_vec(&v1).unwrap()).unwrap();
    refused(
        &s.b,
        &f,
        &sha256_digest(&std::fs::read(&f).unwrap()),
        "made by an older kms-plugin",
    );
    // A format nobody writes.
    let g = s.b.dir.join("other.json");
    std::fs::write(&g, br#"{"format":"something/v9"}"#).unwrap();
    refused(
        &s.b,
        &g,
        &sha256_digest(&std::fs::read(&g).unwrap()),
        "not a key bundle",
    );
}
