//! Process hardening shared by both programs: whatever they hold in memory
//! (the plugin's KEKs, the store's seeds, DEKs and plaintext Secrets) must
//! not reach a core file, and what they create is private to their user.

/// Turns core dumps off: RLIMIT_CORE = 0 (soft and hard, so nothing in the
/// process can raise it again) and not dumpable, which also stops ptrace
/// by other processes of the same non-root user and makes `/proc/<pid>/`
/// files root's. A crash must not write key material or plaintext to disk.
pub fn disable_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit};
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Files, directories and sockets this process creates are private to its
/// user (umask 077), whatever mode a library asks for.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Both of the above, for a program's first lines: the umask always, core
/// dumps off or the reason they could not be turned off (the caller logs it
/// and goes on: a container may forbid `prctl`, and `LimitCORE=0` or the
/// runtime's limit then still holds).
pub fn harden() -> std::io::Result<()> {
    private_umask();
    disable_core_dumps()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: umask and dumpability are per process, and cargo test runs
    // a file's tests on threads of one process.
    #[test]
    fn harden_turns_core_dumps_off_and_makes_files_private() {
        harden().unwrap();
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
        let d = std::env::temp_dir().join(format!("kms-proto-umask-{}", std::process::id()));
        std::fs::create_dir(&d).unwrap();
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        let file_mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!((dir_mode, file_mode), (0o700, 0o600));
    }
}
