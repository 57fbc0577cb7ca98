//! Saving a snapshot of an etcd cluster, as `etcdctl snapshot save` does:
//! etcd's Maintenance/Snapshot stream (the bbolt database followed by its
//! SHA-256, 32 bytes) written to a file, then checked by opening it as an
//! [`SnapshotEngine`](crate::storage::snapshot::SnapshotEngine). For the
//! bench, which makes the snapshots `verify --etcd-snapshot` is measured on.

use std::io::Write;
use std::path::Path;

use super::EtcdConfig;
use super::tls::client_tls;
use crate::runtime;
use crate::storage::StorageError;

/// Saves a snapshot of the cluster of `config` (its first member) to
/// `path`; returns its size in bytes.
pub fn save_snapshot(config: &EtcdConfig, path: &Path) -> Result<u64, StorageError> {
    let url = config
        .endpoints
        .first()
        .cloned()
        .ok_or_else(|| StorageError::Config("no etcd endpoint to snapshot".into()))?;
    let tls = config.tls.as_ref().map(client_tls).transpose()?;
    let engine = |e: etcd_client::Error| StorageError::Engine {
        context: format!("etcd snapshot from {url}"),
        source: Box::new(e),
    };
    let io = |source| StorageError::Io {
        what: format!("cannot write etcd snapshot {}", path.display()),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    let url2 = url.clone();
    let chunks: Vec<Vec<u8>> = runtime::block_on(async move {
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let mut client = etcd_client::Client::connect([url2], Some(options)).await?;
        let mut stream = client.snapshot().await?;
        let mut chunks = Vec::new();
        while let Some(msg) = stream.message().await? {
            chunks.push(msg.blob().to_vec());
        }
        Ok::<_, etcd_client::Error>(chunks)
    })?
    .map_err(engine)?;
    let mut size = 0u64;
    for c in &chunks {
        file.write_all(c).map_err(io)?;
        size += c.len() as u64;
    }
    file.sync_all().map_err(io)?;
    Ok(size)
}
