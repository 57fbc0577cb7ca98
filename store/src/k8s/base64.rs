//! Base64 of `data` values as kube-apiserver reads and writes them: Go's
//! `base64.StdEncoding` (standard alphabet, `=` padding).
//!
//! Decoding follows Go's non-strict decoder, which is what the apiserver's
//! JSON decoder uses for `[]byte` fields: `\r` and `\n` anywhere are
//! ignored (so a YAML `|` block with line breaks is accepted, as kubectl and
//! the apiserver accept it); padding is required; non-zero trailing bits are
//! tolerated; any other character, spaces and tabs included, is an error
//! `illegal base64 data at input byte N` (N counts the input as given,
//! line breaks included).

use base64::Engine as _;

use crate::wipe::Wiped;

/// Go's `base64.CorruptInputError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorruptInputError(pub usize);

impl std::fmt::Display for CorruptInputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "illegal base64 data at input byte {}", self.0)
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn is_newline(c: u8) -> bool {
    c == b'\r' || c == b'\n'
}

/// Go's `StdEncoding` for input without line breaks: canonical padding
/// required, non-zero trailing bits tolerated.
const GO_STD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// Decodes `src` as Go's `base64.StdEncoding.DecodeString` does, into a
/// buffer that is wiped when dropped (also on error).
pub fn decode(src: &[u8]) -> Result<Wiped<Vec<u8>>, CorruptInputError> {
    // Fast path: the usual value, without line breaks, through the `base64`
    // crate's decoder, which accepts exactly what Go accepts there. Anything
    // it refuses (line breaks included) goes through the byte-wise decoder
    // below, which ignores line breaks and reports offsets as Go does.
    if src.len().is_multiple_of(4) {
        let mut out = Wiped::new(vec![0u8; src.len() / 4 * 3]);
        if let Ok(n) = GO_STD.decode_slice_unchecked(src, &mut out) {
            out.truncate(n);
            return Ok(out);
        }
    }
    decode_bytewise(src)
}

fn decode_bytewise(src: &[u8]) -> Result<Wiped<Vec<u8>>, CorruptInputError> {
    let mut out = Wiped::new(Vec::with_capacity(src.len() / 4 * 3 + 3));
    let mut si = 0;
    while si < src.len() {
        let mut quantum = [0u8; 4];
        let mut len = 4;
        let mut j = 0;
        let mut trailing_garbage = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required: a short final quantum is corrupt.
                return Err(CorruptInputError(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                quantum[j] = v;
                j += 1;
                continue;
            }
            if is_newline(c) {
                continue;
            }
            if c != b'=' {
                return Err(CorruptInputError(si - 1));
            }
            // Padding: only after two or three characters of a quantum.
            match j {
                0 | 1 => return Err(CorruptInputError(si - 1)),
                2 => {
                    // "==" is expected; the first '=' is consumed.
                    while si < src.len() && is_newline(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(CorruptInputError(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(CorruptInputError(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && is_newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                trailing_garbage = Some(CorruptInputError(si));
            }
            len = j;
            break;
        }
        let bits = (u32::from(quantum[0]) << 18)
            | (u32::from(quantum[1]) << 12)
            | (u32::from(quantum[2]) << 6)
            | u32::from(quantum[3]);
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..len]);
        if let Some(err) = trailing_garbage {
            return Err(err);
        }
        if len < 4 {
            break;
        }
    }
    Ok(out)
}

/// Encodes `bytes` as Go's `base64.StdEncoding.EncodeToString` does.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Length of [`encode`]'s output for `n` input bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<u8> {
        decode(s.as_bytes()).unwrap().to_vec()
    }

    fn err(s: &str) -> usize {
        decode(s.as_bytes()).unwrap_err().0
    }

    #[test]
    fn decodes_standard_padded_base64() {
        assert_eq!(ok(""), b"");
        assert_eq!(ok("YQ=="), b"a");
        assert_eq!(ok("YWI="), b"ab");
        assert_eq!(ok("YWJj"), b"abc");
        assert_eq!(ok("+/+/"), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn ignores_line_breaks_like_go() {
        assert_eq!(ok("YW\nJj\r\n"), b"abc");
        assert_eq!(ok("YQ=\n="), b"a");
        assert_eq!(ok("\nYWJj\n"), b"abc");
    }

    #[test]
    fn tolerates_non_zero_trailing_bits_like_go() {
        assert_eq!(ok("YR=="), b"a");
    }

    #[test]
    fn reports_the_offset_of_the_bad_byte() {
        assert_eq!(err("YQ"), 0);
        assert_eq!(err("YWJjZA"), 4);
        assert_eq!(err("YW Jj"), 2);
        assert_eq!(err("YWJj!"), 4);
        assert_eq!(err("=AAA"), 0);
        assert_eq!(err("Y==="), 1);
        assert_eq!(err("YQ="), 3);
        assert_eq!(err("YQ=x"), 2);
        assert_eq!(err("YQ==YQ=="), 4);
        assert_eq!(err("YWJj\t"), 4);
        assert_eq!(
            CorruptInputError(4).to_string(),
            "illegal base64 data at input byte 4"
        );
    }

    /// The fast path and the byte-wise decoder agree on every input, valid
    /// or not, built from the characters that matter.
    #[test]
    fn fast_path_agrees_with_the_bytewise_decoder() {
        let alphabet = b"AQgw+/=\n\r x";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 13) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let fast = decode(&input).map(|v| v.to_vec());
            let slow = decode_bytewise(&input).map(|v| v.to_vec());
            assert_eq!(fast, slow, "input {:?}", String::from_utf8_lossy(&input));
        }
        // And on long valid values, with and without line breaks.
        for n in [0usize, 1, 2, 3, 100, 1024, 4097] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let enc = encode(&bytes);
            assert_eq!(decode(enc.as_bytes()).unwrap().to_vec(), bytes);
            let wrapped: String = enc
                .as_bytes()
                .chunks(76)
                .map(|c| String::from_utf8_lossy(c).into_owned() + "\n")
                .collect();
            assert_eq!(decode(wrapped.as_bytes()).unwrap().to_vec(), bytes);
        }
    }

    #[test]
    fn encodes_with_padding() {
        assert_eq!(encode(b"a"), "YQ==");
        assert_eq!(encoded_len(1), 4);
        assert_eq!(encoded_len(3), 4);
        assert_eq!(encoded_len(0), 0);
    }
}
