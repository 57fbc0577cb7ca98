//! Key ring files the plugin must not take keys from: owned by another
//! user, writable by group or others, or a symbolic link. `serve` refuses
//! them before binding and every `key` command refuses them, saying why.

use std::os::unix::fs::PermissionsExt;

use e2e::{init_ring, kms};

fn serve_fails(ring: &std::path::Path, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kms.sock");
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &format!("unix://{}", sock.display()),
            "--keyring",
            ring.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{want:?} not in {err}");
    assert!(!sock.exists(), "bound before refusing");
}

fn list_fails(ring: &std::path::Path, want: &str) {
    let out = kms(&["key", "list", "--keyring", ring.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{want:?} not in {err}");
}

#[test]
fn rings_another_user_owns_or_others_can_write_are_refused() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test changes file owners: run the tests as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let file = ring.join("keyring.json");

    // Owned by another (non-root) user.
    rustix::fs::chown(&file, Some(rustix::fs::Uid::from_raw(4242)), None).unwrap();
    list_fails(&ring, "owned by uid 4242");
    serve_fails(&ring, "owned by uid 4242");
    rustix::fs::chown(&file, Some(rustix::fs::Uid::ROOT), None).unwrap();

    // Writable by others.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o606)).unwrap();
    list_fails(&ring, "writable by group or others");
    serve_fails(&ring, "writable by group or others");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A directory another user owns.
    rustix::fs::chown(&ring, Some(rustix::fs::Uid::from_raw(4242)), None).unwrap();
    list_fails(&ring, "key ring directory is owned by uid 4242");
    rustix::fs::chown(&ring, Some(rustix::fs::Uid::ROOT), None).unwrap();

    // A symlink to a good ring.
    let real = dir.path().join("real.json");
    std::fs::rename(&file, &real).unwrap();
    std::os::unix::fs::symlink(&real, &file).unwrap();
    list_fails(&ring, "symbolic link");
    serve_fails(&ring, "symbolic link");
    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&real, &file).unwrap();

    // Put right, it serves again.
    let out = kms(&["key", "list", "--keyring", ring.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
