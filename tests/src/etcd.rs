//! Real etcd clusters for the tests: Debian's `etcd` binary, one process
//! per member on free loopback ports, data in a temporary directory;
//! members can be killed (SIGKILL, as a crash) and restarted on their data
//! directories; everything is stopped on drop.
//!
//! Elections are made quick (heartbeat 50 ms, election timeout 500 ms) so
//! the failure tests do not wait on the production defaults.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Whether the member on `port` answers `/health` with `"health":"true"`.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") && buf.contains("\"health\":\"true\"")
}

/// The etcd server binary (`ETCD_BIN`, else `etcd` on `PATH`).
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "etcd".into())
}

/// One member.
pub struct Member {
    /// Its name (`m0`, `m1`, ...).
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(etcd_bin())
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (install Debian's etcd-server: scripts/install-deps): {e}",
                    etcd_bin().display()
                )
            });
        self.child = Some(child);
    }

    /// SIGKILL, as a crash; the data directory stays.
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

/// A cluster of `n` members on loopback.
pub struct Cluster {
    /// Temporary directory holding data dirs and logs.
    pub dir: tempfile::TempDir,
    /// The members.
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Cluster {
        let c = Cluster::spawn(n, &[]);
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// Starts `n` members with extra etcd flags, without waiting.
    pub fn spawn(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("t-{}", ports[0].0);
        let mut members = Vec::new();
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let data_dir = dir.path().join(&name);
            let client = format!("http://127.0.0.1:{cp}");
            let peer = format!("http://127.0.0.1:{pp}");
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut m = Member {
                name: name.clone(),
                client_port: *cp,
                peer_port: *pp,
                data_dir,
                log: dir.path().join(format!("{name}.log")),
                args,
                child: None,
            };
            m.spawn();
            members.push(m);
        }
        Cluster { dir, members }
    }

    /// The running members' client URLs, comma-separated (all members, running or not).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Restarts member `i` on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.members[i].is_running(), "member {i} is running");
        self.members[i].spawn();
    }

    /// Waits until every running member reports itself healthy (it has a
    /// leader and answers a quorum read).
    pub fn wait_healthy(&self, timeout: Duration) {
        let t = Instant::now();
        for m in self.members.iter().filter(|m| m.is_running()) {
            loop {
                if healthy(m.client_port) {
                    break;
                }
                if t.elapsed() > timeout {
                    panic!(
                        "etcd member {} did not become healthy; log:\n{}",
                        m.name,
                        m.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Runs `etcdctl` (API v3) against the cluster.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints(), args)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// Runs `etcdctl` (API v3) against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .expect("running etcdctl (Debian's etcd-client)")
}
