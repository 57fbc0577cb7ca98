//! Fixtures shared by the unit tests of this module.

use super::{ConfigError, EncryptionConfiguration};
use crate::k8s::FieldErrors;

pub(super) const K16: &str = "qRGwRx4KK0MkLWtofcOcpQ=="; // 16 bytes
pub(super) const K24: &str = "uiTOdiVLC5yttc/UbGPe0gDHP2CWkw9e"; // 24 bytes
pub(super) const K32: &str = "Q+yhvNRa4jPp/1hjT5yYv9r3NHrdsznnIFgDjBiI1EA="; // 32 bytes

pub(super) fn doc(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n{providers}"
    )
}

pub(super) fn invalid(text: &str) -> FieldErrors {
    match EncryptionConfiguration::parse(text) {
        Err(ConfigError::Invalid(e)) => e,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

pub(super) fn assert_no_key_material(msg: &str) {
    for k in [K16, K24, K32, "c2hvcnQ=", "not-base64!!"] {
        assert!(!msg.contains(k), "key material leaked in: {msg}");
    }
}
