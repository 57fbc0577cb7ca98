//! The current write state: the DEK seed, its wrapped form and the facts
//! the plugin returned with it, swapped atomically when the key_id changes.
//!
//! Seals read it without locks (one `ArcSwap` load). Its write deadline is
//! moved forward by every healthy Status (upstream `ExpirationTimestamp`,
//! now + 3 minutes, set before the network call); a seal after the deadline
//! is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwapOption, Guard};

use super::cache::Source;
use super::dek::{SeedKey, UnwrappedKey};
use super::envelope::{DekSourceType, EncryptedObjectRef};
use crate::wipe::Wiped;

/// What every write uses until the key_id changes.
pub(crate) struct WriteState {
    /// The seed, shared with the read cache (one copy in memory).
    key: Arc<UnwrappedKey>,
    /// The plugin's key_id for the wrapped seed.
    pub(crate) key_id: String,
    /// The fields that name the seed's source in stored objects (and in
    /// the read cache).
    pub(crate) source: Source,
    /// Fields 2-5 of every `EncryptedObject` written with this state.
    pub(crate) tail: Box<[u8]>,
    /// When the seed was wrapped.
    pub(crate) created: SystemTime,
    /// Write deadline, in nanoseconds since the cell's base instant.
    deadline: AtomicU64,
    /// Whether reads may use the seed directly: false from a cache clear
    /// until the seed is cached again, so that a cleared store unwraps
    /// every DEK source through the plugin, this one too.
    readable: AtomicBool,
}

impl WriteState {
    /// A state for a seed wrapped by the plugin as `encrypted_dek_source`.
    pub(crate) fn new(
        seed: Wiped<Vec<u8>>,
        key_id: String,
        encrypted_dek_source: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Self {
        let t = DekSourceType::HkdfSha256XnonceAesGcmSeed;
        let source = Source::new(t, encrypted_dek_source, &key_id, annotations);
        let tail = source.tail();
        WriteState {
            key: Arc::new(UnwrappedKey::Seed(SeedKey::new(&seed))),
            key_id,
            source,
            tail,
            created: SystemTime::now(),
            deadline: AtomicU64::new(0),
            readable: AtomicBool::new(true),
        }
    }

    /// Whether reads of this seed's values may open them with [`Self::key`]
    /// (one relaxed load: nothing written on the read path).
    pub(crate) fn readable(&self) -> bool {
        self.readable.load(Ordering::Relaxed)
    }

    /// Lets reads use the seed directly, or not (a cache clear).
    pub(crate) fn set_readable(&self, readable: bool) {
        if self.readable.load(Ordering::Relaxed) != readable {
            self.readable.store(readable, Ordering::Relaxed);
        }
    }

    /// The seed, for sealing.
    pub(crate) fn seed(&self) -> &SeedKey {
        match &*self.key {
            UnwrappedKey::Seed(s) => s,
            UnwrappedKey::Legacy(_) => unreachable!("WriteState::new installs only seeds"),
        }
    }

    /// Whether `obj` was written with this state's seed, judged by the
    /// fields upstream's cache key covers. A read of such a value opens it
    /// with [`Self::key`] directly, without a cache lookup.
    pub(crate) fn is_source_of(&self, obj: &EncryptedObjectRef<'_>) -> bool {
        self.source.matches(obj)
    }

    /// The seed as the read cache holds it.
    pub(crate) fn key(&self) -> &Arc<UnwrappedKey> {
        &self.key
    }
}

/// The slot holding the current [`WriteState`] (none until the first
/// successful Status + Encrypt).
pub(crate) struct StateCell {
    current: ArcSwapOption<WriteState>,
    base: Instant,
}

impl StateCell {
    /// An empty cell.
    pub(crate) fn new() -> Self {
        StateCell {
            current: ArcSwapOption::empty(),
            base: Instant::now(),
        }
    }

    /// The current state, lock-free.
    pub(crate) fn load(&self) -> Guard<Option<Arc<WriteState>>> {
        self.current.load()
    }

