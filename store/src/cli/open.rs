//! Opening the engine and the provider chain from the global flags.

use std::sync::Arc;

use anyhow::Context;

use super::GlobalArgs;
use crate::encryption_config::EncryptionConfiguration;
use crate::storage::StorageEngine;
use crate::storage::rocks::RocksEngine;
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

/// The engine named by the flags.
pub fn open_engine(g: &GlobalArgs) -> anyhow::Result<Arc<dyn StorageEngine>> {
    let dir = g
        .db
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no database: pass --db DIR (or set SECRET_STORE_DB)"))?;
    Ok(Arc::new(RocksEngine::open(dir, g.sync_writes)?))
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
    let engine = open_engine(g)?;
    let chain = open_chain(g, access)?;
    Ok(SecretStore::new(engine, chain))
}
