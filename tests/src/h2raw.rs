//! A raw HTTP/2 gRPC client: it writes the frames itself, so it can send
//! any `:authority` (a socket path, a percent-encoded one, an empty one, or
//! none), which no HTTP/2 library lets a client send. One unary call per
//! connection.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // Literal without indexing, new name, lengths below 127.
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    /// `grpc-status` of the trailers (None when the stream was reset).
    pub grpc_status: Option<String>,
    /// `grpc-message`, if any.
    pub grpc_message: Option<String>,
    /// The response message (without the 5-byte gRPC prefix).
    pub message: Vec<u8>,
    /// The RST_STREAM error code, if the stream was reset.
    pub reset: Option<u32>,
}

/// Calls `/v2.KeyManagementService/<method>` with `request` (an encoded
/// protobuf message) on the socket at `sock`, sending `authority` (`None`:
/// no `:authority` at all).
pub fn call(sock: &Path, authority: Option<&[u8]>, method: &str, request: &[u8]) -> Answer {
    let mut s = UnixStream::connect(sock).expect("connecting to the plugin");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let mut block = Vec::new();
    literal(&mut block, b":method", b"POST");
    literal(&mut block, b":scheme", b"http");
    literal(
        &mut block,
        b":path",
        format!("/v2.KeyManagementService/{method}").as_bytes(),
    );
    if let Some(a) = authority {
        literal(&mut block, b":authority", a);
    }
    literal(&mut block, b"content-type", b"application/grpc");
    literal(&mut block, b"te", b"trailers");
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(request.len() as u32).to_be_bytes());
    msg.extend_from_slice(request);
    out.extend(frame(0x0, 0x1, 1, &msg)); // DATA, END_STREAM
    s.write_all(&out).unwrap();

    let mut dec = fluke_hpack::Decoder::new();
    let mut answer = Answer {
        grpc_status: None,
        grpc_message: None,
        message: Vec::new(),
        reset: None,
    };
    let mut data = Vec::new();
    loop {
        let mut h = [0u8; 9];
        if s.read_exact(&mut h).is_err() {
            break;
        }
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match kind {
            0x4 if flags & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(),
            0x6 if flags & 0x1 == 0 => s.write_all(&frame(0x6, 0x1, 0, &payload)).unwrap(),
            0x0 if stream == 1 => {
                data.extend_from_slice(&payload);
                if flags & 0x1 != 0 {
                    break;
                }
            }
            0x1 if stream == 1 => {
                for (n, v) in dec.decode(&payload).expect("the server's HPACK decodes") {
                    match n.as_slice() {
                        b"grpc-status" => {
                            answer.grpc_status = Some(String::from_utf8_lossy(&v).into())
                        }
                        b"grpc-message" => {
                            answer.grpc_message = Some(String::from_utf8_lossy(&v).into())
                        }
                        _ => {}
                    }
                }
                if flags & 0x1 != 0 {
                    break;
                }
            }
            0x3 if stream == 1 => {
                answer.reset = Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
                break;
            }
            0x7 => break, // GOAWAY
            _ => {}
        }
    }
    if data.len() >= 5 {
        answer.message = data[5..].to_vec();
    }
    answer
}
