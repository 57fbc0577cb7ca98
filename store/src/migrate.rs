//! `migrate`: copy every Secret's stored value from one engine to another
//! (RocksDB ↔ etcd, or between clusters), byte for byte: the at-rest bytes
//! move as they are, never decrypted or re-encrypted, so nothing needs a key
//! and whatever read them before reads them after. Keys are kept exactly
//! (the key is the encryption context of aesgcm and kms v2 values).
//!
//! Three passes, each a merge of the two key-ordered listings:
//! 1. plan: which source keys are missing at the destination, identical
//!    there, or *different*; if any differ and overwriting was not asked
//!    for, stop before writing anything;
//! 2. copy: missing keys are created (conditional on still being absent);
//!    differing ones, with `overwrite`, are replaced conditional on the
//!    destination revision seen, so a concurrent writer is never clobbered;
//! 3. verify: every source value must be at the destination, byte for byte.
//!
//! Revisions are not copied: the destination numbers its own writes (so
//! resourceVersions change, as after an etcd restore into a new cluster).
//! Keys only at the destination are left alone and counted. The source
//! should be quiet during a migration (a value changed at the source between
//! the copy and the verify is reported as a mismatch).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::rewrap::Progress;
use crate::storage::{Precondition, StorageEngine, StorageError, Versioned};

/// How to migrate.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Replace destination values that differ from the source.
    pub overwrite: bool,
    /// Plan only: compare and count, write nothing.
    pub dry_run: bool,
    /// Concurrent writes to the destination.
    pub workers: usize,
    /// Keys per listing page.
    pub page_size: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            overwrite: false,
            dry_run: false,
            workers: 8,
            page_size: 500,
        }
    }
}

/// What a migration did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MigrateReport {
    /// Values under the prefix at the source.
    pub source_values: u64,
    /// Values written to the destination (new keys).
    pub copied: u64,
    /// Values already at the destination with the same bytes (left as they are).
    pub identical: u64,
    /// Destination values that differed from the source when planned.
    pub differing: u64,
    /// Of those, replaced with the source's bytes (`overwrite`).
    pub overwritten: u64,
    /// Keys under the prefix found only at the destination (left alone).
    pub only_at_destination: u64,
    /// Source values found byte for byte at the destination after the copy.
    pub verified: u64,
    /// Values that failed to copy or verify: (etcd key, reason).
    pub failed: Vec<(String, String)>,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// Destination values differ and overwriting was not asked for; nothing
    /// was written.
    #[error(
        "refusing to overwrite: {count} value(s) already at the destination differ from the source ({examples}); nothing was copied. Pass --overwrite to replace them with the source's bytes (each replacement is conditional on the destination revision just read)"
    )]
    WouldOverwrite {
        /// How many differ.
        count: u64,
        /// The first few keys, comma-separated.
        examples: String,
    },
    /// An engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A key-ordered walk over one engine's listing, a page at a time.
struct Cursor<'a> {
    engine: &'a dyn StorageEngine,
    prefix: &'a str,
    page_size: usize,
    buf: VecDeque<Versioned>,
    after: Option<String>,
    done: bool,
}

impl<'a> Cursor<'a> {
    fn new(engine: &'a dyn StorageEngine, prefix: &'a str, page_size: usize) -> Self {
        Cursor {
            engine,
            prefix,
            page_size: page_size.max(1),
            buf: VecDeque::new(),
            after: None,
            done: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&Versioned>, StorageError> {
        while self.buf.is_empty() && !self.done {
            let page = self
                .engine
                .list(self.prefix, self.after.as_deref(), self.page_size)?;
            self.buf.extend(page.items);
            match page.continue_after {
                Some(k) => self.after = Some(k),
                None => self.done = true,
            }
        }
        Ok(self.buf.front())
    }

    fn take(&mut self) -> Option<Versioned> {
        self.buf.pop_front()
    }
}

/// One source value and what the destination holds under its key.
enum Pair {
    Missing(Versioned),
    Same,
    Different { src: Versioned, dst_revision: u64 },
    OnlyAtDestination,
}

/// Walks both listings in key order, calling `f` for each pair.
fn merge(
    src: &dyn StorageEngine,
    dst: &dyn StorageEngine,
    prefix: &str,
    page_size: usize,
    mut f: impl FnMut(Pair) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut s = Cursor::new(src, prefix, page_size);
    let mut d = Cursor::new(dst, prefix, page_size);
    loop {
        let order = match (s.peek()?.map(|v| v.key.clone()), d.peek()?) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(sk), Some(dv)) => sk.as_str().cmp(dv.key.as_str()),
        };
        match order {
            std::cmp::Ordering::Less => f(Pair::Missing(s.take().expect("peeked")))?,
            std::cmp::Ordering::Greater => {
                d.take();
                f(Pair::OnlyAtDestination)?
            }
            std::cmp::Ordering::Equal => {
                let sv = s.take().expect("peeked");
                let dv = d.take().expect("peeked");
                if sv.value == dv.value {
                    f(Pair::Same)?
                } else {
                    f(Pair::Different {
                        src: sv,
                        dst_revision: dv.mod_revision,
                    })?
                }
            }
        }
    }
}

