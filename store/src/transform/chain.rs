//! The provider chain: what kube-apiserver's prefix transformer does with
//! the providers of an EncryptionConfiguration.
//!
//! - The chain holds one [`Transformer`] per provider *key*, in provider
//!   order and, within a provider, key order (kms and identity count as one
//!   key each).
//! - [`seal`](TransformerChain::seal) always uses the first.
//! - [`open`](TransformerChain::open) tries, in order, every transformer
//!   whose prefix matches; a failure does not stop the search (two providers
//!   of one type may share a key name during a rotation, as upstream
//!   allows). The result is *stale* when it was opened by any transformer
//!   but the first, or when the transformer itself says so (kms: another
//!   key_id).
//! - Writing plaintext is refused unless explicitly allowed
//!   ([`with_plaintext_allowed`](TransformerChain::with_plaintext_allowed)).
//!
//! The chain does not depend on the kms module: [`TransformerChain::from_config`]
//! takes a factory that builds the KMS v2 transformer of a `kms:` entry.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use secret_store::encryption_config::EncryptionConfiguration;
//! # use secret_store::transform::{TransformError, Transformer};
//! # use secret_store::transform::chain::TransformerChain;
//! # fn connect(_: &secret_store::encryption_config::KmsProviderConfig)
//! #     -> Result<Arc<dyn Transformer>, TransformError> { unimplemented!() }
//! let cfg = EncryptionConfiguration::load("/etc/kubernetes/enc.yaml")?;
//! let chain = TransformerChain::from_config(&cfg, &mut |kms| connect(kms))?;
//! let stored = chain.seal(b"...", "/registry/secrets/default/db")?;
//! let opened = chain.open(&stored, "/registry/secrets/default/db")?;
//! assert!(!opened.stale);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use super::identity::IdentityTransformer;
use super::{ENCRYPTED_PREFIX, EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::encryption_config::{EncryptionConfiguration, KmsProviderConfig, ProviderConfig};

/// Builds the KMS v2 transformer for a `kms:` entry (connects to the plugin).
pub type KmsFactory<'a> =
    dyn FnMut(&KmsProviderConfig) -> Result<Arc<dyn Transformer>, TransformError> + 'a;

/// Why KMS v1 cannot be used, for every message that mentions it.
pub const KMS_V1_NOTE: &str = "KMS v1 is deprecated and disabled by default since Kubernetes 1.29 (feature gate KMSv1); secret-store can neither write nor read KMS v1 values (prefix k8s:enc:kms:v1:<name>:). Migrate first: with a kube-apiserver that still has KMSv1 enabled, put a `kms` provider with `apiVersion: v2` first and rewrite every secret";

/// What the refusal to write plaintext says.
pub const PLAINTEXT_REFUSED: &str = "the encryption configuration would write secrets unencrypted (its first provider for secrets is identity, or it has no rule for secrets); configure an encrypting provider first (kms apiVersion v2, or aesgcm, secretbox, aescbc), or explicitly allow writing plaintext";

/// The ordered transformers of one resource's providers.
pub struct TransformerChain {
    transformers: Vec<Arc<dyn Transformer>>,
    allow_plaintext: bool,
    uncovered: bool,
}

impl std::fmt::Debug for TransformerChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformerChain")
            .field("providers", &self.describe())
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl TransformerChain {
    /// A chain of the given transformers, in order (the first writes).
    pub fn new(transformers: Vec<Arc<dyn Transformer>>) -> Result<Self, TransformError> {
        if transformers.is_empty() {
            return Err(TransformError::Config(
                "a provider chain needs at least one provider".to_owned(),
            ));
        }
        Ok(TransformerChain {
            transformers,
            allow_plaintext: false,
            uncovered: false,
        })
    }

    /// The chain kube-apiserver would use for Secrets with this
    /// configuration. `kms` is called once per `kms` entry with
    /// `apiVersion: v2`, in order. KMS v1 entries are never passed to it:
    /// they become a placeholder that refuses to write or read, saying why
    /// ([`KMS_V1_NOTE`]). Without a rule for `secrets`, the chain is
    /// identity alone, as upstream.
    pub fn from_config(
        cfg: &EncryptionConfiguration,
        kms: &mut KmsFactory<'_>,
    ) -> Result<Self, TransformError> {
        Self::for_resource(cfg, crate::encryption_config::SECRETS_RESOURCE, kms)
    }

    /// As [`from_config`](Self::from_config) for any resource (`secrets`,
    /// `configmaps`, `deployments.apps`).
    pub fn for_resource(
        cfg: &EncryptionConfiguration,
        resource: &str,
        kms: &mut KmsFactory<'_>,
    ) -> Result<Self, TransformError> {
        match cfg.providers_for(resource) {
            Some(providers) => Self::from_providers(providers, kms),
            None => {
                let mut chain = Self::new(vec![Arc::new(IdentityTransformer::new())])?;
                chain.uncovered = true;
                Ok(chain)
            }
        }
    }

    /// As [`from_config`](Self::from_config), for tools that have no KMS
    /// plugin at hand: a `kms` v2 entry is an error.
    pub fn from_config_without_kms(cfg: &EncryptionConfiguration) -> Result<Self, TransformError> {
        Self::from_config(cfg, &mut |k: &KmsProviderConfig| {
            Err(TransformError::Config(format!(
                "kms provider {:?} needs a KMS v2 plugin connection, which this command does not make",
                k.name
            )))
        })
    }

    /// A chain of the given providers, in order.
    pub fn from_providers<'p>(
        providers: impl IntoIterator<Item = &'p ProviderConfig>,
        kms: &mut KmsFactory<'_>,
    ) -> Result<Self, TransformError> {
        let mut out: Vec<Arc<dyn Transformer>> = Vec::new();
        for p in providers {
            match p {
                ProviderConfig::Keys { kind, keys } => {
                    let local = kind.row().local.as_ref().ok_or_else(|| {
                        TransformError::Config(format!("{kind} is not a provider with keys"))
                    })?;
                    for k in keys {
                        out.push((local.build)(k.name(), k.expose_secret())?);
                    }
                }
                ProviderConfig::Identity => out.push(Arc::new(IdentityTransformer::new())),
                ProviderConfig::Kms { config, .. } if config.api_version == "v1" => {
                    out.push(Arc::new(KmsV1Unsupported::new(&config.name)));
                }
                ProviderConfig::Kms { config, .. } => {
                    let t = kms(config)?;
                    let expected = format!("{}{}:", ProviderKind::KmsV2.prefix(), config.name);
                    if t.prefix() != expected.as_bytes() {
                        return Err(TransformError::Config(format!(
                            "the transformer built for kms provider {:?} writes prefix {:?}, expected {expected:?}",
                            config.name,
                            String::from_utf8_lossy(t.prefix())
                        )));
                    }
                    out.push(t);
                }
            }
        }
        Self::new(out)
    }

    /// Allows (or not) sealing when the first provider is identity. Off by
    /// default: writing Secrets in plaintext must be asked for explicitly.
    #[must_use]
    pub fn with_plaintext_allowed(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Whether plaintext writes were explicitly allowed.
    pub fn plaintext_allowed(&self) -> bool {
        self.allow_plaintext
    }

    /// Whether [`seal`](Self::seal) writes unencrypted values (the first
    /// provider is identity).
    pub fn writes_plaintext(&self) -> bool {
        self.first_kind() == ProviderKind::Identity
    }

    /// The transformers, in the order they are tried.
    pub fn transformers(&self) -> &[Arc<dyn Transformer>] {
        &self.transformers
    }

    /// The transformer that writes.
    pub fn first(&self) -> &dyn Transformer {
        &*self.transformers[0]
    }

    /// The kind of the transformer that writes.
    pub fn first_kind(&self) -> ProviderKind {
        self.first().kind()
    }

    /// The provider that writes, e.g. `aesgcm:key2`.
    pub fn describe_writer(&self) -> String {
        describe_one(self.first())
    }

    /// The transformers in order, e.g. `aesgcm:key2, aesgcm:key1, identity`.
    pub fn describe(&self) -> String {
        let items: Vec<String> = self
            .transformers
            .iter()
            .map(|t| describe_one(&**t))
            .collect();
        items.join(", ")
    }

    /// Things an operator should know about this chain, one sentence each
    /// (plaintext writes, aescbc, aesgcm rotation, KMS v1).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.uncovered {
            w.push("the encryption configuration has no rule covering this resource: values are stored unencrypted".to_owned());
        } else if self.writes_plaintext() {
            w.push("the first provider is identity: values are written unencrypted".to_owned());
        }
        let kinds: Vec<ProviderKind> = self.transformers.iter().map(|t| t.kind()).collect();
        if kinds.contains(&ProviderKind::AesCbc) {
            w.push("aescbc is not recommended (no authentication, open to padding-oracle attacks): migrate to kms v2, secretbox or aesgcm".to_owned());
        }
        if kinds[0] == ProviderKind::AesGcm {
            w.push("aesgcm uses random nonces: rotate its key often (the Kubernetes documentation says every 200,000 writes)".to_owned());
        }
        if kinds.contains(&ProviderKind::KmsV1) {
            w.push(KMS_V1_NOTE.to_owned());
        }
        w
    }

    /// Seals `plaintext` for `etcd_key` with the first transformer. Refused
    /// when that is identity and plaintext was not explicitly allowed.
    pub fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        if self.writes_plaintext() && !self.allow_plaintext {
            return Err(TransformError::WriteRefused(PLAINTEXT_REFUSED.to_owned()));
        }
        self.first().seal(plaintext, etcd_key)
    }

    /// Opens a stored value: every transformer whose prefix matches is
    /// tried in order; the first success wins and is stale unless it came
    /// from the first transformer (or the transformer says so). When all
    /// matching transformers fail, the first failure is returned; when none
    /// matches, [`TransformError::NoMatchingProvider`].
    pub fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        let mut first_err = None;
        for (i, t) in self.transformers.iter().enumerate() {
            if !t.matches(stored) {
                continue;
            }
            match t.open(stored, etcd_key) {
                Ok(mut opened) => {
                    opened.stale |= i != 0;
                    return Ok(opened);
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| self.no_match(stored, etcd_key)))
    }

    /// Reads a stored value's public facts without decrypting: through the
    /// first transformer whose prefix matches or, for a value of a provider
    /// that is not configured, from its prefix alone.
    pub fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        if let Some(t) = self.transformers.iter().find(|t| t.matches(stored)) {
            return t.inspect(stored, etcd_key);
        }
        match parse_envelope_prefix(stored) {
            Some(EnvelopePrefix {
                kind: Some(kind),
                name,
                ..
            }) => Ok(EnvelopeInfo::from_prefix(kind, name, stored.len())),
            _ => Err(self.no_match(stored, etcd_key)),
        }
    }

    /// Whether `stored` would be rewritten by a rewrap, judged without
    /// decrypting: it matches a provider other than the first, or the first
    /// says it is not current (kms v2: another key_id or the legacy mode).
    pub fn is_stale(&self, stored: &[u8], etcd_key: &str) -> Result<bool, TransformError> {
        match self.transformers.iter().position(|t| t.matches(stored)) {
            Some(0) => Ok(!self.transformers[0].is_current(stored)),
            Some(_) => Ok(true),
            None => Err(self.no_match(stored, etcd_key)),
        }
    }

    fn no_match(&self, stored: &[u8], etcd_key: &str) -> TransformError {
        TransformError::NoMatchingProvider {
            etcd_key: etcd_key.to_owned(),
            prefix: printable_prefix(stored),
            configured: self.describe(),
        }
    }
}

