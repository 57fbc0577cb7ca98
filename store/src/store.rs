//! The store: what kube-apiserver's registry and storage layer do with a
//! Secret on every write and read, over any [`StorageEngine`].
//!
//! write: prepare (uid, creationTimestamp; on update what the stored object
//! has and the manifest leaves out) → validate → serialize (protobuf, as a
//! default kube-apiserver, or JSON with `--storage-media-type
//! application/json`) → seal with the first provider, the etcd key as
//! context → conditional put. An update whose bytes equal the stored
//! plaintext (and is not stale) writes nothing, as the apiserver's
//! `GuaranteedUpdate`.
//! read: get → open with whichever provider matches → decode (either
//! format) → the resourceVersion is the value's mod revision.
//! delete: a Secret with finalizers is only marked (`deletionTimestamp`,
//! grace period 0) and goes when an update removes the last finalizer.

use std::sync::Arc;
use std::time::SystemTime;

use crate::k8s::{InvalidError, new_uid};
use crate::secret::{self, Secret, StorageFormat, Warning};
use crate::stages::{self, Stage};
use crate::storage::{self, Precondition, StorageEngine, StorageError, Versioned};
use crate::transform::chain::TransformerChain;
use crate::transform::{EnvelopeInfo, TransformError};

/// kube-apiserver's default `--etcd-prefix`.
pub const DEFAULT_ETCD_PREFIX: &str = "/registry";

/// Every Secret lives under this prefix (with the default `--etcd-prefix`).
pub const SECRETS_PREFIX: &str = "/registry/secrets/";

/// The etcd key of a Secret (with the default `--etcd-prefix`).
pub fn etcd_key(namespace: &str, name: &str) -> String {
    format!("{SECRETS_PREFIX}{namespace}/{name}")
}

/// Splits an etcd key back into (namespace, name) (default `--etcd-prefix`).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(SECRETS_PREFIX)?.split_once('/')
}

/// Checks an `--etcd-prefix` and returns the Secrets prefix under it, as
/// kube-apiserver joins them (`path.Join(prefix, "secrets")` plus `/`):
/// `/registry` and `/registry/` give `/registry/secrets/`. The prefix must
/// be absolute; `/` alone puts Secrets under `/secrets/`.
pub fn secrets_prefix_for(etcd_prefix: &str) -> Result<String, String> {
    if !etcd_prefix.starts_with('/') {
        return Err(format!(
            "etcd-prefix={etcd_prefix:?} is not valid: it must start with / (kube-apiserver's default is {DEFAULT_ETCD_PREFIX})"
        ));
    }
    let p = etcd_prefix.trim_end_matches('/');
    if p.contains("//") || p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!(
            "etcd-prefix={etcd_prefix:?} is not valid: empty, . or .. path segments"
        ));
    }
    Ok(format!("{p}/secrets/"))
}

/// Why a store operation failed; messages follow kubectl's wording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such Secret.
    #[error("secrets \"{name}\" not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The object changed since it was read.
    #[error("Operation cannot be fulfilled on secrets \"{name}\": {reason}")]
    Conflict {
        /// Name.
        name: String,
        /// The apiserver's explanation.
        reason: String,
    },
    /// Validation failed.
    #[error("{0}")]
    Invalid(#[from] InvalidError),
    /// A create found the Secret already there.
    #[error("secrets \"{0}\" already exists")]
    AlreadyExists(String),
    /// A create carried a resourceVersion.
    #[error(
        "Secret \"{0}\" is invalid: metadata.resourceVersion: Invalid value: \"{1}\": must be empty on create (resourceVersion should not be set on objects to be created)"
    )]
    ResourceVersionOnCreate(String, String),
    /// Encryption or decryption failed.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The engine failed.
    #[error(transparent)]
    Storage(StorageError),
    /// The decrypted bytes are not a Secret.
    #[error("value at {key} decrypted but is not a Secret: {source}")]
    Decode {
        /// The etcd key.
        key: String,
        /// What is wrong.
        #[source]
        source: crate::secret::DecodeError,
    },
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError::Storage(e)
    }
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new Secret.
    Created,
    /// An existing Secret was replaced.
    Configured,
    /// Nothing changed (and the stored value was not stale).
    Unchanged,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        })
    }
}

