//! The embedded engine: RocksDB in one directory.
//!
//! - column family `default`: etcd key → the at-rest bytes, nothing else;
//! - column family `meta`: etcd key → create and mod revision (16 bytes),
//!   and the store revision counter under an empty key.
//!
//! A write puts the value, its revisions and the new counter in one atomic
//! `WriteBatch`. Conditional writes are checked and applied under one lock,
//! so "compare mod revision, then write" is atomic. Writes go through the
//! WAL: an acknowledged write survives a crash of the process (kill -9);
//! with `sync` it also survives power loss.

use std::path::Path;
use std::sync::Mutex;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};

use super::{Page, Precondition, ScanFn, StorageEngine, StorageError, Versioned};

const META_CF: &str = "meta";
const COUNTER_KEY: &[u8] = b"";

/// RocksDB-backed storage.
pub struct RocksEngine {
    db: DB,
    write_lock: Mutex<()>,
    sync: bool,
}

fn engine_err(e: rocksdb::Error) -> StorageError {
    StorageError::Engine {
        context: "rocksdb".to_owned(),
        source: Box::new(e),
    }
}

fn encode_meta(create: u64, modr: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&create.to_be_bytes());
    m[8..].copy_from_slice(&modr.to_be_bytes());
    m
}

fn decode_meta(key: &str, m: &[u8]) -> Result<(u64, u64), StorageError> {
    if m.len() != 16 {
        return Err(StorageError::Corrupt(format!(
            "revision record of {key} is {} bytes, expected 16",
            m.len()
        )));
    }
    Ok((
        u64::from_be_bytes(m[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(m[8..].try_into().expect("8 bytes")),
    ))
}

impl RocksEngine {
    /// Opens (creating if missing, mode 0700) the store in `dir`.
    pub fn open(dir: &Path, sync: bool) -> Result<Self, StorageError> {
        super::private_dir::create_if_missing(dir)?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        let mut cf_opts = Options::default();
        // Encrypted values do not compress; none is also what this build links.
        cf_opts.set_compression_type(DBCompressionType::None);
        db_opts.set_compression_type(DBCompressionType::None);
        let cfs = vec![
            ColumnFamilyDescriptor::new("default", cf_opts.clone()),
            ColumnFamilyDescriptor::new(META_CF, cf_opts),
        ];
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") || msg.contains("Resource temporarily unavailable") {
                StorageError::Locked(format!(
                    "database {} is in use by another process (RocksDB allows one process at a time): {msg}",
                    dir.display()
                ))
            } else {
                StorageError::Engine {
                    context: format!("cannot open database {}", dir.display()),
                    source: Box::new(e),
                }
            }
        })?;
        Ok(RocksEngine {
            db,
            write_lock: Mutex::new(()),
            sync,
        })
    }

    fn meta(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(META_CF)
            .expect("meta column family exists")
    }

    fn counter(&self) -> Result<u64, StorageError> {
        match self
            .db
            .get_cf(self.meta(), COUNTER_KEY)
            .map_err(engine_err)?
        {
            None => Ok(0),
            Some(b) if b.len() == 8 => Ok(u64::from_be_bytes(b[..].try_into().expect("8"))),
            Some(b) => Err(StorageError::Corrupt(format!(
                "revision counter is {} bytes, expected 8",
                b.len()
            ))),
        }
    }

    fn current(&self, key: &str) -> Result<Option<(u64, u64)>, StorageError> {
        match self
            .db
            .get_cf(self.meta(), key.as_bytes())
            .map_err(engine_err)?
        {
            None => Ok(None),
            Some(m) => decode_meta(key, &m).map(Some),
        }
    }

    fn check(key: &str, cur: Option<(u64, u64)>, pre: Precondition) -> Result<(), StorageError> {
        let conflict = |reason: String| {
            Err(StorageError::Conflict {
                key: key.to_string(),
                reason,
            })
        };
        match (pre, cur) {
            (Precondition::None, _) => Ok(()),
            (Precondition::Absent, None) => Ok(()),
            (Precondition::Absent, Some((_, m))) => {
                conflict(format!("it already exists (mod revision {m})"))
            }
            (Precondition::ModRevision(want), Some((_, m))) if m == want => Ok(()),
            (Precondition::ModRevision(want), Some((_, m))) => conflict(format!(
                "it was modified (mod revision {m}, expected {want})"
            )),
            (Precondition::ModRevision(want), None) => conflict(format!(
                "it no longer exists (expected mod revision {want})"
            )),
        }
    }

    /// A page read from `snap`.
    fn page_of(
        &self,
        snap: &rocksdb::Snapshot<'_>,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        let revision = match snap.get_cf(self.meta(), COUNTER_KEY).map_err(engine_err)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b[..].try_into().expect("8")),
            _ => 0,
        };
        let start: Vec<u8> = match start_after {
            Some(k) => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            None => prefix.as_bytes().to_vec(),
        };
        let mut ro = ReadOptions::default();
        ro.set_snapshot(snap);
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), ro);
        let mut items = Vec::new();
        let mut more = false;
        for kv in iter {
            let (k, v) = kv.map_err(engine_err)?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            let key = String::from_utf8(k.into_vec())
                .map_err(|_| StorageError::Corrupt("a key is not UTF-8".into()))?;
            items.push((key, v.into_vec()));
        }
        let metas = snap.multi_get_cf(items.iter().map(|(k, _)| (self.meta(), k.as_bytes())));
        let mut out = Vec::with_capacity(items.len());
        for ((key, value), m) in items.into_iter().zip(metas) {
            let m = m.map_err(engine_err)?.ok_or_else(|| {
                StorageError::Corrupt(format!("{key} has a value but no revision record"))
            })?;
            let (create_revision, mod_revision) = decode_meta(&key, &m)?;
            out.push(Versioned {
                key,
                value,
                create_revision,
                mod_revision,
            });
        }
        let continue_after = if more {
            out.last().map(|v| v.key.clone())
        } else {
            None
        };
        Ok(Page {
            items: out,
            continue_after,
            revision,
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo).map_err(engine_err)
    }
}

