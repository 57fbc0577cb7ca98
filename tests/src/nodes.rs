//! Control-plane nodes for the multi-node tests: each one a key ring of its
//! own (and, for the TPM backends, a swtpm of its own), a `kms-plugin serve`
//! on it, and the key commands an operator runs there, including moving
//! keys to another node the way the runbook says (software: `key export` /
//! `key import --expect`; TPM: `key export-target` / `key share` /
//! `key import --expect`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::swtpm::Swtpm;
use crate::{Plugin, bin, created_key_id, printed_digest};

/// One node.
pub struct KmsNode {
    /// `a`, `b`, `c`, ...
    pub name: String,
    /// Its directory (ring, socket, logs, files it receives).
    pub dir: PathBuf,
    /// `software`, `tpm-sealed` or `tpm-resident`.
    pub backend: &'static str,
    /// Its TPM, for the TPM backends.
    pub tpm: Option<Swtpm>,
    /// Its plugin, once serving.
    pub plugin: Option<Plugin>,
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl KmsNode {
    /// A node of `backend` in `parent/name` (with its own swtpm for TPM backends).
    pub fn new(parent: &Path, name: &str, backend: &'static str) -> KmsNode {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tpm = (backend != "software").then(Swtpm::start);
        KmsNode {
            name: name.into(),
            dir,
            backend,
            tpm,
            plugin: None,
        }
    }

    /// The ring directory.
    pub fn ring(&self) -> PathBuf {
        self.dir.join("ring")
    }

    /// The socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("kms.sock")
    }

    fn tcti_args(&self) -> Vec<String> {
        match &self.tpm {
            Some(t) => vec!["--tcti".into(), t.tcti()],
            None => Vec::new(),
        }
    }

    /// `kms-plugin <args>` with this node's TPM.
    pub fn kms(&self, args: &[&str]) -> Output {
        Command::new(bin("kms-plugin"))
            .args(args)
            .args(self.tcti_args())
            .env_remove("TCTI")
            .output()
            .expect("running kms-plugin")
    }

    /// `kms-plugin key <sub> --keyring RING <args>`.
    pub fn key(&self, sub: &str, args: &[&str]) -> Output {
        let ring = self.ring();
        let mut all = vec!["key", sub, "--keyring", ring.to_str().unwrap()];
        all.extend_from_slice(args);
        self.kms(&all)
    }

    /// `key init` (shareable TPM keys); returns the first key_id.
    pub fn init(&self) -> String {
        let mut args = vec!["--backend", self.backend];
        if self.tpm.is_some() {
            args.push("--shareable");
        }
        let o = ok(self.key("init", &args), "key init");
        created_key_id(&String::from_utf8_lossy(&o.stdout)).unwrap()
    }

    /// `key add`; returns the staged key_id.
    pub fn add(&self) -> String {
        let o = ok(self.key("add", &[]), "key add");
        created_key_id(&String::from_utf8_lossy(&o.stdout)).unwrap()
    }

    /// `key rotate` (add and activate at once); returns the key_id.
    pub fn rotate(&self) -> String {
        let o = ok(self.key("rotate", &[]), "key rotate");
        created_key_id(&String::from_utf8_lossy(&o.stdout)).unwrap()
    }

    /// `key activate`.
    pub fn activate(&self, key_id: &str) {
        ok(self.key("activate", &[key_id]), "key activate");
    }

    /// `key retire --yes`.
    pub fn retire(&self, key_id: &str) {
        ok(self.key("retire", &[key_id, "--yes"]), "key retire");
    }

    /// `key list -o json`.
    pub fn list(&self) -> serde_json::Value {
        let o = ok(self.key("list", &["-o", "json"]), "key list");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The ring fingerprint `key list` shows.
    pub fn fingerprint(&self) -> String {
        self.list()["fingerprint"].as_str().unwrap().to_string()
    }

    /// Writes this node's keys (all live ones, or only the staged) into a
    /// file for `to`, as the runbook says; returns (file, digest).
    pub fn send(&self, to: &KmsNode, staged: bool) -> (PathBuf, String) {
        let file = to.dir.join(format!("from-{}.json", self.name));
        let f = file.to_str().unwrap().to_string();
        let mut args: Vec<String> = Vec::new();
        let o = match &to.tpm {
            None => {
                args.extend(["-o".into(), f]);
                if staged {
                    args.push("--staged".into());
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(self.key("export", &a), "key export")
            }
            Some(_) => {
                let target = to.dir.join("target.json");
                let t = ok(
                    to.kms(&["key", "export-target", "-o", target.to_str().unwrap()]),
                    "key export-target",
                );
                let fp = String::from_utf8_lossy(&t.stderr)
                    .split_whitespace()
                    .find(|w| w.starts_with("sha256:"))
                    .expect("fingerprint printed")
                    .to_string();
                args.extend([
                    "--to".into(),
                    target.display().to_string(),
                    "--fingerprint".into(),
                    fp,
                    "-o".into(),
                    f,
                ]);
                if staged {
                    args.push("--staged".into());
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(self.key("share", &a), "key share")
            }
        };
        (file, printed_digest(&o))
    }

    /// `key import FILE --expect DIGEST`.
    pub fn import(&self, file: &Path, digest: &str) -> Output {
        self.key("import", &[file.to_str().unwrap(), "--expect", digest])
    }

    /// Sends this node's keys to `to` and imports them there.
    pub fn give(&self, to: &KmsNode, staged: bool) {
        let (file, digest) = self.send(to, staged);
        ok(to.import(&file, &digest), "key import");
    }

    /// Starts `serve` (1 s health cache, 200 ms reload interval).
    pub fn serve(&mut self) {
        let mut flags: Vec<String> = vec![
            "--backend".into(),
            self.backend.into(),
            "--health-cache".into(),
            "1s".into(),
            "--reload-interval".into(),
            "200ms".into(),
        ];
        flags.extend(self.tcti_args());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.plugin = Some(Plugin::start(
            &self.ring(),
            &self.sock(),
            &self.dir.join("plugin.log"),
            &flags,
        ));
    }

    /// The running plugin.
    pub fn plugin(&self) -> &Plugin {
        self.plugin.as_ref().expect("serving")
    }

    /// The key_id the plugin's Status reports.
    pub async fn status_key_id(&self) -> String {
        let mut c = self.plugin().client().await;
        c.status(kms_proto::v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id
    }

    /// Waits (10 s at most) until Status reports `key_id`.
    pub async fn wait_key_id(&self, key_id: &str) {
        let t = std::time::Instant::now();
        loop {
            let now = self.status_key_id().await;
            if now == key_id {
                return;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "node {} still reports {now}, not {key_id}",
                self.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The `ring_info` fingerprint the plugin exports in its metrics.
    pub fn metrics_fingerprint(&self) -> String {
        let (_, body) = crate::http_get(self.plugin().health_port.unwrap(), "/metrics");
        body.lines()
            .find(|l| l.starts_with("kms_plugin_ring_info{"))
            .and_then(|l| l.split("fingerprint=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no ring_info in {body}"))
            .to_string()
    }
}
