//! What the pkcs11 backend decides without a token: ring entries arriving
//! from outside, key_ids, and the settings. The token itself is tested
//! through the binary against SoftHSM2 (`tests/tests/pkcs11_token.rs`, the
//! conformance suite).

use std::os::unix::fs::PermissionsExt;

use super::key::{Reference, derive_key_id};
use super::*;
use crate::keyring::KeyState;

const RING: &str = "0011223344556677";

fn reference() -> Reference {
    Reference {
        id: b"0011223344556677-v3-a1b2c3d4".to_vec(),
        serial: "9c1f2e3d4c5b6a70".into(),
        kcv: [0x5a; 16],
    }
}

fn entry(r: &Reference, version: u64) -> KeyEntry {
    let mut m = Material::default();
    r.to_material(&mut m);
    KeyEntry {
        version,
        key_id: derive_key_id(RING, version, r),
        algorithm: SCHEME.into(),
        created: "2026-12-02T00:00:00Z".into(),
        state: KeyState::Active,
        retired: None,
        material: Some(m),
    }
}

#[test]
fn key_ids_are_fixed_by_the_public_facts() {
    let r = reference();
    // SHA-256 over u32be-length-prefixed serial, CKA_ID and check value
    // (computed outside this code: Python hashlib), first 6 bytes.
    assert_eq!(
        derive_key_id(RING, 3, &r),
        "p11-0011223344556677-v3-b572a0f2deed"
    );
    let mut other = r.clone();
    other.kcv[0] ^= 1;
    assert_ne!(derive_key_id(RING, 3, &other), derive_key_id(RING, 3, &r));
    let mut other = r.clone();
    other.serial = "9c1f2e3d4c5b6a71".into();
    assert_ne!(derive_key_id(RING, 3, &other), derive_key_id(RING, 3, &r));
    assert_ne!(derive_key_id(RING, 4, &r), derive_key_id(RING, 3, &r));
}

#[test]
fn entries_decode_and_every_edit_is_refused() {
    let r = reference();
    let e = entry(&r, 3);
    assert_eq!(Reference::decode(RING, &e).unwrap(), r);

    let refused = |e: &KeyEntry, want: &str| {
        let err = Reference::decode(RING, e).unwrap_err();
        assert!(err.contains(want), "{err} (want {want})");
    };
    // Another version, ring or key_id than the material says.
    let mut x = e.clone();
    x.version = 4;
    refused(&x, "does not match its token object reference");
    let err = Reference::decode("ffffffffffffffff", &e).unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    let mut x = e.clone();
    x.key_id.push('0');
    refused(&x, "does not match");
    // Another algorithm.
    let mut x = e.clone();
    x.algorithm = "aes-256-gcm".into();
    refused(&x, "expected \"pkcs11-aes-256-gcm\"");
    // No material, missing and malformed fields, unknown ones.
    let mut x = e.clone();
    x.material = None;
    refused(&x, "has no material");
    for field in ["id", "token-serial", "kcv"] {
        let mut m = Material::default();
        for (name, bytes) in [
            ("id", r.id.clone()),
            ("token-serial", r.serial.clone().into_bytes()),
            ("kcv", r.kcv.to_vec()),
        ] {
            if name != field {
                m.insert(name, &bytes);
            }
        }
        let mut x = e.clone();
        x.material = Some(m);
        refused(&x, &format!("no {field:?} field"));
    }
    let with = |name: &str, bytes: &[u8]| {
        let mut m = e.material.clone().unwrap();
        m.insert(name, bytes);
        let mut x = e.clone();
        x.material = Some(m);
        x
    };
    refused(&with("kcv", &[0; 15]), "\"kcv\" must be 16 bytes");
    refused(&with("id", b""), "\"id\" must be 1 to 64 bytes");
    refused(&with("id", &[b'a'; 65]), "\"id\" must be 1 to 64 bytes");
    refused(&with("token-serial", b""), "is not a token serial");
    refused(&with("token-serial", b"a b"), "is not a token serial");
    refused(
        &with("token-serial", &[0xff, 0xfe]),
        "is not a token serial",
    );
    refused(&with("token-serial", &[b'1'; 17]), "is not a token serial");
    refused(&with("key", &[0; 32]), "unknown material field \"key\"");
}

#[test]
fn the_registry_row_checks_imports_without_the_token() {
    let e = entry(&reference(), 3);
    assert!((ROW.verify)(RING, &e).is_ok());
    let mut x = e.clone();
    x.version = 9;
    assert!((ROW.verify)(RING, &x).is_err());
    assert_eq!(ROW.export, Portability::Reference);
    assert!(ROW.destroy.is_some());
}

