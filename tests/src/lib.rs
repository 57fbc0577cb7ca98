//! Helpers shared by the end-to-end tests: locate the built binaries, start
//! them on sockets in temporary directories, wait for them, stop them.
//!
//! The binaries are the ones `cargo build --workspace --bins` produced next
//! to this test executable (`scripts/test` builds them first). A binary
//! older than its crate's sources is refused, so a test never runs a stale
//! build by accident.

pub mod conformance;
pub mod etcd;
pub mod h2raw;
pub mod nodes;
pub mod openbao;
pub mod softhsm;

pub mod swtpm;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let m = if p.is_dir() {
                newest_mtime(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(m);
        }
    }
    newest
}

/// Path of a workspace binary (`kms-plugin`, `secret-store`), checked fresh.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    let crate_dir = match name {
        "kms-plugin" => "kms-plugin",
        "secret-store" => "store",
        other => panic!("unknown binary {other}"),
    };
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
                p.display()
            )
        });
    let src = newest_mtime(&workspace().join(crate_dir).join("src"))
        .max(newest_mtime(&workspace().join("proto")));
    assert!(
        built >= src,
        "{} is older than its sources: run `cargo build --workspace --bins` (scripts/test does)",
        p.display()
    );
    p
}

/// The virtualenv `scripts/install-deps` makes for the tests' Python
/// clients and servers (`E2E_VENV`, else `~/.cache/k8s-at-rest/venv`).
pub fn test_venv() -> PathBuf {
    if let Some(p) = std::env::var_os("E2E_VENV") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("k8s-at-rest/venv")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `kms-plugin` with `args` to completion.
pub fn kms(args: &[&str]) -> Output {
    Command::new(bin("kms-plugin"))
        .args(args)
        .env_remove("TCTI")
        .output()
        .expect("running kms-plugin")
}

/// Runs `kms-plugin key init` for a software ring in `dir`; panics on failure.
pub fn init_ring(dir: &Path, extra: &[&str]) {
    let mut args = vec!["key", "init", "--keyring", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = kms(&args);
    assert!(
        out.status.success(),
        "key init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `kms-plugin key rotate` and returns the new key_id.
pub fn rotate(dir: &Path) -> String {
    let out = kms(&["key", "rotate", "--keyring", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "key rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    created_key_id(&String::from_utf8_lossy(&out.stdout)).expect("rotate printed the new key")
}

/// The digest a `key export` or `key share` printed (`digest: sha256:...`).
pub fn printed_digest(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "no digest printed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// `sha256:` and the hex SHA-256 of `bytes`, as `key import --expect` takes it.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", hex::encode(d.as_ref()))
}

/// The key_id from a `created key <id> (...)` line (not the `created key
/// ring ...` line of `key init`).
pub fn created_key_id(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("created key ring "))
        .find_map(|l| l.strip_prefix("created key "))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// A running `kms-plugin serve`.
pub struct Plugin {
    /// The child process.
    pub child: Option<Child>,
    /// Socket path.
    pub sock: PathBuf,
    /// Captured stderr (the log).
    pub log: PathBuf,
    /// The health port, when one was asked for.
    pub health_port: Option<u16>,
}

impl Plugin {
    /// Starts `serve` on `sock` with the ring in `ring`; waits until it answers.
    pub fn start(ring: &Path, sock: &Path, log: &Path, extra: &[&str]) -> Plugin {
        let p = Plugin::spawn(ring, sock, log, extra);
        p.wait_ready();
        p
    }

    /// Starts `serve` without waiting.
    pub fn spawn(ring: &Path, sock: &Path, log: &Path, extra: &[&str]) -> Plugin {
        Plugin::spawn_env(ring, sock, log, extra, &[])
    }

    /// Starts `serve` without waiting, with extra environment variables
    /// (e.g. `RUST_LOG`; the default is `debug`).
    pub fn spawn_env(
        ring: &Path,
        sock: &Path,
        log: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Plugin {
        Plugin::spawn_on(ring, sock, log, extra, envs, free_port())
    }

    /// Starts `serve` without waiting, with its health endpoint on `port`.
    pub fn spawn_on(
        ring: &Path,
        sock: &Path,
        log: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
        port: u16,
    ) -> Plugin {
        let mut all = vec!["--keyring", ring.to_str().unwrap()];
        all.extend_from_slice(extra);
        Plugin::spawn_flags(sock, log, &all, envs, port)
    }

    /// Starts `serve` without waiting with exactly `flags` (no `--keyring`
    /// unless given: for backends that keep no ring), its health endpoint
    /// on `port`.
    pub fn spawn_flags(
        sock: &Path,
        log: &Path,
        flags: &[&str],
        envs: &[(&str, &str)],
        port: u16,
    ) -> Plugin {
        let extra = flags;
        let listen = format!("unix://{}", sock.display());
        let health = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--listen-addr", &listen, "--health-addr", &health];
        args.extend_from_slice(extra);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin("kms-plugin"))
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("E2E_PLUGIN_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .env_remove("TCTI")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawning kms-plugin serve");
        Plugin {
            child: Some(child),
            sock: sock.to_path_buf(),
            log: log.to_path_buf(),
            health_port: Some(port),
        }
    }

    /// Waits up to 20 s for the socket to accept connections.
    pub fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "plugin did not come up on {}; log:\n{}",
            self.sock.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The endpoint string.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// A KMS v2 client on a fresh connection.
    pub async fn client(
        &self,
    ) -> kms_proto::v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    > {
        let ep = kms_proto::Endpoint::parse(&self.endpoint()).unwrap();
        kms_proto::client::connect_v2(&ep, Duration::from_secs(5))
            .await
            .expect("connecting to the plugin")
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("plugin did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; returns (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to health port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
