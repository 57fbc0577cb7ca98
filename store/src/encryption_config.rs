//! EncryptionConfiguration (`apiserver.config.k8s.io/v1`): parsing and
//! validation of the file kube-apiserver takes as `--encryption-provider-config`.
//!
//! The file is decoded strictly (unknown or duplicate fields are errors, as
//! the apiserver's strict decoder has them), then validated with the rules of
//! upstream `k8s.io/apiserver/pkg/apis/apiserver/validation`
//! (`validation_encryption.go`): every error names its field path in the
//! apiserver's style, e.g.
//!
//! ```text
//! resources[0].providers[1].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 10, expected one of [16 24 32]
//! ```
//!
//! Two rules are stricter than upstream, because the stored prefix
//! `k8s:enc:<provider>:v1:<key name>:` must be unambiguous: key names must
//! not contain `:` and must be unique within a provider.
//!
//! Key material never appears in an error, a `Debug` output or a log: keys
//! are decoded from base64 straight into [`Zeroizing`] buffers, and
//! [`EncryptionConfiguration::load`] reads the file into a buffer that is
//! wiped once parsed. (The YAML parser's own short-lived scalar buffers are
//! outside our control.)

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::transform::ProviderKind;

/// `apiVersion` of the only EncryptionConfiguration version the apiserver
/// serves.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// `kind` of an EncryptionConfiguration.
pub const KIND: &str = "EncryptionConfiguration";
/// The resource name the Secrets rules are looked up by.
pub const SECRETS_RESOURCE: &str = "secrets";
/// Default per-call timeout of a kms provider (upstream default).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `cachesize` of a KMS v1 provider (upstream default).
pub const DEFAULT_KMS_V1_CACHE_SIZE: i32 = 1000;
/// The largest configuration file [`EncryptionConfiguration::load`] reads.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// AES key sizes accepted by aesgcm and aescbc (bytes).
const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
/// Key sizes accepted by secretbox (bytes).
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

/// A `kms:` provider entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsProviderConfig {
    /// `apiVersion`: `v1` or `v2` (default `v1` in the upstream type).
    pub api_version: String,
    /// `name`: unique among kms providers; part of the stored prefix.
    pub name: String,
    /// `endpoint`: `unix:///path` or `unix:///@name`.
    pub endpoint: String,
    /// `timeout`: per-call timeout (default 3s).
    pub timeout: Duration,
}

/// One named key of an aesgcm, aescbc or secretbox provider.
///
/// The key bytes live in a zeroizing buffer; there is no `Clone`, and `Debug`
/// prints the name only.
pub struct KeyConfig {
    name: String,
    secret: Zeroizing<Vec<u8>>,
}

impl KeyConfig {
    /// Builds a key from its name and raw bytes (already decoded). The bytes
    /// are taken over, not copied.
    pub fn new(name: impl Into<String>, secret: Zeroizing<Vec<u8>>) -> Self {
        KeyConfig {
            name: name.into(),
            secret,
        }
    }

    /// The key name (public: it is part of every stored prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key length in bits.
    pub fn bits(&self) -> usize {
        self.secret.len() * 8
    }

    /// The raw key bytes. Hand them to a cipher constructor; never print,
    /// log or copy them into a buffer that is not wiped.
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("secret", &format_args!("<{} bits redacted>", self.bits()))
            .finish()
    }
}

/// One entry of a `providers:` list.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProviderConfig {
    /// `aesgcm: {keys: [...]}`: AES-GCM, random 12-byte nonces, the etcd key
    /// as additional authenticated data.
    AesGcm {
        /// The keys, in file order; the first one writes.
        keys: Vec<KeyConfig>,
    },
    /// `aescbc: {keys: [...]}`: AES-CBC with PKCS#7 padding, no
    /// authentication.
    AesCbc {
        /// The keys, in file order; the first one writes.
        keys: Vec<KeyConfig>,
    },
    /// `secretbox: {keys: [...]}`: NaCl secretbox (XSalsa20-Poly1305).
    Secretbox {
        /// The keys, in file order; the first one writes.
        keys: Vec<KeyConfig>,
    },
    /// `identity: {}`: no encryption.
    Identity,
    /// `kms: {...}`: envelope encryption through a KMS plugin.
    Kms {
        /// The plugin settings (defaults applied).
        config: KmsProviderConfig,
        /// `cachesize` (KMS v1 only; defaults to 1000 for v1, `None` for v2).
        cache_size: Option<i32>,
    },
}

impl ProviderConfig {
    /// The provider kind (`kms` splits into KMS v1 and v2).
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::AesGcm { .. } => ProviderKind::AesGcm,
            ProviderConfig::AesCbc { .. } => ProviderKind::AesCbc,
            ProviderConfig::Secretbox { .. } => ProviderKind::Secretbox,
            ProviderConfig::Identity => ProviderKind::Identity,
            ProviderConfig::Kms { config, .. } if config.api_version == "v1" => ProviderKind::KmsV1,
            ProviderConfig::Kms { .. } => ProviderKind::KmsV2,
        }
    }

    /// The keys of an aesgcm, aescbc or secretbox provider; empty otherwise.
    pub fn keys(&self) -> &[KeyConfig] {
        match self {
            ProviderConfig::AesGcm { keys }
            | ProviderConfig::AesCbc { keys }
            | ProviderConfig::Secretbox { keys } => keys,
            ProviderConfig::Identity | ProviderConfig::Kms { .. } => &[],
        }
    }
}

