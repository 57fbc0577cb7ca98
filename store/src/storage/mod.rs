//! The storage engine seam: a key-value store with revisions, narrow enough
//! that etcd can sit behind it as well as the embedded RocksDB.
//!
//! Keys are etcd keys (`/registry/secrets/<namespace>/<name>`); values are
//! exactly the at-rest bytes. Every write gets a new store-wide revision
//! (etcd's `mod_revision`); conditional writes compare it, which is how
//! stale updates become conflicts and how `rewrap` never overwrites a newer
//! value.

pub mod etcd;
mod open;
pub mod private_dir;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod snapshot;

pub use open::EngineSpec;

/// One stored value with its revisions.
#[derive(Clone)]
pub struct Versioned {
    /// The etcd key.
    pub key: String,
    /// The at-rest bytes (encrypted unless identity).
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the last write to the key (the resourceVersion).
    pub mod_revision: u64,
}

impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("key", &self.key)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// When a write may happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Always.
    None,
    /// Only if the key does not exist (create).
    Absent,
    /// Only if the key exists with exactly this mod revision.
    ModRevision(u64),
}

/// A page of a listing.
#[derive(Debug)]
pub struct Page {
    /// Values in key order.
    pub items: Vec<Versioned>,
    /// Pass as `start_after` to get the next page; `None` at the end.
    pub continue_after: Option<String>,
    /// The store revision the page was read at.
    pub revision: u64,
}

