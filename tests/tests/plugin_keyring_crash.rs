//! Key ring crash safety: `kill -9` during `key rotate`, many times. The ring
//! always loads, and no key a rotate reported as created is ever lost.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{bin, init_ring, kms};

fn key_ids(ring: &std::path::Path) -> Vec<String> {
    let out = kms(&[
        "key",
        "list",
        "--keyring",
        ring.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "the ring must always load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kill_9_during_rotate_never_breaks_the_ring_or_loses_a_reported_key() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let mut reported: Vec<String> = key_ids(&ring);
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (mut killed, mut completed) = (0, 0);
    for _ in 0..60 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_us = (seed >> 33) % 25_000;
        let mut child = Command::new(bin("kms-plugin"))
            .args(["key", "rotate", "--keyring", ring.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        if status.success() {
            completed += 1;
        } else {
            killed += 1;
        }
        if let Some(id) = e2e::created_key_id(&out) {
            reported.push(id);
        }
        let now = key_ids(&ring);
        for id in &reported {
            assert!(now.contains(id), "reported key {id} lost; ring has {now:?}");
        }
        // Exactly one active key, always.
        let out = kms(&[
            "key",
            "list",
            "--keyring",
            ring.to_str().unwrap(),
            "-o",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let active = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["state"] == "active")
            .count();
        assert_eq!(active, 1);
    }
    eprintln!("killed {killed} rotations mid-way, {completed} completed");
    // No temp files pile up: a later successful write sweeps them.
    e2e::rotate(&ring);
    let leftovers: Vec<_> = std::fs::read_dir(&ring)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_rotations_serialize_and_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || e2e::rotate(&ring))
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let now = key_ids(&ring);
    assert_eq!(now.len(), 9);
    for id in ids {
        assert!(now.contains(&id));
    }
}

#[test]
fn init_refuses_to_overwrite_and_commands_fail_clearly_without_a_ring() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let before = std::fs::read(ring.join("keyring.json")).unwrap();
    let out = kms(&["key", "init", "--keyring", ring.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(ring.join("keyring.json")).unwrap(), before);

    let none = dir.path().join("none");
    let out = kms(&["key", "rotate", "--keyring", none.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key ring"));

    let out = kms(&[
        "key",
        "init",
        "--keyring",
        dir.path().join("x").to_str().unwrap(),
        "--algorithm",
        "rot13",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algorithm"));

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(ring.join("keyring.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
