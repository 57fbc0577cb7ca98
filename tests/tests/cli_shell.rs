//! Both CLIs in a shell and in automation: completion scripts for bash, zsh
//! and fish name the subcommands, man pages (one per command) have NAME and
//! SYNOPSIS, `--output json` of `key list`, `probe` and `verify` parses and
//! carries the facts of the table, and the exit statuses `--help` lists are
//! the ones the programs return.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use e2e::{Plugin, bin, init_ring, kms};
use serde_json::Value;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(bin(binary))
        .args(args)
        .env_remove("SECRET_STORE_DB")
        .env_remove("KMS_PLUGIN_KEYRING")
        .output()
        .unwrap()
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for (binary, subcommands) in [
        (
            "kms-plugin",
            &["serve", "key", "probe", "bench", "completions", "rotate"][..],
        ),
        (
            "secret-store",
            &["apply", "verify", "rewrap", "migrate", "completions"][..],
        ),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let o = run(binary, &["completions", shell]);
            assert!(
                o.status.success(),
                "{binary} completions {shell}: {}",
                text(&o)
            );
            let script = stdout(&o);
            for s in subcommands {
                assert!(script.contains(s), "{binary} {shell}: no {s} in\n{script}");
            }
        }
        let o = run(binary, &["completions", "powershell"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    }
    // bash itself accepts the script.
    let o = run("kms-plugin", &["completions", "bash"]);
    let check = Command::new("bash")
        .args(["-n", "-c", &stdout(&o)])
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check));
}

#[test]
fn man_pages_one_per_command_with_name_and_synopsis() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, pages) in [
        (
            "kms-plugin",
            &[
                "kms-plugin.1",
                "kms-plugin-serve.1",
                "kms-plugin-key.1",
                "kms-plugin-key-list.1",
                "kms-plugin-probe.1",
                "kms-plugin-bench.1",
            ][..],
        ),
        (
            "secret-store",
            &[
                "secret-store.1",
                "secret-store-verify.1",
                "secret-store-raw.1",
                "secret-store-bench.1",
            ][..],
        ),
    ] {
        let out = dir.path().join(binary);
        let o = run(binary, &["man", out.to_str().unwrap()]);
        assert!(o.status.success(), "{binary} man: {}", text(&o));
        for page in pages {
            let p = out.join(page);
            let roff = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}; wrote {}", p.display(), stdout(&o)));
            assert!(
                roff.contains(".SH NAME") && roff.contains(".SH SYNOPSIS"),
                "{page}: {roff}"
            );
            assert!(
                stdout(&o).contains(page),
                "{page} not listed: {}",
                stdout(&o)
            );
        }
        assert!(!out.join(format!("{binary}-man.1")).exists());
        // The top page carries the exit statuses.
        let top = std::fs::read_to_string(out.join(format!("{binary}.1"))).unwrap();
        assert!(top.contains("Exit status"), "{top}");
    }
    // man(1) renders one, when it is installed.
    if Path::new("/usr/bin/man").exists() {
        let o = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("kms-plugin/kms-plugin-key-list.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(stdout(&o).contains("--output"), "{}", stdout(&o));
    }
}

