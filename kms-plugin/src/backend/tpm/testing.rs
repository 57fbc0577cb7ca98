//! Test support: one swtpm per test, in its own temporary directory on free
//! ports. A missing swtpm fails the test with a clear message (CI installs
//! it; `scripts/install-deps` does too): TPM tests never skip silently.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::MintOptions;
use crate::backend::KeyMinter;
use crate::keyring::{self, KeyEntry, KeyState, Keyring, now_rfc3339};

/// A running swtpm, killed on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of TCP ports on 127.0.0.1");
}

impl Swtpm {
    /// Starts swtpm and waits until it accepts connections.
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args([
                "socket",
                "--tpm2",
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
                "--tpmstate",
                &format!("dir={}", dir.path().display()),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start swtpm ({e}): install swtpm and swtpm-tools (scripts/install-deps)"
                )
            });
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "swtpm did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // That probe connection was the one client swtpm serves; let it go.
        std::thread::sleep(Duration::from_millis(20));
        Swtpm {
            child,
            port,
            _dir: dir,
        }
    }

    /// The TCTI string.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds one active key per algorithm to the ring in `dir` (creating it).
pub fn make_ring(
    dir: &Path,
    backend: &str,
    tcti: &str,
    algs: &[&str],
    opts: MintOptions,
) -> Keyring {
    let worker = super::worker::Worker::spawn(tcti.parse().unwrap());
    let minter: Box<dyn KeyMinter> = match backend {
        super::sealed::NAME => Box::new(super::sealed::SealedMinter { worker, opts }),
        super::resident::NAME => Box::new(super::resident::ResidentMinter { worker, opts }),
        other => panic!("{other} is not a TPM backend"),
    };
    let l = keyring::lock(dir).unwrap();
    let mut r = Keyring::load(dir).unwrap_or_else(|_| Keyring::new(minter.backend()).unwrap());
    for a in algs {
        let m = minter.mint(&r.ring_id, r.next_version, a).unwrap();
        r.push_active(KeyEntry {
            version: r.next_version,
            key_id: m.key_id,
            algorithm: m.algorithm,
            created: now_rfc3339(),
            state: KeyState::Active,
            retired: None,
            material: Some(m.material),
        })
        .unwrap();
    }
    r.save(dir, &l).unwrap();
    r
}
