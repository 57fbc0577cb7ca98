//! Key secrets decoded as the apiserver decodes them: Go's
//! `base64.StdEncoding` (padding required, `\r` and `\n` ignored, non-zero
//! trailing bits allowed), by the same decoder the Secret `data` values use.

use crate::wipe::Wiped;

/// Decodes a key secret into a zeroizing buffer; `None` if it is not valid.
pub(super) fn decode_base64_std(text: &str) -> Option<Wiped<Vec<u8>>> {
    crate::k8s::base64::decode(text.as_bytes()).ok()
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
