//! Strict decoding of the file, YAML or JSON, into its raw form: unknown or
//! duplicate fields are errors, as with the apiserver's strict decoder. Key
//! secrets are read into zeroizing buffers, and a decoder message is
//! scrubbed of anything that looks like key material before it is shown.

use std::fmt;

use serde::Deserialize;

use super::ConfigError;
use crate::transform::kind::{PROVIDERS, ProviderKind};
use crate::wipe::Wiped;

/// Decodes `text` into the raw form of the file (nothing validated yet).
pub(super) fn decode(text: &str) -> Result<RawConfig, ConfigError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let message = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        ConfigError::Decode {
            message: redact_decode_error(&message, text),
        }
    })
}

// ---------------------------------------------------------------------------
// The file as decoded (strict: unknown fields are errors).

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig {
    pub(super) api_version: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) resources: Option<Vec<RawResource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub(super) resources: Option<Vec<String>>,
    pub(super) providers: Option<Vec<RawProvider>>,
}

/// One entry of a `providers:` list: `kms`, `identity`, or one of the
/// local-key providers of the provider table ([`PROVIDERS`]), each under
/// its table name. Read from the table, so a new provider needs no field
/// here; unknown and repeated keys are errors, as with named fields.
pub(super) struct RawProvider {
    /// The local-key providers present, in table order.
    pub(super) local: Vec<(ProviderKind, RawKeys)>,
    pub(super) identity: Option<RawIdentity>,
    pub(super) kms: Option<RawKms>,
}

/// The keys a provider entry may have: the local-key providers, then
/// `identity` and `kms`.
fn provider_fields() -> &'static [&'static str] {
    static FIELDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        PROVIDERS
            .iter()
            .filter(|r| r.local.is_some())
            .map(|r| r.name)
            .chain(["identity", "kms"])
            .collect()
    });
    FIELDS.as_slice()
}

impl<'de> Deserialize<'de> for RawProvider {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawProvider;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a provider (one of ")?;
                f.write_str(&provider_fields().join(", "))?;
                f.write_str(")")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawProvider, A::Error> {
                use serde::de::Error;
                let mut out = RawProvider {
                    local: Vec::new(),
                    identity: None,
                    kms: None,
                };
                while let Some(key) = m.next_key::<String>()? {
                    match key.as_str() {
                        "identity" if out.identity.is_some() => {
                            return Err(A::Error::duplicate_field("identity"));
                        }
                        "identity" => out.identity = Some(m.next_value()?),
                        "kms" if out.kms.is_some() => return Err(A::Error::duplicate_field("kms")),
                        "kms" => out.kms = Some(m.next_value()?),
                        name => {
                            let row = PROVIDERS
                                .iter()
                                .find(|r| r.local.is_some() && r.name == name)
                                .ok_or_else(|| A::Error::unknown_field(name, provider_fields()))?;
                            if out.local.iter().any(|(k, _)| *k == row.kind) {
                                return Err(A::Error::duplicate_field(row.name));
                            }
                            out.local.push((row.kind, m.next_value()?));
                        }
                    }
                }
                out.local.sort_by_key(|(k, _)| *k);
                Ok(out)
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub(super) keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) name: Option<String>,
    pub(super) secret: Option<SecretText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKms {
    #[serde(rename = "apiVersion")]
    pub(super) api_version: Option<String>,
    pub(super) name: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) cachesize: Option<i32>,
    pub(super) timeout: Option<String>,
}

/// A `secret:` value as written (base64), in a zeroizing buffer.
pub(super) struct SecretText(pub(super) Wiped<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(Wiped::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(Wiped::new(v)))
            }
            // Other scalars: refuse without echoing the value.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(E::custom("a key secret must be a base64 string"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretText, E> {
                Err(E::custom("a key secret must be a base64 string"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretText, E> {
                Err(E::custom("a key secret must be a base64 string"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(E::custom("a key secret must be a base64 string"))
            }
        }
        d.deserialize_str(V)
    }
}

/// Makes a decoder message safe to show: any value written after a
/// `secret` key in `text`, and any long base64-looking run, is replaced by
/// `REDACTED`.
fn redact_decode_error(message: &str, text: &str) -> String {
    let mut out = message.to_owned();
    for candidate in secret_candidates(text) {
        if candidate.len() >= 4 {
            out = out.replace(candidate, "REDACTED");
        }
    }
    // Belt and braces: runs of 20+ base64 characters that are not plain
    // words (they contain a digit, '+', '/' or '=').
    let mut result = String::with_capacity(out.len());
    let mut run = String::new();
    let flush = |run: &mut String, result: &mut String| {
        let looks_like_key = run.len() >= 20
            && run
                .chars()
                .any(|c| c.is_ascii_digit() || matches!(c, '+' | '/' | '='));
        if looks_like_key {
            result.push_str("REDACTED");
        } else {
            result.push_str(run);
        }
        run.clear();
    };
    for c in out.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') {
            run.push(c);
        } else {
            flush(&mut run, &mut result);
            result.push(c);
        }
    }
    flush(&mut run, &mut result);
    result
}