    /// The current state as an owned reference.
    pub(crate) fn load_full(&self) -> Option<Arc<WriteState>> {
        self.current.load_full()
    }

    /// Makes `state` current, writable for `window` from `now`.
    pub(crate) fn install(
        &self,
        state: WriteState,
        now: Instant,
        window: Duration,
    ) -> Arc<WriteState> {
        state
            .deadline
            .store(self.deadline(now, window), Ordering::Release);
        let state = Arc::new(state);
        self.current.store(Some(Arc::clone(&state)));
        state
    }

    /// Moves `state`'s write deadline to `now + window`.
    pub(crate) fn extend(&self, state: &WriteState, now: Instant, window: Duration) {
        state
            .deadline
            .store(self.deadline(now, window), Ordering::Release);
    }

    /// Whether `state` may still be written with at `now`.
    pub(crate) fn writable(&self, state: &WriteState, now: Instant) -> bool {
        self.nanos(now) <= state.deadline.load(Ordering::Acquire)
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn deadline(&self, now: Instant, window: Duration) -> u64 {
        self.nanos(now)
            .saturating_add(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> WriteState {
        WriteState::new(
            Wiped::new(vec![7; 32]),
            "k1".into(),
            &[1; 40],
            &BTreeMap::new(),
        )
    }

    #[test]
    fn writable_until_the_deadline_then_extended() {
        let cell = StateCell::new();
        assert!(cell.load().is_none());
        let now = Instant::now();
        let st = cell.install(state(), now, Duration::from_secs(180));
        assert!(cell.writable(&st, now + Duration::from_secs(180)));
        assert!(!cell.writable(&st, now + Duration::from_secs(181)));
        cell.extend(
            &st,
            now + Duration::from_secs(100),
            Duration::from_secs(180),
        );
        assert!(cell.writable(&st, now + Duration::from_secs(280)));
        assert_eq!(cell.load().as_ref().unwrap().key_id, "k1");
    }

    #[test]
    fn an_endless_window_does_not_overflow() {
        let cell = StateCell::new();
        let now = Instant::now();
        let st = cell.install(state(), now, Duration::MAX);
        assert!(cell.writable(&st, now + Duration::from_secs(10 * 365 * 86400)));
    }

    #[test]
    fn recognises_its_own_objects() {
        let ann: BTreeMap<String, Vec<u8>> = [("a.io".to_string(), b"1".to_vec())].into();
        let st = WriteState::new(Wiped::new(vec![7; 32]), "k1".into(), &[1; 40], &ann);
        let mut obj = EncryptedObjectRef {
            encrypted_data: &[0; 60],
            key_id: "k1",
            encrypted_dek_source: &[1; 40],
            annotations: [("a.io", &b"1"[..])].into(),
            dek_source_type: DekSourceType::HkdfSha256XnonceAesGcmSeed,
        };
        assert!(st.is_source_of(&obj));
        assert_eq!(Source::of(&obj), st.source);
        obj.annotations.insert("a.io", b"2");
        assert!(!st.is_source_of(&obj));
        obj.annotations.insert("a.io", b"1");
        obj.key_id = "k2";
        assert!(!st.is_source_of(&obj));
        obj.key_id = "k1";
        obj.encrypted_dek_source = &[2; 40];
        assert!(!st.is_source_of(&obj));
        obj.encrypted_dek_source = &[1; 40];
        obj.dek_source_type = DekSourceType::AesGcmKey;
        assert!(!st.is_source_of(&obj));
    }

    #[test]
    fn the_seed_is_shared_with_the_cache_entry() {
        let st = state();
        let mut sealed = Vec::new();
        st.seed().seal_into(&mut sealed, b"v", b"k");
        let by_raw_seed = super::super::dek::open_seed(&[7; 32], &sealed, b"k").unwrap();
        assert_eq!(&by_raw_seed[..], b"v");
        assert!(matches!(&**st.key(), UnwrappedKey::Seed(_)));
    }
}
