//! Every conforming gRPC client is served on the socket, whatever
//! `:authority` it sends: grpc C-core (Python grpcio, default settings:
//! the percent-encoded socket path), grpc-go (Debian's, as kube-apiserver
//! dials: `unix://` target, defaults), and a raw HTTP/2 client sending each
//! form (`localhost` as grpc-go does, the raw path as grpc-java does, the
//! percent-encoded path, an empty authority, none). Status, Encrypt and
//! Decrypt all answer.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::h2raw;
use e2e::{Plugin, init_ring};

fn plugin() -> (tempfile::TempDir, Plugin) {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let p = Plugin::start(
        &ring,
        &dir.path().join("run/kms.sock"),
        &dir.path().join("log"),
        &[],
    );
    (dir, p)
}

/// The Python of the test virtualenv (`scripts/install-deps` makes it).
fn python() -> PathBuf {
    let p = e2e::test_venv().join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps (it creates the test virtualenv with grpcio)",
        p.display()
    );
    p
}

#[test]
fn grpc_c_core_with_its_default_authority_is_served() {
    let (_dir, p) = plugin();
    let script = e2e::workspace().join("tests/clients/grpcio_client.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&p.sock)
        .output()
        .expect("running the grpcio client");
    assert!(
        out.status.success(),
        "grpcio client failed:\n{}\nplugin log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["version"], "v2");
    assert_eq!(v["status"]["healthz"], "ok");
    assert_eq!(v["encrypt"]["key_id"], v["status"]["key_id"]);
    assert_eq!(v["decrypt_matches"], true);
    assert_eq!(v["garbage"], "INVALID_ARGUMENT");
}

#[test]
fn grpc_go_with_its_default_authority_is_served() {
    let (dir, p) = plugin();
    // Built here from Debian's grpc-go sources (golang-google-grpc-dev), in
    // GOPATH mode: no module download.
    let exe = dir.path().join("grpcgo-client");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(e2e::workspace().join("tests/clients/grpcgo/main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.path().join("gocache"))
        .output()
        .expect(
            "running go build: install golang-go and golang-google-grpc-dev (scripts/install-deps)",
        );
    assert!(
        out.status.success(),
        "building the grpc-go client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).arg(&p.sock).output().unwrap();
    assert!(
        out.status.success(),
        "grpc-go client failed:\n{}\nplugin log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["version"], "v2");
    assert_eq!(v["status"]["healthz"], "ok");
    assert_eq!(v["encrypt_key_id"], v["status"]["key_id"]);
    assert_eq!(v["decrypt_matches"], true);
    assert_eq!(v["garbage"], "InvalidArgument");
}

fn bytes_field(num: u8, value: &[u8]) -> Vec<u8> {
    let mut f = vec![num << 3 | 2];
    let mut n = value.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            f.push(b);
            break;
        }
        f.push(b | 0x80);
    }
    f.extend_from_slice(value);
    f
}

/// The length-delimited field `num` of a protobuf message (first occurrence).
fn get_field(msg: &[u8], num: u8) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = msg[i];
            i += 1;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if key >> 3 == num {
            return Some(msg[i..i + len].to_vec());
        }
        i += len;
    }
    None
}

fn round_trip(sock: &Path, authority: Option<&[u8]>) {
    let what = format!("authority {:?}", authority.map(String::from_utf8_lossy));
    let st = h2raw::call(sock, authority, "Status", &[]);
    assert_eq!(st.reset, None, "{what}: stream reset");
    assert_eq!(st.grpc_status.as_deref(), Some("0"), "{what}: {st:?}");
    let key_id = get_field(&st.message, 3).expect("Status has a key_id");
    let seed = [0x42u8; 32];
    let mut req = bytes_field(1, &seed);
    req.extend(bytes_field(2, b"raw-h2"));
    let enc = h2raw::call(sock, authority, "Encrypt", &req);
    assert_eq!(enc.grpc_status.as_deref(), Some("0"), "{what}: {enc:?}");
    let ct = get_field(&enc.message, 1).unwrap();
    assert_eq!(get_field(&enc.message, 2).unwrap(), key_id);
    let mut req = bytes_field(1, &ct);
    req.extend(bytes_field(3, &key_id));
    let dec = h2raw::call(sock, authority, "Decrypt", &req);
    assert_eq!(dec.grpc_status.as_deref(), Some("0"), "{what}: {dec:?}");
    assert_eq!(get_field(&dec.message, 1).unwrap(), seed);
    // A refusal still arrives as a gRPC status, not a reset.
    let bad = h2raw::call(sock, authority, "Decrypt", &bytes_field(1, &[0; 40]));
    assert_eq!(bad.grpc_status.as_deref(), Some("3"), "{what}: {bad:?}");
}

#[test]
fn a_raw_http2_client_is_served_with_every_authority_form() {
    let (_dir, p) = plugin();
    let path = p.sock.to_str().unwrap().to_string();
    let encoded = path.replace('/', "%2F");
    for authority in [
        Some(&b"localhost"[..]),
        Some(path.as_bytes()),
        Some(encoded.as_bytes()),
        Some(&b""[..]),
        None,
    ] {
        round_trip(&p.sock, authority);
    }
}
