//! The KMS v2 conformance suite, written once and run once per key backend
//! (as rustls runs its API suite once per crypto provider): what
//! kube-apiserver checks of every answer, what the plugin must refuse,
//! tampering, unknown and wrong key_ids, limits, rotation while serving
//! under load, restart on the same state and retirement.
//!
//! A backend takes part with a [`Fixture`]: its name, the flags that reach
//! it (`--tcti ...`), its environment, and whatever it must keep running
//! (a swtpm, a token, a server). `tests/tests/conformance.rs` lists the
//! fixtures; each suite function is one test per fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::Code;
use tonic::transport::Channel;

use crate::Plugin;

/// A key backend under test, and whatever it needs running.
pub trait Fixture: Send + Sync {
    /// The `--backend` name.
    fn backend(&self) -> &'static str;
    /// How its key_ids start (`soft-`, `tpms-`, ...).
    fn key_id_prefix(&self) -> &'static str;
    /// Flags that reach the backend, for `serve` and every `key` command.
    fn connect_args(&self) -> Vec<String> {
        Vec::new()
    }
    /// Extra `key init` flags.
    fn init_args(&self) -> Vec<String> {
        Vec::new()
    }
    /// Environment for every `kms-plugin` process.
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The largest plaintext Encrypt takes, when the suite can know it.
    fn max_plaintext(&self) -> Option<usize> {
        None
    }
    /// Whether the backend keeps its keys in a key ring file that the `key`
    /// commands manage (false: they live in the service it talks to, which
    /// the fixture manages: see [`Fixture::init`], [`Fixture::rotate`],
    /// [`Fixture::retire`]).
    fn keeps_a_ring(&self) -> bool {
        true
    }
    /// The version a key_id of this backend names: by default the `N` of
    /// its `-vN-` part (every backend's key_ids carry one).
    fn key_version(&self, key_id: &str) -> Option<u64> {
        key_id
            .split('-')
            .rev()
            .filter_map(|part| part.strip_prefix('v'))
            .find(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
    }
    /// Creates the first key: `key init --backend ...` by default.
    fn init(&self, ring: &Path) {
        let mut args: Vec<String> = vec!["--backend".into(), self.backend().into()];
        args.extend(self.init_args());
        let out = key_command(self, "init", ring, &args);
        assert!(
            out.status.success(),
            "key init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// Adds and activates a new key; returns its key_id: `key rotate` by
    /// default.
    fn rotate(&self, ring: &Path) -> String {
        let out = key_command(self, "rotate", ring, &[]);
        assert!(
            out.status.success(),
            "key rotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crate::created_key_id(&String::from_utf8_lossy(&out.stdout))
            .expect("rotate printed the new key")
    }
    /// Whether retiring destroys the key in its device before the ring
    /// says so (a token object): until the plugin re-reads the ring, a
    /// Decrypt with it is then UNAVAILABLE (the key is gone) rather than
    /// still served.
    fn retirement_destroys_first(&self) -> bool {
        false
    }
    /// Retires `key_id` for good: `key retire --yes` by default.
    fn retire(&self, ring: &Path, key_id: &str) {
        let out = key_command(self, "retire", ring, &[key_id.into(), "--yes".into()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One plugin on a fresh ring of a fixture's backend.
pub struct Node<'f> {
    /// The backend.
    pub fixture: &'f dyn Fixture,
    /// The temporary directory (ring, socket, log).
    pub dir: tempfile::TempDir,
    /// The running plugin.
    pub plugin: Plugin,
}

impl<'f> Node<'f> {
    /// `key init`, then `serve` with a 1 s health cache.
    pub fn start(fixture: &'f dyn Fixture) -> Node<'f> {
        let dir = tempfile::tempdir().unwrap();
        fixture.init(&dir.path().join("ring"));
        let plugin = spawn(fixture, dir.path());
        Node {
            fixture,
            dir,
            plugin,
        }
    }

    /// The ring directory.
    pub fn ring(&self) -> PathBuf {
        self.dir.path().join("ring")
    }

    /// `kms-plugin key <sub> --keyring RING <args> <connect args>`.
    pub fn key(&self, sub: &str, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        key_command(self.fixture, sub, &self.ring(), &args)
    }

    /// A rotation (the fixture's); returns the new key_id.
    pub fn rotate(&self) -> String {
        self.fixture.rotate(&self.ring())
    }

    /// SIGTERM, then `serve` again on the same ring.
    pub fn restart(&mut self) {
        assert!(self.plugin.terminate().success(), "clean exit on SIGTERM");
        assert!(!self.plugin.sock.exists(), "socket removed on SIGTERM");
        self.plugin = spawn(self.fixture, self.dir.path());
    }
}

fn key_command<F: Fixture + ?Sized>(
    fixture: &F,
    sub: &str,
    ring: &Path,
    args: &[String],
) -> Output {
    let mut all: Vec<String> = vec![
        "key".into(),
        sub.into(),
        "--keyring".into(),
        ring.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    all.extend(fixture.connect_args());
    std::process::Command::new(crate::bin("kms-plugin"))
        .args(&all)
        .env_remove("TCTI")
        .envs(fixture.env())
        .output()
        .expect("running kms-plugin key")
}

fn spawn(fixture: &dyn Fixture, dir: &Path) -> Plugin {
    let mut flags: Vec<String> = vec![
        "--backend".into(),
        fixture.backend().into(),
        "--health-cache".into(),
        "1s".into(),
    ];
    if fixture.keeps_a_ring() {
        flags.extend(["--keyring".into(), dir.join("ring").display().to_string()]);
    }
    flags.extend(fixture.connect_args());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = fixture.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = Plugin::spawn_flags(
        &dir.join("run/kms.sock"),
        &dir.join("log"),
        &flags,
        &env,
        crate::free_port(),
    );
    p.wait_ready();
    p
}

/// An Encrypt request for `pt`.
pub fn enc(pt: &[u8]) -> EncryptRequest {
    EncryptRequest {
        plaintext: pt.to_vec(),
        uid: "e2e-uid".into(),
    }
}

/// A Decrypt request for `ct` under `key_id`.
pub fn dec(ct: &[u8], key_id: &str) -> DecryptRequest {
    DecryptRequest {
        ciphertext: ct.to_vec(),
        uid: "e2e-uid".into(),
        key_id: key_id.into(),
        annotations: BTreeMap::new(),
    }
}

/// Waits (up to 10 s) until Status reports `want`, healthy.
pub async fn wait_key_id(c: &mut KeyManagementServiceClient<Channel>, want: &str) {
    let t = Instant::now();
    loop {
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        if st.key_id == want {
            assert_eq!(st.healthz, "ok");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "key_id still {} (waiting for {want})",
            st.key_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_fqdn(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Status, Encrypt and Decrypt answer what kube-apiserver checks: version
/// `v2`, healthz `ok`, Encrypt's key_id equal to Status', a ciphertext of
/// 1..=1024 bytes (under 100 for a seed), FQDN annotation keys within 32 KiB
/// naming the backend, random nonces; `/healthz` and `/metrics` agree.
pub async fn status_encrypt_decrypt(f: &dyn Fixture) {
    let node = Node::start(f);
    let mut c = node.plugin.client().await;
    let st = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.version, "v2");
    assert_eq!(st.healthz, "ok", "{}", f.backend());
    assert!(
        st.key_id.starts_with(f.key_id_prefix()) && st.key_id.len() <= 1024,
        "{}",
        st.key_id
    );

    let seed = [0x5au8; 32];
    let r = c.encrypt(enc(&seed)).await.unwrap().into_inner();
    assert_eq!(
        r.key_id, st.key_id,
        "Encrypt key_id must equal Status key_id"
    );
    assert!(
        !r.ciphertext.is_empty() && r.ciphertext.len() < 100,
        "{} bytes for a seed",
        r.ciphertext.len()
    );
    assert_ne!(&r.ciphertext[..], &seed[..]);
    let mut total = 0;
    for (k, v) in &r.annotations {
        assert!(is_fqdn(k), "annotation key {k:?} is not an FQDN");
        total += k.len() + v.len();
    }
    assert!(total <= 32 * 1024);
    assert_eq!(
        r.annotations
            .get("backend.kms-plugin.k8s-at-rest.io")
            .map(|v| &v[..]),
        Some(f.backend().as_bytes())
    );
    let d = c
        .decrypt(DecryptRequest {
            annotations: r.annotations.clone(),
            ..dec(&r.ciphertext, &r.key_id)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, seed);
    for _ in 0..5 {
        let again = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_ne!(r.ciphertext, again.ciphertext, "random nonces or IVs");
        assert!(again.ciphertext.len() < 100);
    }

    let port = node.plugin.health_port.unwrap();
    let (code, body) = crate::http_get(port, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = crate::http_get(port, "/metrics");
    assert!(metrics.contains(f.backend()), "{metrics}");
}

/// Every single-bit flip of a ciphertext is INVALID_ARGUMENT (past the
/// header always the same opaque `decryption failed`: no oracle); an
/// unknown key_id is NOT_FOUND naming it; another key of the ring does not
/// authenticate the ciphertext; another backend's format is refused.
pub async fn tampering_and_key_ids(f: &dyn Fixture) {
    let node = Node::start(f);
    let mut c = node.plugin.client().await;
    let r = c.encrypt(enc(&[1u8; 32])).await.unwrap().into_inner();
    for i in 0..r.ciphertext.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = r.ciphertext.clone();
            bad[i] ^= bit;
            let e = c.decrypt(dec(&bad, &r.key_id)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "byte {i}: {e:?}");
            if i >= 2 {
                assert_eq!(e.message(), "decryption failed", "byte {i}");
            }
        }
    }
    let unknown = format!("{}0000000000000000-v9-000000000000", f.key_id_prefix());
    let e = c.decrypt(dec(&r.ciphertext, &unknown)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&unknown), "{}", e.message());

    let new_id = node.rotate();
    wait_key_id(&mut c, &new_id).await;
    let e = c.decrypt(dec(&r.ciphertext, &new_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "decryption failed");
    for other in [&[0x01u8, 0x01, 0, 0, 0][..], &[0x02, 0x01, 0, 0, 0]] {
        let e = c.decrypt(dec(other, &new_id)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

/// Empty, oversized and garbage inputs are INVALID_ARGUMENT naming the
/// problem; the plaintext limit is exact; the plugin stays healthy.
pub async fn limits_and_garbage(f: &dyn Fixture) {
    let node = Node::start(f);
    let mut c = node.plugin.client().await;
    let r = c.encrypt(enc(&[3u8; 32])).await.unwrap().into_inner();

    let e = c.encrypt(enc(b"")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("empty"), "{}", e.message());

    // The limit, from the refusal of 1024 bytes; then exactly at it.
    let e = c.encrypt(enc(&[1u8; 1024])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("1024"),
        "must name the limit: {}",
        e.message()
    );
    let max: usize = e
        .message()
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {:?}", e.message()));
    if let Some(want) = f.max_plaintext() {
        assert_eq!(max, want);
    }
    assert!(max >= 900, "{max}");
    let ok = c.encrypt(enc(&vec![1u8; max])).await.unwrap().into_inner();
    assert!(ok.ciphertext.len() <= 1024, "{}", ok.ciphertext.len());
    let d = c
        .decrypt(dec(&ok.ciphertext, &ok.key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext.len(), max);
    let e = c.encrypt(enc(&vec![1u8; max + 1])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    for (req, want) in [
        (dec(&[], &r.key_id), "empty"),
        (dec(&[1u8; 1025], &r.key_id), "1024"),
        (dec(&r.ciphertext, ""), "key_id is empty"),
        (dec(&r.ciphertext, &"k".repeat(1025)), "key_id"),
        (dec(&[0xff; 40], &r.key_id), "malformed"),
        (dec(&[1], &r.key_id), "malformed"),
    ] {
        let e = c.decrypt(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(want),
            "{want:?} not in {:?}",
            e.message()
        );
    }
    let mut bad = dec(&r.ciphertext, &r.key_id);
    bad.annotations.insert("NotAnFQDN".into(), b"x".to_vec());
    assert_eq!(
        c.decrypt(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut big = dec(&r.ciphertext, &r.key_id);
    big.annotations
        .insert("a.example.com".into(), vec![0u8; 33 * 1024]);
    assert_eq!(
        c.decrypt(big).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = c
        .encrypt(EncryptRequest {
            plaintext: vec![1; 32],
            uid: "u".repeat(2000),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // 4 MiB of garbage in either call: refused by the request bound.
    let garbage: Vec<u8> = (0..4usize << 20).map(|i| (i * 7 + 13) as u8).collect();
    let e = c.encrypt(enc(&garbage)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c.decrypt(dec(&garbage, &r.key_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let st = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.healthz, "ok");
    let d = c
        .decrypt(dec(&r.ciphertext, &r.key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, [3u8; 32]);
}

/// Rotation with the CLI while serving under load (no call fails), new
/// Encrypts on the new key, old ciphertexts still decrypting; a restart on
/// the same state keeps every key and the key_id; retirement makes a key's
/// ciphertexts NOT_FOUND while serving; `key list` shows the states and no
/// material; versions are never reused.
pub async fn rotation_restart_and_retirement(f: &dyn Fixture) {
    let mut node = Node::start(f);
    let mut c = node.plugin.client().await;
    let k1 = c
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    let w1 = c.encrypt(enc(&[1; 32])).await.unwrap().into_inner();
    assert_eq!(w1.key_id, k1);

    let load = {
        let mut c = node.plugin.client().await;
        let log = node.plugin.log.clone();
        tokio::spawn(async move {
            let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
            let mut n = 0u32;
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                let r = c
                    .encrypt(enc(&[9; 32]))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("encrypt while rotating: {e:?}\nlog:\n{}", log_text())
                    })
                    .into_inner();
                let d = c
                    .decrypt(dec(&r.ciphertext, &r.key_id))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("decrypt while rotating: {e:?}\nlog:\n{}", log_text())
                    });
                assert_eq!(d.into_inner().plaintext, [9; 32]);
                n += 1;
            }
            n
        })
    };
    let k2 = node.rotate();
    assert_ne!(k1, k2);
    wait_key_id(&mut c, &k2).await;
    assert!(load.await.unwrap() > 0);
    let w2 = c.encrypt(enc(&[2; 32])).await.unwrap().into_inner();
    assert_eq!(w2.key_id, k2, "new Encrypts use the new key");
    assert_eq!(
        c.decrypt(dec(&w1.ciphertext, &w1.key_id))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        vec![1; 32]
    );
    let k3 = node.rotate();
    assert_eq!(f.key_version(&k3), Some(3), "{k3}");
    wait_key_id(&mut c, &k3).await;
    let w3 = c.encrypt(enc(&[3; 32])).await.unwrap().into_inner();
    let (code, body) = crate::http_get(node.plugin.health_port.unwrap(), "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("kms_plugin_key_rotations_total 2"), "{body}");

    node.restart();
    let mut c = node.plugin.client().await;
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        k3
    );
    for (w, v) in [(&w1, 1u8), (&w2, 2), (&w3, 3)] {
        let d = c
            .decrypt(dec(&w.ciphertext, &w.key_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, vec![v; 32]);
    }

    // Retire: with a ring, refused for the active key, and without --yes
    // nothing changes.
    if f.keeps_a_ring() {
        let out = node.key("retire", &[&k3, "--yes"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("active key"));
        let out = node.key("retire", &[&k1]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unreadable") && err.contains("--yes"), "{err}");
        assert_eq!(
            c.decrypt(dec(&w1.ciphertext, &w1.key_id))
                .await
                .unwrap()
                .into_inner()
                .plaintext,
            vec![1; 32]
        );
    }
    f.retire(&node.ring(), &k1);
    let t = Instant::now();
    loop {
        match c.decrypt(dec(&w1.ciphertext, &w1.key_id)).await {
            Err(e) if e.code() == Code::Unavailable && f.retirement_destroys_first() => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "retirement not picked up: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::NotFound);
                assert!(e.message().contains("retired"), "{}", e.message());
                break;
            }
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "retirement not picked up"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        c.decrypt(dec(&w2.ciphertext, &w2.key_id))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        vec![2; 32]
    );

    if f.keeps_a_ring() {
        let out = node.key("list", &["-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["backend"], f.backend());
        let states: Vec<_> = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["retired", "enabled", "active"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("material"));
    }
    let k4 = node.rotate();
    assert_eq!(
        f.key_version(&k4),
        Some(4),
        "key_ids are never reused: {k4}"
    );
    assert!(
        ![&k1, &k2, &k3].contains(&&k4),
        "key_ids are never reused: {k4}"
    );
}

fn ring_file(node: &Node<'_>) -> PathBuf {
    node.ring().join("keyring.json")
}

/// Waits until the plugin's log says `what` (10 s at most).
fn wait_log(node: &Node<'_>, what: &str) {
    let t = Instant::now();
    while !node.plugin.log_text().contains(what) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what:?} never logged:\n{}",
            node.plugin.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused_reloads(node: &Node<'_>) -> u64 {
    let (_, body) = crate::http_get(node.plugin.health_port.unwrap(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("kms_plugin_ring_reload_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Decrypts every `(ciphertext, key_id, plaintext)` in `held`.
async fn all_decrypt(
    c: &mut KeyManagementServiceClient<Channel>,
    held: &[(Vec<u8>, String, [u8; 32])],
) {
    for (ct, id, pt) in held {
        let d = c
            .decrypt(dec(ct, id))
            .await
            .unwrap_or_else(|e| panic!("{id} no longer decrypts: {e:?}"))
            .into_inner();
        assert_eq!(&d.plaintext[..], &pt[..]);
    }
}

/// A ring file replaced under a running plugin by an older copy, by
/// another ring, or by one missing a live key is refused: the plugin keeps
/// serving every key it held (and says so, and counts it), and the `key`
/// commands refuse the file too. `key restore` of a newer copy brings the
/// missing key back (staged), `key restore` of an older one loses nothing,
/// and `key accept-loss` records a key that is truly gone as retired.
pub async fn reloads_never_drop_a_key(f: &dyn Fixture) {
    let node = Node::start(f);
    let mut c = node.plugin.client().await;
    let k1 = c
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    let w1 = c.encrypt(enc(&[1; 32])).await.unwrap().into_inner();
    let old_copy = node.dir.path().join("keyring.old.json");
    std::fs::copy(ring_file(&node), &old_copy).unwrap();
    let k2 = node.rotate();
    wait_key_id(&mut c, &k2).await;
    let w2 = c.encrypt(enc(&[2; 32])).await.unwrap().into_inner();
    let held = vec![
        (w1.ciphertext.clone(), k1.clone(), [1u8; 32]),
        (w2.ciphertext.clone(), k2.clone(), [2u8; 32]),
    ];
    let new_copy = node.dir.path().join("keyring.new.json");
    std::fs::copy(ring_file(&node), &new_copy).unwrap();

    // 1. The older copy put in place (as a restore by hand would).
    std::fs::copy(&old_copy, ring_file(&node)).unwrap();
    wait_log(&node, "key ring file refused");
    assert!(refused_reloads(&node) >= 1);
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        k2
    );
    all_decrypt(&mut c, &held).await;
    let o = node.key("list", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("went backwards")
            && err.contains(&format!("lacks key {k2}"))
            && err.contains("key restore"),
        "{err}"
    );
    // `key restore` of the newer copy brings k2 back, staged.
    let o = node.key("restore", &[new_copy.to_str().unwrap(), "--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("added key {k2}, staged")));
    let o = node.key("activate", &[&k2]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_key_id(&mut c, &k2).await;
    all_decrypt(&mut c, &held).await;

    // 2. `key restore` of the older copy: nothing is lost, nothing added.
    let before = std::fs::read(ring_file(&node)).unwrap();
    let o = node.key("restore", &[old_copy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to add"));
    assert_eq!(std::fs::read(ring_file(&node)).unwrap(), before);

    // 3. Another ring in place of this one.
    let other = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["--backend".into(), f.backend().into()];
    args.extend(f.init_args());
    let o = key_command(f, "init", &other.path().join("ring"), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refusals = refused_reloads(&node);
    std::fs::copy(other.path().join("ring/keyring.json"), ring_file(&node)).unwrap();
    wait_log(&node, "it is another ring");
    assert!(refused_reloads(&node) > refusals);
    all_decrypt(&mut c, &held).await;
    std::fs::write(ring_file(&node), &before).unwrap();

    // 4. A file without a live key (k1, still enabled).
    let mut v: serde_json::Value = serde_json::from_slice(&before).unwrap();
    v["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["key_id"] != k1.as_str());
    std::fs::write(ring_file(&node), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    wait_log(&node, &format!("lacks key {k1}"));
    all_decrypt(&mut c, &held).await;
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .key_id,
        k2
    );

    // 5. k1 truly lost: accept it, with --yes only; it is recorded retired.
    let o = node.key("accept-loss", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("lost: key {k1}")));
    let o = node.key("accept-loss", &["--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = node.key("list", &["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == id)
            .map(|k| k["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&k1).as_deref(), Some("retired"));
    assert_eq!(state(&k2).as_deref(), Some("active"));
    // The running plugin follows the accepted file: k1 is retired there too.
    let t = Instant::now();
    loop {
        match c.decrypt(dec(&w1.ciphertext, &k1)).await {
            Err(e) if e.code() == Code::NotFound => break,
            _ => {
                assert!(t.elapsed() < Duration::from_secs(10), "k1 still served");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    all_decrypt(&mut c, &held[1..]).await;
}
