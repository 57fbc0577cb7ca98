//! Opening the engine and the provider chain from the global flags.

use std::sync::Arc;

use anyhow::Context;

use super::GlobalArgs;
use crate::encryption_config::EncryptionConfiguration;
use crate::storage::etcd::{EtcdConfig, EtcdTls, split_endpoints};
use crate::storage::private_dir::{self, SharedDir};
use crate::storage::snapshot::HashCheck;
use crate::storage::{EngineSpec, StorageEngine};
use crate::store::SecretStore;
use crate::transform::chain::TransformerChain;
use crate::transform::identity::IdentityTransformer;
use crate::transform::kmsv2::{KmsOptions, KmsV2Transformer};
use crate::transform::{TransformError, Transformer};

/// Whether a command writes: writers need every KMS plugin up at start;
/// readers start even when one is down (reads then need its Decrypt, and
/// `inspect` needs nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Writes.
    Write,
}

fn tls_flags(g: &GlobalArgs) -> EtcdTls {
    EtcdTls {
        ca_file: g.etcd_cacert.clone(),
        cert_file: g.etcd_cert.clone(),
        key_file: g.etcd_keyfile.clone(),
    }
}

/// The etcd settings for `endpoints` (comma-separated) with the TLS and
/// timeout flags.
pub fn etcd_config(g: &GlobalArgs, endpoints: &str) -> anyhow::Result<EtcdConfig> {
    Ok(EtcdConfig::new(
        split_endpoints(endpoints),
        Some(tls_flags(g)),
        g.etcd_timeout,
    )?)
}

/// The engine named by the flags: exactly one of `--db` and
/// `--etcd-endpoints`.
pub fn engine_spec(g: &GlobalArgs) -> anyhow::Result<EngineSpec> {
    if let Some(path) = &g.etcd_snapshot {
        anyhow::ensure!(
            g.db.is_none() && g.etcd_endpoints.is_none(),
            "--etcd-snapshot reads a snapshot file instead of a store: drop --db / --etcd-endpoints (or SECRET_STORE_DB / SECRET_STORE_ETCD_ENDPOINTS)"
        );
        return Ok(EngineSpec::Snapshot {
            path: path.clone(),
            check: if g.etcd_snapshot_skip_hash_check {
                HashCheck::SkipIfMissing
            } else {
                HashCheck::Require
            },
        });
    }
    anyhow::ensure!(
        !g.etcd_snapshot_skip_hash_check,
        "--etcd-snapshot-skip-hash-check needs --etcd-snapshot FILE"
    );
    match (&g.db, &g.etcd_endpoints) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both --db (or SECRET_STORE_DB) and --etcd-endpoints (or SECRET_STORE_ETCD_ENDPOINTS) are set: choose one engine"
        ),
        (None, None) => anyhow::bail!(
            "no store: pass --db DIR for RocksDB (or set SECRET_STORE_DB), --etcd-endpoints URLS for etcd (or set SECRET_STORE_ETCD_ENDPOINTS), or --etcd-snapshot FILE to read a backup"
        ),
        (Some(dir), None) => {
            anyhow::ensure!(
                !tls_flags(g).is_set(),
                "--etcd-cacert, --etcd-cert and --etcd-keyfile apply to etcd only, and --db was given: drop them or use --etcd-endpoints"
            );
            Ok(EngineSpec::Rocks {
                dir: dir.clone(),
                sync: g.sync_writes,
            })
        }
        (None, Some(eps)) => Ok(EngineSpec::Etcd(etcd_config(g, eps)?)),
    }
}

/// Opens an engine; a RocksDB directory is created 0700, or must be one
/// group and others cannot reach (unless `--allow-shared-dir`).
pub fn open_spec(g: &GlobalArgs, spec: &EngineSpec) -> anyhow::Result<Arc<dyn StorageEngine>> {
    if let EngineSpec::Rocks { dir, .. } = spec {
        let shared = if g.allow_shared_dir {
            SharedDir::Allow
        } else {
            SharedDir::Refuse
        };
        private_dir::ensure(dir, shared)?;
    }
    Ok(spec.open()?)
}

/// The engine named by the flags.
pub fn open_engine(g: &GlobalArgs) -> anyhow::Result<Arc<dyn StorageEngine>> {
    open_spec(g, &engine_spec(g)?)
}

/// The provider chain named by the flags.
pub fn open_chain(g: &GlobalArgs, access: Access) -> anyhow::Result<Arc<TransformerChain>> {
    let chain = match &g.encryption_config {
        Some(path) => {
            let cfg = EncryptionConfiguration::load(path)
                .with_context(|| format!("encryption-config={}", path.display()))?;
            let mut kms = |k: &crate::encryption_config::KmsProviderConfig| -> Result<Arc<dyn Transformer>, TransformError> {
                let t = match access {
                    Access::Write => KmsV2Transformer::new(k, KmsOptions::default())?,
                    Access::Read => KmsV2Transformer::new_degraded(k, KmsOptions::default())?,
                };
                Ok(Arc::new(t))
            };
            TransformerChain::from_config(&cfg, &mut kms)?
        }
        None => TransformerChain::new(vec![Arc::new(IdentityTransformer::new())])?,
    }
    .with_plaintext_allowed(g.allow_plaintext);
    for w in chain.warnings() {
        eprintln!("Warning: {w}");
    }
    Ok(Arc::new(chain))
}

/// Engine and chain together.
pub fn open_store(g: &GlobalArgs, access: Access) -> anyhow::Result<SecretStore> {
    store_on(g, open_engine(g)?, access)
}

/// A store on `engine` with the chain and settings of the flags.
pub fn store_on(
    g: &GlobalArgs,
    engine: Arc<dyn StorageEngine>,
    access: Access,
) -> anyhow::Result<SecretStore> {
    let chain = open_chain(g, access)?;
    Ok(SecretStore::new(engine, chain)
        .with_etcd_prefix(&g.etcd_prefix)
        .map_err(anyhow::Error::msg)?
        .with_storage_format(g.storage_media_type.unwrap_or_default()))
}
