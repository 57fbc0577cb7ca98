//! Serving every gRPC client on the socket, whatever `:authority` it sends.
//!
//! On a unix socket gRPC clients disagree about the request authority:
//! grpc-go (kube-apiserver) sends `localhost`, grpc C-core (Python, C++,
//! Ruby, PHP) the percent-encoded socket path, grpc-java the raw path, some
//! clients an empty one. The HTTP/2 layer under tonic accepts only a
//! `host[:port]` authority and resets any other stream with PROTOCOL_ERROR
//! before the service sees it. The authority means nothing on a socket, so
//! this layer, between the socket and the HTTP/2 server, gives such
//! requests the authority grpc-go sends, `localhost`, and changes nothing
//! else.
//!
//! It reads the client's frames. Until the first request's header block it
//! only looks; if that request's authority is one the server accepts (or it
//! has none), the connection is passed through untouched from then on (a
//! client keeps one authority per channel, so kube-apiserver's connections
//! cost nothing). Otherwise every header block of the connection is decoded
//! (HPACK, keeping the client's dynamic table) and re-encoded with literal
//! fields only (so the server's decoder needs no dynamic table of ours),
//! with the authority replaced. Frames other than HEADERS and CONTINUATION
//! pass through as they came. The server's direction is never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a request with an unusable authority gets instead.
pub(crate) const LOCALHOST: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame a client may send before the server says otherwise
/// (SETTINGS_MAX_FRAME_SIZE's initial value); the server here keeps it.
const MAX_FRAME: usize = 16_384;
/// The largest header block accepted (far above any gRPC call's).
const MAX_BLOCK: usize = 64 * 1024;
/// The HPACK table size the server allows its clients (the protocol's
/// initial SETTINGS_HEADER_TABLE_SIZE, which the server keeps).
const TABLE_SIZE: usize = 4096;

/// Whether the HTTP/2 server takes `authority` as it is.
fn is_acceptable(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the first header block: looking.
    Inspect,
    /// The client's authority is fine: bytes go through as they are.
    Pass,
    /// Every header block is rewritten.
    Rewrite,
}

/// A header block being collected: the frames as they came, the HPACK
/// bytes, the stream and whether it ends the stream.
struct Block {
    raw: Vec<u8>,
    hpack: Vec<u8>,
    stream: u32,
    end_stream: bool,
}

/// The client-to-server half of a connection, as a byte transformer:
/// [`Normalizer::push`] takes what the socket gave, [`Normalizer::take`]
/// gives what the server should read.
pub(crate) struct Normalizer {
    mode: Mode,
    preface_seen: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of the current non-header frame still to pass through.
    passing: usize,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    /// How many requests had their authority replaced.
    pub(crate) rewritten: u64,
}

/// Why a connection cannot be served (the server would refuse it too).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("malformed HTTP/2 frame sequence: {0}")]
    Malformed(&'static str),
    #[error("undecodable header block: {0:?}")]
    Hpack(fluke_hpack::decoder::DecoderError),
}

impl Default for Normalizer {
    fn default() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Normalizer {
            mode: Mode::Inspect,
            preface_seen: 0,
            input: Vec::new(),
            output: Vec::new(),
            passing: 0,
            block: None,
            decoder,
            rewritten: 0,
        }
    }
}

