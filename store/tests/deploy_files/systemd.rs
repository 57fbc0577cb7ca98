//! Every systemd unit in deploy/: valid for systemd (`systemd-analyze
//! verify`), an exposure of at most 2.0 (`systemd-analyze security
//! --offline=yes`, printed for the CI log), and what the plugin needs and
//! no more: a dedicated user, at most CAP_IPC_LOCK, the socket in its
//! RuntimeDirectory= (never a ReadWritePaths= on a tmpfs path that does not
//! exist at boot), the key ring read-only, the health port on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{deploy_files, file_flags, flag, keeps_no_ring, shown};

/// The highest exposure a unit may have.
const MAX_EXPOSURE: f64 = 2.0;

fn units() -> Vec<PathBuf> {
    let u = deploy_files(&["service"]);
    assert!(
        u.len() >= 2,
        "expected the software and TPM units, found {u:?}"
    );
    u
}

fn analyze(args: &[&str], unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): scripts/install-deps installs it (Debian package systemd)")
        })
}

/// `Overall exposure level for NAME: 1.2 OK 🙂` → 1.2.
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, after) = line.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// The directives of one section: key → every value, in order, with
/// continuation lines joined.
fn section(text: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let l = std::mem::take(&mut logical);
        if l.starts_with('[') {
            current = l.trim_matches(['[', ']']).to_string();
        } else if current == name
            && let Some((k, v)) = l.split_once('=')
        {
            out.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

fn words(d: &BTreeMap<String, Vec<String>>, key: &str) -> Vec<String> {
    d.get(key)
        .into_iter()
        .flatten()
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

fn one<'a>(d: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    d.get(key).and_then(|v| v.last()).map(String::as_str)
}

#[test]
fn every_unit_scores_at_most_2_in_systemd_analyze_security() {
    let mut over = Vec::new();
    for u in units() {
        let o = analyze(&["security", "--offline=yes", "--no-pager"], &u);
        let report = String::from_utf8_lossy(&o.stdout);
        let score = exposure(&report).unwrap_or_else(|| {
            panic!(
                "{}: no \"Overall exposure level\" line in systemd-analyze's output:\n{report}{}",
                shown(&u),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        // The CI log shows every unit's score.
        println!(
            "systemd-analyze security --offline=yes {}: exposure {score:.1} (at most {MAX_EXPOSURE:.1})",
            shown(&u)
        );
        if score > MAX_EXPOSURE {
            let findings: Vec<&str> = report.lines().filter(|l| l.starts_with('✗')).collect();
            over.push(format!(
                "{}: exposure {score:.1} > {MAX_EXPOSURE:.1}\n{}",
                shown(&u),
                findings.join("\n")
            ));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n\n"));
}

#[test]
fn every_unit_is_valid_for_systemd() {
    let dir = tempfile::tempdir().unwrap();
    for u in units() {
        // verify also checks that ExecStart's binary exists: point it at
        // one that does; everything else is the shipped text.
        let text = std::fs::read_to_string(&u).unwrap();
        let copy = dir.path().join(u.file_name().unwrap());
        std::fs::write(
            &copy,
            text.replace("/usr/local/bin/kms-plugin", "/bin/true"),
        )
        .unwrap();
        let o = analyze(&["verify"], &copy);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {}:\n{said}",
            shown(&u)
        );
    }
}

#[test]
fn every_unit_gives_the_plugin_what_it_needs_and_no_more() {
    let mut p = Vec::new();
    for u in units() {
        let text = std::fs::read_to_string(&u).unwrap();
        let s = section(&text, "Service");
        let at = shown(&u);
        let exec = words(&s, "ExecStart");
        if !(exec.first().is_some_and(|b| b.ends_with("/kms-plugin"))
            && exec.get(1).map(String::as_str) == Some("serve"))
        {
            p.push(format!("{at}: ExecStart must run kms-plugin serve"));
            continue;
        }
        match (one(&s, "User"), one(&s, "DynamicUser")) {
            (Some(user), _) if user != "root" && user != "0" => {}
            (_, Some("yes")) => {}
            _ => p.push(format!("{at}: User= must name a dedicated user (not root)")),
        }
        for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
            let caps = words(&s, key);
            if key == "CapabilityBoundingSet" && caps.is_empty() {
                p.push(format!(
                    "{at}: CapabilityBoundingSet= must be given (at most CAP_IPC_LOCK)"
                ));
            }
            for c in caps.iter().filter(|c| *c != "CAP_IPC_LOCK") {
                p.push(format!(
                    "{at}: {key}= holds {c}: the plugin needs CAP_IPC_LOCK only"
                ));
            }
        }
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("RuntimeDirectory", "kmsplugin"),
            ("RuntimeDirectoryPreserve", "yes"),
            ("LimitCORE", "0"),
        ] {
            if one(&s, key) != Some(want) {
                p.push(format!("{at}: {key}={want} is required"));
            }
        }
        let rw = words(&s, "ReadWritePaths");
        for path in rw
            .iter()
            .filter(|w| w.starts_with("/run") || w.starts_with("/var/run"))
        {
            p.push(format!(
                "{at}: ReadWritePaths={path} names a tmpfs path that does not exist at boot: use RuntimeDirectory="
            ));
        }
        match flag(&exec, "listen-addr").and_then(|a| a.strip_prefix("unix://")) {
            Some(sock) if sock.starts_with("/run/kmsplugin/") || sock.starts_with("/var/run/kmsplugin/") => {}
            other => p.push(format!(
                "{at}: --listen-addr {other:?} must be a socket in the RuntimeDirectory (/run/kmsplugin/)"
            )),
        }
        match flag(&exec, "keyring") {
            // No ring: its credential files must not be writable either.
            None if keeps_no_ring(&exec) => {
                for f in file_flags(&exec) {
                    let writable = rw.iter().chain(&words(&s, "StateDirectory")).any(|w| {
                        let w = w.trim_start_matches(['-', '+']);
                        f.starts_with(w) || f.starts_with(&format!("/var/lib/{w}"))
                    });
                    if writable || one(&s, "ProtectSystem") != Some("strict") {
                        p.push(format!("{at}: {f} must be read-only for the plugin (ProtectSystem=strict, not in ReadWritePaths=)"));
                    }
                }
            }
            None => p.push(format!("{at}: --keyring is required")),
            Some(ring) => {
                if !words(&s, "ReadOnlyPaths").iter().any(|w| w == ring) {
                    p.push(format!("{at}: the key ring {ring} must be in ReadOnlyPaths= (serve never writes it)"));
                }
                let writable = rw.iter().chain(&words(&s, "StateDirectory")).any(|w| {
                    let w = w.trim_start_matches(['-', '+']);
                    ring == w || ring.strip_prefix("/var/lib/") == Some(w)
                });
                if writable {
                    p.push(format!("{at}: the key ring {ring} must not be writable (ReadWritePaths=, StateDirectory=)"));
                }
            }
        }
        if let Some(addr) = flag(&exec, "health-addr") {
            let loopback = addr.starts_with("127.") || addr.starts_with("[::1]");
            if !loopback || !words(&s, "IPAddressAllow").contains(&"localhost".to_string()) {
                p.push(format!(
                    "{at}: --health-addr={addr}: the health port must be on loopback and the unit limited to it (IPAddressDeny=any, IPAddressAllow=localhost)"
                ));
            }
        }
        if flag(&exec, "tcti").is_some_and(|t| t.starts_with("device:")) {
            let dev = flag(&exec, "tcti")
                .and_then(|t| t.strip_prefix("device:"))
                .unwrap_or("");
            if one(&s, "DevicePolicy") != Some("closed")
                || !s
                    .get("DeviceAllow")
                    .into_iter()
                    .flatten()
                    .any(|d| d.starts_with(dev))
            {
                p.push(format!(
                    "{at}: --tcti=device:{dev} needs DevicePolicy=closed and DeviceAllow={dev} rw"
                ));
            }
        }
    }
    assert!(p.is_empty(), "systemd units:\n  {}", p.join("\n  "));
}

#[test]
fn the_exposure_line_is_read() {
    assert_eq!(
        exposure("x\n→ Overall exposure level for kms-plugin.service: 1.2 OK 🙂\n"),
        Some(1.2)
    );
    assert_eq!(exposure("nothing"), None);
}

#[test]
fn continuation_lines_and_repeated_keys_are_read() {
    let s = section(
        "[Unit]\nUser=no\n[Service]\n# c\nExecStart=/bin/x \\\n  --a=1 \\\n  --b 2\nSystemCallFilter=@a\nSystemCallFilter=~@b\n",
        "Service",
    );
    assert_eq!(words(&s, "ExecStart"), ["/bin/x", "--a=1", "--b", "2"]);
    assert_eq!(words(&s, "SystemCallFilter"), ["@a", "~@b"]);
    assert_eq!(flag(&words(&s, "ExecStart"), "b"), Some("2"));
    assert!(!s.contains_key("User"));
}