/// The values written after every `secret` key of `text` (YAML block or
/// flow style, JSON), as tokens.
fn secret_candidates(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("secret") {
        let start = from + pos + "secret".len();
        from = start;
        let rest = text[start..].trim_start_matches(['"', '\'']);
        let Some(rest) = rest.trim_start_matches([' ', '\t']).strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start_matches([' ', '\t', '"', '\'', '|', '>', '-', '\r', '\n']);
        let end = rest
            .find(['"', '\'', '\n', '\r', ',', '}', ' ', '\t', '#'])
            .unwrap_or(rest.len());
        if end > 0 {
            found.push(&rest[..end]);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption_config::EncryptionConfiguration;
    use crate::encryption_config::test_support::*;

    #[test]
    fn json_is_accepted() {
        let json = format!(
            r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["secrets"],"providers":[{{"secretbox":{{"keys":[{{"name":"s","secret":"{K32}"}}]}}}},{{"identity":{{}}}}]}}]}}"#
        );
        let cfg = EncryptionConfiguration::parse(&json).unwrap();
        assert_eq!(cfg.secrets_providers().unwrap().len(), 2);
    }

    #[test]
    fn strict_decoding() {
        let e =
            EncryptionConfiguration::parse(&doc("  - identity: {}\n    bogus: 1\n")).unwrap_err();
        assert!(matches!(e, ConfigError::Decode { .. }), "{e:?}");
        let e = EncryptionConfiguration::parse("apiVersion: v1\nkind: Secret\nresources: []\n")
            .unwrap_err();
        assert!(matches!(e, ConfigError::WrongKind { .. }), "{e:?}");
        let e = EncryptionConfiguration::parse("kind: EncryptionConfiguration\n").unwrap_err();
        assert!(matches!(e, ConfigError::WrongKind { .. }), "{e:?}");
        assert!(matches!(
            EncryptionConfiguration::parse(" \n").unwrap_err(),
            ConfigError::Empty
        ));
        // A duplicate field is an error, not "last wins".
        let e = EncryptionConfiguration::parse(&doc(&format!(
            "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K16}\n        secret: {K32}\n"
        )))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Decode { .. }), "{e:?}");
        assert_no_key_material(&e.to_string());
    }

    #[test]
    fn provider_entries_are_read_from_the_provider_table() {
        // Each name once; an unknown one lists what is known.
        let keys = format!("\n      keys:\n      - name: k\n        secret: {K32}\n");
        for dup in ["aesgcm", "aescbc", "secretbox"] {
            let e =
                EncryptionConfiguration::parse(&doc(&format!("  - {dup}:{keys}    {dup}:{keys}")))
                    .unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("duplicate") && msg.contains(dup), "{msg}");
            assert_no_key_material(&msg);
        }
        let e = EncryptionConfiguration::parse(&doc("  - identity: {}\n    identity: {}\n"))
            .unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = EncryptionConfiguration::parse(&doc("  - aesctr: {}\n")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unknown field `aesctr`")
                && msg.contains("aesgcm")
                && msg.contains("secretbox")
                && msg.contains("kms"),
            "{msg}"
        );
        // Two different providers in one entry: the apiserver's message.
        let e = EncryptionConfiguration::parse(&doc(&format!(
            "  - secretbox:{keys}    identity: {{}}\n"
        )))
        .unwrap_err();
        assert!(
            e.to_string().contains("more than one provider specified"),
            "{e}"
        );
    }

    #[test]
    fn decode_errors_never_echo_secrets() {
        for bad in [
            // A syntax error on the secret's line.
            format!("  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}: [\n"),
            // A secret of the wrong type.
            format!("  - aesgcm:\n      keys:\n      - name: k\n        secret: [{K32}]\n"),
            // Unknown field next to a secret.
            format!(
                "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}\n        {K24}: 1\n"
            ),
            "  - aesgcm:\n      keys:\n      - name: k\n        secret: 12345678901234567890123\n"
                .to_owned(),
        ] {
            let e = EncryptionConfiguration::parse(&doc(&bad)).unwrap_err();
            let msg = e.to_string();
            assert_no_key_material(&msg);
            assert!(!msg.contains("12345678901234567890123"), "{msg}");
        }
    }
}