impl StorageEngine for RocksEngine {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        let snap = self.db.snapshot();
        let Some(value) = snap.get(key.as_bytes()).map_err(engine_err)? else {
            return Ok(None);
        };
        let m = snap
            .get_cf(self.meta(), key.as_bytes())
            .map_err(engine_err)?
            .ok_or_else(|| {
                StorageError::Corrupt(format!("{key} has a value but no revision record"))
            })?;
        let (create_revision, mod_revision) = decode_meta(key, &m)?;
        Ok(Some(Versioned {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision,
        }))
    }

    fn put(&self, key: &str, value: &[u8], pre: Precondition) -> Result<u64, StorageError> {
        let _g = kms_proto::sync::lock(&self.write_lock);
        let cur = self.current(key)?;
        Self::check(key, cur, pre)?;
        let rev = self.counter()? + 1;
        let create = cur.map(|(c, _)| c).unwrap_or(rev);
        let mut b = WriteBatch::default();
        b.put(key.as_bytes(), value);
        b.put_cf(self.meta(), key.as_bytes(), encode_meta(create, rev));
        b.put_cf(self.meta(), COUNTER_KEY, rev.to_be_bytes());
        self.write(b)?;
        Ok(rev)
    }

    fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StorageError> {
        let _g = kms_proto::sync::lock(&self.write_lock);
        let cur = self.current(key)?;
        Self::check(key, cur, pre)?;
        if cur.is_none() {
            return Ok(false);
        }
        let rev = self.counter()? + 1;
        let mut b = WriteBatch::default();
        b.delete(key.as_bytes());
        b.delete_cf(self.meta(), key.as_bytes());
        b.put_cf(self.meta(), COUNTER_KEY, rev.to_be_bytes());
        self.write(b)?;
        Ok(true)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        self.page_of(&self.db.snapshot(), prefix, start_after, limit)
    }

    fn scan(
        &self,
        prefix: &str,
        page_size: usize,
        f: &mut ScanFn<'_>,
    ) -> Result<u64, StorageError> {
        // One snapshot for every page: the listing is one view.
        let snap = self.db.snapshot();
        let mut after: Option<String> = None;
        let mut revision = None;
        loop {
            let page = self.page_of(&snap, prefix, after.as_deref(), page_size.max(1))?;
            revision.get_or_insert(page.revision);
            for item in page.items {
                f(item)?;
            }
            match page.continue_after {
                Some(k) => after = Some(k),
                None => return Ok(revision.unwrap_or(0)),
            }
        }
    }

    fn revision(&self) -> Result<u64, StorageError> {
        self.counter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dirs = std::cell::RefCell::new(Vec::new());
        super::super::conformance::run_all(&|| {
            let d = tempfile::tempdir().unwrap();
            let e = RocksEngine::open(d.path(), false).unwrap();
            dirs.borrow_mut().push(d);
            Box::new(e)
        });
    }

    #[test]
    fn survives_reopen_and_refuses_a_second_opener() {
        let d = tempfile::tempdir().unwrap();
        let r = {
            let e = RocksEngine::open(d.path(), true).unwrap();
            e.put("/registry/secrets/a/b", b"val", Precondition::None)
                .unwrap()
        };
        let e = RocksEngine::open(d.path(), false).unwrap();
        let v = e.get("/registry/secrets/a/b").unwrap().unwrap();
        assert_eq!((v.value.as_slice(), v.mod_revision), (&b"val"[..], r));
        assert_eq!(e.revision().unwrap(), r);
        let again = RocksEngine::open(d.path(), false);
        assert!(
            matches!(again, Err(StorageError::Locked(_))),
            "{:?}",
            again.err()
        );
    }
}
