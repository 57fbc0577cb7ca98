//! Reading, writing and locking the ring file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Keyring, KeyringError};
use crate::fsutil;

const RING_FILE: &str = "keyring.json";
const LOCK_FILE: &str = "keyring.lock";
/// A ring file larger than this is refused unread.
const MAX_RING_BYTES: u64 = 16 * 1024 * 1024;

/// Path of the ring file in `dir`.
pub fn ring_path(dir: &Path) -> PathBuf {
    dir.join(RING_FILE)
}

/// An exclusive lock on a ring directory, held until dropped.
pub struct RingLock {
    _file: File,
}

/// Takes the writer lock of the ring in `dir` (blocking until free).
pub fn lock(dir: &Path) -> Result<RingLock, KeyringError> {
    if !dir.is_dir() {
        return Err(KeyringError::Missing(ring_path(dir), dir.to_path_buf()));
    }
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| KeyringError::Io {
            op: "opening lock file",
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        KeyringError::Io {
            op: "locking",
            path,
            source: e.into(),
        }
    })?;
    Ok(RingLock { _file: file })
}

/// Identity of the ring file's current version (device, inode, size, mtime,
/// ctime): cheap to poll, changes on every atomic replacement.
pub fn stat_ring(dir: &Path) -> Option<(u64, u64, u64, i64, i64, i64)> {
    let m = std::fs::metadata(ring_path(dir)).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Whether a file or directory owned by `uid` may hold this process's keys:
/// its own user's or root's (a file another user owns could have been
/// planted by them).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Refuses a ring directory or file another user owns or others can write.
fn check_owner_and_mode(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
) -> Result<(), KeyringError> {
    let refuse = |reason: String| {
        Err(KeyringError::Insecure {
            path: path.to_path_buf(),
            reason,
        })
    };
    if !trusted_owner(meta.uid()) {
        return refuse(format!(
            "the {what} is owned by uid {}, not by this process's user ({}) or root: \
             another user could have written it (chown it, or run as its owner)",
            meta.uid(),
            rustix::process::geteuid().as_raw()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "the {what} is writable by group or others (mode {:o}): anyone in them could replace the keys (chmod go-w)",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

pub(super) fn load(dir: &Path) -> Result<Keyring, KeyringError> {
    let path = ring_path(dir);
    let dmeta = std::fs::metadata(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyringError::Missing(path.clone(), dir.to_path_buf()),
        _ => KeyringError::Io {
            op: "inspecting",
            path: dir.to_path_buf(),
            source,
        },
    })?;
    check_owner_and_mode(dir, &dmeta, "key ring directory")?;
    // Never through a symlink: the ring is the file at this path.
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyringError::Missing(path, dir.to_path_buf()));
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(KeyringError::Insecure {
                path,
                reason: "it is a symbolic link; the ring must be a regular file at this path"
                    .into(),
            });
        }
        Err(source) => {
            return Err(KeyringError::Io {
                op: "opening",
                path,
                source,
            });
        }
    };
    let meta = f.metadata().map_err(|source| KeyringError::Io {
        op: "reading metadata of",
        path: path.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyringError::Invalid {
            path,
            reason: "not a regular file".into(),
        });
    }
    check_owner_and_mode(&path, &meta, "key ring file")?;
    if meta.len() > MAX_RING_BYTES {
        return Err(KeyringError::Invalid {
            path,
            reason: format!(
                "{} bytes, larger than the {MAX_RING_BYTES}-byte limit",
                meta.len()
            ),
        });
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.mode() & 0o777),
            "key ring file is readable by group or others; it should be 0600"
        );
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    f.read_to_end(&mut buf).map_err(|source| KeyringError::Io {
        op: "reading",
        path: path.clone(),
        source,
    })?;
    parse(&buf).map_err(|reason| KeyringError::Invalid { path, reason })
}

/// Parses and validates the text of a ring file; the reason never quotes
/// a value (it may be key material).
pub fn parse(bytes: &[u8]) -> Result<Keyring, String> {
    // serde_json's message names line/column and the field, never the value.
    let ring: Keyring = serde_json::from_slice(bytes).map_err(|e| redact_serde(&e))?;
    ring.validate()?;
    Ok(ring)
}