impl Transformer for TransformerChain {
    fn kind(&self) -> ProviderKind {
        self.first_kind()
    }
    fn name(&self) -> &str {
        self.first().name()
    }
    fn prefix(&self) -> &[u8] {
        self.first().prefix()
    }
    fn matches(&self, stored: &[u8]) -> bool {
        self.transformers.iter().any(|t| t.matches(stored))
    }
    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        TransformerChain::seal(self, plaintext, etcd_key)
    }
    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        TransformerChain::open(self, stored, etcd_key)
    }
    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        TransformerChain::inspect(self, stored, etcd_key)
    }
}

fn describe_one(t: &dyn Transformer) -> String {
    match t.kind() {
        ProviderKind::Identity => "identity".to_owned(),
        ProviderKind::KmsV1 => format!("kms-v1:{} (unsupported)", t.name()),
        kind => format!("{kind}:{}", t.name()),
    }
}

/// The envelope prefix of a stored value:
/// `k8s:enc:<type>:<version>:<name>:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopePrefix {
    /// The provider kind, when `<type>:<version>` is one we know.
    pub kind: Option<ProviderKind>,
    /// `<name>` (lossy UTF-8).
    pub name: String,
    /// The prefix length in bytes, trailing `:` included.
    pub len: usize,
}

/// Parses the envelope prefix of a stored value, if it has one. Only the
/// public prefix is read.
pub fn parse_envelope_prefix(stored: &[u8]) -> Option<EnvelopePrefix> {
    let rest = stored.strip_prefix(ENCRYPTED_PREFIX)?;
    // <type>:<version>:<name>: within a sane length.
    let window = &rest[..rest.len().min(512)];
    let mut parts = window.splitn(4, |b| *b == b':');
    let ty = parts.next()?;
    let version = parts.next()?;
    let name = parts.next()?;
    parts.next()?; // the name must be followed by ':'
    // `k8s:enc:<type>:<version>:`, looked up in the provider table.
    let kind_prefix = ENCRYPTED_PREFIX.len() + ty.len() + version.len() + 2;
    let kind = ProviderKind::from_prefix(&stored[..kind_prefix]);
    Some(EnvelopePrefix {
        kind,
        name: String::from_utf8_lossy(name).into_owned(),
        len: ENCRYPTED_PREFIX.len() + ty.len() + version.len() + name.len() + 3,
    })
}