impl fmt::Display for ProviderConfig {
    /// A one-line public description, e.g. `aesgcm(keys: key1, key0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderConfig::Identity => f.write_str("identity"),
            ProviderConfig::Kms { config, .. } => write!(
                f,
                "kms {} {:?} at {}",
                config.api_version, config.name, config.endpoint
            ),
            other => {
                write!(f, "{}(keys: ", other.kind())?;
                for (i, k) in other.keys().iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&k.name)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// One entry of the top-level `resources:` list.
#[derive(Debug)]
pub struct ResourceConfig {
    /// The resources this entry covers (`secrets`, `*.`, `*.*`, ...).
    pub resources: Vec<String>,
    /// The providers, in the order the apiserver tries them; the first
    /// writes.
    pub providers: Vec<ProviderConfig>,
}

/// A parsed and validated EncryptionConfiguration.
#[derive(Debug)]
pub struct EncryptionConfiguration {
    resources: Vec<ResourceConfig>,
}

impl EncryptionConfiguration {
    /// Reads, parses and validates the file at `path` (YAML or JSON). The
    /// file's bytes are held in a buffer that is wiped before returning.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let io_err = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                limit: MAX_CONFIG_BYTES,
            });
        }
        // Room for the whole file plus one byte, so that reading to the end
        // never reallocates (a reallocation would leave an unwiped copy).
        let capacity = usize::try_from(len).unwrap_or(0).saturating_add(1);
        let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if buf.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                limit: MAX_CONFIG_BYTES,
            });
        }
        Self::parse_bytes(&buf)
    }

    /// Parses and validates a configuration held in memory (YAML or JSON).
    /// The caller owns (and should wipe) `bytes`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses and validates a configuration held in memory (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Empty);
        }
        let options = serde_saphyr::options! {
            with_snippet: false,
        };
        let raw: RawConfig = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let message = e
                .to_string()
                .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            ConfigError::Decode {
                message: redact_decode_error(&message, text),
            }
        })?;
        let api_version = raw.api_version.unwrap_or_default();
        let kind = raw.kind.unwrap_or_default();
        if api_version != API_VERSION || kind != KIND {
            return Err(ConfigError::WrongKind { api_version, kind });
        }
        let resources =
            validate(raw.resources.unwrap_or_default()).map_err(ConfigError::Invalid)?;
        check_masking(&resources)?;
        Ok(EncryptionConfiguration { resources })
    }

    /// The `resources:` entries, in file order.
    pub fn resources(&self) -> &[ResourceConfig] {
        &self.resources
    }

    /// The providers the apiserver uses for `resource` (written as in the
    /// file: `secrets`, `deployments.apps`), in the order it tries them;
    /// `None` when no entry covers the resource, in which case the
    /// apiserver stores it unencrypted (identity).
    ///
    /// As upstream: the providers of every entry naming the resource exactly
    /// are concatenated in file order; failing that, those of `*.<group>`
    /// (`*.` for the core group), failing that those of `*.*`.
    pub fn providers_for(&self, resource: &str) -> Option<Vec<&ProviderConfig>> {
        let wanted = GroupResource::parse(resource);
        let candidates = [
            wanted.clone(),
            GroupResource {
                group: wanted.group.clone(),
                resource: "*".to_owned(),
            },
            GroupResource::any(),
        ];
        candidates.iter().find_map(|rule| {
            let found: Vec<&ProviderConfig> = self
                .resources
                .iter()
                .filter(|e| e.resources.iter().any(|r| GroupResource::parse(r) == *rule))
                .flat_map(|e| e.providers.iter())
                .collect();
            (!found.is_empty()).then_some(found)
        })
    }

    /// The providers for Secrets ([`providers_for`](Self::providers_for)
    /// `("secrets")`).
    pub fn secrets_providers(&self) -> Option<Vec<&ProviderConfig>> {
        self.providers_for(SECRETS_RESOURCE)
    }
}

/// Why a configuration cannot be used. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("error reading encryption provider configuration file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file (or string) is empty.
    #[error("the encryption provider configuration is empty")]
    Empty,
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("the encryption provider configuration is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8.
    #[error("the encryption provider configuration is not valid UTF-8")]
    NotUtf8,
    /// The YAML/JSON could not be decoded into an EncryptionConfiguration
    /// (syntax error, unknown or duplicate field, wrong type).
    #[error("error decoding encryption provider configuration: {message}")]
    Decode {
        /// The decoder's message, with anything that looks like key
        /// material replaced by `REDACTED`.
        message: String,
    },
    /// The document is not an `apiserver.config.k8s.io/v1`
    /// `EncryptionConfiguration`.
    #[error(
        "the file is not an EncryptionConfiguration: got apiVersion {api_version:?}, kind {kind:?}; expected apiVersion {API_VERSION:?}, kind {KIND:?}"
    )]
    WrongKind {
        /// The `apiVersion` found (empty when missing).
        api_version: String,
        /// The `kind` found (empty when missing).
        kind: String,
    },
    /// Validation failed; every error names its field.
    #[error("{0}")]
    Invalid(FieldErrors),
    /// A resource is listed after a wildcard rule of an earlier entry that
    /// already covers it (the apiserver refuses this).
    #[error("resource {resource:?} is masked by earlier rule {rule:?}")]
    Masked {
        /// The masked resource, as written.
        resource: String,
        /// The earlier wildcard rule (`*.`, `*.<group>` or `*.*`).
        rule: String,
    },
}