/// The public facts about one stored value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// The etcd key.
    pub key: String,
    /// Envelope facts (provider, key_id, source type, annotations).
    pub envelope: EnvelopeInfo,
    /// Whether a rewrap would rewrite it.
    pub stale: bool,
    /// Its resourceVersion.
    pub mod_revision: u64,
}

/// A stored value opened and decoded.
pub struct Decoded {
    /// The Secret, its resourceVersion set.
    pub secret: Secret,
    /// Whether a rewrap would rewrite it (provider, key or key_id).
    pub stale: bool,
    /// The format of the plaintext inside the encryption.
    pub format: StorageFormat,
    /// The plaintext as stored (wiped on drop).
    pub plaintext: crate::wipe::Wiped<Vec<u8>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("secret", &self.secret)
            .field("stale", &self.stale)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A Secret store over an engine and a provider chain.
pub struct SecretStore {
    engine: Arc<dyn StorageEngine>,
    chain: Arc<TransformerChain>,
    /// `<etcd prefix>/secrets/`: keys, listings and the encryption context.
    secrets_prefix: String,
    /// What writes serialize to.
    format: StorageFormat,
}

impl SecretStore {
    /// A store writing through `chain` into `engine`.
    pub fn new(engine: Arc<dyn StorageEngine>, chain: Arc<TransformerChain>) -> Self {
        SecretStore {
            engine,
            chain,
            secrets_prefix: SECRETS_PREFIX.to_string(),
            format: StorageFormat::default(),
        }
    }

    /// The same store writing `format` (kube-apiserver's
    /// `--storage-media-type`; protobuf by default). Reads take either.
    #[must_use]
    pub fn with_storage_format(mut self, format: StorageFormat) -> Self {
        self.format = format;
        self
    }

    /// What writes serialize to.
    pub fn storage_format(&self) -> StorageFormat {
        self.format
    }

    /// The same store under another `--etcd-prefix` (as kube-apiserver's
    /// flag): keys become `<prefix>/secrets/<ns>/<name>`, and since the key
    /// is the encryption context, values are sealed for exactly that key.
    pub fn with_etcd_prefix(mut self, etcd_prefix: &str) -> Result<Self, String> {
        self.secrets_prefix = secrets_prefix_for(etcd_prefix)?;
        Ok(self)
    }

    /// Where this store's Secrets live: `<etcd prefix>/secrets/`.
    pub fn secrets_prefix(&self) -> &str {
        &self.secrets_prefix
    }

    /// The etcd key of a Secret in this store.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.secrets_prefix)
    }

    /// Splits one of this store's keys back into (namespace, name).
    pub fn split_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        key.strip_prefix(self.secrets_prefix.as_str())?
            .split_once('/')
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn StorageEngine> {
        &self.engine
    }

    /// The provider chain.
    pub fn chain(&self) -> &Arc<TransformerChain> {
        &self.chain
    }

    /// Opens and decodes a stored value.
    pub fn decode(&self, v: &Versioned) -> Result<(Secret, bool), StoreError> {
        let d = self.open(v)?;
        Ok((d.secret, d.stale))
    }

    /// Opens and decodes a stored value, keeping its format and plaintext.
    pub fn open(&self, v: &Versioned) -> Result<Decoded, StoreError> {
        let opened = stages::time(Stage::Transform, || self.chain.open(&v.value, &v.key))?;
        let bad = |source| StoreError::Decode {
            key: v.key.clone(),
            source,
        };
        let format = StorageFormat::detect(&opened.plaintext).map_err(bad)?;
        let mut secret = stages::time(Stage::Decode, || {
            Secret::from_storage_bytes(&opened.plaintext)
        })
        .map_err(bad)?;
        secret.metadata.resource_version = Some(v.mod_revision.to_string());
        Ok(Decoded {
            secret,
            stale: opened.stale,
            format,
            plaintext: opened.plaintext,
        })
    }

