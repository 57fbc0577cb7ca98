//! The transit backend against a real OpenBao server (and, for answers a
//! real server never gives, a fake one): key_ids shared by every node and
//! address of one server, a policy refusal as PERMISSION_DENIED, the server
//! killed, restarted sealed and unsealed while the plugin serves, a revoked
//! token and a new token file, AppRole login and token renewal, Status
//! that never calls the server, settings refused before the socket exists,
//! TLS, every AEAD key type, derived keys and namespaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::conformance::{dec, enc};
use e2e::openbao::{
    OpenBao, backend_calls, counter, dev_with_key, plugin_policy, serve_flags, start_plugin,
};
use e2e::{Plugin, http_get};
use kms_proto::v2::StatusRequest;
use kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const KEY: &str = "kube-secrets";

async fn status(c: &mut KeyManagementServiceClient<Channel>) -> (String, String) {
    let s = c.status(StatusRequest {}).await.unwrap().into_inner();
    (s.key_id, s.healthz)
}

/// Waits (up to `within`) until `ok(healthz)` holds; returns that healthz.
async fn wait_healthz(
    c: &mut KeyManagementServiceClient<Channel>,
    within: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        let (_, h) = status(c).await;
        if ok(&h) {
            return h;
        }
        assert!(t.elapsed() < within, "{what}: healthz still {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metrics(p: &Plugin) -> String {
    http_get(p.health_port.unwrap(), "/metrics").1
}

/// `kms-plugin probe` of `p`: (healthy, what it printed).
fn probe(p: &Plugin) -> (bool, String) {
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args(["probe", "--listen-addr", &p.endpoint()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Asserts the plugin sent at least `n` calls `op` that ended `outcome`.
fn assert_calls(p: &Plugin, op: &str, outcome: &str, n: u64) {
    let m = metrics(p);
    let series = format!("kms_plugin_backend_calls_total{{op=\"{op}\",outcome=\"{outcome}\"}}");
    assert!(counter(&m, &series) >= n, "{series} < {n}:\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_and_address_of_one_server_shares_key_ids_and_rotation_needs_no_staging() {
    let (bao, _, token) = dev_with_key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = start_plugin(&da, &serve_flags(&bao, KEY, &token));
    // The same server by another name: the key_id follows the cluster, not the URL.
    let mut flags = serve_flags(&bao, KEY, &token);
    let i = flags.iter().position(|f| f == "--transit-addr").unwrap();
    flags[i + 1] = format!("http://localhost:{}", bao.port);
    let b = start_plugin(&db, &flags);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (ka, ha) = status(&mut ca).await;
    let (kb, _) = status(&mut cb).await;
    assert_eq!(ha, "ok");
    assert_eq!(ka, kb, "one key_id for one key, whatever the address");
    assert_eq!(ka, bao.key_id(KEY, 1));
    assert!(ka.starts_with("transit-kube-secrets-v1-"), "{ka}");

    let w1 = ca.encrypt(enc(&[1; 32])).await.unwrap().into_inner();
    assert_eq!(w1.ciphertext.len(), 66, "6-byte header + nonce, seed, tag");
    assert_eq!(
        &w1.ciphertext[..6],
        &[4, 1, 0, 0, 0, 1],
        "format, scheme, version 1"
    );
    let d = cb.decrypt(dec(&w1.ciphertext, &w1.key_id)).await.unwrap();
    assert_eq!(d.into_inner().plaintext, [1; 32]);

    // Rotate in Transit: both pick v2 up without restart, and each decrypts
    // what the other wraps with either version at once (no staging).
    let v = bao.rotate(KEY);
    let k2 = bao.key_id(KEY, v);
    e2e::conformance::wait_key_id(&mut cb, &k2).await;
    let w2 = cb.encrypt(enc(&[2; 32])).await.unwrap().into_inner();
    assert_eq!(w2.key_id, k2);
    let d = ca.decrypt(dec(&w2.ciphertext, &w2.key_id)).await.unwrap();
    assert_eq!(d.into_inner().plaintext, [2; 32]);
    e2e::conformance::wait_key_id(&mut ca, &k2).await;
    for c in [&mut ca, &mut cb] {
        let d = c.decrypt(dec(&w1.ciphertext, &w1.key_id)).await.unwrap();
        assert_eq!(
            d.into_inner().plaintext,
            [1; 32],
            "old versions still decrypt"
        );
    }
    // A ciphertext of v1 presented as v2: refused before Transit is asked.
    let e = ca.decrypt(dec(&w1.ciphertext, &k2)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "decryption failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_decrypt_is_permission_denied_and_probe_says_so() {
    let bao = OpenBao::dev();
    bao.create_key(KEY, "aes256-gcm96");
    bao.write_policy(
        "encrypt-only",
        &format!(
            "path \"transit/encrypt/{KEY}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/keys/{KEY}\" {{ capabilities = [\"read\"] }}\n"
        ),
    );
    let token = bao.create_token(&["encrypt-only"], "1h");
    let token_file = bao.write_secret_file("token", &token);
    let dir = tempfile::tempdir().unwrap();
    let p = start_plugin(dir.path(), &serve_flags(&bao, KEY, &token_file));
    let mut c = p.client().await;
    let w = c.encrypt(enc(&[7; 32])).await.unwrap().into_inner();
    let e = c.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    for want in [
        "refused decrypt with key kube-secrets at mount transit",
        "lacks update on transit/decrypt/kube-secrets",
        &token_file.display().to_string(),
    ] {
        assert!(
            e.message().contains(want),
            "{want:?} not in {:?}",
            e.message()
        );
    }
    let h = wait_healthz(&mut c, Duration::from_secs(5), "self-test", |h| h != "ok").await;
    assert!(h.contains("permission denied"), "{h}");

    let (healthy, text) = probe(&p);
    assert!(!healthy, "{text}");
    for want in [
        "PermissionDenied",
        "transit/decrypt/kube-secrets",
        "UNHEALTHY",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not in probe's output:\n{text}"
        );
    }
    assert!(!text.contains(&token), "probe printed the token");
    assert!(!p.log_text().contains(&token), "the log holds the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_restarted_sealed_and_unsealed_while_serving() {
    let mut bao = OpenBao::persistent();
    bao.create_key(KEY, "aes256-gcm96");
    bao.write_policy("kms-plugin", &plugin_policy(KEY));
    let token = bao.create_token(&["kms-plugin"], "1h");
    let token_file = bao.write_secret_file("token", &token);
    let dir = tempfile::tempdir().unwrap();
    let p = start_plugin(dir.path(), &serve_flags(&bao, KEY, &token_file));
    let mut c = p.client().await;
    let (k1, h) = status(&mut c).await;
    assert_eq!(h, "ok");
    let w1 = c.encrypt(enc(&[5; 32])).await.unwrap().into_inner();

    // Killed: UNAVAILABLE at once (after the bounded retries, inside the
    // apiserver's 3 s), healthz not ok within seconds; Status still answers.
    bao.kill();
    let t = Instant::now();
    let e = c.encrypt(enc(&[5; 32])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(e.message().contains("cannot be reached"), "{}", e.message());
    let e = c
        .decrypt(dec(&w1.ciphertext, &w1.key_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let h = wait_healthz(&mut c, Duration::from_secs(5), "server killed", |h| {
        h != "ok"
    })
    .await;
    assert!(h.contains("cannot be reached"), "{h}");
    let (code, body) = http_get(p.health_port.unwrap(), "/healthz");
    assert_ne!(code, 200, "{body}");
    assert_eq!(
        status(&mut c).await.0,
        k1,
        "the cached key_id is still reported"
    );
    let (healthy, text) = probe(&p);
    assert!(!healthy);
    for want in [
        "FAILED: Unavailable",
        "cannot be reached",
        "the plugin recovers by itself",
        "UNHEALTHY",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not in probe's output:\n{text}"
        );
    }

    // Back, sealed: healthz names it; calls are UNAVAILABLE naming it.
    bao.start_again();
    let h = wait_healthz(&mut c, Duration::from_secs(10), "sealed", |h| {
        h.contains("sealed")
    })
    .await;
    assert!(h.contains("unseal"), "{h}");
    let e = c.encrypt(enc(&[5; 32])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("is sealed"), "{}", e.message());

    // Unsealed: recovery without a restart, same key, old data decrypts.
    bao.unseal();
    wait_healthz(&mut c, Duration::from_secs(10), "unsealed", |h| h == "ok").await;
    assert_eq!(status(&mut c).await.0, k1);
    let d = c.decrypt(dec(&w1.ciphertext, &w1.key_id)).await.unwrap();
    assert_eq!(d.into_inner().plaintext, [5; 32]);
    let w = c.encrypt(enc(&[6; 32])).await.unwrap().into_inner();
    assert_eq!(w.key_id, k1);
    let (healthy, text) = probe(&p);
    assert!(healthy, "{text}");
    assert_calls(&p, "encrypt", "unreachable", 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_denied_until_a_new_token_file_appears() {
    let (bao, token, token_file) = dev_with_key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let p = start_plugin(dir.path(), &serve_flags(&bao, KEY, &token_file));
    let mut c = p.client().await;
    let w = c.encrypt(enc(&[8; 32])).await.unwrap().into_inner();
    bao.revoke(&token);
    let e = c.encrypt(enc(&[8; 32])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("revoked or expired")
            && e.message().contains(&token_file.display().to_string()),
        "{}",
        e.message()
    );
    wait_healthz(&mut c, Duration::from_secs(5), "revoked", |h| {
        h.contains("permission denied")
    })
    .await;

    // A new token written over the file (atomically, as a renewer does).
    let fresh = bao.create_token(&["kms-plugin"], "1h");
    bao.write_secret_file("token", &fresh);
    let d = c.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap();
    assert_eq!(d.into_inner().plaintext, [8; 32]);
    wait_healthz(&mut c, Duration::from_secs(5), "new token", |h| h == "ok").await;
    assert!(p.log_text().contains("transit token file changed"));
    for t in [&token, &fresh] {
        assert!(!p.log_text().contains(t.as_str()), "the log holds a token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logins_and_short_tokens_are_renewed_before_they_expire() {
    let (bao, _, _) = dev_with_key(KEY);
    let (role_id, secret_id) = bao.approle("kms-plugin", &["kms-plugin"], "4s");
    let role = bao.write_secret_file("role-id", &role_id);
    let secret = bao.write_secret_file("secret-id", &secret_id);
    let short = bao.create_token(&["kms-plugin"], "4s");
    let short_file = bao.write_secret_file("short-token", &short);
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("approle"), dir.path().join("token"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let mut flags = serve_flags(&bao, KEY, &role);
    let i = flags
        .iter()
        .position(|f| f == "--transit-token-file")
        .unwrap();
    flags.splice(
        i..i + 2,
        [
            "--transit-role-id-file".to_string(),
            role.display().to_string(),
            "--transit-secret-id-file".to_string(),
            secret.display().to_string(),
        ],
    );
    let approle = start_plugin(&d1, &flags);
    let token = start_plugin(&d2, &serve_flags(&bao, KEY, &short_file));
    let (mut ca, mut ct) = (approle.client().await, token.client().await);
    // Three TTLs: every call succeeds because the tokens are renewed.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        for c in [&mut ca, &mut ct] {
            let w = c.encrypt(enc(&[3; 32])).await.unwrap().into_inner();
            let d = c.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap();
            assert_eq!(d.into_inner().plaintext, [3; 32]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for p in [&approle, &token] {
        assert_calls(p, "renew", "ok", 3);
        assert!(!p.log_text().contains(&secret_id) && !p.log_text().contains(&short));
    }
    assert_calls(&approle, "login", "ok", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_polls_do_not_call_transit() {
    let (bao, _, token) = dev_with_key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let mut flags = serve_flags(&bao, KEY, &token);
    let i = flags.iter().position(|f| f == "--health-cache").unwrap();
    flags[i + 1] = "5s".into();
    let p = start_plugin(dir.path(), &flags);
    let mut c = p.client().await;
    status(&mut c).await;
    let before = backend_calls(&metrics(&p));
    let t = Instant::now();
    for _ in 0..500 {
        assert_eq!(status(&mut c).await.1, "ok");
    }
    let calls = backend_calls(&metrics(&p)) - before;
    // Within the window: at most one self-test (2 calls) and one key read
    // (2 calls) per 5 s, whatever the number of polls.
    let bound = 4 * (t.elapsed().as_secs() / 5 + 1) + 2;
    assert!(
        calls <= bound,
        "{calls} calls to Transit for 500 Status polls in {:?}",
        t.elapsed()
    );
}

/// Runs `kms-plugin serve` expecting it to refuse; (exit code, stderr).
fn refused(dir: &Path, flags: &[String]) -> (i32, String) {
    let sock = dir.join("refused.sock");
    let listen = format!("unix://{}", sock.display());
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args(["serve", "--listen-addr", &listen])
        .args(flags)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!sock.exists(), "the socket was bound: {flags:?}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn with(flags: &[String], name: &str, value: &str) -> Vec<String> {
    let mut f = flags.to_vec();
    match f.iter().position(|x| x == name) {
        Some(i) => f[i + 1] = value.into(),
        None => f.extend([name.to_string(), value.to_string()]),
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_keys_and_credentials_are_refused_before_binding() {
    use std::os::unix::fs::PermissionsExt;
    let (bao, token, token_file) = dev_with_key(KEY);
    bao.create_key("rsa", "rsa-2048");
    let dir = tempfile::tempdir().unwrap();
    let base = serve_flags(&bao, KEY, &token_file);
    let open_file = dir.path().join("open-token");
    std::fs::write(&open_file, &token).unwrap();
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let nothing = format!("http://127.0.0.1:{}", e2e::free_port());
    // A token whose policy does not cover a path gets 403 there, whether or
    // not it exists: the missing key and mount are shown with root's.
    let root_file = bao.write_secret_file("root-token", &bao.root);
    let root = with(&base, "--transit-token-file", root_file.to_str().unwrap());
    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        (
            with(&base, "--transit-addr", "http://10.1.2.3:8200"),
            2,
            vec!["only allowed to a loopback", "use https://"],
        ),
        (
            with(&base, "--transit-key", "no/such"),
            2,
            vec!["transit-key=\"no/such\" is not valid"],
        ),
        (
            with(&base, "--transit-token-file", open_file.to_str().unwrap()),
            2,
            vec!["mode 0644", "chmod 600"],
        ),
        (
            with(&base, "--transit-token-file", &token),
            2,
            vec!["looks like the secret itself"],
        ),
        (
            with(&base, "--keyring", "/tmp/ring"),
            2,
            vec!["keeps no key ring"],
        ),
        (
            with(&root, "--transit-key", "nokey"),
            1,
            vec![
                "no key nokey in a Transit engine at transit",
                "bao write -f transit/keys/nokey",
            ],
        ),
        (
            with(&root, "--transit-mount", "nomount"),
            1,
            vec!["HTTP 404", "nomount"],
        ),
        (
            with(&root, "--transit-key", "rsa"),
            1,
            vec!["type rsa-2048", "does not encrypt with associated data"],
        ),
        (
            with(&base, "--transit-addr", &nothing),
            1,
            vec!["cannot be reached", "Connection refused"],
        ),
    ];
    for (flags, code, wants) in cases {
        let (got, err) = refused(dir.path(), &flags);
        assert_eq!(got, code, "{flags:?}: {err}");
        for w in wants {
            assert!(err.contains(w), "{w:?} not in {err:?}");
        }
        assert!(!err.contains(&token), "the token in a message: {err}");
    }
    // A token without read on the key: named at start-up.
    bao.write_policy("none", "path \"sys/nothing\" { capabilities = [\"read\"] }");
    let weak = bao.write_secret_file("weak", &bao.create_token(&["none"], "1h"));
    let (code, err) = refused(
        dir.path(),
        &with(&base, "--transit-token-file", weak.to_str().unwrap()),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("permission denied")
            && err.contains("lacks read on transit/keys/kube-secrets"),
        "{err}"
    );
    // The key commands do not manage Transit keys, and say where they live.
    let out = e2e::kms(&[
        "key",
        "init",
        "--backend",
        "transit",
        "--keyring",
        dir.path().join("r").to_str().unwrap(),
        "--transit-addr",
        &bao.addr(),
        "--transit-key",
        KEY,
        "--transit-token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bao write -f transit/keys/NAME/rotate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fake Transit: answers each request with what `answer(method, path)`
/// returns (status, body), one request per connection.
fn fake_transit(answer: impl Fn(&str, &str) -> (u16, String) + Send + 'static) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let (code, text) = answer(&method, &path);
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    port
}

const HEALTH: &str =
    r#"{"initialized":true,"sealed":false,"standby":false,"cluster_id":"fake-cluster"}"#;
const KEY_ANSWER: &str = r#"{"data":{"type":"aes256-gcm96","derived":false,"keys":{"1":1700000000},"latest_version":1,"min_decryption_version":1,"min_encryption_version":0,"supports_encryption":true,"supports_decryption":true}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_transits_are_named_and_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "hvs.fake-token-0123456789").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let flags_for = |port: u16| {
        let bao_addr = format!("http://127.0.0.1:{port}");
        vec![
            "--backend",
            "transit",
            "--health-cache",
            "1s",
            "--transit-addr",
            &bao_addr,
            "--transit-key",
            KEY,
            "--transit-token-file",
            token.to_str().unwrap(),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };

    // Garbage where JSON belongs, at start-up.
    let port = fake_transit(|_, p| {
        if p.starts_with("/v1/sys/health") {
            (200, HEALTH.into())
        } else {
            (200, "<html>not json".into())
        }
    });
    let (code, err) = refused(dir.path(), &flags_for(port));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("something Transit does not send")
            && err.contains("not the JSON Transit sends"),
        "{err}"
    );

    // A key answer with a malformed version map.
    let port = fake_transit(|_, p| {
        if p.starts_with("/v1/sys/health") {
            (200, HEALTH.into())
        } else {
            (
                200,
                KEY_ANSWER.replace("\"keys\":{\"1\"", "\"keys\":{\"one\""),
            )
        }
    });
    let (_, err) = refused(dir.path(), &flags_for(port));
    assert!(err.contains("not a number"), "{err}");

    // Encrypt answers without a version, with another version; a plaintext
    // that is not base64; a server failing with 500 (retried, bounded).
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let port = fake_transit(move |_, p| {
        if p.starts_with("/v1/sys/health") {
            return (200, HEALTH.into());
        }
        if p.contains("/keys/") {
            return (200, KEY_ANSWER.into());
        }
        if p.contains("/decrypt/") {
            return (200, r#"{"data":{"plaintext":"%%%"}}"#.into());
        }
        if !p.contains("/encrypt/") {
            // auth/token/lookup-self: a token that never expires.
            return (200, r#"{"data":{"ttl":0,"renewable":false}}"#.into());
        }
        match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => (
                200,
                r#"{"data":{"ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#.into(),
            ),
            1 => (
                200,
                r#"{"data":{"ciphertext":"vault:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#.into(),
            ),
            2 => (
                200,
                r#"{"data":{"ciphertext":"vault:vAAAAAAAAAAAAAAAA"}}"#.into(),
            ),
            _ => (500, r#"{"errors":["internal error"]}"#.into()),
        }
    });
    let p = start_plugin(dir.path(), &flags_for(port));
    let mut c = p.client().await;
    for _ in 0..3 {
        let e = c.encrypt(enc(&[1; 32])).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
    }
    let t = Instant::now();
    let e = c.encrypt(enc(&[1; 32])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("HTTP 500") && e.message().contains("internal error"),
        "{}",
        e.message()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    let ct = [&[4u8, 1, 0, 0, 0, 1][..], &[0u8; 44]].concat();
    let key_id = status(&mut c).await.0;
    let e = c.decrypt(dec(&ct, &key_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let log = p.log_text();
    for want in [
        "the ciphertext does not start with vault:v<version>:",
        "a ciphertext of version 2, not of the version asked for",
        "the ciphertext has no version",
        "a plaintext that is not base64",
    ] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    let m = metrics(&p);
    assert_eq!(
        counter(
            &m,
            r#"kms_plugin_backend_calls_total{op="encrypt",outcome="failed"}"#
        ) % 4,
        0,
        "every failing call is tried 4 times: {m}"
    );
    assert!(
        !log.contains("fake-token-0123456789"),
        "the log holds the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_and_a_clear_refusal_without_it() {
    let bao = OpenBao::dev_tls(KEY);
    let token = bao.path().join("root-token");
    let dir = tempfile::tempdir().unwrap();
    let base = serve_flags(&bao, KEY, &token);
    // The system's trust store does not know the dev server's CA.
    let (code, err) = refused(dir.path(), &base);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("TLS with Transit at https://127.0.0.1")
            && err.contains("UnknownIssuer")
            && err.contains("--transit-ca-file"),
        "{err}"
    );
    // A CA that did not sign the server's certificate: the same, named.
    let other = OpenBao::dev_tls("other");
    let (_, err) = refused(
        dir.path(),
        &with(
            &base,
            "--transit-ca-file",
            other.ca_file().to_str().unwrap(),
        ),
    );
    assert!(
        err.contains("TLS with Transit") && err.contains("invalid peer certificate"),
        "{err}"
    );

    // With its CA, by IP and by name (the certificate has both), and with a
    // client certificate: one key_id, calls through TLS.
    let ca = bao.ca_file();
    let flags = with(&base, "--transit-ca-file", ca.to_str().unwrap());
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = start_plugin(&da, &flags);
    let mut by_name = with(
        &flags,
        "--transit-addr",
        &format!("https://localhost:{}", bao.port),
    );
    by_name = with(
        &by_name,
        "--transit-client-cert-file",
        bao.path().join("vault-cert.pem").to_str().unwrap(),
    );
    by_name = with(
        &by_name,
        "--transit-client-key-file",
        bao.path().join("vault-key.pem").to_str().unwrap(),
    );
    let b = start_plugin(&db, &by_name);
    let (mut ca_, mut cb) = (a.client().await, b.client().await);
    let (ka, ha) = status(&mut ca_).await;
    assert_eq!(ha, "ok");
    assert_eq!(status(&mut cb).await.0, ka);
    let w = ca_.encrypt(enc(&[9; 32])).await.unwrap().into_inner();
    let d = cb.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap();
    assert_eq!(d.into_inner().plaintext, [9; 32]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aead_key_type_derived_keys_and_namespaces() {
    use serde_json::json;
    let bao = OpenBao::dev();
    let token = bao.write_secret_file("root-token", &bao.root.clone());
    let dir = tempfile::tempdir().unwrap();
    // (key, type, derived, largest plaintext, bytes for a seed)
    for (key, key_type, derived, max, seed_len) in [
        ("aes128", "aes128-gcm96", false, 990, 66),
        ("chacha", "chacha20-poly1305", false, 990, 66),
        ("xchacha", "xchacha20-poly1305", false, 978, 78),
        ("derived", "aes256-gcm96", true, 990, 66),
    ] {
        bao.root(
            "POST",
            &format!("transit/keys/{key}"),
            Some(json!({"type": key_type, "derived": derived})),
        );
        let d = dir.path().join(key);
        std::fs::create_dir_all(&d).unwrap();
        let p = start_plugin(&d, &serve_flags(&bao, key, &token));
        let mut c = p.client().await;
        let w = c.encrypt(enc(&[7; 32])).await.unwrap().into_inner();
        assert_eq!(w.ciphertext.len(), seed_len, "{key_type}");
        let back = c.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap();
        assert_eq!(back.into_inner().plaintext, [7; 32], "{key_type}");
        let w = c.encrypt(enc(&vec![1; max])).await.unwrap().into_inner();
        assert_eq!(w.ciphertext.len(), 1024, "{key_type}");
        let e = c.encrypt(enc(&vec![1; max + 1])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{key_type}");
        assert!(
            e.message().contains(&format!("at most {max} bytes")),
            "{}",
            e.message()
        );
    }

    // The same key name in a namespace is another key, with other key_ids.
    bao.root("POST", "sys/namespaces/team-a", None);
    bao.root(
        "POST",
        "team-a/sys/mounts/transit",
        Some(json!({"type": "transit"})),
    );
    bao.root("POST", &format!("team-a/transit/keys/{KEY}"), None);
    bao.create_key(KEY, "aes256-gcm96");
    let (dn, dr) = (dir.path().join("ns"), dir.path().join("root"));
    std::fs::create_dir_all(&dn).unwrap();
    std::fs::create_dir_all(&dr).unwrap();
    let ns = start_plugin(
        &dn,
        &with(
            &serve_flags(&bao, KEY, &token),
            "--transit-namespace",
            "team-a",
        ),
    );
    let root = start_plugin(&dr, &serve_flags(&bao, KEY, &token));
    let (mut cn, mut cr) = (ns.client().await, root.client().await);
    let (kn, hn) = status(&mut cn).await;
    let (kr, _) = status(&mut cr).await;
    assert_eq!(hn, "ok");
    assert_ne!(kn, kr, "the namespace is part of the key_id");
    let w = cn.encrypt(enc(&[4; 32])).await.unwrap().into_inner();
    let back = cn.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap();
    assert_eq!(back.into_inner().plaintext, [4; 32]);
    let e = cr.decrypt(dec(&w.ciphertext, &w.key_id)).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "another namespace's key_id: {e:?}"
    );
}
