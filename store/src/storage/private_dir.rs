//! The database directory is private: an embedded engine's files hold every
//! Secret (encrypted or, with identity, not) and its revisions, so a new
//! directory is created 0700 and an existing one that group or others can
//! reach is refused unless the operator says access is restricted another
//! way.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::StorageError;

/// The flag that accepts a directory group or others can reach.
pub const ALLOW_SHARED_DIR_FLAG: &str = "--allow-shared-dir";

/// Whether an existing directory may be reachable by group or others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedDir {
    /// Refuse it (the default).
    Refuse,
    /// Accept it: the operator restricts access another way (a parent
    /// directory, an ACL-free mount, a dedicated machine).
    Allow,
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not
/// exist; an existing directory is left as it is.
pub fn create_if_missing(dir: &Path) -> Result<(), StorageError> {
    if dir.exists() {
        return Ok(());
    }
    let io = |source| StorageError::Io {
        what: format!("cannot create database directory {}", dir.display()),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    // The mode above is filtered by the umask; make sure of 0700 on the leaf.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Creates `dir` 0700 when missing; otherwise checks that it is a directory
/// that neither group nor others can read, write or search (unless
/// `shared` allows it).
pub fn ensure(dir: &Path, shared: SharedDir) -> Result<(), StorageError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return create_if_missing(dir),
        Err(source) => {
            return Err(StorageError::Io {
                what: format!("cannot inspect database directory {}", dir.display()),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(StorageError::Config(format!(
            "database directory {} is not a directory: give --db a directory (it is created 0700 when missing)",
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 && shared == SharedDir::Refuse {
        return Err(StorageError::Config(format!(
            "database directory {} is mode {mode:04o}: group or others can reach the files that hold the Secrets; \
             run `chmod 700 {}`, or pass {ALLOW_SHARED_DIR_FLAG} if access is restricted another way",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_created_0700() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/db");
        ensure(&d, SharedDir::Refuse).unwrap();
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn an_existing_private_directory_is_accepted() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        ensure(t.path(), SharedDir::Refuse).unwrap();
    }

    #[test]
    fn a_directory_group_or_others_can_reach_is_refused_unless_allowed() {
        let t = tempfile::tempdir().unwrap();
        for m in [0o755, 0o750, 0o701, 0o710, 0o702] {
            std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(m)).unwrap();
            let e = ensure(t.path(), SharedDir::Refuse).unwrap_err().to_string();
            assert!(e.contains(&format!("is mode {m:04o}")), "{e}");
            assert!(
                e.contains("--allow-shared-dir") && e.contains("chmod 700"),
                "{e}"
            );
            ensure(t.path(), SharedDir::Allow).unwrap();
            assert_eq!(mode(t.path()), m, "the check never changes the mode");
        }
    }

    #[test]
    fn a_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"").unwrap();
        let e = ensure(&f, SharedDir::Allow).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