pub(super) fn save(ring: &Keyring, dir: &Path) -> Result<(), KeyringError> {
    let path = ring_path(dir);
    ring.validate().map_err(|reason| KeyringError::Invalid {
        path: path.clone(),
        reason: format!("refusing to write: {reason}"),
    })?;
    // Size the buffer up front so serialization never reallocates (and leaves
    // unwiped copies of key material behind).
    let estimate = 4096 + ring.keys.len() * 8192;
    let mut buf = Zeroizing::new(Vec::with_capacity(estimate));
    serde_json::to_writer_pretty(&mut *buf, ring).map_err(|e| KeyringError::Invalid {
        path: path.clone(),
        reason: format!("cannot serialize: {}", redact_serde(&e)),
    })?;
    buf.push(b'\n');
    let _ = fsutil::sweep_temp_files(&path);
    fsutil::write_atomic_wiping_old(&path, &buf).map_err(|source| KeyringError::Io {
        op: "writing",
        path,
        source,
    })
}

/// serde_json errors quote unexpected string values in some cases
/// (`invalid value: string "..."`); keep only the category and position.
fn redact_serde(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("string \"") || msg.contains("invalid value") {
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn ring_with_key() -> Keyring {
        let mut r = Keyring::new("software").unwrap();
        r.push_active(KeyEntry {
            version: 1,
            key_id: "k1".into(),
            algorithm: "aes-256-gcm".into(),
            created: now_rfc3339(),
            state: KeyState::Active,
            retired: None,
            material: Some(Material::single("key", &[2u8; 32])),
        })
        .unwrap();
        r
    }

    #[test]
    fn save_and_load() {
        let d = tempfile::tempdir().unwrap();
        let r = ring_with_key();
        let l = lock(d.path()).unwrap();
        r.save(d.path(), &l).unwrap();
        let back = Keyring::load(d.path()).unwrap();
        assert_eq!(back.ring_id, r.ring_id);
        assert_eq!(
            &back.keys[0].material.as_ref().unwrap().get("key").unwrap()[..],
            &[2u8; 32]
        );
        assert!(stat_ring(d.path()).is_some());
    }

    #[test]
    fn malformed_rings_are_refused_with_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = Keyring::load(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("no key ring") && err.contains("key init"),
            "{err}"
        );

        let good = {
            let r = ring_with_key();
            serde_json::to_string(&r).unwrap()
        };
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "EOF"),
            (good[..good.len() / 2].to_string(), "EOF"),
            ("[]".into(), "invalid"),
            (good.replace(FORMAT, "kms-plugin-keyring/v9"), "format"),
            (good.replace("\"active\"", "\"enabled\""), "0 active"),
            (
                good.replace("\"next_version\":2", "\"next_version\":1"),
                "next_version",
            ),
            (
                good.replace("\"version\":1", "\"version\":1,\"surprise\":1"),
                "unknown field",
            ),
            (good.replace("\"key\":\"", "\"key\":\"!!"), ""),
        ];
        for (text, want) in cases {
            std::fs::write(ring_path(d.path()), &text).unwrap();
            match Keyring::load(d.path()) {
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("is invalid"), "{e}");
                    assert!(e.contains(want), "{want:?} not in {e}");
                    assert!(!e.contains("AgICAgIC"), "material leaked: {e}");
                }
                // Bad base64 is only detected when the backend decodes it.
                Ok(r) => assert!(r.keys[0].material.as_ref().unwrap().get("key").is_err()),
            }
        }
    }

    #[test]
    fn refuses_rings_others_could_have_written() {
        let d = tempfile::tempdir().unwrap();
        let r = ring_with_key();
        let l = lock(d.path()).unwrap();
        r.save(d.path(), &l).unwrap();
        let p = ring_path(d.path());
        use std::os::unix::fs::PermissionsExt;
        // Group-writable file.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = Keyring::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("is refused") && e.contains("writable by group or others"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // World-writable directory.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Keyring::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("key ring directory is writable"), "{e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Keyring::load(d.path()).unwrap();
        // A symlink in place of the file (to a good ring elsewhere).
        let elsewhere = d.path().join("other.json");
        std::fs::rename(&p, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &p).unwrap();
        let e = Keyring::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn only_this_user_or_root_may_own_a_ring() {
        let me = rustix::process::geteuid().as_raw();
        assert!(trusted_owner(me));
        assert!(trusted_owner(0));
        assert!(!trusted_owner(me.wrapping_add(4242).max(1)));
    }

    #[test]
    fn refuses_a_directory_in_place_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(ring_path(d.path())).unwrap();
        let e = Keyring::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") || e.contains("Is a directory"),
            "{e}"
        );
    }
}
