//! Crash-safe file updates for key rings: temp file, fsync, rename, fsync of
//! the directory. A crash at any instant leaves either the old or the new
//! file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Temp files are named `<file>.tmp.<pid>.<n>`; leftovers from a crash are
/// swept by [`sweep_temp_files`].
const TMP_MARK: &str = ".tmp.";

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{}{TMP_MARK}{}.{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`], then overwrites what the replaced file held with
/// zeros (through a handle opened before the rename) and syncs it: the
/// previous version's blocks stop holding key material on filesystems
/// that write in place. Best effort: SSDs, copy-on-write filesystems and
/// snapshots may keep copies; backups certainly do. The new file is
/// durable before anything is wiped, so a crash loses nothing.
pub fn write_atomic_wiping_old(path: &Path, data: &[u8]) -> io::Result<()> {
    let old = OpenOptions::new().write(true).open(path).ok();
    write_atomic(path, data)?;
    if let Some(mut f) = old {
        let len = f.metadata()?.len();
        let zeros = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    Ok(())
}

/// Removes temp files a crashed writer left beside `path`.
pub fn sweep_temp_files(path: &Path) -> io::Result<()> {
    let dir = parent_of(path);
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let prefix = format!("{}{TMP_MARK}", name.to_string_lossy());
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not exist.
/// An existing directory is left as it is.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // `mode` is filtered by the umask; make sure of 0700 on the leaf.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if let Some(parent) = dir.parent() {
        let _ = sync_dir(parent);
    }
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_atomically_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ring.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn the_replaced_version_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ring.json");
        write_atomic(&p, b"old secret material").unwrap();
        // A second link to the old inode shows what happens to its blocks.
        let witness = d.path().join("witness");
        fs::hard_link(&p, &witness).unwrap();
        write_atomic_wiping_old(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::read(&witness).unwrap(), vec![0u8; 19]);
        // No old file: just a write.
        let q = d.path().join("fresh.json");
        write_atomic_wiping_old(&q, b"x").unwrap();
        assert_eq!(fs::read(&q).unwrap(), b"x");
    }

    #[test]
    fn sweeps_leftover_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ring.json");
        fs::write(d.path().join("ring.json.tmp.1.0"), b"x").unwrap();
        fs::write(d.path().join("other.tmp.1.0"), b"x").unwrap();
        sweep_temp_files(&p).unwrap();
        assert!(!d.path().join("ring.json.tmp.1.0").exists());
        assert!(d.path().join("other.tmp.1.0").exists());
    }

    #[test]
    fn creates_private_dirs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        ensure_private_dir(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
    }
}
