//! The high-water mark of a ring directory: the public facts of the last
//! ring a `key` command wrote (`keyring.seen`, beside the ring), so that a
//! ring file replaced by an older copy (a backup restored by hand) is
//! noticed by every later load instead of silently dropping the keys only
//! the newer file held. It holds no material.
//!
//! The ring file is written first and the mark after it, so a crash in
//! between leaves the mark behind the ring, never ahead of it.

use std::path::{Path, PathBuf};

use super::lineage::Lineage;
use super::{Keyring, KeyringError};
use crate::fsutil;

const FILE: &str = "keyring.seen";
/// The format tag of the file.
const FORMAT: &str = "kms-plugin-keyring-seen/v1";
const MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    format: String,
    #[serde(flatten)]
    lineage: Lineage,
}

/// Path of the mark in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The mark in `dir`, if any.
pub fn read(dir: &Path) -> Result<Option<Lineage>, KeyringError> {
    let p = path(dir);
    let bytes = match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyringError::Io {
                op: "inspecting",
                path: p,
                source,
            });
        }
        Ok(m) if m.len() > MAX_BYTES => {
            return Err(KeyringError::Invalid {
                path: p,
                reason: format!("larger than {MAX_BYTES} bytes"),
            });
        }
        Ok(_) => std::fs::read(&p).map_err(|source| KeyringError::Io {
            op: "reading",
            path: p.clone(),
            source,
        })?,
    };
    let mark: Mark = serde_json::from_slice(&bytes).map_err(|e| KeyringError::Invalid {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if mark.format != FORMAT {
        return Err(KeyringError::Invalid {
            path: p,
            reason: format!("format is {:?}, expected {FORMAT:?}", mark.format),
        });
    }
    Ok(Some(mark.lineage))
}

/// Records `ring` as the newest version of the ring in `dir`.
pub fn write(dir: &Path, ring: &Keyring) -> Result<(), KeyringError> {
    let p = path(dir);
    let mark = Mark {
        format: FORMAT.into(),
        lineage: Lineage::of(ring),
    };
    let mut text = serde_json::to_vec_pretty(&mark).map_err(|e| KeyringError::Invalid {
        path: p.clone(),
        reason: format!("cannot serialize: {e}"),
    })?;
    text.push(b'\n');
    let _ = fsutil::sweep_temp_files(&p);
    fsutil::write_atomic(&p, &text).map_err(|source| KeyringError::Io {
        op: "writing",
        path: p,
        source,
    })
}

/// Checks that `ring`, just loaded from `dir`, does not go back on the mark.
pub fn check(dir: &Path, ring: &Keyring) -> Result<(), KeyringError> {
    match read(dir)? {
        None => Ok(()),
        Some(seen) => seen.check(ring).map_err(|reason| KeyringError::Regressed {
            path: super::ring_path(dir),
            reason,
        }),
    }
}
