//! Every file shipped in deploy/ is checked as what reads it would check
//! it, offline (no kubeconform, kubectl or running systemd here):
//! - every YAML document parses and names its apiVersion and kind, and is
//!   one of the kinds below, each checked by its own rules: the
//!   EncryptionConfiguration by the store's own parser, Secrets by the
//!   store's manifest reader, Pods by the schema rules of `pod.rs` (the
//!   plugin's pods run unprivileged, with probes on the plugin's health
//!   flag);
//! - every systemd unit passes `systemd-analyze verify` and scores at most
//!   2.0 in `systemd-analyze security --offline=yes` (`systemd.rs`).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod pod;
mod systemd;

use std::path::{Path, PathBuf};

use secret_store::encryption_config::{EncryptionConfiguration, ProviderConfig};
use serde_json::Value;

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every file under deploy/ whose name ends with one of `exts`, sorted.
pub fn deploy_files(exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, exts, out);
            } else if exts.iter().any(|x| p.extension().is_some_and(|e| e == *x)) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), exts, &mut out);
    out.sort();
    out
}

/// The name a failure message gives a file: its path under deploy/.
pub fn shown(p: &Path) -> String {
    p.strip_prefix(deploy_dir())
        .map(|r| format!("deploy/{}", r.display()))
        .unwrap_or_else(|_| p.display().to_string())
}

/// The backends whose keys live in the service they call, not in a key
/// ring (their registry rows say `ring: false`: kms-plugin's
/// backend/registry.rs), so `serve` refuses `--keyring` for them.
pub const RINGLESS_BACKENDS: &[&str] = &["transit"];

/// Whether a `serve` command line runs a backend without a key ring.
pub fn keeps_no_ring<S: AsRef<str>>(argv: &[S]) -> bool {
    flag(argv, "backend").is_some_and(|b| RINGLESS_BACKENDS.contains(&b))
}

/// The values of every `--...-file` flag: the credential and TLS files a
/// ring-less backend reads (`--transit-token-file`, `--transit-ca-file`).
pub fn file_flags<S: AsRef<str>>(argv: &[S]) -> Vec<String> {
    argv.iter()
        .filter_map(|a| a.as_ref().strip_prefix("--"))
        .filter_map(|a| a.split_once('='))
        .filter(|(name, _)| name.ends_with("-file"))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// The value of `--name` in a command line (as `--name=v` or `--name v`):
/// how the plugin reads its flags, for units and pods alike.
pub fn flag<'a, S: AsRef<str>>(argv: &'a [S], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let eq = format!("{long}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.as_ref();
        if let Some(v) = a.strip_prefix(eq.as_str()) {
            Some(v)
        } else if a == long {
            argv.get(i + 1).map(AsRef::as_ref)
        } else {
            None
        }
    })
}

/// One manifest file: its path and its non-empty documents.
struct Manifest {
    path: PathBuf,
    docs: Vec<Value>,
}

fn manifests() -> Vec<Manifest> {
    let files = deploy_files(&["yaml", "yml"]);
    assert!(!files.is_empty(), "no manifests under deploy/");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", shown(&path)));
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            assert!(!docs.is_empty(), "{} holds no document", shown(&path));
            Manifest { path, docs }
        })
        .collect()
}

fn type_of(doc: &Value) -> (&str, &str) {
    (
        doc["apiVersion"].as_str().unwrap_or(""),
        doc["kind"].as_str().unwrap_or(""),
    )
}

#[test]
fn shipped_encryption_configuration_is_valid() {
    let path = deploy_dir().join("kubernetes/encryption-configuration.yaml");
    let cfg = EncryptionConfiguration::load(path).unwrap();
    let providers = cfg.providers_for("secrets").expect("covers secrets");
    match providers[0] {
        ProviderConfig::Kms { config, .. } => {
            assert_eq!(config.api_version, "v2");
            assert_eq!(config.endpoint, "unix:///var/run/kmsplugin/socket.sock");
        }
        other => panic!("first provider is {:?}", other.kind()),
    }
}

#[test]
fn every_manifest_parses_and_passes_the_rules_of_its_kind() {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for m in manifests() {
        let file = shown(&m.path);
        for (i, doc) in m.docs.iter().enumerate() {
            let at = format!("{file} document {}", i + 1);
            let (api_version, kind) = type_of(doc);
            // Prometheus rule files and their promtool unit tests
            // (deploy/monitoring/): promtool checks them, in
            // tests/tests/monitoring.rs.
            if kind.is_empty() && (doc["groups"].is_array() || doc["rule_files"].is_array()) {
                seen.push(format!(
                    "{at}: Prometheus rules (promtool, tests/tests/monitoring.rs)"
                ));
                continue;
            }
            if api_version.is_empty() || kind.is_empty() {
                problems.push(format!("{at}: apiVersion and kind are required"));
                continue;
            }
            seen.push(format!("{at}: {api_version} {kind}"));
            match (api_version, kind) {
                ("apiserver.config.k8s.io/v1", "EncryptionConfiguration") => {
                    // kube-apiserver reads one document from this file.
                    if m.docs.len() != 1 {
                        problems.push(format!(
                            "{at}: an EncryptionConfiguration is alone in its file"
                        ));
                    } else if let Err(e) = EncryptionConfiguration::load(&m.path) {
                        problems.push(format!("{at}: {e}"));
                    }
                }
                ("v1", "Secret") => {
                    let json = serde_json::to_string(doc).unwrap();
                    if let Err(e) = secret_store::secret::parse_manifests(&json) {
                        problems.push(format!("{at}: {e}"));
                    }
                }
                ("monitoring.coreos.com/v1", "PrometheusRule") => {
                    // Its groups are those of the plain rules file, which
                    // promtool checks (tests/tests/monitoring.rs).
                    if doc["spec"]["groups"]
                        .as_array()
                        .is_none_or(|g| g.is_empty())
                    {
                        problems.push(format!("{at}: a PrometheusRule without spec.groups"));
                    }
                }
                ("v1", "Pod") => {
                    problems.extend(pod::check(doc).into_iter().map(|p| format!("{at}: {p}")))
                }
                _ => problems.push(format!(
                    "{at}: no rules for {api_version} {kind}: add them to store/tests/deploy_files/"
                )),
            }
        }
    }
    println!("checked:\n  {}", seen.join("\n  "));
    assert!(
        problems.is_empty(),
        "deploy manifests:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn both_plugin_pods_are_checked_as_plugin_pods() {
    let plugin_pods: Vec<String> = manifests()
        .iter()
        .flat_map(|m| m.docs.iter().map(move |d| (m, d)))
        .filter(|(_, d)| type_of(d) == ("v1", "Pod") && pod::is_plugin_pod(d))
        .map(|(m, _)| shown(&m.path))
        .collect();
    assert_eq!(
        plugin_pods,
        [
            "deploy/kubernetes/kms-plugin-static-pod.yaml",
            "deploy/tpm/kms-plugin-tpm-static-pod.yaml",
            "deploy/transit/kms-plugin-transit-static-pod.yaml"
        ]
    );
}