/// A write the copy pass makes.
struct Write {
    src: Versioned,
    pre: Precondition,
    overwrite: bool,
}

fn apply_writes(
    dst: &dyn StorageEngine,
    writes: Vec<Write>,
    workers: usize,
    report: &Mutex<MigrateReport>,
    progress: &dyn Progress,
) {
    let n = writes.len();
    let next = AtomicUsize::new(0);
    let writes = &writes;
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, writes.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = writes.get(i) else { return };
                    let res = dst.put(&w.src.key, &w.src.value, w.pre);
                    let mut r = kms_proto::sync::lock(report);
                    match res {
                        Ok(_) if w.overwrite => r.overwritten += 1,
                        Ok(_) => r.copied += 1,
                        Err(StorageError::Conflict { reason, .. }) => r.failed.push((
                            w.src.key.clone(),
                            format!("changed at the destination during the migration: {reason}"),
                        )),
                        Err(e) => r.failed.push((w.src.key.clone(), e.to_string())),
                    }
                }
            });
        }
    });
    for _ in 0..n {
        progress.tick();
    }
}

const EXAMPLES: usize = 5;

/// Copies every value under `prefix` from `src` to `dst` (see the module
/// documentation), then verifies.
pub fn migrate(
    src: &dyn StorageEngine,
    dst: &dyn StorageEngine,
    prefix: &str,
    opts: &MigrateOptions,
    progress: &dyn Progress,
) -> Result<MigrateReport, MigrateError> {
    // Pass 1: plan.
    let mut report = MigrateReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut differing = Vec::new();
    merge(src, dst, prefix, opts.page_size, |p| {
        match p {
            Pair::Missing(_) => report.source_values += 1,
            Pair::Same => {
                report.source_values += 1;
                report.identical += 1;
            }
            Pair::Different { src, .. } => {
                report.source_values += 1;
                report.differing += 1;
                if differing.len() < EXAMPLES {
                    differing.push(src.key);
                }
            }
            Pair::OnlyAtDestination => report.only_at_destination += 1,
        }
        Ok(())
    })?;
    if report.differing > 0 && !opts.overwrite && !opts.dry_run {
        let more = if report.differing as usize > differing.len() {
            ", …"
        } else {
            ""
        };
        return Err(MigrateError::WouldOverwrite {
            count: report.differing,
            examples: format!("{}{more}", differing.join(", ")),
        });
    }
    if opts.dry_run {
        return Ok(report);
    }
    progress.total(report.source_values - report.identical);

    // Pass 2: copy, a page of writes at a time.
    let planned_identical = report.identical;
    let report = Mutex::new(report);
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<Write>| {
        apply_writes(dst, std::mem::take(batch), opts.workers, &report, progress);
    };
    merge(src, dst, prefix, opts.page_size, |p| {
        match p {
            Pair::Missing(src) => batch.push(Write {
                src,
                pre: Precondition::Absent,
                overwrite: false,
            }),
            Pair::Different { src, dst_revision } if opts.overwrite => batch.push(Write {
                src,
                pre: Precondition::ModRevision(dst_revision),
                overwrite: true,
            }),
            Pair::Different { src, .. } => kms_proto::sync::lock(&report).failed.push((
                src.key,
                "appeared at the destination with different bytes during the migration (not overwritten)".into(),
            )),
            Pair::Same | Pair::OnlyAtDestination => {}
        }
        if batch.len() >= opts.page_size {
            flush(&mut batch);
        }
        Ok(())
    })?;
    flush(&mut batch);
    let mut report = kms_proto::sync::into_inner(report);
    report.identical = planned_identical;

    // Pass 3: verify, byte for byte.
    let mut failed = Vec::new();
    let mut verified = 0u64;
    merge(src, dst, prefix, opts.page_size, |p| {
        match p {
            Pair::Same => verified += 1,
            Pair::Missing(v) => failed.push((v.key, "missing at the destination".to_string())),
            Pair::Different { src, .. } => failed.push((
                src.key,
                "the destination's bytes differ from the source's".to_string(),
            )),
            Pair::OnlyAtDestination => {}
        }
        Ok(())
    })?;
    report.verified = verified;
    for (k, why) in failed {
        if !report.failed.iter().any(|(fk, _)| *fk == k) {
            report.failed.push((k, why));
        }
    }
    report.failed.sort();
    Ok(report)
}

