//! Process hardening for `serve` and the key commands.

/// Turns core dumps off (RLIMIT_CORE = 0 and not dumpable, which also stops
/// non-root ptrace): a crash must not write KEKs to disk.
pub fn disable_core_dumps() -> std::io::Result<()> {
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Files and sockets this process creates are private (umask 077).
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}
