//! The transit ciphertext, byte by byte; nothing here talks to a server.
//!
//! ```text
//! v1: format(1) = 0x04 ‖ scheme(1) = 0x01 ‖ version(4, big-endian) ‖ transit(..)
//! transit = the bytes of Transit's `vault:v<version>:<base64>` after base64
//!           (for the AEAD key types: nonce ‖ ciphertext ‖ tag)
//! associated data sent to Transit = "k8s-kms-plugin/transit" ‖ format ‖ scheme ‖ version(4)
//! ```
//!
//! The ciphertext carries the key version it was made with; Decrypt
//! refuses one whose version is not its key_id's before asking Transit, and
//! the associated data binds the format and the version, so a header
//! edited to another version does not authenticate either. Transit's text
//! form is rebuilt on the way back, so what the apiserver stores is 6
//! bytes of header plus the raw AEAD output (66 bytes for a seed).

use base64::Engine as _;
use kms_proto::contract::MAX_CIPHERTEXT;

/// The first byte of every transit ciphertext (0x01: software and
/// tpm-sealed, 0x02: tpm-resident).
pub const FORMAT_V1: u8 = 0x04;
/// The second byte: Transit's AEAD output, one key version.
pub(crate) const SCHEME_ID: u8 = 0x01;
/// Format, scheme and version.
pub(crate) const HEADER_LEN: usize = 6;
const AD_LABEL: &[u8] = b"k8s-kms-plugin/transit";
/// Transit's ciphertext prefix (OpenBao keeps Vault's).
const VAULT_PREFIX: &str = "vault:v";

/// Why a ciphertext is not one this backend made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// A parsed ciphertext.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The key version it claims.
    pub version: u32,
    /// Transit's bytes.
    pub transit: &'a [u8],
}

/// Parses a ciphertext from a Decrypt request. The version is not judged
/// here: the caller compares it with the key_id's.
pub fn parse(ct: &[u8]) -> Result<Parsed<'_>, FormatError> {
    if ct.len() <= HEADER_LEN {
        return Err(FormatError(format!(
            "{} bytes is too short for a transit ciphertext",
            ct.len()
        )));
    }
    if ct[0] != FORMAT_V1 {
        return Err(FormatError(format!(
            "not a transit ciphertext (format byte {:#04x}, expected {FORMAT_V1:#04x})",
            ct[0]
        )));
    }
    if ct[1] != SCHEME_ID {
        return Err(FormatError(format!(
            "unknown transit ciphertext scheme {:#04x}",
            ct[1]
        )));
    }
    let version = u32::from_be_bytes([ct[2], ct[3], ct[4], ct[5]]);
    Ok(Parsed {
        version,
        transit: &ct[HEADER_LEN..],
    })
}

/// The ciphertext for Transit's bytes made with `version`.
pub fn encode(version: u32, transit: &[u8]) -> Result<Vec<u8>, FormatError> {
    let len = HEADER_LEN + transit.len();
    if len > MAX_CIPHERTEXT {
        return Err(FormatError(format!(
            "Transit's ciphertext would make {len} bytes, over the {MAX_CIPHERTEXT}-byte limit"
        )));
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[FORMAT_V1, SCHEME_ID]);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(transit);
    Ok(out)
}

/// The associated data Transit binds to a ciphertext of `version`.
pub fn associated_data(version: u32) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 6);
    ad.extend_from_slice(AD_LABEL);
    ad.extend_from_slice(&[FORMAT_V1, SCHEME_ID]);
    ad.extend_from_slice(&version.to_be_bytes());
    ad
}

/// Transit's text form: `vault:v<version>:<base64>`.
pub fn to_vault(version: u32, transit: &[u8]) -> String {
    format!(
        "{VAULT_PREFIX}{version}:{}",
        base64::engine::general_purpose::STANDARD.encode(transit)
    )
}

/// Parses Transit's text form into its version and bytes; the error says
/// what is missing (a server answering something else).
pub fn from_vault(s: &str) -> Result<(u32, Vec<u8>), FormatError> {
    let rest = s.strip_prefix(VAULT_PREFIX).ok_or_else(|| {
        FormatError("the ciphertext does not start with vault:v<version>:".into())
    })?;
    let (v, b64) = rest.split_once(':').ok_or_else(|| {
        FormatError("the ciphertext has no version (vault:v<version>:...)".into())
    })?;
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(FormatError(format!(
            "the ciphertext's version {:?} is not a number",
            kms_proto::contract::printable(v, 20)
        )));
    }
    let version: u32 = v
        .parse()
        .map_err(|_| FormatError("the ciphertext's version is out of range".into()))?;
    if version == 0 {
        return Err(FormatError("the ciphertext's version is 0".into()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| FormatError(format!("the ciphertext is not base64: {e}")))?;
    if bytes.is_empty() {
        return Err(FormatError("the ciphertext is empty".into()));
    }
    Ok((version, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fixed_bytes() {
        let ct = encode(3, &[0xaa; 28]).unwrap();
        assert_eq!(&ct[..6], &[0x04, 0x01, 0, 0, 0, 3]);
        let p = parse(&ct).unwrap();
        assert_eq!(p.version, 3);
        assert_eq!(p.transit, &[0xaa; 28]);
        assert_eq!(
            associated_data(3),
            b"k8s-kms-plugin/transit\x04\x01\x00\x00\x00\x03".to_vec()
        );
        let v = to_vault(3, &[1, 2, 3]);
        assert_eq!(v, "vault:v3:AQID");
        assert_eq!(from_vault(&v).unwrap(), (3, vec![1, 2, 3]));
    }

    #[test]
    fn malformed_ciphertexts() {
        for (ct, want) in [
            (&[][..], "too short"),
            (&[4, 1, 0, 0, 0, 1][..], "too short"),
            (&[1, 1, 0, 0, 0, 1, 9][..], "not a transit ciphertext"),
            (&[4, 2, 0, 0, 0, 1, 9][..], "scheme"),
        ] {
            assert!(parse(ct).unwrap_err().0.contains(want), "{ct:?}");
        }
        assert!(encode(1, &[0; 1019]).is_err());
        assert_eq!(encode(1, &[0; 1018]).unwrap().len(), 1024);
    }

    #[test]
    fn transit_answers_without_a_version_are_refused() {
        for (s, want) in [
            ("AQID", "does not start"),
            ("vault:AQID", "does not start"),
            ("vault:v3AQID", "no version"),
            ("vault:v:AQID", "not a number"),
            ("vault:vx:AQID", "not a number"),
            ("vault:v-1:AQID", "not a number"),
            ("vault:v0:AQID", "is 0"),
            ("vault:v99999999999:AQID", "out of range"),
            ("vault:v1:@@@", "not base64"),
            ("vault:v1:", "empty"),
        ] {
            let e = from_vault(s).unwrap_err();
            assert!(e.0.contains(want), "{s}: {e}");
        }
    }
}
