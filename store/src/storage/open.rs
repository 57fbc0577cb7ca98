//! The table of engines: which engine a [`EngineSpec`] names, and the one
//! place that opens it. A new engine is one module plus one variant and one
//! arm here. Engines left out of the build (cargo features `rocksdb`,
//! `etcd`) are still named and parsed, and refuse to open, saying why.

use std::path::PathBuf;
use std::sync::Arc;

use super::etcd::EtcdConfig;
use super::{StorageEngine, StorageError};

/// Which engine, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineSpec {
    /// RocksDB in a directory.
    Rocks {
        /// The database directory.
        dir: PathBuf,
        /// fsync every write.
        sync: bool,
    },
    /// An etcd cluster.
    Etcd(EtcdConfig),
    /// An etcd snapshot file, read-only.
    Snapshot {
        /// The file `etcdctl snapshot save` wrote.
        path: PathBuf,
        /// Whether a missing SHA-256 trailer is accepted.
        check: super::snapshot::HashCheck,
    },
}

impl std::fmt::Display for EngineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineSpec::Rocks { dir, .. } => write!(f, "rocksdb:{}", dir.display()),
            EngineSpec::Etcd(c) => write!(f, "etcd:{}", c.endpoints_list()),
            EngineSpec::Snapshot { path, .. } => write!(f, "etcd-snapshot:{}", path.display()),
        }
    }
}

impl EngineSpec {
    /// Opens the engine.
    pub fn open(&self) -> Result<Arc<dyn StorageEngine>, StorageError> {
        match self {
            #[cfg(feature = "rocksdb")]
            EngineSpec::Rocks { dir, sync } => {
                Ok(Arc::new(super::rocks::RocksEngine::open(dir, *sync)?))
            }
            #[cfg(not(feature = "rocksdb"))]
            EngineSpec::Rocks { .. } => Err(StorageError::NotBuilt("rocksdb")),
            #[cfg(feature = "etcd")]
            EngineSpec::Etcd(c) => Ok(Arc::new(super::etcd::EtcdEngine::open(c)?)),
            #[cfg(not(feature = "etcd"))]
            EngineSpec::Etcd(_) => Err(StorageError::NotBuilt("etcd")),
            EngineSpec::Snapshot { path, check } => Ok(Arc::new(
                super::snapshot::SnapshotEngine::open(path, *check)?,
            )),
        }
    }
}
