//! A software TPM per test: swtpm in its own temporary state directory, on
//! free ports of 127.0.0.1, killed on drop. It can be killed and restarted
//! on the same state and ports (the outage tests), and its PCRs extended
//! with tpm2-tools (the PCR policy tests).
//!
//! A missing swtpm fails the test with a message saying what to install:
//! TPM tests never skip. swtpm holds only three transient objects and three
//! sessions, so TPM tests run one at a time (`.config/nextest.toml` puts
//! every test whose name or binary says `tpm` in a serial group).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) swtpm.
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

fn port_pair_free(p: u16) -> bool {
    p < u16::MAX
        && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
}

fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let p = crate::free_port();
        if port_pair_free(p) {
            return p;
        }
    }
    panic!("no free pair of TCP ports on 127.0.0.1");
}

impl Swtpm {
    /// Starts a fresh swtpm and waits until it answers.
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let mut s = Swtpm {
            child: None,
            port: free_port_pair(),
            state,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "swtpm already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.parent().unwrap().join("swtpm.log"))
            .unwrap();
        let child = Command::new("swtpm")
            .args([
                "socket",
                "--tpm2",
                "--server",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port + 1),
                "--tpmstate",
                &format!("dir={}", self.state.display()),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start swtpm ({e}): the TPM tests need swtpm, swtpm-tools and tpm2-tools \
                     (scripts/install-deps installs them)"
                )
            });
        self.child = Some(child);
        let t = Instant::now();
        // Wait until a command goes through (the state is set up).
        loop {
            let out = self.tpm2(&["tpm2_getrandom", "--hex", "4"]);
            if out.status.success() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "swtpm did not come up on port {}: {}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCTI string for `--tcti`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The state directory (kept across [`Swtpm::kill`] and [`Swtpm::restart`]).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// SIGKILL: the TPM goes away as when a device disappears.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same state directory and ports.
    pub fn restart(&mut self) {
        let t = Instant::now();
        while !port_pair_free(self.port) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "ports {} and {} did not become free",
                self.port,
                self.port + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// Runs a tpm2-tools command against this TPM.
    pub fn tpm2(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install tpm2-tools (scripts/install-deps)",
                    args[0]
                )
            })
    }

    /// Extends SHA-256 PCR `pcr` with a fixed digest.
    pub fn pcr_extend(&self, pcr: u8) {
        let digest = "ab".repeat(32);
        let out = self.tpm2(&["tpm2_pcrextend", &format!("{pcr}:sha256={digest}")]);
        assert!(
            out.status.success(),
            "tpm2_pcrextend: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `kms-plugin` with `args` and `--tcti` appended where it applies.
pub fn kms_tpm(args: &[&str], tcti: &str) -> Output {
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(&["--tcti", tcti]);
    crate::kms(&a)
}

/// `kms-plugin key init --backend BACKEND --tcti ...` for a ring in `dir`.
pub fn init_tpm_ring(dir: &Path, backend: &str, tcti: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "key",
        "init",
        "--keyring",
        dir.to_str().unwrap(),
        "--backend",
        backend,
    ];
    args.extend_from_slice(extra);
    let out = kms_tpm(&args, tcti);
    assert!(
        out.status.success(),
        "key init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tpm_key_id(&String::from_utf8_lossy(&out.stdout)).expect("init printed the key")
}

/// The key_id from the `created key tpm...` line of `init` or `rotate`.
pub fn tpm_key_id(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("created key "))
        .find(|r| r.starts_with("tpm"))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// `kms-plugin key rotate --tcti ...`; returns the new key_id.
pub fn rotate_tpm(dir: &Path, tcti: &str, extra: &[&str]) -> String {
    let mut args = vec!["key", "rotate", "--keyring", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = kms_tpm(&args, tcti);
    assert!(
        out.status.success(),
        "key rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tpm_key_id(&String::from_utf8_lossy(&out.stdout)).expect("rotate printed the key")
}

/// The serve flags for a TPM backend: backend, TCTI, a 1 s health cache.
pub fn serve_flags(backend: &str, tcti: &str) -> Vec<String> {
    vec![
        "--backend".into(),
        backend.into(),
        "--tcti".into(),
        tcti.into(),
        "--health-cache".into(),
        "1s".into(),
    ]
}
