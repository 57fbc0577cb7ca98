//! The EncryptionConfiguration shipped in deploy/ parses and validates.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use secret_store::encryption_config::{EncryptionConfiguration, ProviderConfig};

#[test]
fn shipped_encryption_configuration_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/encryption-configuration.yaml"
    );
    let cfg = EncryptionConfiguration::load(std::path::Path::new(path)).unwrap();
    let providers = cfg.providers_for("secrets").expect("covers secrets");
    match providers[0] {
        ProviderConfig::Kms { config, .. } => {
            assert_eq!(config.api_version, "v2");
            assert_eq!(config.endpoint, "unix:///var/run/kmsplugin/socket.sock");
        }
        other => panic!("first provider is {:?}", other.kind()),
    }
}