/// The kind of a [`FieldError`], as in apimachinery's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// A field has an invalid value.
    Invalid,
    /// A value appears twice where it must be unique.
    Duplicate,
}

/// One validation error: the field path, what is wrong, and the offending
/// value (already made safe: secrets are shown as `REDACTED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `resources[0].providers[1].aesgcm.keys[0].secret`.
    pub field: String,
    /// The kind of error.
    pub kind: FieldErrorKind,
    /// The offending value, rendered (`"REDACTED"` for secrets); `None` for
    /// `Required`.
    pub value: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
        };
        write!(f, "{}: {kind}", self.field)?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// All validation errors of a file, in the order found. Displayed as the
/// apiserver's aggregate: one error as itself, several as `[a, b]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Whether any error is for exactly `field`.
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The file as decoded (strict: unknown fields are errors).

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    api_version: Option<String>,
    kind: Option<String>,
    resources: Option<Vec<RawResource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    resources: Option<Vec<String>>,
    providers: Option<Vec<RawProvider>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    aesgcm: Option<RawKeys>,
    aescbc: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    identity: Option<RawIdentity>,
    kms: Option<RawKms>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Option<String>,
    secret: Option<SecretText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKms {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    name: Option<String>,
    endpoint: Option<String>,
    cachesize: Option<i32>,
    timeout: Option<String>,
}

/// A `secret:` value as written (base64), in a zeroizing buffer.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(Zeroizing::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(Zeroizing::new(v)))
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

// ---------------------------------------------------------------------------
// Validation, following upstream validation_encryption.go.

/// Collects field errors with the apiserver's message shapes.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn required(&mut self, field: &str, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        });
    }
    fn invalid(&mut self, field: &str, value: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            kind: FieldErrorKind::Invalid,
            value: Some(value.into()),
            detail: detail.into(),
        });
    }
    fn duplicate(&mut self, field: &str, value: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            kind: FieldErrorKind::Duplicate,
            value: Some(value.into()),
            detail: String::new(),
        });
    }
}

/// Renders a string value as the apiserver does (`%q`).
fn q(s: &str) -> String {
    format!("{s:?}")
}

/// Renders a string list as Go's `%#v` of a `[]string`.
fn q_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| q(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn validate(raw: Vec<RawResource>) -> Result<Vec<ResourceConfig>, FieldErrors> {
    let mut errs = Errors::default();
    if raw.is_empty() {
        errs.required("resources", "at least one resources is required");
        return Err(FieldErrors(errs.0));
    }
    let mut kms_names: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let r_path = format!("resources[{i}].resources");
        let p_path = format!("resources[{i}].providers");
        let resources = entry.resources.unwrap_or_default();
        if resources.is_empty() {
            errs.required(&r_path, format!("at least one {r_path} is required"));
        }
        validate_resource_overlap(&resources, &r_path, &mut errs);
        validate_resource_names(&resources, &r_path, &mut errs);
        let raw_providers = entry.providers.unwrap_or_default();
        if raw_providers.is_empty() {
            errs.required(&p_path, format!("at least one {p_path} is required"));
        }
        let mut providers = Vec::with_capacity(raw_providers.len());
        for (j, p) in raw_providers.into_iter().enumerate() {
            let path = format!("{p_path}[{j}]");
            if let Some(p) = validate_provider(p, &path, &mut kms_names, &mut errs) {
                providers.push(p);
            }
        }
        out.push(ResourceConfig {
            resources,
            providers,
        });
    }
    if errs.0.is_empty() {
        Ok(out)
    } else {
        Err(FieldErrors(errs.0))
    }
}

/// A `resource.group` pair as apimachinery's `schema.ParseGroupResource`
/// reads it: split at the first dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupResource {
    group: String,
    resource: String,
}

impl GroupResource {
    fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => GroupResource {
                group: group.to_owned(),
                resource: resource.to_owned(),
            },
            None => GroupResource {
                group: String::new(),
                resource: s.to_owned(),
            },
        }
    }
    fn any() -> Self {
        GroupResource {
            group: "*".to_owned(),
            resource: "*".to_owned(),
        }
    }
    /// As the apiserver prints a rule in its masking error.
    fn yaml_string(&self) -> String {
        if self.group.is_empty() && self.resource == "*" {
            "*.".to_owned()
        } else if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

fn validate_resource_overlap(resources: &[String], path: &str, errs: &mut Errors) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let any = GroupResource::any();
    let (mut has_overlap, mut has_duplicate) = (false, false);
    for (i, r1) in parsed.iter().enumerate() {
        for (j, r2) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !has_duplicate {
                has_duplicate = true;
                continue;
            }
            if has_overlap {
                continue;
            }
            if *r1 == any {
                has_overlap = true;
                continue;
            }
            if r1.group != r2.group {
                continue;
            }
            if r1.resource == "*" || r2.resource == "*" {
                has_overlap = true;
            }
        }
    }
    if has_duplicate {
        errs.invalid(
            path,
            q_list(resources),
            "the same resource cannot be specified multiple times",
        );
    }
    if has_overlap {
        errs.invalid(
            path,
            q_list(resources),
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        );
    }
}

