//! The socket and the daemon's life: 0600, stale-socket recovery, refusal of
//! live sockets, files and symlinks, configuration errors before binding,
//! SIGTERM, abstract sockets, the health endpoint and `probe`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use e2e::{Plugin, bin, init_ring, kms};
use kms_proto::v2::StatusRequest;

fn serve_output(ring: &std::path::Path, listen: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "serve",
        "--listen-addr",
        listen,
        "--keyring",
        ring.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(bin("kms-plugin"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal exits at once; anything still running after 5 s is a bug here.
    for _ in 0..250 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!(
        "serve kept running: {:?}",
        child.wait_with_output().unwrap()
    );
}

// Multi-threaded: the client must keep answering HTTP/2 pings while the
// test thread blocks waiting for the plugin to drain and exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_stale_recovery_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("sub/dir/kms.sock");
    let log = dir.path().join("log");
    let mut p = Plugin::start(&ring, &sock, &log, &[]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "missing parent created 0700"
    );

    // A second instance on the live socket is refused; the first keeps serving.
    let out = serve_output(&ring, &p.endpoint(), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    let mut c = p.client().await;
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .healthz,
        "ok"
    );

    // Crash: the socket file stays behind, nothing answers; a restart recovers.
    p.kill();
    assert!(sock.exists(), "kill -9 leaves the socket file");
    let mut p = Plugin::start(&ring, &sock, &log, &[]);
    assert!(p.log_text().contains("removing stale socket"));
    let mut c = p.client().await;
    assert_eq!(
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .healthz,
        "ok"
    );

    // SIGTERM: clean exit and the socket is gone.
    let status = p.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists());
    let log = p.log_text();
    assert!(log.contains("drained"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
}

#[test]
fn refuses_regular_files_symlinks_and_bad_configuration_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);

    let file = dir.path().join("precious.sock");
    std::fs::write(&file, b"do not delete").unwrap();
    let out = serve_output(&ring, &format!("unix://{}", file.display()), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"do not delete");

    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let out = serve_output(&ring, &format!("unix://{}", link.display()), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));

    let sock = dir.path().join("never.sock");
    let listen = format!("unix://{}", sock.display());
    for (extra, want) in [
        (vec!["--timeout", "fast"], "timeout=\"fast\" is not valid"),
        (
            vec!["--health-addr", "nowhere"],
            "health-addr=\"nowhere\" is not valid",
        ),
        (vec!["--log-format", "xml"], "log-format"),
        (vec!["--backend", "vault"], "backend=\"vault\" is not valid"),
        (vec!["--max-in-flight", "0"], "max-in-flight"),
    ] {
        let out = serve_output(&ring, &listen, &extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(!sock.exists(), "socket created despite bad config");
    }
    let out = serve_output(&ring, "tcp://127.0.0.1:9", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only unix://"));
    // A missing key ring fails before binding too.
    let out = serve_output(&dir.path().join("no-ring"), &listen, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key ring"));
    assert!(!sock.exists());
    // A TOML config with an unknown key names it.
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "listen-adr = \"unix:///x.sock\"\n").unwrap();
    let out = serve_output(&ring, &listen, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen-adr"));
}

#[tokio::test]
async fn config_file_group_opt_in_health_endpoints_and_probe() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let port = e2e::free_port();
    let cfg = dir.path().join("plugin.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen-addr = \"unix://{}\"\nkeyring = \"{}\"\nhealth-addr = \"127.0.0.1:{port}\"\nsocket-group = \"0\"\nlog-format = \"json\"\n",
            sock.display(),
            ring.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(bin("kms-plugin"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(logf)
        .spawn()
        .unwrap();
    let p = Plugin {
        child: None,
        sock: sock.clone(),
        log: log.clone(),
        health_port: Some(port),
    };
    p.wait_ready();
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );
    // JSON logs: one object per line.
    let first = std::fs::read_to_string(&log).unwrap();
    let line = first.lines().find(|l| l.contains("serving")).unwrap();
    serde_json::from_str::<serde_json::Value>(line).expect("json log line");

    let (code, body) = e2e::http_get(port, "/livez");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = e2e::http_get(port, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = e2e::http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("kms_plugin_active_key_info{key_id_hash=\"sha256:"),
        "{body}"
    );
    assert!(body.contains("kms_plugin_healthy 1"));

    let out = kms(&["probe", "--listen-addr", &p.endpoint()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("healthy") && text.contains("round trip matches"),
        "{text}"
    );

    let _ = child.kill();
    let _ = child.wait();
    // Now a stale socket: probe says so and fails.
    let out = kms(&["probe", "--listen-addr", &p.endpoint()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("stale socket"));
    let out = kms(&[
        "probe",
        "--listen-addr",
        &format!("unix://{}/absent.sock", dir.path().display()),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISSING"));
}

#[tokio::test]
async fn abstract_sockets_serve_and_probe() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let name = format!(
        "unix:///@kms-e2e-{}-{}",
        std::process::id(),
        e2e::free_port()
    );
    let log = dir.path().join("log");
    let mut child = Command::new(bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &name,
            "--keyring",
            ring.to_str().unwrap(),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..500 {
        let out = kms(&["probe", "--listen-addr", &name]);
        if out.status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("abstract sockets have no file permissions")
    );
}
