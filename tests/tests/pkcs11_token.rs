//! The pkcs11 backend against a real SoftHSM2 token, beyond the contract
//! the conformance suite checks: keys that stay in the token, settings that
//! cannot work failing before the socket is bound, a token that goes away
//! while serving and comes back, retirement destroying the object, objects
//! planted or swapped under a key's CKA_ID, and two nodes sharing a token.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::Plugin;
use e2e::conformance::{dec, enc};
use e2e::softhsm::{MODULE, SoftHsm};
use tonic::Code;

const P11TOOL: &str = env!("CARGO_BIN_EXE_p11tool");

/// `kms-plugin key SUB --keyring RING ARGS... <token flags>` on `hsm`.
fn key(hsm: &SoftHsm, sub: &str, ring: &Path, args: &[&str]) -> Output {
    Command::new(e2e::bin("kms-plugin"))
        .args(["key", sub, "--keyring", ring.to_str().unwrap()])
        .args(args)
        .args(hsm.connect_args())
        .envs(hsm.env())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `key export` (of the staged keys only, with `staged`) to `file`;
/// returns what it printed and the digest.
fn export(hsm: &SoftHsm, ring: &Path, staged: bool, file: &Path) -> (String, String) {
    let mut args = vec!["-o", file.to_str().unwrap()];
    if staged {
        args.push("--staged");
    }
    let out = key(hsm, "export", ring, &args);
    let digest = e2e::printed_digest(&out);
    (ok(out), digest)
}

fn init(hsm: &SoftHsm, ring: &Path) -> String {
    let out = ok(key(hsm, "init", ring, &["--backend", "pkcs11"]));
    e2e::created_key_id(&out).expect("init printed the key")
}

/// The ring entry of `key_id`.
fn entry(ring: &Path, key_id: &str) -> serde_json::Value {
    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ring.join("keyring.json")).unwrap()).unwrap();
    ring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .cloned()
        .expect("the key is in the ring")
}

/// The key's CKA_ID, hex, from its ring entry.
fn cka_id(ring: &Path, key_id: &str) -> String {
    use base64::Engine;
    let e = entry(ring, key_id);
    let b = base64::engine::general_purpose::STANDARD
        .decode(e["material"]["id"].as_str().unwrap())
        .unwrap();
    hex::encode(b)
}