impl Normalizer {
    /// Feeds bytes the client sent.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.mode == Mode::Pass {
            self.output.extend_from_slice(bytes);
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        self.process()
    }

    /// Whether bytes are waiting for the server.
    pub(crate) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Moves up to `buf.len()` bytes for the server into `buf`.
    pub(crate) fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.output.len());
        buf[..n].copy_from_slice(&self.output[..n]);
        self.output.drain(..n);
        n
    }

    fn process(&mut self) -> Result<(), FrameError> {
        let mut at = 0;
        // The connection preface passes as it is (the server checks it).
        while self.preface_seen < PREFACE.len() && at < self.input.len() {
            self.output.push(self.input[at]);
            at += 1;
            self.preface_seen += 1;
        }
        loop {
            if self.mode == Mode::Pass {
                self.output.extend_from_slice(&self.input[at..]);
                at = self.input.len();
                break;
            }
            if self.passing > 0 {
                let n = self.passing.min(self.input.len() - at);
                self.output.extend_from_slice(&self.input[at..at + n]);
                at += n;
                self.passing -= n;
                if self.passing > 0 {
                    break;
                }
                continue;
            }
            if self.input.len() - at < FRAME_HEADER {
                break;
            }
            let h = &self.input[at..at + FRAME_HEADER];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if len > MAX_FRAME {
                // The server answers FRAME_SIZE_ERROR; let it.
                self.mode = Mode::Pass;
                continue;
            }
            let is_header = kind == HEADERS || kind == CONTINUATION;
            if self.block.is_some() && kind != CONTINUATION {
                return Err(FrameError::Malformed("a header block was not continued"));
            }
            if !is_header {
                self.output.extend_from_slice(h);
                at += FRAME_HEADER;
                self.passing = len;
                continue;
            }
            if self.input.len() - at < FRAME_HEADER + len {
                break;
            }
            let frame = self.input[at..at + FRAME_HEADER + len].to_vec();
            at += FRAME_HEADER + len;
            self.header_frame(&frame, kind, flags, stream)?;
        }
        self.input.drain(..at);
        Ok(())
    }

    fn header_frame(
        &mut self,
        frame: &[u8],
        kind: u8,
        flags: u8,
        stream: u32,
    ) -> Result<(), FrameError> {
        let payload = &frame[FRAME_HEADER..];
        let fragment = if kind == HEADERS {
            if self.block.is_some() {
                return Err(FrameError::Malformed("HEADERS inside a header block"));
            }
            let mut p = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&n, rest) = p
                    .split_first()
                    .ok_or(FrameError::Malformed("padded HEADERS without a pad length"))?;
                pad = usize::from(n);
                p = rest;
            }
            if flags & PRIORITY != 0 {
                p = p
                    .get(5..)
                    .ok_or(FrameError::Malformed("HEADERS shorter than its priority"))?;
            }
            let end = p
                .len()
                .checked_sub(pad)
                .ok_or(FrameError::Malformed("padding longer than the frame"))?;
            self.block = Some(Block {
                raw: Vec::new(),
                hpack: Vec::new(),
                stream,
                end_stream: flags & END_STREAM != 0,
            });
            &p[..end]
        } else {
            match &self.block {
                Some(b) if b.stream == stream => payload,
                _ => return Err(FrameError::Malformed("CONTINUATION outside a header block")),
            }
        };
        let Some(block) = self.block.as_mut() else {
            return Err(FrameError::Malformed("no header block"));
        };
        block.raw.extend_from_slice(frame);
        block.hpack.extend_from_slice(fragment);
        if block.hpack.len() > MAX_BLOCK {
            return Err(FrameError::Malformed("header block too large"));
        }
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Err(FrameError::Malformed("no header block"));
        };
        let mut headers = self
            .decoder
            .decode(&block.hpack)
            .map_err(FrameError::Hpack)?;
        let bad = headers
            .iter()
            .position(|(n, v)| n.as_slice() == b":authority" && !is_acceptable(v));
        match (self.mode, bad) {
            (Mode::Inspect, None) => {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::Pass;
            }
            (_, bad) => {
                if let Some(i) = bad {
                    headers[i].1 = LOCALHOST.to_vec();
                    self.rewritten += 1;
                }
                self.mode = Mode::Rewrite;
                encode_block(&headers, block.stream, block.end_stream, &mut self.output);
            }
        }
        Ok(())
    }
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(first: u8, n: u8, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header fields without indexing, new names, no Huffman: nothing
/// the server's decoder has to remember.
fn encode_headers(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(0x00, 7, name.len(), &mut out);
        out.extend_from_slice(name);
        hpack_int(0x00, 7, value.len(), &mut out);
        out.extend_from_slice(value);
    }
    out
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// A header block as HEADERS and CONTINUATION frames of at most
/// [`MAX_FRAME`] bytes.
fn encode_block(headers: &[(Vec<u8>, Vec<u8>)], stream: u32, end_stream: bool, out: &mut Vec<u8>) {
    let hpack = encode_headers(headers);
    let mut chunks = hpack.chunks(MAX_FRAME).peekable();
    let mut first = true;
    // An empty block is one empty HEADERS frame.
    if hpack.is_empty() {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame_header(0, HEADERS, flags, stream, out);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let kind = if first {
            if end_stream {
                flags |= END_STREAM;
            }
            HEADERS
        } else {
            CONTINUATION
        };
        frame_header(chunk.len(), kind, flags, stream, out);
        out.extend_from_slice(chunk);
        first = false;
    }
}

/// A connection whose client-to-server bytes go through a [`Normalizer`].
pub(crate) struct NormalizedStream<S> {
    inner: S,
    normalizer: Normalizer,
    buf: Box<[u8; 8192]>,
    eof: bool,
}

impl<S> NormalizedStream<S> {
    /// Wraps a freshly accepted connection.
    pub(crate) fn new(inner: S) -> Self {
        NormalizedStream {
            inner,
            normalizer: Normalizer::default(),
            buf: Box::new([0u8; 8192]),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NormalizedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.normalizer.has_output() {
                let n = this.normalizer.take(out.initialize_unfilled());
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.buf[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                this.eof = true;
                continue;
            }
            let got = got.to_vec();
            let before = this.normalizer.rewritten;
            this.normalizer
                .push(&got)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if before == 0 && this.normalizer.rewritten > 0 {
                tracing::debug!(
                    "client sent an :authority the HTTP/2 layer refuses; serving it as localhost"
                );
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NormalizedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for NormalizedStream<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's HEADERS frame for `headers`, encoded by a real HPACK
    /// encoder (indexing, Huffman), as grpc clients encode them.
    fn client_block(
        enc: &mut fluke_hpack::Encoder<'_>,
        headers: &[(&[u8], &[u8])],
        stream: u32,
        flags: u8,
    ) -> Vec<u8> {
        let hpack = enc.encode(headers.iter().map(|(n, v)| (*n, *v)));
        let mut f = Vec::new();
        frame_header(hpack.len(), HEADERS, flags | END_HEADERS, stream, &mut f);
        f.extend_from_slice(&hpack);
        f
    }

    fn request(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/v2.KeyManagementService/Status".to_vec()),
            (b":authority", authority.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (b"te", b"trailers".to_vec()),
        ]
    }

    /// One frame as the server sees it: type, flags, decoded headers.
    type Seen = (u8, u8, Vec<(Vec<u8>, Vec<u8>)>);

    /// What the server decodes from the normalizer's output (frames after the preface).
    fn server_view(out: &[u8]) -> Vec<Seen> {
        let mut dec = fluke_hpack::Decoder::new();
        let mut at = PREFACE.len();
        let mut seen = Vec::new();
        let mut block = Vec::new();
        while at + FRAME_HEADER <= out.len() {
            let len = usize::from(out[at]) << 16
                | usize::from(out[at + 1]) << 8
                | usize::from(out[at + 2]);
            let (kind, flags) = (out[at + 3], out[at + 4]);
            let payload = &out[at + FRAME_HEADER..at + FRAME_HEADER + len];
            at += FRAME_HEADER + len;
            match kind {
                HEADERS | CONTINUATION => {
                    block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        seen.push((kind, flags, dec.decode(&block).unwrap()));
                        block.clear();
                    }
                }
                other => seen.push((other, flags, Vec::new())),
            }
        }
        seen
    }

    fn run(authorities: &[&[u8]], byte_at_a_time: bool) -> (Vec<u8>, Normalizer) {
        let mut enc = fluke_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        frame_header(0, 0x4, 0, 0, &mut wire); // SETTINGS
        for (i, a) in authorities.iter().enumerate() {
            let h = request(a);
            let h: Vec<(&[u8], &[u8])> = h.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            wire.extend(client_block(&mut enc, &h, 1 + 2 * i as u32, 0));
            // A DATA frame (an empty gRPC message) that ends the stream.
            frame_header(5, 0x0, END_STREAM, 1 + 2 * i as u32, &mut wire);
            wire.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        let mut n = Normalizer::default();
        if byte_at_a_time {
            for b in &wire {
                n.push(std::slice::from_ref(b)).unwrap();
            }
        } else {
            n.push(&wire).unwrap();
        }
        let mut out = vec![0u8; n.output.len()];
        let k = n.take(&mut out);
        assert_eq!(k, out.len());
        (out, n)
    }

    #[test]
    fn localhost_passes_through_untouched() {
        let (out, n) = run(&[b"localhost", b"localhost", b"localhost"], false);
        let mut enc = fluke_hpack::Encoder::new();
        let mut want = PREFACE.to_vec();
        frame_header(0, 0x4, 0, 0, &mut want);
        for i in 0..3u32 {
            let h = request(b"localhost");
            let h: Vec<(&[u8], &[u8])> = h.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            want.extend(client_block(&mut enc, &h, 1 + 2 * i, 0));
            frame_header(5, 0x0, END_STREAM, 1 + 2 * i, &mut want);
            want.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        assert_eq!(out, want, "byte for byte");
        assert_eq!(n.mode, Mode::Pass);
        assert_eq!(n.rewritten, 0);
    }

    #[test]
    fn socket_paths_become_localhost_for_every_request_of_the_connection() {
        for path in [
            &b"/var/run/kmsplugin/socket.sock"[..],
            b"%2Fvar%2Frun%2Fkms.sock",
            b"",
            b"a b",
        ] {
            for slow in [false, true] {
                let (out, n) = run(&[path, path, path], slow);
                assert_eq!(n.rewritten, 3, "{path:?}");
                let view = server_view(&out);
                let heads: Vec<_> = view.iter().filter(|(k, _, _)| *k == HEADERS).collect();
                assert_eq!(heads.len(), 3);
                for (_, flags, h) in heads {
                    assert_eq!(flags & END_HEADERS, END_HEADERS);
                    let get =
                        |name: &[u8]| h.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                    assert_eq!(get(b":authority").as_deref(), Some(LOCALHOST));
                    assert_eq!(
                        get(b":path").as_deref(),
                        Some(&b"/v2.KeyManagementService/Status"[..])
                    );
                    assert_eq!(h.len(), 6, "nothing else changes");
                }
                // DATA frames pass as they were.
                assert_eq!(
                    view.iter()
                        .filter(|(k, f, _)| *k == 0 && f & END_STREAM != 0)
                        .count(),
                    3
                );
            }
        }
    }

    #[test]
    fn continuation_padding_and_priority_are_understood() {
        let mut enc = fluke_hpack::Encoder::new();
        let h = request(b"/x.sock");
        let h: Vec<(&[u8], &[u8])> = h.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let hpack = enc.encode(h.iter().copied());
        let (a, b) = hpack.split_at(hpack.len() / 2);
        let mut wire = PREFACE.to_vec();
        // HEADERS with padding and priority, then a CONTINUATION.
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        frame_header(
            payload.len(),
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            1,
            &mut wire,
        );
        wire.extend_from_slice(&payload);
        frame_header(b.len(), CONTINUATION, END_HEADERS, 1, &mut wire);
        wire.extend_from_slice(b);
        let mut n = Normalizer::default();
        n.push(&wire).unwrap();
        let mut out = vec![0u8; n.output.len()];
        n.take(&mut out);
        let view = server_view(&out);
        assert_eq!(view.len(), 1);
        let (_, flags, hs) = &view[0];
        assert_eq!(flags & END_STREAM, END_STREAM, "END_STREAM kept");
        assert!(hs.iter().any(|(k, v)| k == b":authority" && v == LOCALHOST));
    }

    #[test]
    fn big_blocks_are_split_into_continuations() {
        let big = vec![b'v'; 40_000];
        let headers = vec![
            (b":authority".to_vec(), LOCALHOST.to_vec()),
            (b"x-big".to_vec(), big.clone()),
        ];
        let mut out = Vec::new();
        encode_block(&headers, 7, false, &mut out);
        let view = server_view(&[PREFACE, &out[..]].concat());
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].2[1].1, big);
        assert!(out.len() > 3 * FRAME_HEADER + 40_000);
    }

    #[test]
    fn broken_sequences_are_refused_not_panicked_on() {
        let mut wire = PREFACE.to_vec();
        frame_header(3, HEADERS, 0, 1, &mut wire); // no END_HEADERS
        wire.extend_from_slice(&[0x82, 0x86, 0x84]);
        frame_header(0, 0x0, 0, 1, &mut wire); // DATA inside the block
        assert!(Normalizer::default().push(&wire).is_err());
        let mut wire = PREFACE.to_vec();
        frame_header(2, CONTINUATION, END_HEADERS, 1, &mut wire);
        wire.extend_from_slice(&[0x82, 0x86]);
        assert!(Normalizer::default().push(&wire).is_err());
        let mut wire = PREFACE.to_vec();
        frame_header(2, HEADERS, END_HEADERS | PADDED, 1, &mut wire);
        wire.extend_from_slice(&[9, 0x82]);
        assert!(Normalizer::default().push(&wire).is_err());
        let mut wire = PREFACE.to_vec();
        frame_header(1, HEADERS, END_HEADERS, 1, &mut wire);
        wire.extend_from_slice(&[0xff]); // an index past every table
        assert!(Normalizer::default().push(&wire).is_err());
    }

    #[test]
    fn integers_encode_as_hpack_says() {
        let mut v = Vec::new();
        hpack_int(0, 5, 10, &mut v);
        assert_eq!(v, [10]);
        let mut v = Vec::new();
        hpack_int(0, 5, 1337, &mut v);
        assert_eq!(v, [31, 154, 10]); // RFC 7541 C.1.2
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut n = Normalizer::default();
            let mut wire = PREFACE.to_vec();
            wire.extend_from_slice(&data);
            let _ = n.push(&wire);
        }
    }
}
