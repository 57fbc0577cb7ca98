//! The whole `secret-store` command line on etcd: the same commands as on
//! RocksDB, the apiserver's key layout as etcdctl sees it, resourceVersion =
//! mod revision, `--etcd-prefix` (the key is the encryption context), clear
//! errors for bad flags and an unreachable cluster, TLS client
//! certificates, and the bench on etcd.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::etcd::Cluster;

fn config(dir: &Path, name: &str, keys: &[(&str, u8)]) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut y = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n",
    );
    for (n, k) in keys {
        y.push_str(&format!(
            "      - name: {n}\n        secret: {}\n",
            b64.encode([*k; 32])
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, y).unwrap();
    p
}

fn cli(cfg: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(e2e::bin("secret-store"));
    for v in [
        "SECRET_STORE_DB",
        "SECRET_STORE_ETCD_ENDPOINTS",
        "SECRET_STORE_ETCD_PREFIX",
        "SECRET_STORE_ENCRYPTION_CONFIG",
    ] {
        c.env_remove(v);
    }
    if let Some(cfg) = cfg {
        c.arg("--encryption-config").arg(cfg);
    }
    c.args(args);
    c
}

fn run(cfg: Option<&Path>, args: &[&str]) -> Output {
    cli(cfg, args).output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn apply(cfg: &Path, args: &[&str], manifest: &str) -> Output {
    let mut a = args.to_vec();
    a.extend(["apply", "-f", "-"]);
    let mut c = cli(Some(cfg), &a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\ntype: kubernetes.io/basic-auth\nstringData:\n  username: admin\n  password: MARKER-on-etcd\n";

#[test]
fn every_command_works_on_etcd() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let e = ["--etcd-endpoints", eps.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "enc.yaml", &[("k1", 7)]);
    let cfg = cfg.as_path();
    let with =
        |args: &[&str]| -> Vec<String> { e.iter().chain(args).map(|s| s.to_string()).collect() };
    let run_e = |args: &[&str]| {
        let a = with(args);
        run(Some(cfg), &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let o = apply(cfg, &e, SECRET);
    assert_eq!(out(&o), "secret/db created\n", "{}", err(&o));
    let o = apply(cfg, &e, SECRET);
    assert_eq!(out(&o), "secret/db unchanged\n", "{}", err(&o));
    let o = run_e(&["get", "db", "-n", "prod", "-o", "json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // resourceVersion is etcd's mod_revision of the key.
    let o = c.etcdctl(&["get", "/registry/secrets/prod/db", "-w", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        doc["kvs"][0]["mod_revision"].as_u64().unwrap().to_string(),
        rv
    );
    // The stored bytes are the apiserver's: aesgcm envelope at the apiserver's key.
    let o = c.etcdctl(&["get", "/registry/secrets/prod/db", "--print-value-only"]);
    let stored = o.stdout[..o.stdout.len() - 1].to_vec();
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    assert!(!String::from_utf8_lossy(&stored).contains("MARKER"));
    let o = run_e(&["raw", "get", "--etcd-key", "/registry/secrets/prod/db"]);
    assert_eq!(o.stdout, stored);
    let o = run_e(&["list", "-A"]);
    assert!(
        out(&o).contains("prod        db     kubernetes.io/basic-auth   2"),
        "{}",
        out(&o)
    );
    let o = run_e(&["inspect", "db", "-n", "prod", "-o", "json"]);
    let i: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i["provider"], "aesgcm");
    assert_eq!(i["resourceVersion"], rv.as_str());

    // Rotation: k2 first; rewrap rewrites; verify is clean.
    let cfg2 = config(dir.path(), "enc2.yaml", &[("k2", 8), ("k1", 7)]);
    let a = with(&["rewrap"]);
    let o = run(
        Some(&cfg2),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out(&o).starts_with("rewrapped 1 of 1 stale secrets"),
        "{}{}",
        out(&o),
        err(&o)
    );
    let a = with(&["verify"]);
    let o = run(
        Some(&cfg2),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out(&o).contains("verified 1 secrets: 1 ok (0 stale), 0 failed"),
        "{}",
        out(&o)
    );
    let o = c.etcdctl(&["get", "/registry/secrets/prod/db", "--print-value-only"]);
    assert!(o.stdout.starts_with(b"k8s:enc:aesgcm:v1:k2:"));

    // A stale update is the apiserver's conflict.
    let stale = SECRET.replace(
        "namespace: prod\n",
        &format!("namespace: prod\n  resourceVersion: \"{rv}\"\n"),
    );
    let o = apply(&cfg2, &e, &stale.replace("MARKER-on-etcd", "other"));
    assert!(!o.status.success());
    assert!(
        err(&o).contains("Error from server (Conflict)"),
        "{}",
        err(&o)
    );

    let o = run_e(&["delete", "db", "-n", "prod"]);
    assert_eq!(out(&o), "secret \"db\" deleted\n", "{}", err(&o));
    let o = run_e(&["get", "db", "-n", "prod"]);
    assert!(
        err(&o).ends_with("Error from server (NotFound): secrets \"db\" not found\n"),
        "{}",
        err(&o)
    );
    let o = c.etcdctl(&["get", "--prefix", "/registry/", "--keys-only"]);
    assert_eq!(out(&o).trim(), "");
}

#[test]
fn the_etcd_prefix_is_the_apiservers_and_part_of_the_encryption_context() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "enc.yaml", &[("k1", 7)]);
    let e = [
        "--etcd-endpoints",
        eps.as_str(),
        "--etcd-prefix",
        "/kubernetes.io/",
    ];
    let o = apply(&cfg, &e, SECRET);
    assert!(o.status.success(), "{}", err(&o));
    let o = c.etcdctl(&["get", "--prefix", "/", "--keys-only"]);
    assert_eq!(out(&o).trim(), "/kubernetes.io/secrets/prod/db");
    let mut a = e.to_vec();
    a.extend(["get", "db", "-n", "prod", "-o", "name"]);
    assert_eq!(out(&run(Some(&cfg), &a)), "secret/db\n");
    // Under the default prefix there is nothing.
    let o = run(Some(&cfg), &["--etcd-endpoints", &eps, "list", "-A"]);
    assert!(err(&o).contains("No resources found"), "{}", err(&o));
    // The value is sealed for its real key: it opens there and nowhere else.
    let stored = c.etcdctl(&[
        "get",
        "/kubernetes.io/secrets/prod/db",
        "--print-value-only",
    ]);
    let f = dir.path().join("v.bin");
    std::fs::write(&f, &stored.stdout[..stored.stdout.len() - 1]).unwrap();
    let f = f.to_str().unwrap();
    let o = run(
        Some(&cfg),
        &[
            "raw",
            "decrypt",
            "--etcd-key",
            "/kubernetes.io/secrets/prod/db",
            "--in",
            f,
        ],
    );
    assert!(
        // Protobuf, as a default kube-apiserver stores it: k8s\0 + Unknown.
        o.status.success() && o.stdout.starts_with(b"k8s\x00") && out(&o).contains("\n\x02db"),
        "{}{}",
        out(&o),
        err(&o)
    );
    let o = run(
        Some(&cfg),
        &[
            "raw",
            "decrypt",
            "--etcd-key",
            "/registry/secrets/prod/db",
            "--in",
            f,
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("decryption failed"), "{}", err(&o));
    let o = run(
        Some(&cfg),
        &[
            "--etcd-endpoints",
            &eps,
            "--etcd-prefix",
            "registry",
            "list",
        ],
    );
    assert!(
        err(&o).contains("etcd-prefix=\"registry\" is not valid"),
        "{}",
        err(&o)
    );
}

#[test]
fn bad_flags_and_an_unreachable_cluster_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let o = run(
        None,
        &["--db", db, "--etcd-endpoints", "http://127.0.0.1:1", "list"],
    );
    assert!(
        err(&o).contains("both --db (or SECRET_STORE_DB) and --etcd-endpoints"),
        "{}",
        err(&o)
    );
    let o = run(None, &["list"]);
    assert!(err(&o).contains("no store: pass --db DIR"), "{}", err(&o));
    let o = run(None, &["--db", db, "--etcd-cacert", "/x.pem", "list"]);
    assert!(err(&o).contains("apply to etcd only"), "{}", err(&o));
    let o = run(None, &["--etcd-endpoints", "http://127.0.0.1", "list"]);
    assert!(err(&o).contains("expected http://HOST:PORT"), "{}", err(&o));
    let o = run(
        None,
        &[
            "--etcd-endpoints",
            "http://127.0.0.1:1",
            "--etcd-cacert",
            "/x.pem",
            "list",
        ],
    );
    assert!(
        err(&o).contains("plain http but TLS client settings"),
        "{}",
        err(&o)
    );
    let o = run(
        None,
        &[
            "--etcd-endpoints",
            "https://127.0.0.1:1",
            "--etcd-cert",
            "/x.pem",
            "list",
        ],
    );
    assert!(
        err(&o).contains("--etcd-cert needs --etcd-keyfile"),
        "{}",
        err(&o)
    );
    let port = e2e::free_port();
    let t = Instant::now();
    let o = run(
        None,
        &[
            "--etcd-endpoints",
            &format!("http://127.0.0.1:{port}"),
            "--etcd-timeout",
            "1s",
            "list",
            "-A",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!o.status.success());
    assert!(
        err(&o).contains(&format!(
            "etcd is unreachable: no member accepted a connection within 1s [http://127.0.0.1:{port}: unreachable"
        )),
        "{}",
        err(&o)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", err(&o));
}

fn issue(dir: &Path, name: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

#[test]
fn tls_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    );
    issue(
        d,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    issue(d, "client", "extendedKeyUsage=clientAuth\n");
    let port = e2e::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    let flags = [
        "--listen-client-urls".to_string(),
        url.clone(),
        "--advertise-client-urls".to_string(),
        url.clone(),
        "--cert-file".to_string(),
        p("server.pem"),
        "--key-file".to_string(),
        p("server.key"),
        "--trusted-ca-file".to_string(),
        p("ca.pem"),
        "--client-cert-auth".to_string(),
    ];
    let _c = Cluster::spawn(1, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "enc.yaml", &[("k1", 7)]);
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let tls = [
        "--etcd-endpoints",
        url.as_str(),
        "--etcd-cacert",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-keyfile",
        &key,
    ];
    let t = Instant::now();
    loop {
        let o = apply(&cfg, &tls, SECRET);
        if o.status.success() {
            assert_eq!(out(&o), "secret/db created\n");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{}", err(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut a = tls.to_vec();
    a.extend(["get", "db", "-n", "prod", "-o", "name"]);
    assert_eq!(out(&run(Some(&cfg), &a)), "secret/db\n");
    // Without the client certificate the member refuses the handshake.
    let o = run(
        Some(&cfg),
        &[
            "--etcd-endpoints",
            &url,
            "--etcd-cacert",
            &ca,
            "--etcd-timeout",
            "2s",
            "list",
        ],
    );
    assert!(!o.status.success());
    let e = err(&o);
    assert!(
        e.contains(&format!("{url}: unreachable"))
            || e.contains(&format!("{url}: connection lost")),
        "{e}"
    );
}

#[test]
fn bench_runs_on_etcd_and_cleans_up() {
    let c = Cluster::start(1);
    let eps = c.endpoints();
    let json = tempfile::NamedTempFile::new().unwrap();
    let o = run(
        None,
        &[
            "--etcd-endpoints",
            &eps,
            "bench",
            "--engine",
            "etcd",
            "--count",
            "60",
            "--writers",
            "4",
            "--size",
            "512",
            "--providers",
            "identity,aesgcm",
            "--json",
            json.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let table = out(&o);
    assert!(
        table.contains("crypto %") && table.contains("store %"),
        "{table}"
    );
    assert!(
        table.lines().filter(|l| l.starts_with("etcd ")).count() == 6,
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    for p in doc["phases"].as_array().unwrap() {
        assert_eq!(p["engine"], "etcd");
        assert_eq!(p["ops"], 60);
        let (c, s) = (
            p["crypto_share"].as_f64().unwrap(),
            p["storage_share"].as_f64().unwrap(),
        );
        assert!(
            (0.0..=1.0).contains(&c) && (0.0..=1.0).contains(&s) && s > 0.0,
            "{p}"
        );
    }
    let o = c.etcdctl(&["get", "--prefix", "/", "--keys-only"]);
    assert_eq!(out(&o).trim(), "", "the bench left keys behind");
    let o = run(None, &["bench", "--engine", "etcd", "--count", "1"]);
    assert!(
        err(&o).contains("engine=etcd needs --etcd-endpoints"),
        "{}",
        err(&o)
    );
}
