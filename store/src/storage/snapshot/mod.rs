//! An etcd v3 snapshot file as a read-only [`StorageEngine`], read without
//! etcd: what `etcdctl snapshot save` writes (a bbolt database followed by
//! the SHA-256 of it, 32 bytes), so that `get`, `list`, `inspect` and
//! `verify` check a backup offline with the keys at hand.
//!
//! Opening checks the trailer (as `etcdctl snapshot restore` does: a file
//! whose size is a multiple of 512 plus 32 carries one, and it must match),
//! reads the meta pages and indexes the latest revision of every key,
//! tombstones skipped; values are read from their pages on demand. Writes
//! are refused.
//!
//! - `bolt`: the bbolt page reader;
//! - `mvcc`: etcd's revision keys and `KeyValue` records.

pub(crate) mod bolt;
pub(crate) mod mvcc;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bolt::{Bolt, PageSource};
use mvcc::{Counts, Live};

use super::{Page, Precondition, ScanFn, StorageEngine, StorageError, Versioned, scan_pages};

/// Size of the SHA-256 trailer.
const TRAILER: u64 = 32;

/// What was found in a snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether a SHA-256 trailer was there and matched (false only with
    /// the hash check skipped).
    pub hash_checked: bool,
    /// The snapshot's revision (the highest in it).
    pub revision: u64,
    /// Revisions stored (every version of every key not compacted away).
    pub revisions: u64,
    /// Live keys (latest revision not a delete), whatever their prefix.
    pub keys: u64,
    /// Keys whose latest revision is a delete (skipped).
    pub deleted_keys: u64,
    /// bbolt's transaction id and page size.
    pub txid: u64,
    /// bbolt's page size.
    pub page_size: u64,
}

/// Whether the trailer is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashCheck {
    /// Required and checked (a file of `etcdctl snapshot save`).
    Require,
    /// Checked when present; a bare bbolt file (`member/snap/db`) is read too.
    SkipIfMissing,
}

/// A snapshot opened read-only.
pub struct SnapshotEngine {
    bolt: Bolt<Box<dyn PageSource>>,
    live: BTreeMap<String, Live>,
    info: SnapshotInfo,
}

impl std::fmt::Debug for SnapshotEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotEngine")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("etcd snapshot {}: {why}", path.display()))
}

/// The SHA-256 of the first `len` bytes of `file`.
fn sha256_prefix(file: &std::fs::File, len: u64) -> std::io::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut r = std::io::BufReader::with_capacity(1 << 20, file).take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// Checks the trailer; returns the database's length and whether it had one.
fn check_trailer(
    path: &Path,
    file: &std::fs::File,
    size: u64,
    check: HashCheck,
) -> Result<(u64, bool), StorageError> {
    if size == 0 {
        return Err(bad(path, "the file is empty (0 bytes)"));
    }
    if size % 512 != TRAILER {
        return match check {
            HashCheck::SkipIfMissing => Ok((size, false)),
            HashCheck::Require => Err(bad(
                path,
                format!(
                    "no SHA-256 trailer: {size} bytes is not a multiple of 512 plus 32, as a file of `etcdctl snapshot save` is (truncated, or not a snapshot; a bare bbolt file such as member/snap/db needs --etcd-snapshot-skip-hash-check)"
                ),
            )),
        };
    }
    let len = size - TRAILER;
    let io = |what: &str, source| StorageError::Io {
        what: format!("cannot read {} ({what})", path.display()),
        source,
    };
    let computed = sha256_prefix(file, len).map_err(|e| io("hashing it", e))?;
    let mut stored = [0u8; 32];
    file.read_at(len, &mut stored)
        .map_err(|e| io("its trailer", e))?;
    if computed != stored {
        return Err(bad(
            path,
            format!(
                "the SHA-256 trailer does not match the data (stored {}, computed {}): the file is corrupt or was changed",
                hex::encode(stored),
                hex::encode(computed)
            ),
        ));
    }
    Ok((len, true))
}