#[test]
fn key_list_json_holds_the_table_facts() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let r = ring.to_str().unwrap();
    let add = kms(&["key", "add", "--keyring", r]);
    assert!(add.status.success(), "{}", text(&add));

    let table = kms(&["key", "list", "--keyring", r]);
    assert!(table.status.success(), "{}", text(&table));
    let json = kms(&["key", "list", "--keyring", r, "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();

    let table = stdout(&table);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(keys.len(), rows.len());
    for (row, key) in rows.iter().zip(keys) {
        assert_eq!(row[0], key["key_id"], "{table}");
        assert_eq!(row[1], key["version"].to_string());
        assert_eq!(row[2], key["algorithm"]);
        assert_eq!(row[3], key["state"]);
        assert_eq!(row[4], key["created"]);
        assert_eq!(row[5], key["retired"].as_str().unwrap_or("-"));
    }
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[1]["state"], "staged");
    let summary = table.lines().last().unwrap();
    assert_eq!(
        summary,
        format!(
            "ring {} ({}), fingerprint {}",
            doc["ring_id"].as_str().unwrap(),
            doc["backend"].as_str().unwrap(),
            doc["fingerprint"].as_str().unwrap()
        )
    );

    let bad = kms(&["key", "list", "--keyring", r, "--output", "yaml"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("table") && text(&bad).contains("json"));
}

/// The value of a `step  text` line of probe's table.
fn probe_line<'a>(table: &'a str, step: &str) -> &'a str {
    table
        .lines()
        .find_map(|l| {
            l.strip_prefix(step)
                .filter(|r| r.starts_with(' '))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {step} line in\n{table}"))
}

#[test]
fn probe_json_holds_the_table_facts_and_exit_statuses_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let mut p = Plugin::start(&ring, &sock, &dir.path().join("log"), &[]);
    let ep = p.endpoint();

    let table = kms(&["probe", "--listen-addr", &ep]);
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    let json = kms(&["probe", "--listen-addr", &ep, "-o", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    let table = stdout(&table);

    assert_eq!(probe_line(&table, "endpoint"), doc["endpoint"]);
    assert_eq!(
        probe_line(&table, "socket"),
        format!("present, mode {}", doc["socket"]["mode"].as_str().unwrap())
    );
    assert_eq!(doc["socket"]["state"], "present");
    assert_eq!(doc["connect"]["ok"], true);
    let status = probe_line(&table, "status");
    let key_id = doc["status"]["key_id"].as_str().unwrap();
    assert!(
        status.starts_with(&format!(
            "version={:?} healthz={:?} key_id={key_id:?}",
            doc["status"]["version"].as_str().unwrap(),
            doc["status"]["healthz"].as_str().unwrap()
        )),
        "{status} / {doc}"
    );
    assert_eq!(doc["status"]["healthz"], "ok");
    let encrypt = probe_line(&table, "encrypt");
    let e = &doc["encrypt"];
    assert_eq!(e["key_id"], key_id);
    let annotations: Vec<String> = e["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    assert!(!annotations.is_empty());
    assert!(
        encrypt.starts_with(&format!(
            "ok: {}-byte seed -> {}-byte ciphertext, key_id={key_id:?}, annotations [{}]",
            e["plaintext_bytes"],
            e["ciphertext_bytes"],
            annotations.join(", ")
        )),
        "{encrypt} / {e}"
    );
    assert_eq!(doc["decrypt"]["round_trip"], true);
    assert!(probe_line(&table, "decrypt").starts_with("ok: round trip matches"));
    assert_eq!(doc["problems"], serde_json::json!([]));
    assert_eq!(doc["result"], "healthy");
    assert!(probe_line(&table, "result").starts_with("healthy"));

    // A stale socket: unreachable, exit 1, in both forms.
    p.kill();
    let table = kms(&["probe", "--listen-addr", &ep]);
    assert_eq!(table.status.code(), Some(1), "{}", text(&table));
    assert!(probe_line(&stdout(&table), "connect").contains("stale socket"));
    let json = kms(&["probe", "--listen-addr", &ep, "--output", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["result"], "unreachable");
    assert_eq!(doc["connect"]["ok"], false);
    assert!(
        doc["connect"]["hint"]
            .as_str()
            .unwrap()
            .contains("stale socket")
    );
    assert!(doc["status"].is_null());
    // No socket at all.
    let gone = format!("unix://{}/absent.sock", dir.path().display());
    let json = kms(&["probe", "--listen-addr", &gone, "-o", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["socket"]["state"], "missing");

    // Bad flags: exit 2 (answering but unhealthy, exit 3: the next test).
    for args in [
        vec!["probe", "--listen-addr", "tcp://127.0.0.1:1"],
        vec!["probe", "--listen-addr", &ep, "--timeout", "soon"],
        vec!["probe", "--listen-addr", &ep, "--output", "xml"],
        vec!["probe"],
    ] {
        let o = kms(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
}

fn aesgcm_config(dir: &Path) -> PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n  - identity: {}\n",
    )
    .unwrap();
    p
}

fn store(db: &Path, cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("secret-store"))
        .arg("--db")
        .arg(db)
        .arg("--encryption-config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).unwrap();
    }
    drop(i);
    c.wait_with_output().unwrap()
}

#[test]
fn verify_json_holds_the_table_facts_and_findings_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let cfg = aesgcm_config(dir.path());
    let manifest = (0..3)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\nstringData:\n  v: x{i}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    let o = store(&db, &cfg, &["apply", "-f", "-"], Some(&manifest));
    assert!(o.status.success(), "{}", text(&o));

    let table = store(&db, &cfg, &["verify", "--per-key"], None);
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    let json = store(
        &db,
        &cfg,
        &["verify", "--per-key", "--output", "json"],
        None,
    );
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", stdout(&json)));
    let table = stdout(&table);
    let summary = table.lines().last().unwrap();
    let formats: Vec<String> = doc["formats"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(f, n)| format!("{n} {f}"))
        .collect();
    assert!(
        summary.starts_with(&format!(
            "verified {} secrets: {} ok ({} stale), {} failed; storage formats: {};",
            doc["checked"],
            doc["ok"],
            doc["stale"],
            doc["failed"].as_array().unwrap().len(),
            formats.join(", ")
        )),
        "{summary} / {doc}"
    );
    assert_eq!(doc["checked"], 3);
    assert!(doc["per_second"].as_f64().unwrap() > 0.0);
    assert!(doc["snapshot"].is_null());
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for k in keys {
        let line = format!(
            "ok     {} rev {} {} {}",
            k["key"].as_str().unwrap(),
            k["mod_revision"],
            k["provider"].as_str().unwrap(),
            k["format"].as_str().unwrap()
        );
        assert!(table.lines().any(|l| l == line), "{line} not in\n{table}");
    }

    // Without the key: every value fails; exit 3, each failure in both forms.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        ),
    )
    .unwrap();
    let table = store(&db, &other, &["verify"], None);
    assert_eq!(table.status.code(), Some(3), "{}", text(&table));
    let json = store(&db, &other, &["verify", "-o", "json"], None);
    assert_eq!(json.status.code(), Some(3), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    for f in failed {
        let line = format!(
            "FAILED {}: {}",
            f[0].as_str().unwrap(),
            f[1].as_str().unwrap()
        );
        assert!(
            stdout(&table).contains(&line),
            "{line} not in\n{}",
            stdout(&table)
        );
    }
    // A store that cannot be opened: exit 1, no JSON on stdout.
    let o = store(
        &dir.path().join("no/such"),
        &dir.path().join("missing.yaml"),
        &["verify", "-o", "json"],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    // Bad flags: exit 2.
    let o = store(&db, &cfg, &["verify", "--output", "xml"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn help_lists_the_exit_statuses() {
    for (binary, lines) in [
        (
            "kms-plugin",
            &[
                "0  success",
                "1  the command failed",
                "2  usage",
                "3  probe",
            ][..],
        ),
        (
            "secret-store",
            &[
                "0  success",
                "1  the command failed",
                "2  usage",
                "3  verify",
            ][..],
        ),
    ] {
        let o = run(binary, &["--help"]);
        assert!(o.status.success(), "{}", text(&o));
        let help = stdout(&o);
        assert!(help.contains("Exit status:"), "{help}");
        for l in lines {
            assert!(help.contains(l), "{binary} --help lacks {l:?}:\n{help}");
        }
        // clap's own usage errors are the 2 the help names.
        let o = run(binary, &["--no-such-flag"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    }
    // A key command that fails: 1.
    let dir = tempfile::tempdir().unwrap();
    let o = kms(&[
        "key",
        "list",
        "--keyring",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn probe_of_a_plugin_that_answers_but_is_unhealthy_exits_3() {
    use e2e::swtpm::{Swtpm, init_tpm_ring, serve_flags};
    let mut tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_tpm_ring(&ring, "tpm-resident", &tpm.tcti(), &[]);
    let flags = serve_flags("tpm-resident", &tpm.tcti());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let p = Plugin::start(
        &ring,
        &dir.path().join("kms.sock"),
        &dir.path().join("log"),
        &flags,
    );
    let ep = p.endpoint();
    let t = std::time::Instant::now();
    loop {
        let o = kms(&["probe", "--listen-addr", &ep]);
        if o.status.code() == Some(0) {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "never healthy: {}",
            text(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The TPM goes away: every wrap fails UNAVAILABLE.
    tpm.kill();
    let t = std::time::Instant::now();
    let json = loop {
        let o = kms(&["probe", "--listen-addr", &ep, "-o", "json"]);
        if o.status.code() != Some(0) {
            break o;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "still healthy with the TPM gone"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(json.status.code(), Some(3), "{}", text(&json));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["result"], "unhealthy");
    assert_eq!(doc["connect"]["ok"], true);
    assert_eq!(doc["encrypt"]["error"]["code"], "Unavailable", "{doc}");
    let table = kms(&["probe", "--listen-addr", &ep]);
    assert_eq!(table.status.code(), Some(3), "{}", text(&table));
    let table = stdout(&table);
    // The same facts (the message itself names the TPM's last answer,
    // which may differ between two calls).
    let e = &doc["encrypt"]["error"];
    assert!(
        e["message"].as_str().unwrap().contains("TPM unavailable"),
        "{e}"
    );
    let line = probe_line(&table, "encrypt");
    assert!(
        line.starts_with("FAILED: Unavailable: TPM unavailable")
            && line.ends_with(&format!("[{}]", e["hint"].as_str().unwrap())),
        "{table}"
    );
    assert_eq!(probe_line(&table, "result"), "UNHEALTHY");
}
