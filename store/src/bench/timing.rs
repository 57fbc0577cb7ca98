//! Where a bench operation's time goes: a transformer and an engine that
//! add up the nanoseconds spent in them (sealing and opening; the engine's
//! calls), so each phase can report the share of its time spent in
//! encryption and in storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::storage::{Page, Precondition, ScanFn, StorageEngine, StorageError, Versioned};
use crate::transform::{EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};

/// Nanoseconds spent, shared by the wrappers and the bench.
#[derive(Clone, Default)]
pub(super) struct Clock(Arc<AtomicU64>);

impl Clock {
    pub(super) fn nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

/// A provider (usually a whole chain) whose seal and open are timed.
pub(super) struct TimedTransformer {
    pub(super) inner: Arc<dyn Transformer>,
    pub(super) clock: Clock,
}

impl Transformer for TimedTransformer {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn prefix(&self) -> &[u8] {
        self.inner.prefix()
    }
    fn matches(&self, stored: &[u8]) -> bool {
        self.inner.matches(stored)
    }
    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        self.clock.time(|| self.inner.seal(plaintext, etcd_key))
    }
    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        self.clock.time(|| self.inner.open(stored, etcd_key))
    }
    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        self.inner.inspect(stored, etcd_key)
    }
    fn is_current(&self, stored: &[u8]) -> bool {
        self.inner.is_current(stored)
    }
}

/// An engine whose calls are timed.
pub(super) struct TimedEngine {
    pub(super) inner: Arc<dyn StorageEngine>,
    pub(super) clock: Clock,
}

impl StorageEngine for TimedEngine {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        self.clock.time(|| self.inner.get(key))
    }
    fn put(&self, key: &str, value: &[u8], pre: Precondition) -> Result<u64, StorageError> {
        self.clock.time(|| self.inner.put(key, value, pre))
    }
    fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StorageError> {
        self.clock.time(|| self.inner.delete(key, pre))
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        self.clock
            .time(|| self.inner.list(prefix, start_after, limit))
    }
    fn revision(&self) -> Result<u64, StorageError> {
        self.clock.time(|| self.inner.revision())
    }
    fn scan(
        &self,
        prefix: &str,
        page_size: usize,
        f: &mut ScanFn<'_>,
    ) -> Result<u64, StorageError> {
        self.inner.scan(prefix, page_size, f)
    }
}
