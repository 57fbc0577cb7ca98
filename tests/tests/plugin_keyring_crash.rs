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

/// Runs `args` as a `kms-plugin` process and SIGKILLs it after a random
/// delay below 25 ms; returns its stdout (whatever it printed before).
fn run_killed(args: &[&str], seed: &mut u64) -> String {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let delay_us = (*seed >> 33) % 25_000;
    let mut child = Command::new(bin("kms-plugin"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_micros(delay_us));
    let _ = child.kill();
    let _ = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn states(ring: &std::path::Path) -> Vec<(String, String)> {
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
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `key add` and `key activate`, killed at random points: the ring always
/// loads (its directory's record included), exactly one key is active, a
/// key reported added is never lost, an activation reported is in place
/// until the next one.
#[test]
fn kill_9_during_add_and_activate_never_loses_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let r = ring.to_str().unwrap();
    let mut reported: Vec<String> = key_ids(&ring);
    let mut seed = time_seed();
    for i in 0..40 {
        let mut activated = None;
        if i % 2 == 0 {
            let out = run_killed(&["key", "add", "--keyring", r], &mut seed);
            if let Some(id) = e2e::created_key_id(&out) {
                reported.push(id);
            }
        } else {
            let pick = reported[(seed as usize >> 7) % reported.len()].clone();
            let out = run_killed(&["key", "activate", &pick, "--keyring", r], &mut seed);
            if out.contains(&format!("activated key {pick}")) {
                activated = Some(pick);
            }
        }
        let now = states(&ring);
        for id in &reported {
            assert!(
                now.iter().any(|(k, _)| k == id),
                "reported key {id} lost; ring has {now:?}"
            );
        }
        assert_eq!(
            now.iter().filter(|(_, s)| s == "active").count(),
            1,
            "{now:?}"
        );
        if let Some(a) = &activated {
            let active = &now.iter().find(|(_, s)| s == "active").unwrap().0;
            assert_eq!(active, a, "a reported activation is not in place");
        }
    }
}

/// `key import` and `key restore`, killed at random points, while the
/// sending node keeps adding keys: whatever was reported added is there,
/// the ring always loads, and its active key never moves.
#[test]
fn kill_9_during_import_and_restore_never_loses_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = e2e::nodes::KmsNode::new(dir.path(), "a", "software");
    let b = e2e::nodes::KmsNode::new(dir.path(), "b", "software");
    let k1 = a.init();
    a.give(&b, false);
    b.activate(&k1);
    let rb = b.ring();
    let rb = rb.to_str().unwrap();
    let mut reported: Vec<String> = vec![k1.clone()];
    let mut seed = time_seed();
    for i in 0..30 {
        a.add();
        let out = if i % 2 == 0 {
            let (file, digest) = a.send(&b, true);
            run_killed(
                &[
                    "key",
                    "import",
                    file.to_str().unwrap(),
                    "--expect",
                    &digest,
                    "--keyring",
                    rb,
                ],
                &mut seed,
            )
        } else {
            let copy = b.dir.join("a-ring.json");
            std::fs::copy(a.ring().join("keyring.json"), &copy).unwrap();
            run_killed(
                &[
                    "key",
                    "restore",
                    copy.to_str().unwrap(),
                    "--yes",
                    "--keyring",
                    rb,
                ],
                &mut seed,
            )
        };
        for l in out.lines() {
            if let Some(id) = l
                .strip_prefix("added key ")
                .and_then(|r| r.split(',').next())
            {
                reported.push(id.to_string());
            }
        }
        let now = states(&b.ring());
        for id in &reported {
            assert!(
                now.iter().any(|(k, _)| k == id),
                "reported key {id} lost; ring has {now:?}"
            );
        }
        let active: Vec<_> = now.iter().filter(|(_, s)| s == "active").collect();
        assert_eq!(active.len(), 1, "{now:?}");
        assert_eq!(active[0].0, k1, "an import or restore moved the active key");
    }
}