fn tool(hsm: &SoftHsm, args: &[&str]) -> serde_json::Value {
    let out = hsm.tool(P11TOOL, args);
    assert!(
        out.status.success(),
        "p11tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `serve` on `hsm` with `extra` flags (the token's by default).
fn serve(hsm: &SoftHsm, dir: &Path, ring: &Path, extra: &[String]) -> Plugin {
    let mut flags: Vec<String> = vec![
        "--backend".into(),
        "pkcs11".into(),
        "--keyring".into(),
        ring.display().to_string(),
        "--health-cache".into(),
        "200ms".into(),
    ];
    if extra.is_empty() {
        flags.extend(hsm.connect_args());
    } else {
        flags.extend(extra.iter().cloned());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Plugin::spawn_flags(
        &dir.join("kms.sock"),
        &dir.join("log"),
        &flags,
        &env,
        e2e::free_port(),
    )
}

/// Runs `serve` expecting it to fail before binding; returns its stderr.
fn serve_fails(hsm: &SoftHsm, ring: &Path, flags: &[String], env: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kms.sock");
    let out = Command::new(e2e::bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &format!("unix://{}", sock.display()),
        ])
        .args(["--keyring", ring.to_str().unwrap(), "--backend", "pkcs11"])
        .args(flags)
        .envs(hsm.env())
        .envs(env.iter().cloned())
        .env_remove("KMS_PLUGIN_PKCS11_PIN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started with {flags:?}");
    assert!(!sock.exists(), "the socket was bound with {flags:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keys_are_generated_in_the_token_and_never_leave_it() {
    let hsm = SoftHsm::new("kek");
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let id = init(&hsm, &ring);
    assert!(id.starts_with("p11-"), "{id}");
    // The ring holds only which object to use: no key.
    let e = entry(&ring, &id);
    let mut fields: Vec<&str> = e["material"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(fields, ["id", "kcv", "token-serial"]);
    let attrs = tool(&hsm, &["attrs", &cka_id(&ring, &id)]);
    for (attr, want) in [
        ("sensitive", true),
        ("extractable", false),
        ("always_sensitive", true),
        ("never_extractable", true),
        ("local", true),
        ("token", true),
        ("private", true),
    ] {
        assert_eq!(attrs[attr], want, "{attr}: {attrs}");
    }
    assert!(
        attrs["value"].as_str().unwrap().starts_with("refused"),
        "the key's value can be read: {attrs}"
    );
}

#[test]
fn settings_that_cannot_work_fail_before_binding() {
    let hsm = SoftHsm::new("kek");
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init(&hsm, &ring);
    let pin = hsm.pin_file().display().to_string();
    let with = |pairs: &[(&str, &str)]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
            .collect()
    };
    let module = ("pkcs11-module", MODULE);
    let label = ("pkcs11-token-label", "kek");
    let pin_flag = ("pkcs11-pin-file", pin.as_str());

    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong_pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[
            module,
            label,
            ("pkcs11-pin-file", wrong_pin.to_str().unwrap()),
        ]),
        &[],
    );
    assert!(err.contains("CKR_PIN_INCORRECT"), "{err}");
    assert!(!err.contains("0000"), "the PIN is printed: {err}");

    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[module, ("pkcs11-token-label", "nope"), pin_flag]),
        &[],
    );
    assert!(err.contains("no token \"nope\""), "{err}");
    assert!(
        err.contains("\"kek\""),
        "the tokens present are listed: {err}"
    );

    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[("pkcs11-module", "/nonexistent/p11.so"), label, pin_flag]),
        &[],
    );
    assert!(
        err.contains("pkcs11-module=\"/nonexistent/p11.so\" is not valid"),
        "{err}"
    );

    let not_a_module = dir.path().join("not-a-module.so");
    std::fs::write(&not_a_module, "text").unwrap();
    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[
            ("pkcs11-module", not_a_module.to_str().unwrap()),
            label,
            pin_flag,
        ]),
        &[],
    );
    assert!(err.contains("cannot be loaded"), "{err}");

    let open_pin = dir.path().join("open-pin");
    std::fs::write(&open_pin, "4711-kms\n").unwrap();
    std::fs::set_permissions(&open_pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[
            module,
            label,
            ("pkcs11-pin-file", open_pin.to_str().unwrap()),
        ]),
        &[],
    );
    assert!(
        err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("4711-kms"), "the PIN is printed: {err}");

    let err = serve_fails(&hsm, &ring, &with(&[module, label]), &[]);
    assert!(err.contains("KMS_PLUGIN_PKCS11_PIN"), "{err}");

    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[module, label, ("pkcs11-slot", "1"), pin_flag]),
        &[],
    );
    assert!(err.contains("not both"), "{err}");

    let err = serve_fails(
        &hsm,
        &ring,
        &with(&[module, label, pin_flag, ("pkcs11-sessions", "0")]),
        &[],
    );
    assert!(err.contains("pkcs11-sessions=\"0\" is not valid"), "{err}");

    // The PIN from the environment works.
    let dir2 = tempfile::tempdir().unwrap();
    let mut p = Plugin::spawn_flags(
        &dir2.path().join("kms.sock"),
        &dir2.path().join("log"),
        &[
            "--backend",
            "pkcs11",
            "--keyring",
            ring.to_str().unwrap(),
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token-label",
            "kek",
        ],
        &[
            ("SOFTHSM2_CONF", hsm.conf().to_str().unwrap()),
            ("KMS_PLUGIN_PKCS11_PIN", e2e::softhsm::PIN),
        ],
        e2e::free_port(),
    );
    p.wait_ready();
    assert!(p.terminate().success());
}

fn healthz(p: &Plugin) -> (u16, String) {
    e2e::http_get(p.health_port.unwrap(), "/healthz")
}

