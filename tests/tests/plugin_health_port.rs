//! A health port another process holds does not keep the plugin down: it
//! serves its socket, says so, counts it, and takes the port once it is
//! free.

use std::time::{Duration, Instant};

use e2e::{Plugin, http_get, init_ring};

#[test]
fn a_taken_health_port_is_a_warning_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let p = Plugin::spawn_on(
        &ring,
        &dir.path().join("kms.sock"),
        &dir.path().join("log"),
        &[],
        &[],
        port,
    );
    p.wait_ready();
    // The KMS socket serves although the port is taken.
    let out = e2e::kms(&["probe", "--listen-addr", &p.endpoint()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        p.log_text().contains("health-addr cannot be bound"),
        "{}",
        p.log_text()
    );
    // The port comes free: the plugin takes it.
    drop(squatter);
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (code, body) = http_get(port, "/livez");
            if code == 200 {
                assert_eq!(body, "ok\n");
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "never took the port:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http_get(port, "/metrics");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kms_plugin_health_listen_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= 1, "{metrics}");
}