impl SnapshotEngine {
    /// Opens the snapshot at `path`, read-only.
    pub fn open(path: &Path, check: HashCheck) -> Result<Self, StorageError> {
        let file = std::fs::File::open(path).map_err(|source| StorageError::Io {
            what: format!("cannot open etcd snapshot {}", path.display()),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| StorageError::Io {
                what: format!("cannot stat etcd snapshot {}", path.display()),
                source,
            })?
            .len();
        let (len, hash_checked) = check_trailer(path, &file, size, check)?;
        let src: Box<dyn PageSource> = Box::new(file);
        Self::from_source(src, path, size, len, hash_checked)
    }

    /// Opens a snapshot held in memory (tests, fuzzing): `bytes` with its
    /// trailer, checked.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, StorageError> {
        let path = Path::new("<memory>");
        let size = bytes.len() as u64;
        if size == 0 {
            return Err(bad(path, "the file is empty (0 bytes)"));
        }
        if size % 512 != TRAILER {
            return Err(bad(
                path,
                format!("no SHA-256 trailer: {size} bytes is not a multiple of 512 plus 32"),
            ));
        }
        let len = size - TRAILER;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[..len as usize]);
        if digest.as_ref() != &bytes[len as usize..] {
            return Err(bad(path, "the SHA-256 trailer does not match the data"));
        }
        Self::from_source(Box::new(bytes), path, size, len, true)
    }

    /// Opens a bare bbolt database held in memory (no trailer: fuzzing,
    /// and tests that break pages on purpose).
    pub fn from_db_bytes(db: Vec<u8>) -> Result<Self, StorageError> {
        let len = db.len() as u64;
        Self::from_source(Box::new(db), Path::new("<memory>"), len, len, false)
    }

    fn from_source(
        src: Box<dyn PageSource>,
        path: &Path,
        size: u64,
        len: u64,
        hash_checked: bool,
    ) -> Result<Self, StorageError> {
        let bolt = Bolt::open(src, len).map_err(|e| bad(path, e))?;
        let (live, counts): (_, Counts) = mvcc::index(&bolt).map_err(|e| bad(path, e))?;
        let info = SnapshotInfo {
            path: path.to_path_buf(),
            bytes: size,
            hash_checked,
            revision: counts.revision,
            revisions: counts.revisions,
            keys: live.len() as u64,
            deleted_keys: counts.deleted_keys,
            txid: bolt.txid(),
            page_size: bolt.page_size(),
        };
        Ok(SnapshotEngine { bolt, live, info })
    }

    /// What the snapshot holds.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    fn read(&self, key: &str, live: &Live) -> Result<Versioned, StorageError> {
        let corrupt = |e: String| {
            StorageError::Corrupt(format!(
                "etcd snapshot {}: {key}: {e}",
                self.info.path.display()
            ))
        };
        let record = self
            .bolt
            .value_at(&live.location)
            .map_err(|e| corrupt(e.to_string()))?;
        let kv = mvcc::key_value(&record).map_err(corrupt)?;
        if kv.key != key.as_bytes() {
            return Err(corrupt("its record names another key".into()));
        }
        Ok(Versioned {
            key: key.to_owned(),
            value: kv.value.to_vec(),
            create_revision: live.create_revision,
            mod_revision: live.mod_revision,
        })
    }

    fn read_only(&self) -> StorageError {
        StorageError::ReadOnly(format!(
            "etcd snapshot {} is opened read-only: restore it with `etcdctl snapshot restore` to change it",
            self.info.path.display()
        ))
    }
}

impl StorageEngine for SnapshotEngine {
    fn name(&self) -> &'static str {
        "etcd-snapshot"
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        self.live.get(key).map(|l| self.read(key, l)).transpose()
    }

    fn put(&self, _: &str, _: &[u8], _: Precondition) -> Result<u64, StorageError> {
        Err(self.read_only())
    }

    fn delete(&self, _: &str, _: Precondition) -> Result<bool, StorageError> {
        Err(self.read_only())
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        use std::ops::Bound;
        let start = match start_after {
            Some(k) => Bound::Excluded(k.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for (key, live) in self.live.range((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(self.read(key, live)?);
        }
        let continue_after = if more {
            items.last().map(|v| v.key.clone())
        } else {
            None
        };
        Ok(Page {
            items,
            continue_after,
            revision: self.info.revision,
        })
    }

    fn revision(&self) -> Result<u64, StorageError> {
        Ok(self.info.revision)
    }

    fn scan(
        &self,
        prefix: &str,
        page_size: usize,
        f: &mut ScanFn<'_>,
    ) -> Result<u64, StorageError> {
        // A snapshot never changes: every page is the same view.
        scan_pages(self, prefix, page_size, f)
    }
}

#[cfg(test)]
mod tests;