/// Polls `f` until it holds, up to `secs`.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {secs} s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_goes_away_is_unavailable_then_recovers() {
    let hsm = SoftHsm::new("kek");
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let id = init(&hsm, &ring);
    let p = serve(&hsm, dir.path(), &ring, &[]);
    p.wait_ready();
    let mut c = p.client().await;
    let before = c.encrypt(enc(&[7u8; 32])).await.unwrap().into_inner();
    assert_eq!(before.key_id, id);

    // The token is gone (its store moved away, as a pulled HSM or a lost
    // network partition looks to the module).
    let away = dir.path().join("tokens.away");
    std::fs::rename(hsm.tokens_dir(), &away).unwrap();
    let err = c.encrypt(enc(&[7u8; 32])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = c.decrypt(dec(&before.ciphertext, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    eventually(10, "healthz reports the token", || {
        let (code, body) = healthz(&p);
        code != 200 && body.contains("pkcs11")
    });

    // Back: the plugin finds it again by itself.
    std::fs::rename(&away, hsm.tokens_dir()).unwrap();
    let mut back = None;
    for _ in 0..100 {
        match c.encrypt(enc(&[8u8; 32])).await {
            Ok(r) => {
                back = Some(r.into_inner());
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("Encrypt works again once the token is back");
    assert_eq!(back.key_id, id);
    let pt = c.decrypt(dec(&before.ciphertext, &id)).await.unwrap();
    assert_eq!(pt.into_inner().plaintext, vec![7u8; 32]);
    eventually(10, "healthz ok again", || healthz(&p).0 == 200);
    let log = p.log_text();
    assert!(log.contains("PKCS#11 token reachable again"), "{log}");
    assert!(!log.contains(e2e::softhsm::PIN), "the PIN is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retirement_destroys_the_token_object() {
    let hsm = SoftHsm::new("kek");
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let old = init(&hsm, &ring);
    let old_id = cka_id(&ring, &old);
    let new = e2e::created_key_id(&ok(key(&hsm, "rotate", &ring, &[]))).unwrap();
    assert_ne!(new, old);
    assert_eq!(tool(&hsm, &["count", &old_id])["count"], 1);
    let said = ok(key(&hsm, "retire", &ring, &[&old, "--yes"]));
    assert!(said.contains("destroyed the key object"), "{said}");
    assert!(said.contains("C_DestroyObject"), "{said}");
    assert_eq!(tool(&hsm, &["count", &old_id])["count"], 0);
    assert!(entry(&ring, &old)["material"].is_null());
    // The new key still serves; the old one is retired.
    let p = serve(&hsm, dir.path(), &ring, &[]);
    p.wait_ready();
    let mut c = p.client().await;
    let r = c.encrypt(enc(&[1u8; 32])).await.unwrap().into_inner();
    assert_eq!(r.key_id, new);
    let err = c.decrypt(dec(&r.ciphertext, &old)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("retired"), "{err:?}");
}

#[test]
fn objects_planted_or_swapped_under_a_keys_id_are_refused() {
    let hsm = SoftHsm::new("kek");
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let id = init(&hsm, &ring);
    let hex_id = cka_id(&ring, &id);

    // A second object under the same CKA_ID: which one is the key?
    tool(&hsm, &["plant", &hex_id]);
    let err = serve_fails(&hsm, &ring, &hsm.connect_args(), &[]);
    assert!(err.contains("2 AES key objects share CKA_ID"), "{err}");

    // The key destroyed and another generated under its CKA_ID: a key the
    // ring never listed (whoever made it may know it).
    tool(&hsm, &["destroy", &hex_id]);
    tool(&hsm, &["plant", &hex_id]);
    let err = serve_fails(&hsm, &ring, &hsm.connect_args(), &[]);
    assert!(err.contains("check value differs"), "{err}");

    // Gone altogether.
    tool(&hsm, &["destroy", &hex_id]);
    let err = serve_fails(&hsm, &ring, &hsm.connect_args(), &[]);
    assert!(err.contains("no AES key object with CKA_ID"), "{err}");
}

/// A node's ring directory, and the files around it.
struct NodeDir {
    dir: tempfile::TempDir,
}

impl NodeDir {
    fn new() -> NodeDir {
        NodeDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn ring(&self) -> PathBuf {
        self.dir.path().join("ring")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_token_move_keys_by_reference() {
    let hsm = SoftHsm::new("kek");
    let (a, b) = (NodeDir::new(), NodeDir::new());
    let first = init(&hsm, &a.ring());

    // Node b joins: a's entries by reference, with the digest a printed.
    let file = a.dir.path().join("export.json");
    let (out, digest) = export(&hsm, &a.ring(), false, &file);
    assert!(out.contains("holds no key"), "{out}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.contains("kms-plugin-key-export/v1"), "{exported}");
    ok(key(
        &hsm,
        "import",
        &b.ring(),
        &[file.to_str().unwrap(), "--expect", &digest],
    ));
    ok(key(&hsm, "activate", &b.ring(), &[&first]));

    let pa = serve(&hsm, a.dir.path(), &a.ring(), &[]);
    let pb = serve(&hsm, b.dir.path(), &b.ring(), &[]);
    pa.wait_ready();
    pb.wait_ready();
    let (mut ca, mut cb) = (pa.client().await, pb.client().await);
    let ct = ca.encrypt(enc(&[3u8; 32])).await.unwrap().into_inner();
    let pt = cb.decrypt(dec(&ct.ciphertext, &first)).await.unwrap();
    assert_eq!(pt.into_inner().plaintext, vec![3u8; 32]);

    // A staged rotation across both: add on a, export --staged, import on
    // b, same fingerprint, activate on both.
    let added = e2e::created_key_id(&ok(key(&hsm, "add", &a.ring(), &[]))).unwrap();
    let (_, digest) = export(&hsm, &a.ring(), true, &file);
    ok(key(
        &hsm,
        "import",
        &b.ring(),
        &[file.to_str().unwrap(), "--expect", &digest],
    ));
    let fp = |ring: &Path| {
        ok(key(&hsm, "list", ring, &[]))
            .lines()
            .find_map(|l| l.split("fingerprint ").nth(1).map(str::to_string))
            .unwrap()
    };
    assert_eq!(fp(&a.ring()), fp(&b.ring()));
    ok(key(&hsm, "activate", &a.ring(), &[&added]));
    ok(key(&hsm, "activate", &b.ring(), &[&added]));
    e2e::conformance::wait_key_id(&mut ca, &added).await;
    e2e::conformance::wait_key_id(&mut cb, &added).await;
    let ct = cb.encrypt(enc(&[4u8; 32])).await.unwrap().into_inner();
    assert_eq!(ct.key_id, added);
    let pt = ca.decrypt(dec(&ct.ciphertext, &added)).await.unwrap();
    assert_eq!(pt.into_inner().plaintext, vec![4u8; 32]);
}

#[test]
fn a_key_of_another_token_is_unusable_here() {
    let hsm = SoftHsm::new("kek");
    hsm.add_token("other");
    let (a, b) = (NodeDir::new(), NodeDir::new());
    let first = init(&hsm, &a.ring());
    let file = a.dir.path().join("export.json");
    let (_, digest) = export(&hsm, &a.ring(), false, &file);
    // Node b's token is another one: the import itself only checks the
    // entries against their key_ids; serving on that token refuses them.
    ok(key(
        &hsm,
        "import",
        &b.ring(),
        &[file.to_str().unwrap(), "--expect", &digest],
    ));
    let pin = hsm.pin_file().display().to_string();
    let other: Vec<String> = [
        "--pkcs11-module",
        MODULE,
        "--pkcs11-token-label",
        "other",
        "--pkcs11-pin-file",
        &pin,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = Command::new(e2e::bin("kms-plugin"))
        .args([
            "key",
            "activate",
            "--keyring",
            b.ring().to_str().unwrap(),
            &first,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = serve_fails(&hsm, &b.ring(), &other, &[]);
    assert!(err.contains("this token's serial is"), "{err}");
}
