//! EncryptionConfiguration files (YAML or JSON) on arbitrary UTF-8. Parsing
//! and validation must never panic, no error may echo a key secret of the
//! input, and a configuration that parses builds its provider chain (kms
//! entries aside: they need a plugin) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_store::encryption_config::EncryptionConfiguration;
use secret_store::transform::chain::TransformerChain;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match EncryptionConfiguration::parse(text) {
        Ok(cfg) => {
            let _ = TransformerChain::from_config_without_kms(&cfg);
        }
        Err(e) => {
            // A `secret:` value long enough to be a key never shows up.
            let msg = e.to_string();
            for line in text.lines() {
                if let Some(v) = line.trim().strip_prefix("secret:") {
                    let v = v.trim();
                    // Only a value that appears nowhere else in the input:
                    // the same text as a resource name, say, is echoed as
                    // that name, rightly.
                    let elsewhere = text.matches(v).count() > 1;
                    if v.len() >= 16
                        && !elsewhere
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
                    {
                        assert!(!msg.contains(v), "an error echoes a key secret: {msg}");
                    }
                }
            }
        }
    }
});
