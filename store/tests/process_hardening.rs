//! secret-store keeps what passes through it to itself: a running process
//! has core dumps off (RLIMIT_CORE 0, soft and hard) and is not dumpable;
//! its RocksDB directory is created 0700 with private files, and an
//! existing directory group or others can reach is refused unless
//! `--allow-shared-dir`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_secret-store");

/// `sh` raising the core limit as far as it may, then exec'ing the rest:
/// what the store lowers must have been up.
const RAISE_CORE: &str =
    r#"ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -H -c)"; exec "$0" "$@""#;

/// The uid the process under test runs as: not root, so that /proc shows
/// whether it is dumpable (a non-dumpable process's /proc files are root's).
fn test_uid() -> u32 {
    match std::fs::metadata("/proc/self").unwrap().uid() {
        0 => 65534, // nobody
        me => me,
    }
}

fn spawn_raised(program: &str, args: &[&str]) -> Child {
    let mut c = Command::new("sh");
    c.arg("-c").arg(RAISE_CORE).arg(program).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SECRET_STORE_") {
            c.env_remove(k);
        }
    }
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        std::os::unix::process::CommandExt::uid(&mut c, test_uid());
        std::os::unix::process::CommandExt::gid(&mut c, test_uid());
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What /proc says about a process: its core limit line, the owner of its
/// /proc files, its real uid, and the program it runs.
#[derive(Debug)]
struct ProcFacts {
    core_limit: String,
    proc_owner: u32,
    uid: u32,
    exe: String,
}

fn facts(pid: u32) -> ProcFacts {
    let dir = format!("/proc/{pid}");
    let limits = std::fs::read_to_string(format!("{dir}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    ProcFacts {
        core_limit: core
            .trim_start_matches("Max core file size")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        proc_owner: std::fs::metadata(format!("{dir}/status")).unwrap().uid(),
        uid,
        exe: std::fs::read_link(format!("{dir}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

/// Polls `pid` until `done` holds (10 s at most); returns the last facts.
fn wait_for(pid: u32, done: impl Fn(&ProcFacts) -> bool) -> ProcFacts {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = facts(pid);
        if done(&f) || Instant::now() > deadline {
            return f;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn a_running_store_has_core_dumps_off_and_is_not_dumpable() {
    // A store started as the test starts it runs with the raised limit
    // and dumpable: `cat` in the same wrapper shows the starting point.
    let cat = spawn_raised("cat", &[]);
    let before = wait_for(cat.id(), |f| f.exe.ends_with("/cat"));
    stop(cat);
    assert_ne!(before.uid, 0, "{before:?}");
    assert_eq!(before.proc_owner, before.uid, "cat is dumpable: {before:?}");
    let raised = before.core_limit != "0 0";
    if !raised {
        println!("core limit could not be raised here (hard limit 0): only dumpability tells");
    }
    // The binary is readable by its user, so an exec alone would not make
    // it non-dumpable: only the store's own prctl can.
    let mode = std::fs::metadata(BIN).unwrap().permissions().mode();
    assert_eq!(mode & 0o005, 0o005, "{BIN} is mode {mode:o}");

    // raw encrypt reads its plaintext from stdin first: it waits there,
    // hardened, for as long as the test looks at it.
    let store = spawn_raised(
        BIN,
        &[
            "raw",
            "encrypt",
            "--etcd-key",
            "/registry/secrets/default/x",
        ],
    );
    let bin = std::fs::canonicalize(BIN).unwrap().display().to_string();
    let f = wait_for(store.id(), |f| {
        f.exe == bin && f.core_limit == "0 0" && f.proc_owner == 0
    });
    stop(store);
    assert_eq!(f.exe, bin, "{f:?}");
    assert_eq!(f.core_limit, "0 0", "RLIMIT_CORE soft and hard: {f:?}");
    assert_eq!(f.uid, before.uid, "{f:?}");
    assert_eq!(
        f.proc_owner, 0,
        "/proc/<pid> of a non-dumpable process is root's; this one is {}'s: {f:?}",
        f.proc_owner
    );
}

#[cfg(feature = "rocksdb")]
mod database_directory {
    use super::*;

    fn store(db: &Path, extra: &[&str], args: &[&str]) -> std::process::Output {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SECRET_STORE_") {
                c.env_remove(k);
            }
        }
        c.arg("--db").arg(db).args(extra).args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {k: v}\n")
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_created_0700_with_private_files() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("var/lib/secret-store");
        let o = store(&db, &["--allow-plaintext"], &["apply", "-f", "-"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&db), 0o700);
        let mut files = 0;
        for e in std::fs::read_dir(&db).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(
                mode(&p) & 0o077,
                0,
                "{} is mode {:o}",
                p.display(),
                mode(&p)
            );
            files += 1;
        }
        assert!(files > 0, "RocksDB wrote nothing in {}", db.display());
    }

    #[test]
    fn an_existing_directory_others_can_read_is_refused_unless_allowed() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();

        let o = store(&db, &["--allow-plaintext"], &["apply", "-f", "-"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains(&format!("database directory {} is mode 0755", db.display()))
                && err.contains("chmod 700")
                && err.contains("--allow-shared-dir"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(&db).unwrap().count(),
            0,
            "nothing is written into a refused directory"
        );

        let o = store(
            &db,
            &["--allow-plaintext", "--allow-shared-dir"],
            &["apply", "-f", "-"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&db), 0o755, "an accepted directory keeps its mode");
        let o = store(&db, &["--allow-shared-dir"], &["get", "a", "-o", "name"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn an_existing_private_directory_is_used() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let o = store(t.path(), &["--allow-plaintext"], &["apply", "-f", "-"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}