/// The cause kept by [`StorageError::Engine`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed. Messages name keys and revisions, never
/// values; every message carries its cause's text, and the cause itself is
/// kept as the error's `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The precondition did not hold.
    #[error("conflict on {key}: {reason}")]
    Conflict {
        /// The key.
        key: String,
        /// Why (current state vs expected), without values.
        reason: String,
    },
    /// The store cannot be opened because another process holds it.
    #[error("{0}")]
    Locked(String),
    /// The store is unreachable or lost quorum.
    #[error("{0}")]
    Unavailable(String),
    /// Stored metadata is corrupt.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Settings that cannot be used (an etcd endpoint, a TLS setting, a
    /// timeout, a key prefix too broad to delete); the message names the
    /// setting.
    #[error("{0}")]
    Config(String),
    /// A file or directory the engine needs could not be read or created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. `cannot read --etcd-cacert ca.pem`.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The engine's library failed (RocksDB, the etcd client).
    #[error("{context}: {source}")]
    Engine {
        /// What was being done, e.g. `rocksdb` or `cannot open database DIR`.
        context: String,
        /// The cause, as the library reported it.
        #[source]
        source: Cause,
    },
    /// etcd refused a request in a way no retry or other member changes
    /// (permission denied, a request too large); the message carries the
    /// member's answer.
    #[error("{0}")]
    Rejected(String),
    /// The engine does not take writes (an etcd snapshot file).
    #[error("{0}")]
    ReadOnly(String),
    /// The engine was left out of this build (its cargo feature is off).
    #[error("this secret-store was built without the {0} engine (cargo feature {0:?})")]
    NotBuilt(&'static str),
    /// The async runtime the engine's client runs on failed.
    #[error("the storage engine's client cannot run")]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// A storage engine.
pub trait StorageEngine: Send + Sync {
    /// `rocksdb` or `etcd`, for messages and bench output.
    fn name(&self) -> &'static str;
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError>;
    /// Writes one key if `pre` holds; returns the new mod revision.
    fn put(&self, key: &str, value: &[u8], pre: Precondition) -> Result<u64, StorageError>;
    /// Deletes one key if `pre` holds; returns whether it existed.
    fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StorageError>;
    /// Up to `limit` keys starting with `prefix`, after `start_after`, in order.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError>;
    /// The latest revision of the store.
    fn revision(&self) -> Result<u64, StorageError>;
    /// Calls `f` for every key under `prefix`, in key order, `page_size`
    /// keys per read, all as of one revision, so that a listing under
    /// concurrent writes is one consistent view (etcd: every page at the
    /// first page's revision, as the apiserver's continue tokens pin it;
    /// RocksDB: one snapshot). Returns that revision.
    fn scan(&self, prefix: &str, page_size: usize, f: &mut ScanFn<'_>)
    -> Result<u64, StorageError>;
}

/// What [`StorageEngine::scan`] calls with each value.
pub type ScanFn<'a> = dyn FnMut(Versioned) -> Result<(), StorageError> + 'a;

/// Pages through `list` (for engines whose every `list` sees one state,
/// such as a snapshot file); returns the first page's revision.
pub(crate) fn scan_pages(
    engine: &dyn StorageEngine,
    prefix: &str,
    page_size: usize,
    f: &mut ScanFn<'_>,
) -> Result<u64, StorageError> {
    let mut after: Option<String> = None;
    let mut revision = None;
    loop {
        let page = engine.list(prefix, after.as_deref(), page_size.max(1))?;
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

/// Calls `f` for every key under `prefix`, a page at a time, as of one
/// revision ([`StorageEngine::scan`]).
pub fn for_each(
    engine: &dyn StorageEngine,
    prefix: &str,
    page_size: usize,
    mut f: impl FnMut(Versioned) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    engine.scan(prefix, page_size, &mut f).map(drop)
}

/// The engine conformance suite, run against every engine (one suite, many
/// engines). Each check takes a fresh, empty engine.
#[cfg(any(test, feature = "conformance"))]
#[allow(clippy::unwrap_used)] // a test suite: a failed step is a failed test
pub mod conformance {
    use super::*;

    /// Runs every check against engines made by `fresh`.
    pub fn run_all(fresh: &dyn Fn() -> Box<dyn StorageEngine>) {
        create_get_update_delete(&*fresh());
        conditional_writes(&*fresh());
        listing_and_pagination(&*fresh());
        scans_are_one_revision(&*fresh());
        revisions_are_store_wide(&*fresh());
        concurrent_writers_one_wins(fresh());
    }

    /// Basic CRUD and revisions.
    pub fn create_get_update_delete(e: &dyn StorageEngine) {
        let k = "/registry/secrets/default/a";
        assert!(e.get(k).unwrap().is_none());
        let r0 = e.revision().unwrap();
        let r1 = e.put(k, b"v1", Precondition::Absent).unwrap();
        assert!(r1 > r0);
        let v = e.get(k).unwrap().unwrap();
        assert_eq!(v.value, b"v1");
        assert_eq!((v.create_revision, v.mod_revision), (r1, r1));
        let r2 = e.put(k, b"v2", Precondition::ModRevision(r1)).unwrap();
        assert!(r2 > r1);
        let v = e.get(k).unwrap().unwrap();
        assert_eq!(v.value, b"v2");
        assert_eq!((v.create_revision, v.mod_revision), (r1, r2));
        assert_eq!(e.revision().unwrap(), r2);
        assert!(e.delete(k, Precondition::ModRevision(r2)).unwrap());
        assert!(e.get(k).unwrap().is_none());
        assert!(!e.delete(k, Precondition::None).unwrap());
        // Binary values, including every byte value, round trip exactly.
        let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        e.put(k, &all, Precondition::None).unwrap();
        assert_eq!(e.get(k).unwrap().unwrap().value, all);
    }

    /// Stale and absent preconditions are conflicts.
    pub fn conditional_writes(e: &dyn StorageEngine) {
        let k = "/registry/secrets/ns/c";
        let r1 = e.put(k, b"x", Precondition::Absent).unwrap();
        assert!(matches!(
            e.put(k, b"y", Precondition::Absent),
            Err(StorageError::Conflict { .. })
        ));
        let r2 = e.put(k, b"y", Precondition::ModRevision(r1)).unwrap();
        let err = e.put(k, b"z", Precondition::ModRevision(r1)).unwrap_err();
        assert!(matches!(err, StorageError::Conflict { .. }), "{err}");
        assert_eq!(
            e.get(k).unwrap().unwrap().value,
            b"y",
            "a stale write changed nothing"
        );
        assert!(matches!(
            e.delete(k, Precondition::ModRevision(r1)),
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            e.put(
                "/registry/secrets/ns/none",
                b"q",
                Precondition::ModRevision(r2)
            ),
            Err(StorageError::Conflict { .. })
        ));
        assert!(e.get("/registry/secrets/ns/none").unwrap().is_none());
    }

    /// Prefix listing in key order, pages that neither skip nor repeat.
    pub fn listing_and_pagination(e: &dyn StorageEngine) {
        for ns in ["a", "b", "bb"] {
            for i in 0..25 {
                e.put(
                    &format!("/registry/secrets/{ns}/s{i:03}"),
                    ns.as_bytes(),
                    Precondition::None,
                )
                .unwrap();
            }
        }
        e.put("/registry/configmaps/a/x", b"other", Precondition::None)
            .unwrap();
        let mut seen = Vec::new();
        for_each(e, "/registry/secrets/b/", 7, |v| {
            assert_eq!(v.value, b"b");
            seen.push(v.key);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 25, "namespace b only, not bb: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        let mut all = 0;
        for_each(e, "/registry/secrets/", 10, |_| {
            all += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(all, 75);
        let p = e.list("/registry/secrets/", None, 1000).unwrap();
        assert_eq!(p.items.len(), 75);
        assert!(p.continue_after.is_none());
        assert!(
            e.list("/registry/nothing/", None, 10)
                .unwrap()
                .items
                .is_empty()
        );
    }

    /// A scan sees the store as of its first page, whatever is written
    /// while it runs: keys added, changed or deleted behind it do not show.
    pub fn scans_are_one_revision(e: &dyn StorageEngine) {
        let key = |i: usize| format!("/registry/secrets/s/k{i:02}");
        for i in 0..10 {
            e.put(&key(i), b"before", Precondition::None).unwrap();
        }
        let before = e.revision().unwrap();
        let mut seen = Vec::new();
        let at = e
            .scan("/registry/secrets/s/", 3, &mut |v| {
                if seen.is_empty() {
                    e.put(&key(8), b"after", Precondition::None).unwrap();
                    e.delete(&key(9), Precondition::None).unwrap();
                    e.put(&key(11), b"new", Precondition::None).unwrap();
                }
                seen.push((v.key, v.value));
                Ok(())
            })
            .unwrap();
        assert_eq!(at, before);
        let want: Vec<(String, Vec<u8>)> = (0..10).map(|i| (key(i), b"before".to_vec())).collect();
        assert_eq!(seen, want);
        // A new scan sees the writes.
        let mut now = Vec::new();
        e.scan("/registry/secrets/s/", 3, &mut |v| {
            now.push(v.key);
            Ok(())
        })
        .unwrap();
        assert_eq!(now.len(), 10);
        assert!(now.contains(&key(11)) && !now.contains(&key(9)));
    }

    /// One revision counter for the whole store: every write moves it, a
    /// key re-created after a delete starts a new life (new create
    /// revision), a page reports the revision it was read at, and deletes
    /// honour their preconditions.
    pub fn revisions_are_store_wide(e: &dyn StorageEngine) {
        let (a, b) = ("/registry/secrets/r/a", "/registry/secrets/r/b");
        let ra = e.put(a, b"a", Precondition::Absent).unwrap();
        let rb = e.put(b, b"b", Precondition::Absent).unwrap();
        assert!(rb > ra);
        let p = e.list("/registry/secrets/r/", None, 10).unwrap();
        assert_eq!(p.revision, rb);
        assert_eq!(
            p.items.iter().map(|v| v.mod_revision).collect::<Vec<_>>(),
            [ra, rb]
        );
        assert!(matches!(
            e.delete(a, Precondition::Absent),
            Err(StorageError::Conflict { .. })
        ));
        assert!(
            !e.delete("/registry/secrets/r/none", Precondition::Absent)
                .unwrap()
        );
        assert!(e.delete(a, Precondition::None).unwrap());
        let ra2 = e.put(a, b"a2", Precondition::Absent).unwrap();
        let v = e.get(a).unwrap().unwrap();
        assert_eq!((v.create_revision, v.mod_revision), (ra2, ra2));
        assert!(ra2 > rb + 1, "the delete took a revision too");
        assert_eq!(e.revision().unwrap(), ra2);
        // Continuing after the last key of a prefix ends the listing.
        let p = e.list("/registry/secrets/r/", Some(b), 10).unwrap();
        assert!(p.items.is_empty() && p.continue_after.is_none());
    }

    /// Many threads update one key conditionally: exactly one wins per round.
    pub fn concurrent_writers_one_wins(e: Box<dyn StorageEngine>) {
        let e: std::sync::Arc<dyn StorageEngine> = e.into();
        let k = "/registry/secrets/default/contended";
        let r = e.put(k, b"0", Precondition::None).unwrap();
        for round in 0..5 {
            let base = e.get(k).unwrap().unwrap().mod_revision;
            let wins: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|t| {
                        let e = e.clone();
                        s.spawn(move || {
                            e.put(
                                k,
                                format!("{round}-{t}").as_bytes(),
                                Precondition::ModRevision(base),
                            )
                            .is_ok() as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
        assert!(e.get(k).unwrap().unwrap().mod_revision > r);
    }
}