fn validate_resource_names(resources: &[String], path: &str, errs: &mut Errors) {
    for (j, res) in resources.iter().enumerate() {
        let jj = format!("{path}[{j}]");
        if res.to_lowercase() != *res {
            errs.invalid(
                &jj,
                q(res),
                "resource name should not contain capital letters",
            );
            continue;
        }
        if res == "*" {
            errs.invalid(
                &jj,
                q(res),
                "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources",
            );
            continue;
        }
        if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            errs.invalid(
                &jj,
                q(res),
                "resources which do not have REST API/s cannot be encrypted",
            );
            continue;
        }
        let gr = GroupResource::parse(res);
        if gr.group == "events.k8s.io" {
            errs.invalid(
                &jj,
                q(res),
                "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file",
            );
            continue;
        }
        if gr.group == "extensions" {
            errs.invalid(
                &jj,
                q(res),
                "'extensions' group has been removed and cannot be used for encryption",
            );
            continue;
        }
        if gr.group == "*" && gr.resource != "*" {
            errs.invalid(
                &jj,
                q(res),
                "encrypting the same resource across groups is not supported",
            );
        }
    }
}

fn validate_provider(
    p: RawProvider,
    path: &str,
    kms_names: &mut HashSet<String>,
    errs: &mut Errors,
) -> Option<ProviderConfig> {
    let present: Vec<&str> = [
        ("kms", p.kms.is_some()),
        ("aesgcm", p.aesgcm.is_some()),
        ("aescbc", p.aescbc.is_some()),
        ("secretbox", p.secretbox.is_some()),
        ("identity", p.identity.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    match present.len() {
        0 => {
            errs.invalid(
                path,
                "{}",
                "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
            );
            return None;
        }
        1 => {}
        _ => {
            errs.invalid(
                path,
                format!("[{}]", present.join(" ")),
                "more than one provider specified in a single element, should split into different list elements",
            );
            return None;
        }
    }
    if let Some(kms) = p.kms {
        let kms_path = format!("{path}.kms");
        validate_kms(kms, &kms_path, kms_names, errs)
    } else if let Some(k) = p.aesgcm {
        let keys = validate_keys(k, &format!("{path}.aesgcm.keys"), AES_KEY_SIZES, errs);
        Some(ProviderConfig::AesGcm { keys })
    } else if let Some(k) = p.aescbc {
        let keys = validate_keys(k, &format!("{path}.aescbc.keys"), AES_KEY_SIZES, errs);
        Some(ProviderConfig::AesCbc { keys })
    } else if let Some(k) = p.secretbox {
        let keys = validate_keys(
            k,
            &format!("{path}.secretbox.keys"),
            SECRETBOX_KEY_SIZES,
            errs,
        );
        Some(ProviderConfig::Secretbox { keys })
    } else {
        Some(ProviderConfig::Identity)
    }
}

fn validate_keys(raw: RawKeys, path: &str, sizes: &[usize], errs: &mut Errors) -> Vec<KeyConfig> {
    let raw = raw.keys.unwrap_or_default();
    if raw.is_empty() {
        errs.required(path, "at least one keys is required");
        return Vec::new();
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut keys = Vec::with_capacity(raw.len());
    for (i, key) in raw.into_iter().enumerate() {
        let kp = format!("{path}[{i}]");
        let name = key.name.unwrap_or_default();
        let name_path = format!("{kp}.name");
        if name.is_empty() {
            errs.required(&name_path, "name is a mandatory field for a key");
        } else if name.contains(':') {
            // Stricter than upstream: `k8s:enc:aesgcm:v1:a:b:` would be
            // ambiguous between keys `a` and `a:b`.
            errs.invalid(
                &name_path,
                q(&name),
                "key names must not contain ':' (the name is part of the stored prefix k8s:enc:<provider>:v1:<name>:)",
            );
        } else if !seen.insert(name.clone()) {
            // Stricter than upstream: two keys with one name share a prefix.
            errs.duplicate(&name_path, q(&name));
        }
        let secret_path = format!("{kp}.secret");
        let text = match key.secret {
            Some(s) if !s.0.is_empty() => s,
            _ => {
                errs.required(&secret_path, "secret is a mandatory field for a key");
                continue;
            }
        };
        let Some(secret) = decode_base64_std(&text.0) else {
            errs.invalid(
                &secret_path,
                q("REDACTED"),
                "secrets must be base64 encoded",
            );
            continue;
        };
        if !sizes.contains(&secret.len()) {
            let expected: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
            errs.invalid(
                &secret_path,
                q("REDACTED"),
                format!(
                    "secret is not of the expected length, got {}, expected one of [{}]",
                    secret.len(),
                    expected.join(" ")
                ),
            );
            continue;
        }
        keys.push(KeyConfig { name, secret });
    }
    keys
}

/// Decodes standard base64 as Go's `base64.StdEncoding.DecodeString` does:
/// padding required, `\r` and `\n` ignored, non-zero trailing bits allowed.
/// The output goes straight into a zeroizing buffer of the final size.
fn decode_base64_std(text: &str) -> Option<Zeroizing<Vec<u8>>> {
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

fn validate_kms(
    raw: RawKms,
    path: &str,
    kms_names: &mut HashSet<String>,
    errs: &mut Errors,
) -> Option<ProviderConfig> {
    // Defaults as in upstream v1 defaults.go.
    let api_version = raw.api_version.unwrap_or_else(|| "v1".to_owned());
    let name = raw.name.unwrap_or_default();
    let endpoint = raw.endpoint.unwrap_or_default();
    let cache_size = match (raw.cachesize, api_version.as_str()) {
        (None, "v1") => Some(DEFAULT_KMS_V1_CACHE_SIZE),
        (c, _) => c,
    };
    let errors_before = errs.0.len();

    // name
    let name_path = format!("{path}.name");
    if name.is_empty() {
        errs.required(&name_path, "name is a mandatory field for a provider");
    }
    if api_version != "v1" && name.contains(':') {
        errs.invalid(
            &name_path,
            q(&name),
            format!("invalid KMS provider name {name}, must not contain ':'"),
        );
    }
    // Upstream checks uniqueness for v2 always and for v1 only when the
    // config is hot-reloaded; we always check (a shared prefix is ambiguous).
    if !name.is_empty() && !kms_names.insert(name.clone()) {
        errs.invalid(
            &name_path,
            q(&name),
            format!("duplicate KMS provider name {name}, names must be unique"),
        );
    }

    // timeout
    let timeout_path = format!("{path}.timeout");
    let timeout = match raw.timeout.as_deref() {
        None => Some(DEFAULT_KMS_TIMEOUT),
        Some(text) => match parse_go_duration(text) {
            Ok(ns) if ns > 0 => Some(duration_from_nanos(ns)),
            Ok(_) => {
                errs.invalid(&timeout_path, q(text), "timeout should be a positive value");
                None
            }
            Err(e) => {
                errs.invalid(&timeout_path, q(text), e);
                None
            }
        },
    };

    // endpoint
    let endpoint_path = format!("{path}.endpoint");
    if endpoint.is_empty() {
        errs.invalid(
            &endpoint_path,
            q(""),
            "endpoint is a mandatory field for a kms",
        );
    } else if let Err(detail) = check_endpoint(&endpoint) {
        errs.invalid(&endpoint_path, q(&endpoint), detail);
    }

    // cachesize
    let cache_path = format!("{path}.cachesize");
    if api_version != "v1" {
        if let Some(c) = cache_size {
            errs.invalid(
                &cache_path,
                c.to_string(),
                "cachesize is not supported in v2",
            );
        }
    } else if cache_size == Some(0) {
        errs.invalid(
            &cache_path,
            "0",
            "cachesize should be a positive value, or negative to disable",
        );
    }

    // apiVersion
    if api_version != "v1" && api_version != "v2" {
        errs.invalid(
            &format!("{path}.apiVersion"),
            q(&api_version),
            "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
        );
    }

    if errs.0.len() != errors_before {
        return None;
    }
    Some(ProviderConfig::Kms {
        config: KmsProviderConfig {
            api_version,
            name,
            endpoint,
            timeout: timeout.unwrap_or(DEFAULT_KMS_TIMEOUT),
        },
        cache_size,
    })
}

/// The endpoint check of upstream: a parseable URL whose scheme is `unix`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.chars().any(|c| c.is_ascii_control()) {
        return Err(format!(
            "invalid endpoint for kms provider, error: parse {endpoint:?}: net/url: invalid control character in URL"
        ));
    }
    // Go's url.Parse: a scheme is [A-Za-z][A-Za-z0-9+.-]* before the first
    // ':'; anything else before a ':' means "no scheme".
    let scheme = match endpoint.find(':') {
        Some(0) => {
            return Err(format!(
                "invalid endpoint for kms provider, error: parse {endpoint:?}: missing protocol scheme"
            ));
        }
        Some(i) => {
            let s = &endpoint[..i];
            let mut chars = s.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if valid {
                s.to_ascii_lowercase()
            } else {
                String::new()
            }
        }
        None => String::new(),
    };
    if scheme != "unix" {
        return Err(format!(
            "unsupported scheme {scheme:?} for KMS provider, only unix is supported"
        ));
    }
    Ok(())
}

fn duration_from_nanos(ns: i128) -> Duration {
    let ns = u128::try_from(ns).unwrap_or(0);
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits.
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

/// Parses a Go duration string (`time.ParseDuration`): an optional sign, then
/// one or more decimal numbers, each with an optional fraction and a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed. Returns
/// nanoseconds.
fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    const MAX_NS: i128 = i64::MAX as i128;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            other => {
                return Err(format!("time: unknown unit {other:?} in duration {text:?}"));
            }
        };
        let int_value: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 20 {
            return Err(invalid());
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = int_value.checked_mul(scale).ok_or_else(invalid)?;
        // Fraction: keep at most 20 digits, enough for nanosecond precision.
        let frac_digits = &frac_part[..frac_part.len().min(20)];
        if !frac_digits.is_empty() {
            let f: i128 = frac_digits.parse().map_err(|_| invalid())?;
            let denom = 10i128.pow(frac_digits.len() as u32);
            value += f * scale / denom;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > MAX_NS {
            return Err(invalid());
        }
    }
    Ok(if negative { -total } else { total })
}

/// Refuses a resource listed after an earlier entry's wildcard covering it,
/// as upstream does when building its transformers.
fn check_masking(entries: &[ResourceConfig]) -> Result<(), ConfigError> {
    let mut seen: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::any();
    for entry in entries {
        let mut this_entry = Vec::new();
        for res in &entry.resources {
            let gr = GroupResource::parse(res);
            let group_rule = GroupResource {
                group: gr.group.clone(),
                resource: "*".to_owned(),
            };
            for rule in [&group_rule, &any] {
                if seen.contains(rule) {
                    return Err(ConfigError::Masked {
                        resource: gr.yaml_string(),
                        rule: rule.yaml_string(),
                    });
                }
            }
            this_entry.push(gr);
        }
        seen.extend(this_entry);
    }
    Ok(())
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

    const K16: &str = "qRGwRx4KK0MkLWtofcOcpQ=="; // 16 bytes
    const K24: &str = "uiTOdiVLC5yttc/UbGPe0gDHP2CWkw9e"; // 24 bytes
    const K32: &str = "Q+yhvNRa4jPp/1hjT5yYv9r3NHrdsznnIFgDjBiI1EA="; // 32 bytes

    fn doc(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n{providers}"
        )
    }

    fn invalid(text: &str) -> FieldErrors {
        match EncryptionConfiguration::parse(text) {
            Err(ConfigError::Invalid(e)) => e,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    fn assert_no_key_material(msg: &str) {
        for k in [K16, K24, K32, "c2hvcnQ=", "not-base64!!"] {
            assert!(!msg.contains(k), "key material leaked in: {msg}");
        }
    }

    #[test]
    fn parses_every_provider_kind_in_order() {
        let text = doc(&format!(
            "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {K32}\n      - name: k0\n        secret: {K16}\n  - aescbc:\n      keys:\n      - name: c1\n        secret: {K24}\n  - secretbox:\n      keys:\n      - name: s1\n        secret: {K32}\n  - kms:\n      apiVersion: v2\n      name: plugin\n      endpoint: unix:///run/kms.sock\n      timeout: 1m30s\n  - identity: {{}}\n"
        ));
        let cfg = EncryptionConfiguration::parse(&text).unwrap();
        let providers = cfg.secrets_providers().unwrap();
        let kinds: Vec<ProviderKind> = providers.iter().map(|p| p.kind()).collect();
        assert_eq!(
            kinds,
            [
                ProviderKind::AesGcm,
                ProviderKind::AesCbc,
                ProviderKind::Secretbox,
                ProviderKind::KmsV2,
                ProviderKind::Identity
            ]
        );
        let names: Vec<&str> = providers[0].keys().iter().map(|k| k.name()).collect();
        assert_eq!(names, ["k1", "k0"]);
        assert_eq!(providers[0].keys()[1].bits(), 128);
        assert_eq!(providers[1].keys()[0].bits(), 192);
        match providers[3] {
            ProviderConfig::Kms { config, cache_size } => {
                assert_eq!(config.name, "plugin");
                assert_eq!(config.api_version, "v2");
                assert_eq!(config.endpoint, "unix:///run/kms.sock");
                assert_eq!(config.timeout, Duration::from_secs(90));
                assert_eq!(*cache_size, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_output_redacts_keys() {
        let cfg = EncryptionConfiguration::parse(&doc(&format!(
            "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {K32}\n"
        )))
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("k1"));
        assert!(dbg.contains("redacted"));
        let key = cfg.secrets_providers().unwrap()[0].keys()[0]
            .expose_secret()
            .to_vec();
        assert_eq!(key.len(), 32);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&hex));
        assert!(!dbg.contains(&format!("{:?}", key)));
    }

    #[test]
    fn json_is_accepted() {
        let json = format!(
            r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["secrets"],"providers":[{{"secretbox":{{"keys":[{{"name":"s","secret":"{K32}"}}]}}}},{{"identity":{{}}}}]}}]}}"#
        );
        let cfg = EncryptionConfiguration::parse(&json).unwrap();
        assert_eq!(cfg.secrets_providers().unwrap().len(), 2);
    }

    #[test]
    fn kms_defaults_follow_upstream() {
        let cfg = EncryptionConfiguration::parse(&doc(
            "  - kms:\n      name: old\n      endpoint: unix:///tmp/old.sock\n",
        ))
        .unwrap();
        match cfg.secrets_providers().unwrap()[0] {
            ProviderConfig::Kms { config, cache_size } => {
                assert_eq!(config.api_version, "v1");
                assert_eq!(config.timeout, DEFAULT_KMS_TIMEOUT);
                assert_eq!(*cache_size, Some(DEFAULT_KMS_V1_CACHE_SIZE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cfg.secrets_providers().unwrap()[0].kind(),
            ProviderKind::KmsV1
        );
    }

    #[test]
    fn wrong_key_length_names_the_field_and_redacts() {
        let e = invalid(&doc(&format!(
            "  - identity: {{}}\n  - aesgcm:\n      keys:\n      - name: k\n        secret: {}\n",
            "MDEyMzQ1Njc4OQ=="
        )));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[1].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 10, expected one of [16 24 32]"#
        );
    }

    #[test]
    fn secretbox_needs_32_bytes() {
        let e = invalid(&doc(&format!(
            "  - secretbox:\n      keys:\n      - name: k\n        secret: {K16}\n"
        )));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].secretbox.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 16, expected one of [32]"#
        );
        assert_no_key_material(&e.to_string());
    }

    #[test]
    fn bad_base64_is_refused_without_echo() {
        let e = invalid(&doc(
            "  - aescbc:\n      keys:\n      - name: k\n        secret: not-base64!!\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secrets must be base64 encoded"#
        );
        // Unpadded base64 is refused too (Go's StdEncoding wants padding).
        let e = invalid(&doc(
            "  - aescbc:\n      keys:\n      - name: k\n        secret: qRGwRx4KK0MkLWtofcOcpQ\n",
        ));
        assert!(e.to_string().contains("secrets must be base64 encoded"));
    }

    #[test]
    fn key_name_rules() {
        let e = invalid(&doc(&format!(
            "  - aesgcm:\n      keys:\n      - secret: {K16}\n      - name: a:b\n        secret: {K16}\n      - name: x\n        secret: {K16}\n      - name: x\n        secret: {K32}\n"
        )));
        let s = e.to_string();
        assert!(s.contains("resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key"), "{s}");
        assert!(s.contains(r#"resources[0].providers[0].aesgcm.keys[1].name: Invalid value: "a:b": key names must not contain ':'"#), "{s}");
        assert!(
            s.contains(r#"resources[0].providers[0].aesgcm.keys[3].name: Duplicate value: "x""#),
            "{s}"
        );
        assert_no_key_material(&s);
    }

    #[test]
    fn missing_secret_and_missing_keys() {
        let e = invalid(&doc("  - aesgcm:\n      keys:\n      - name: k\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].aesgcm.keys[0].secret: Required value: secret is a mandatory field for a key"
        );
        let e = invalid(&doc("  - aescbc:\n      keys: []\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required"
        );
    }

    #[test]
    fn exactly_one_provider_per_entry() {
        let e = invalid(&doc(&format!(
            "  - identity: {{}}\n    aesgcm:\n      keys:\n      - name: k\n        secret: {K16}\n"
        )));
        assert!(e.to_string().contains("resources[0].providers[0]: Invalid value: [aesgcm identity]: more than one provider specified in a single element, should split into different list elements"), "{e}");
        let e = invalid(&doc("  - {}\n"));
        assert!(
            e.to_string()
                .contains("provider does not contain any of the expected providers")
        );
    }

    #[test]
    fn kms_rules() {
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: a:b\n      endpoint: unix:///x\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.name: Invalid value: "a:b": invalid KMS provider name a:b, must not contain ':'"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///y\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[1].kms.name: Invalid value: "p": duplicate KMS provider name p, names must be unique"#
        );
        let e = invalid(&doc("  - kms:\n      apiVersion: v2\n      name: p\n"));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.endpoint: Invalid value: "": endpoint is a mandatory field for a kms"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: tcp://127.0.0.1:1\n",
        ));
        assert!(
            e.to_string()
                .contains(r#"unsupported scheme "tcp" for KMS provider, only unix is supported"#),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: 0s\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.timeout: Invalid value: "0s": timeout should be a positive value"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: -3s\n",
        ));
        assert!(e.to_string().contains("timeout should be a positive value"));
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: soon\n",
        ));
        assert!(
            e.to_string().contains(r#"time: invalid duration "soon""#),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      cachesize: 100\n",
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].kms.cachesize: Invalid value: 100: cachesize is not supported in v2"
        );
        let e = invalid(&doc(
            "  - kms:\n      name: p\n      endpoint: unix:///x\n      cachesize: 0\n",
        ));
        assert!(
            e.to_string()
                .contains("cachesize should be a positive value, or negative to disable")
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v3\n      name: p\n      endpoint: unix:///x\n",
        ));
        assert!(
            e.to_string()
                .contains("kms.apiVersion: Invalid value: \"v3\""),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      endpoint: unix:///x\n",
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].kms.name: Required value: name is a mandatory field for a provider"
        );
    }

    #[test]
    fn resource_rules() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let e = invalid(&format!("{base}resources: []\n"));
        assert_eq!(
            e.to_string(),
            "resources: Required value: at least one resources is required"
        );
        let e = invalid(&format!(
            "{base}resources:\n- providers:\n  - identity: {{}}\n"
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].resources: Required value: at least one resources[0].resources is required"
        );
        let e = invalid(&format!("{base}resources:\n- resources: [secrets]\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers: Required value: at least one resources[0].providers is required"
        );
        for (res, msg) in [
            (
                "Secrets",
                "resource name should not contain capital letters",
            ),
            ("'*'", "use '*.' to encrypt all the resources"),
            (
                "serviceipallocations",
                "resources which do not have REST API/s",
            ),
            (
                "events.events.k8s.io",
                "objects are stored using the 'events' API group",
            ),
            (
                "deployments.extensions",
                "'extensions' group has been removed",
            ),
            (
                "secrets.*",
                "encrypting the same resource across groups is not supported",
            ),
        ] {
            let e = invalid(&format!(
                "{base}resources:\n- resources: [{res}]\n  providers:\n  - identity: {{}}\n"
            ));
            assert!(
                e.to_string()
                    .contains("resources[0].resources[0]: Invalid value"),
                "{e}"
            );
            assert!(e.to_string().contains(msg), "{res}: {e}");
        }
        let e = invalid(&format!(
            "{base}resources:\n- resources: [secrets, secrets]\n  providers:\n  - identity: {{}}\n"
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].resources: Invalid value: []string{"secrets", "secrets"}: the same resource cannot be specified multiple times"#
        );
        let e = invalid(&format!(
            "{base}resources:\n- resources: [secrets, '*.']\n  providers:\n  - identity: {{}}\n"
        ));
        assert!(e.to_string().contains("using overlapping resources"), "{e}");
    }

    #[test]
    fn secrets_lookup_follows_upstream() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let gcm = format!("  - aesgcm:\n      keys:\n      - name: g\n        secret: {K16}\n");
        let sb = format!("  - secretbox:\n      keys:\n      - name: s\n        secret: {K32}\n");
        // Exact match wins over a later wildcard.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [configmaps]\n  providers:\n  - identity: {{}}\n- resources: [secrets]\n  providers:\n{gcm}- resources: ['*.']\n  providers:\n{sb}"
        ))
        .unwrap();
        let p = cfg.secrets_providers().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind(), ProviderKind::AesGcm);
        assert_eq!(
            cfg.providers_for("pods").unwrap()[0].kind(),
            ProviderKind::Secretbox
        );
        assert!(cfg.providers_for("deployments.apps").is_none());
        // Core wildcard and any-any wildcard.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: ['*.*']\n  providers:\n{sb}"
        ))
        .unwrap();
        assert_eq!(
            cfg.secrets_providers().unwrap()[0].kind(),
            ProviderKind::Secretbox
        );
        // Two entries naming secrets: providers are concatenated.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [secrets]\n  providers:\n{gcm}- resources: [secrets]\n  providers:\n  - identity: {{}}\n"
        ))
        .unwrap();
        let kinds: Vec<_> = cfg
            .secrets_providers()
            .unwrap()
            .iter()
            .map(|p| p.kind())
            .collect();
        assert_eq!(kinds, [ProviderKind::AesGcm, ProviderKind::Identity]);
        // No rule for secrets: None (the apiserver would store plaintext).
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [configmaps]\n  providers:\n{gcm}"
        ))
        .unwrap();
        assert!(cfg.secrets_providers().is_none());
    }

    #[test]
    fn masking_is_refused() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let err = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: ['*.']\n  providers:\n  - identity: {{}}\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"resource "secrets" is masked by earlier rule "*.""#
        );
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

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        std::fs::write(
            &path,
            doc(&format!(
                "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}\n"
            )),
        )
        .unwrap();
        let cfg = EncryptionConfiguration::load(&path).unwrap();
        assert_eq!(cfg.resources().len(), 1);
        let missing = EncryptionConfiguration::load(dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Io { .. }));
        assert!(missing.to_string().contains("nope.yaml"));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            EncryptionConfiguration::load(&path).unwrap_err(),
            ConfigError::Empty
        ));
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("3s"), 3_000_000_000);
        assert_eq!(ok("1m30s"), 90_000_000_000);
        assert_eq!(ok("1.5h"), 5_400_000_000_000);
        assert_eq!(ok("500ms"), 500_000_000);
        assert_eq!(ok("10us"), 10_000);
        assert_eq!(ok("10µs"), 10_000);
        assert_eq!(ok(".5s"), 500_000_000);
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("-2s"), -2_000_000_000);
        for bad in [
            "",
            "3",
            "s",
            "3x",
            "-",
            ".s",
            "1.2.3s",
            "99999999999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

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

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = EncryptionConfiguration::parse(&s);
        }

        #[test]
        fn mutated_configs_never_panic(at in 0usize..400, cut in 0usize..12, junk in "\\PC{0,12}") {
            let text = doc(&format!(
                "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}\n  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: 3s\n  - identity: {{}}\n"
            ));
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mutated = format!("{}{junk}{}", &text[..at], &text[end..]);
            if let Err(e) = EncryptionConfiguration::parse(&mutated) {
                proptest::prop_assert!(!e.to_string().contains(K32), "{}", e);
            }
        }

        #[test]
        fn durations_never_panic(s in "[-+0-9.nsuµmh]{0,30}") {
            let _ = parse_go_duration(&s);
        }
    }
}