/// The printable envelope prefix of a value for error messages: up to the
/// `:` after the name, at most 64 characters, non-printable bytes as `.`.
/// Never any of the payload: an unencrypted value shows no bytes at all.
fn printable_prefix(stored: &[u8]) -> String {
    if !stored.starts_with(ENCRYPTED_PREFIX) {
        return "(none: an unencrypted value)".to_owned();
    }
    let end = parse_envelope_prefix(stored).map_or(ENCRYPTED_PREFIX.len(), |p| p.len);
    stored[..end.min(64)]
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect()
}

/// A KMS v1 entry: recognised so that its values are named correctly, but
/// neither writes nor reads ([`KMS_V1_NOTE`]).
struct KmsV1Unsupported {
    name: String,
    prefix: Vec<u8>,
}

impl KmsV1Unsupported {
    fn new(name: &str) -> Self {
        KmsV1Unsupported {
            name: name.to_owned(),
            prefix: format!("{}{name}:", ProviderKind::KmsV1.prefix()).into_bytes(),
        }
    }
}

impl Transformer for KmsV1Unsupported {
    fn kind(&self) -> ProviderKind {
        ProviderKind::KmsV1
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn prefix(&self) -> &[u8] {
        &self.prefix
    }
    fn seal(&self, _: &[u8], _: &str) -> Result<Vec<u8>, TransformError> {
        Err(TransformError::WriteRefused(format!(
            "kms provider {:?} uses apiVersion v1: {KMS_V1_NOTE}",
            self.name
        )))
    }
    fn open(&self, _: &[u8], _: &str) -> Result<Opened, TransformError> {
        Err(TransformError::Kms {
            provider: self.name.clone(),
            reason: KMS_V1_NOTE.to_owned(),
        })
    }
    fn inspect(&self, stored: &[u8], _: &str) -> Result<EnvelopeInfo, TransformError> {
        Ok(EnvelopeInfo::from_prefix(
            ProviderKind::KmsV1,
            self.name.clone(),
            stored.len(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/registry/secrets/default/db";
    const K16: &str = "qRGwRx4KK0MkLWtofcOcpQ==";
    const K32A: &str = "Q+yhvNRa4jPp/1hjT5yYv9r3NHrdsznnIFgDjBiI1EA=";
    const K32B: &str = "ViJzOs0J2x8Caoi8IvoXRxCAwhijnJQ6jeSKI3e7dqw=";

    fn cfg(providers: &str) -> EncryptionConfiguration {
        EncryptionConfiguration::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    fn chain(providers: &str) -> TransformerChain {
        TransformerChain::from_config_without_kms(&cfg(providers)).unwrap()
    }

    fn gcm(keys: &[(&str, &str)]) -> String {
        let mut s = "  - aesgcm:\n      keys:\n".to_owned();
        for (n, k) in keys {
            s += &format!("      - name: {n}\n        secret: {k}\n");
        }
        s
    }

    #[test]
    fn order_is_provider_then_key() {
        let c = chain(&format!(
            "{}  - secretbox:\n      keys:\n      - name: s1\n        secret: {K32A}\n  - identity: {{}}\n",
            gcm(&[("g2", K16), ("g1", K32A)])
        ));
        assert_eq!(c.describe(), "aesgcm:g2, aesgcm:g1, secretbox:s1, identity");
        assert_eq!(c.first_kind(), ProviderKind::AesGcm);
        assert_eq!(c.transformers().len(), 4);
    }

    #[test]
    fn staleness_follows_position() {
        let old = chain(&gcm(&[("g1", K32A)]));
        let sealed_old = old.seal(b"v", KEY).unwrap();
        // Rotation: new key first, old second.
        let rotated = chain(&gcm(&[("g2", K32B), ("g1", K32A)]));
        let o = rotated.open(&sealed_old, KEY).unwrap();
        assert_eq!(&o.plaintext[..], b"v");
        assert!(o.stale);
        let fresh = rotated.seal(b"v", KEY).unwrap();
        assert!(fresh.starts_with(b"k8s:enc:aesgcm:v1:g2:"));
        assert!(!rotated.open(&fresh, KEY).unwrap().stale);
    }

    #[test]
    fn identity_later_in_the_list_reads_plaintext_as_stale() {
        let c = chain(&format!("{}  - identity: {{}}\n", gcm(&[("g1", K32A)])));
        let o = c.open(b"{\"kind\":\"Secret\"}", KEY).unwrap();
        assert!(o.stale);
        assert_eq!(&o.plaintext[..], b"{\"kind\":\"Secret\"}");
    }

    #[test]
    fn identity_first_reads_encrypted_values_through_later_providers() {
        // Migrating away from encryption: identity first, aesgcm second.
        let enc = chain(&gcm(&[("g1", K32A)]));
        let sealed = enc.seal(b"v", KEY).unwrap();
        let c = chain(&format!("  - identity: {{}}\n{}", gcm(&[("g1", K32A)])))
            .with_plaintext_allowed(true);
        let o = c.open(&sealed, KEY).unwrap();
        assert!(o.stale);
        assert_eq!(c.seal(b"v", KEY).unwrap(), b"v");
        assert!(!c.open(b"v", KEY).unwrap().stale);
    }

    #[test]
    fn same_key_name_in_two_providers_tries_both() {
        let c = chain(&format!("{}{}", gcm(&[("k", K32B)]), gcm(&[("k", K32A)])));
        let sealed = chain(&gcm(&[("k", K32A)])).seal(b"v", KEY).unwrap();
        let o = c.open(&sealed, KEY).unwrap();
        assert!(o.stale);
        assert_eq!(&o.plaintext[..], b"v");
    }

    #[test]
    fn plaintext_writes_need_explicit_consent() {
        let c = chain("  - identity: {}\n");
        assert!(c.writes_plaintext());
        let err = c.seal(b"v", KEY).unwrap_err();
        assert!(matches!(err, TransformError::WriteRefused(_)), "{err:?}");
        assert!(err.to_string().contains("explicitly allow"));
        let c = c.with_plaintext_allowed(true);
        assert_eq!(c.seal(b"v", KEY).unwrap(), b"v");
        assert!(!c.warnings().is_empty());
    }

    #[test]
    fn no_rule_for_secrets_is_identity() {
        let cfg = EncryptionConfiguration::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [configmaps]\n  providers:\n{}",
            gcm(&[("g", K16)])
        ))
        .unwrap();
        let c = TransformerChain::from_config_without_kms(&cfg).unwrap();
        assert_eq!(c.describe(), "identity");
        assert!(c.seal(b"v", KEY).is_err());
        assert!(c.warnings()[0].contains("no rule"));
    }

    #[test]
    fn no_matching_provider_names_the_configuration() {
        let c = chain(&gcm(&[("g1", K32A)]));
        let err = c
            .open(b"k8s:enc:secretbox:v1:s9:\x00\x01\x02", KEY)
            .unwrap_err();
        match &err {
            TransformError::NoMatchingProvider {
                prefix, configured, ..
            } => {
                assert_eq!(prefix, "k8s:enc:secretbox:v1:s9:");
                assert_eq!(configured, "aesgcm:g1");
            }
            other => panic!("{other:?}"),
        }
        // A plaintext value read by an encrypting-only chain shows none of
        // its bytes.
        let err = c
            .open(b"{\"data\":{\"password\":\"aHVudGVyMg==\"}}", KEY)
            .unwrap_err();
        assert!(!err.to_string().contains("password"), "{err}");
        assert!(matches!(err, TransformError::NoMatchingProvider { .. }));
    }

    #[test]
    fn authentication_failure_is_reported_not_no_match() {
        let c = chain(&gcm(&[("g1", K32A)]));
        let mut sealed = c.seal(b"v", KEY).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            c.open(&sealed, KEY).unwrap_err(),
            TransformError::DecryptionFailed { .. }
        ));
    }

    #[test]
    fn inspect_without_keys() {
        let c = chain(&gcm(&[("g1", K32A)]));
        let sealed = c.seal(b"v", KEY).unwrap();
        let info = c.inspect(&sealed, KEY).unwrap();
        assert_eq!(info.provider_kind, ProviderKind::AesGcm);
        assert_eq!(info.provider_name, "g1");
        // A value of a provider that is not configured: named from its prefix.
        let info = c.inspect(b"k8s:enc:kms:v2:vault:\x0a\x01x", KEY).unwrap();
        assert_eq!(info.provider_kind, ProviderKind::KmsV2);
        assert_eq!(info.provider_name, "vault");
        assert!(c.inspect(b"plain", KEY).is_err());
        assert!(c.inspect(b"k8s:enc:rot13:v1:x:abc", KEY).is_err());
    }

    #[test]
    fn kms_entries_go_through_the_factory() {
        let cfg = cfg(
            "  - kms:\n      apiVersion: v2\n      name: vault\n      endpoint: unix:///run/kms.sock\n      timeout: 5s\n  - identity: {}\n",
        );
        let mut seen = Vec::new();
        let c = TransformerChain::from_config(&cfg, &mut |k: &KmsProviderConfig| {
            seen.push((k.name.clone(), k.timeout));
            Ok(
                Arc::new(FakeKms(format!("k8s:enc:kms:v2:{}:", k.name).into_bytes()))
                    as Arc<dyn Transformer>,
            )
        })
        .unwrap();
        assert_eq!(
            seen,
            [("vault".to_owned(), std::time::Duration::from_secs(5))]
        );
        assert_eq!(c.describe(), "kms-v2:vault, identity");
        // A factory that returns the wrong prefix is caught.
        let err = TransformerChain::from_config(&cfg, &mut |_: &KmsProviderConfig| {
            Ok(Arc::new(FakeKms(b"k8s:enc:kms:v2:other:".to_vec())) as Arc<dyn Transformer>)
        })
        .unwrap_err();
        assert!(matches!(err, TransformError::Config(_)));
        // Without a plugin: a clear error.
        let err = TransformerChain::from_config_without_kms(&cfg).unwrap_err();
        assert!(err.to_string().contains("vault"));
    }

    #[test]
    fn kms_v1_is_refused_with_a_note() {
        let c = chain(
            "  - kms:\n      name: legacy\n      endpoint: unix:///run/v1.sock\n  - identity: {}\n",
        );
        assert_eq!(c.first_kind(), ProviderKind::KmsV1);
        let err = c.seal(b"v", KEY).unwrap_err();
        assert!(matches!(err, TransformError::WriteRefused(_)));
        assert!(
            err.to_string()
                .contains("disabled by default since Kubernetes 1.29"),
            "{err}"
        );
        let err = c
            .open(b"k8s:enc:kms:v1:legacy:\x00\x10abc", KEY)
            .unwrap_err();
        assert!(matches!(err, TransformError::Kms { .. }));
        assert!(err.to_string().contains("neither write nor read"), "{err}");
        // Plaintext values are still read (by identity, stale).
        assert!(c.open(b"plain", KEY).unwrap().stale);
        assert!(c.warnings().iter().any(|w| w.contains("KMS v1")));
    }

    #[test]
    fn prefix_parsing() {
        let p = parse_envelope_prefix(b"k8s:enc:aesgcm:v1:key1:\x00rest").unwrap();
        assert_eq!(p.kind, Some(ProviderKind::AesGcm));
        assert_eq!(p.name, "key1");
        assert_eq!(p.len, "k8s:enc:aesgcm:v1:key1:".len());
        assert!(parse_envelope_prefix(b"k8s:enc:aesgcm:v1:key1").is_none());
        assert!(parse_envelope_prefix(b"plain").is_none());
        assert_eq!(parse_envelope_prefix(b"k8s:enc:x:y:z:").unwrap().kind, None);
    }

    /// Stands in for the KMS v2 transformer.
    struct FakeKms(Vec<u8>);
    impl Transformer for FakeKms {
        fn kind(&self) -> ProviderKind {
            ProviderKind::KmsV2
        }
        fn name(&self) -> &str {
            // k8s:enc:kms:v2:<name>:
            std::str::from_utf8(&self.0[15..self.0.len() - 1]).unwrap()
        }
        fn prefix(&self) -> &[u8] {
            &self.0
        }
        fn seal(&self, p: &[u8], _: &str) -> Result<Vec<u8>, TransformError> {
            Ok([self.0.as_slice(), p].concat())
        }
        fn open(&self, s: &[u8], _: &str) -> Result<Opened, TransformError> {
            Ok(Opened {
                plaintext: crate::wipe::Wiped::new(s[self.0.len()..].to_vec()),
                stale: true,
            })
        }
        fn inspect(&self, _: &[u8], _: &str) -> Result<EnvelopeInfo, TransformError> {
            unimplemented!()
        }
    }

    #[test]
    fn transformer_staleness_is_kept() {
        let c =
            TransformerChain::new(vec![Arc::new(FakeKms(b"k8s:enc:kms:v2:f:".to_vec()))]).unwrap();
        let sealed = c.seal(b"v", KEY).unwrap();
        assert!(c.open(&sealed, KEY).unwrap().stale);
        assert!(TransformerChain::new(vec![]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300), which in 0usize..4) {
            let prefixes: [&[u8]; 4] = [b"k8s:enc:aesgcm:v1:g1:", b"k8s:enc:aescbc:v1:c1:", b"k8s:enc:secretbox:v1:s1:", b""];
            let c = chain(&format!(
                "{}  - aescbc:\n      keys:\n      - name: c1\n        secret: {K32A}\n  - secretbox:\n      keys:\n      - name: s1\n        secret: {K32B}\n",
                gcm(&[("g1", K16)])
            ));
            let stored = [prefixes[which], &body].concat();
            let _ = c.open(&stored, KEY);
            let _ = c.inspect(&stored, KEY);
            let _ = parse_envelope_prefix(&stored);
        }
    }
}