    /// Creates a Secret, as the apiserver's POST: prepare, validate,
    /// serialize, seal, put if absent. An existing Secret is a conflict.
    pub fn create(&self, mut s: Secret) -> Result<(Secret, Vec<Warning>), StoreError> {
        let key = self.key(&s.metadata.namespace, &s.metadata.name);
        if let Some(rv) = s
            .metadata
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            return Err(StoreError::ResourceVersionOnCreate(
                s.metadata.name.clone(),
                rv.to_string(),
            ));
        }
        let warnings = stages::time(Stage::Validate, || {
            secret::prepare_for_create(&mut s, new_uid(), SystemTime::now());
            secret::validate_create(&s)
        })?;
        let plain = stages::time(Stage::Encode, || s.to_storage_bytes(self.format));
        let sealed = stages::time(Stage::Transform, || self.chain.seal(&plain, &key))?;
        drop(plain);
        let rev = stages::time(Stage::Engine, || {
            self.engine.put(&key, &sealed, Precondition::Absent)
        })
        .map_err(|e| match e {
            StorageError::Conflict { .. } => StoreError::AlreadyExists(s.metadata.name.clone()),
            other => StoreError::Storage(other),
        })?;
        s.metadata.resource_version = Some(rev.to_string());
        Ok((s, warnings))
    }

    /// Creates or replaces a Secret, as `kubectl apply` (full replace).
    pub fn apply(&self, mut s: Secret) -> Result<(Applied, Secret, Vec<Warning>), StoreError> {
        let key = self.key(&s.metadata.namespace, &s.metadata.name);
        match self.engine.get(&key)? {
            None => {
                let (s, warnings) = self.create(s).map_err(|e| match e {
                    StoreError::AlreadyExists(name) => StoreError::Conflict {
                        name,
                        reason: MODIFIED.into(),
                    },
                    other => other,
                })?;
                Ok((Applied::Created, s, warnings))
            }
            Some(v) => {
                let stored = self.open(&v)?;
                let (old, stale) = (&stored.secret, stored.stale);
                if let Some(rv) = s
                    .metadata
                    .resource_version
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    && rv != v.mod_revision.to_string()
                {
                    return Err(StoreError::Conflict {
                        name: s.metadata.name.clone(),
                        reason: MODIFIED.into(),
                    });
                }
                secret::prepare_for_update(&mut s, old);
                s.metadata.resource_version = Some(v.mod_revision.to_string());
                let warnings = secret::validate_update(&s, old)?;
                if s.metadata.is_terminating() && s.metadata.finalizers().is_empty() {
                    // The last finalizer is gone: the pending delete happens.
                    self.engine
                        .delete(&key, Precondition::ModRevision(v.mod_revision))
                        .map_err(|e| self.conflict_or(e, &s.metadata.name))?;
                    return Ok((Applied::Configured, s, warnings));
                }
                let plain = s.to_storage_bytes(self.format);
                if !stale && *plain == *stored.plaintext {
                    return Ok((Applied::Unchanged, stored.secret, warnings));
                }
                let sealed = self.chain.seal(&plain, &key)?;
                let rev = self
                    .engine
                    .put(&key, &sealed, Precondition::ModRevision(v.mod_revision))
                    .map_err(|e| self.conflict_or(e, &s.metadata.name))?;
                s.metadata.resource_version = Some(rev.to_string());
                Ok((Applied::Configured, s, warnings))
            }
        }
    }

    fn conflict_or(&self, e: StorageError, name: &str) -> StoreError {
        match e {
            StorageError::Conflict { .. } => StoreError::Conflict {
                name: name.to_string(),
                reason: MODIFIED.into(),
            },
            other => StoreError::Storage(other),
        }
    }

    /// Reads one Secret.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Secret, StoreError> {
        let key = self.key(namespace, name);
        let v = stages::time(Stage::Engine, || self.engine.get(&key))?.ok_or_else(|| {
            StoreError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }
        })?;
        Ok(self.decode(&v)?.0)
    }

    /// Lists Secrets of one namespace, or of all.
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<Secret>, StoreError> {
        let prefix = match namespace {
            Some(ns) => format!("{}{ns}/", self.secrets_prefix),
            None => self.secrets_prefix.clone(),
        };
        let mut out = Vec::new();
        let mut err = None;
        storage::for_each(&*self.engine, &prefix, 500, |v| {
            match self.decode(&v) {
                Ok((s, _)) => out.push(s),
                Err(e) => {
                    if err.is_none() {
                        err = Some(e);
                    }
                }
            }
            Ok(())
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Deletes one Secret. One with finalizers is only marked, as the
    /// apiserver marks it (`deletionTimestamp` now, grace period 0); it goes
    /// when an update removes its last finalizer. A value that cannot be
    /// opened is deleted as it is.
    pub fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let key = self.key(namespace, name);
        let not_found = || StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        };
        let v = self.engine.get(&key)?.ok_or_else(not_found)?;
        // A value that does not open (a lost key, garbage) can still go.
        let Ok(stored) = self.open(&v) else {
            return if self.engine.delete(&key, Precondition::None)? {
                Ok(())
            } else {
                Err(not_found())
            };
        };
        let mut s = stored.secret;
        let gone = if s.metadata.finalizers().is_empty() {
            self.engine
                .delete(&key, Precondition::ModRevision(v.mod_revision))
                .map_err(|e| self.conflict_or(e, name))?
        } else if s.metadata.is_terminating() {
            true
        } else {
            s.metadata.deletion_timestamp =
                Some(crate::k8s::time::format_system_time(SystemTime::now()));
            s.metadata.deletion_grace_period_seconds = Some(0);
            let sealed = self.chain.seal(&s.to_storage_bytes(self.format), &key)?;
            self.engine
                .put(&key, &sealed, Precondition::ModRevision(v.mod_revision))
                .map_err(|e| self.conflict_or(e, name))?;
            true
        };
        if gone { Ok(()) } else { Err(not_found()) }
    }

    /// The envelope facts of one value, without decrypting it.
    pub fn inspect(&self, namespace: &str, name: &str) -> Result<Inspection, StoreError> {
        let key = self.key(namespace, name);
        let v = self.engine.get(&key)?.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })?;
        self.inspect_value(&v)
    }

    /// The storage format of one stored value's plaintext (it decrypts it).
    pub fn storage_format_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<StorageFormat, StoreError> {
        let key = self.key(namespace, name);
        let v = self.engine.get(&key)?.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })?;
        let opened = self.chain.open(&v.value, &v.key)?;
        StorageFormat::detect(&opened.plaintext)
            .map_err(|source| StoreError::Decode { key, source })
    }

    /// [`SecretStore::inspect`] for a value already read.
    pub fn inspect_value(&self, v: &Versioned) -> Result<Inspection, StoreError> {
        let envelope = self.chain.inspect(&v.value, &v.key)?;
        let stale = self.chain.is_stale(&v.value, &v.key)?;
        Ok(Inspection {
            key: v.key.clone(),
            envelope,
            stale,
            mod_revision: v.mod_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let k = etcd_key("ns", "name");
        assert_eq!(k, "/registry/secrets/ns/name");
        assert_eq!(split_key(&k), Some(("ns", "name")));
        assert_eq!(split_key("/registry/configmaps/a/b"), None);
    }

    #[test]
    fn etcd_prefixes_join_as_the_apiserver_joins_them() {
        assert_eq!(secrets_prefix_for("/registry").unwrap(), SECRETS_PREFIX);
        assert_eq!(secrets_prefix_for("/registry/").unwrap(), SECRETS_PREFIX);
        assert_eq!(secrets_prefix_for("/k8s/a").unwrap(), "/k8s/a/secrets/");
        assert_eq!(secrets_prefix_for("/").unwrap(), "/secrets/");
        assert!(
            secrets_prefix_for("registry")
                .unwrap_err()
                .contains("must start with /")
        );
        assert!(secrets_prefix_for("/a//b").is_err());
        assert!(secrets_prefix_for("/a/../b").is_err());
    }
}
