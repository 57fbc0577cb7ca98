//! Key secrets decoded as the apiserver decodes them: Go's
//! `base64.StdEncoding`.

use base64::Engine as _;
use zeroize::Zeroizing;

/// Decodes standard base64 as Go's `base64.StdEncoding.DecodeString` does:
/// padding required, `\r` and `\n` ignored, non-zero trailing bits allowed.
/// The output goes straight into a zeroizing buffer of the final size.
pub(super) fn decode_base64_std(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    let cleaned: Zeroizing<Vec<u8>>;
    let input: &[u8] = if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        cleaned = Zeroizing::new(
            text.bytes()
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect(),
        );
        &cleaned
    } else {
        text.as_bytes()
    };
    let mut out = Zeroizing::new(Vec::with_capacity(input.len() / 4 * 3 + 3));
    ENGINE.decode_vec(input, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption_config::test_support::*;

    #[test]
    fn go_base64() {
        assert_eq!(decode_base64_std(K16).unwrap().len(), 16);
        assert_eq!(
            decode_base64_std("qRGwRx4KK0Mk\nLWtofcOcpQ==")
                .unwrap()
                .len(),
            16
        );
        assert!(decode_base64_std("qRGwRx4KK0MkLWtofcOcpQ").is_none());
        assert!(decode_base64_std("qRGwRx4KK0MkLWtofcOcpQ==x").is_none());
        assert!(decode_base64_std("qRGw_x4KK0MkLWtofcOcpQ==").is_none());
    }
}