#[cfg(test)]
#[cfg(feature = "rocksdb")]
mod tests {
    use super::*;
    use crate::storage::rocks::RocksEngine;

    const P: &str = "/registry/secrets/";

    fn engine() -> (tempfile::TempDir, RocksEngine) {
        let d = tempfile::tempdir().unwrap();
        let e = RocksEngine::open(d.path(), false).unwrap();
        (d, e)
    }

    fn fill(e: &RocksEngine, n: usize, tag: &str) {
        for i in 0..n {
            let v: Vec<u8> = format!("k8s:enc:aesgcm:v1:k:{tag}{i}\0\u{1}").into_bytes();
            e.put(&format!("{P}ns/s{i:04}"), &v, Precondition::None)
                .unwrap();
        }
    }

    #[test]
    fn copies_byte_for_byte_and_verifies() {
        let (_a, src) = engine();
        let (_b, dst) = engine();
        fill(&src, 1234, "x");
        src.put(
            "/registry/configmaps/ns/c",
            b"not a secret",
            Precondition::None,
        )
        .unwrap();
        dst.put(&format!("{P}zz/extra"), b"left alone", Precondition::None)
            .unwrap();
        let opts = MigrateOptions {
            page_size: 100,
            ..Default::default()
        };
        let r = migrate(&src, &dst, P, &opts, &()).unwrap();
        assert_eq!(
            (r.source_values, r.copied, r.identical, r.verified),
            (1234, 1234, 0, 1234)
        );
        assert_eq!(r.only_at_destination, 1);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert!(dst.get("/registry/configmaps/ns/c").unwrap().is_none());
        // Again: everything is already there.
        let r = migrate(&src, &dst, P, &opts, &()).unwrap();
        assert_eq!((r.copied, r.identical, r.verified), (0, 1234, 1234));
    }

    #[test]
    fn refuses_to_overwrite_different_values_unless_told() {
        let (_a, src) = engine();
        let (_b, dst) = engine();
        fill(&src, 10, "new");
        dst.put(&format!("{P}ns/s0003"), b"old", Precondition::None)
            .unwrap();
        let err = migrate(&src, &dst, P, &MigrateOptions::default(), &()).unwrap_err();
        let m = err.to_string();
        assert!(m.starts_with("refusing to overwrite: 1 value(s)"), "{m}");
        assert!(m.contains("/registry/secrets/ns/s0003"), "{m}");
        assert!(
            m.contains("nothing was copied") && m.contains("--overwrite"),
            "{m}"
        );
        assert!(dst.get(&format!("{P}ns/s0000")).unwrap().is_none());
        let dry = MigrateOptions {
            dry_run: true,
            ..Default::default()
        };
        let r = migrate(&src, &dst, P, &dry, &()).unwrap();
        assert_eq!((r.differing, r.copied, r.dry_run), (1, 0, true));
        let over = MigrateOptions {
            overwrite: true,
            ..Default::default()
        };
        let r = migrate(&src, &dst, P, &over, &()).unwrap();
        assert_eq!((r.copied, r.overwritten, r.verified), (9, 1, 10));
        assert_eq!(
            dst.get(&format!("{P}ns/s0003")).unwrap().unwrap().value,
            src.get(&format!("{P}ns/s0003")).unwrap().unwrap().value
        );
    }
}
