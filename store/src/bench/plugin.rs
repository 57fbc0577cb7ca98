//! A throwaway `kms-plugin` for the bench: a fresh software key ring in a
//! temporary directory, served on a socket there, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running plugin.
pub struct LocalPlugin {
    child: Child,
    /// Its endpoint (`unix:///...`).
    pub endpoint: String,
}

/// Finds `kms-plugin` next to the running executable, then on `PATH`.
pub fn find_plugin_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()?
        .parent()
        .map(|d| d.join("kms-plugin"))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kms-plugin"))
                .find(|p| p.is_file())
        })
    })
}

impl LocalPlugin {
    /// Initialises a key ring in `dir` and serves it.
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let ring = dir.join("ring");
        let out = Command::new(bin)
            .args(["key", "init", "--keyring"])
            .arg(&ring)
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kms-plugin key init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sock = dir.join("kms.sock");
        let endpoint = format!("unix://{}", sock.display());
        let child = Command::new(bin)
            .args(["serve", "--listen-addr", &endpoint, "--keyring"])
            .arg(&ring)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let p = LocalPlugin { child, endpoint };
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                anyhow::bail!("kms-plugin did not come up on {}", p.endpoint);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }
}

impl Drop for LocalPlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