fn options(pairs: &[(&str, &str)]) -> ConnectOptions {
    let mut o = ConnectOptions::default();
    for (k, v) in pairs {
        o.set(k, *v).unwrap();
    }
    o
}

fn pin_file(dir: &Path, text: &str, mode: u32) -> String {
    let p = dir.join("pin");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

#[test]
fn settings_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.so");
    std::fs::write(&module, "").unwrap();
    let module = module.display().to_string();
    let pin = pin_file(dir.path(), "1234\n", 0o600);
    let check = |pairs: &[(&str, &str)]| (ROW.check)(&options(pairs));

    let good = [
        ("pkcs11-module", module.as_str()),
        ("pkcs11-token-label", "kek"),
        ("pkcs11-pin-file", pin.as_str()),
    ];
    check(&good).unwrap();
    let cfg = token_config(&options(&good)).unwrap();
    assert_eq!(
        cfg.pin.as_str(),
        "1234",
        "the newline is not part of the PIN"
    );
    assert_eq!(cfg.sessions, 4);
    assert_eq!(cfg.token, TokenChoice::Label("kek".into()));

    let err = |pairs: &[(&str, &str)]| check(pairs).unwrap_err();
    assert!(err(&good[1..]).contains("pkcs11-module is required"));
    assert!(
        err(&[("pkcs11-module", "/nonexistent.so"), good[1], good[2]])
            .contains("pkcs11-module=\"/nonexistent.so\" is not valid")
    );
    let d = dir.path().display().to_string();
    assert!(err(&[("pkcs11-module", d.as_str()), good[1], good[2]]).contains("not a file"));
    assert!(err(&[good[0], good[2]]).contains("--pkcs11-token-label LABEL"));
    assert!(err(&[good[0], ("pkcs11-token-label", ""), good[2]]).contains("--pkcs11-token-label"));
    assert!(err(&[good[0], good[1], ("pkcs11-slot", "1"), good[2]]).contains("not both"));
    assert!(
        err(&[good[0], ("pkcs11-slot", "x"), good[2]]).contains("pkcs11-slot=\"x\" is not valid")
    );
    let by_slot = [good[0], ("pkcs11-slot", "7"), good[2]];
    assert_eq!(
        token_config(&options(&by_slot)).unwrap().token,
        TokenChoice::Slot(7)
    );
    for n in ["0", "257", "-1", "many"] {
        let e = err(&[good[0], good[1], good[2], ("pkcs11-sessions", n)]);
        assert!(e.contains("must be between 1 and 256"), "{n}: {e}");
    }
    let sixteen = [good[0], good[1], good[2], ("pkcs11-sessions", "16")];
    assert_eq!(token_config(&options(&sixteen)).unwrap().sessions, 16);
}

#[test]
fn pin_files_are_checked_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.so");
    std::fs::write(&module, "").unwrap();
    let module = module.display().to_string();
    let with_pin = |path: &str| {
        (ROW.check)(&options(&[
            ("pkcs11-module", module.as_str()),
            ("pkcs11-token-label", "kek"),
            ("pkcs11-pin-file", path),
        ]))
    };
    let secret = "s3cret-pin-value";
    for mode in [0o640, 0o604, 0o644] {
        let p = pin_file(dir.path(), secret, mode);
        let e = with_pin(&p).unwrap_err();
        assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        assert!(!e.contains(secret), "the PIN is in the message: {e}");
    }
    let p = pin_file(dir.path(), "\n", 0o600);
    assert!(with_pin(&p).unwrap_err().contains("the file is empty"));
    let link = dir.path().join("link");
    let real = pin_file(dir.path(), secret, 0o600);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = with_pin(link.to_str().unwrap()).unwrap_err();
    assert!(e.contains("a symlink is refused"), "{e}");
    let e = with_pin(dir.path().join("missing").to_str().unwrap()).unwrap_err();
    assert!(e.contains("pkcs11-pin-file="), "{e}");
    // The file's PIN, read through the symlink's target itself.
    let cfg = token_config(&options(&[
        ("pkcs11-module", module.as_str()),
        ("pkcs11-token-label", "kek"),
        ("pkcs11-pin-file", real.as_str()),
    ]))
    .unwrap();
    assert_eq!(cfg.pin.as_str(), secret);
}
