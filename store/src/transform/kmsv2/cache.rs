//! Unwrapped seeds and DEKs, so that reads call the plugin's Decrypt only on
//! a miss.
//!
//! Keyed as upstream (`generateCacheKey`, then SHA-256 as its `simpleCache`
//! does): source type (u32), u16-length-prefixed `encryptedDEKSource` and
//! `keyID`, and when there are annotations their count (u32) and each key and
//! value u16-length-prefixed in key order, all big-endian. Entries live for a
//! TTL (24 h upstream) and the cache is bounded: when full, the least
//! recently used entry goes. Values are wiped when the last reference to them
//! is dropped (eviction, [`DekCache::clear`], or the cache itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ring::digest;

use super::dek::UnwrappedKey;
use super::envelope::{DekSourceType, EncryptedObjectRef};

/// The SHA-256 of upstream's cache key.
pub(crate) type CacheKey = [u8; 32];

/// Computes the cache key of an object's DEK source without allocating.
pub(crate) fn cache_key<'a, I>(
    source_type: DekSourceType,
    encrypted_dek_source: &[u8],
    key_id: &str,
    annotations: I,
) -> CacheKey
where
    I: ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
{
    // Lengths fit u16: validation caps each field at 1 kB and annotations at
    // 32 kB in total.
    fn prefixed(ctx: &mut digest::Context, b: &[u8]) {
        ctx.update(&(b.len() as u16).to_be_bytes());
        ctx.update(b);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(source_type.wire_value() as u32).to_be_bytes());
    prefixed(&mut ctx, encrypted_dek_source);
    prefixed(&mut ctx, key_id.as_bytes());
    if annotations.len() > 0 {
        ctx.update(&(annotations.len() as u32).to_be_bytes());
        for (k, v) in annotations {
            prefixed(&mut ctx, k);
            prefixed(&mut ctx, v);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The cache key of a stored object.
pub(crate) fn cache_key_of(o: &EncryptedObjectRef<'_>) -> CacheKey {
    cache_key(
        o.dek_source_type,
        o.encrypted_dek_source,
        o.key_id,
        o.annotations.iter().map(|(k, v)| (k.as_bytes(), *v)),
    )
}

struct Entry {
    key: Arc<UnwrappedKey>,
    expires: Instant,
    last_used: AtomicU64,
}

/// A bounded, expiring map from cache key to unwrapped key.
pub(crate) struct DekCache {
    map: RwLock<HashMap<CacheKey, Entry>>,
    ttl: Duration,
    capacity: usize,
    clock: AtomicU64,
}

impl DekCache {
    /// A cache of at most `capacity` (at least 1) entries living `ttl` each.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        DekCache {
            map: RwLock::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The key cached under `k`, if present and not expired.
    pub(crate) fn get(&self, k: &CacheKey) -> Option<Arc<UnwrappedKey>> {
        let map = kms_proto::sync::read(&self.map);
        let e = map.get(k)?;
        if Instant::now() >= e.expires {
            return None;
        }
        e.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(Arc::clone(&e.key))
    }

    /// Caches `key` under `k` for a full TTL (replacing any entry), dropping
    /// expired entries and, when full, the least recently used one.
    pub(crate) fn insert(&self, k: CacheKey, key: Arc<UnwrappedKey>) {
        let now = Instant::now();
        let mut map = kms_proto::sync::write(&self.map);
        if !map.contains_key(&k) && map.len() >= self.capacity {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.capacity
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        map.insert(
            k,
            Entry {
                key,
                expires: now + self.ttl,
                last_used: AtomicU64::new(tick),
            },
        );
    }

    /// Drops every entry (their keys are wiped once no read holds them).
    pub(crate) fn clear(&self) {
        kms_proto::sync::write(&self.map).clear();
    }

    /// How many entries are held (expired ones included until swept).
    pub(crate) fn len(&self) -> usize {
        kms_proto::sync::read(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wipe::Wiped;

    fn key() -> Arc<UnwrappedKey> {
        Arc::new(UnwrappedKey::Seed(Wiped::new(vec![1; 32])))
    }

    /// Upstream's bytes before hashing, spelled out for one case.
    #[test]
    fn key_layout_is_upstreams() {
        let mut raw = Vec::new();
        raw.extend(1u32.to_be_bytes());
        raw.extend(3u16.to_be_bytes());
        raw.extend(b"src");
        raw.extend(2u16.to_be_bytes());
        raw.extend(b"k1");
        raw.extend(2u32.to_be_bytes());
        for (k, v) in [(&b"a.io"[..], &b"1"[..]), (b"b.io", b"")] {
            raw.extend((k.len() as u16).to_be_bytes());
            raw.extend(k);
            raw.extend((v.len() as u16).to_be_bytes());
            raw.extend(v);
        }
        let want = digest::digest(&digest::SHA256, &raw);
        let got = cache_key(
            DekSourceType::HkdfSha256XnonceAesGcmSeed,
            b"src",
            "k1",
            [(&b"a.io"[..], &b"1"[..]), (b"b.io", b"")].into_iter(),
        );
        assert_eq!(&got[..], want.as_ref());
        // Without annotations the count is left out entirely.
        let mut raw = Vec::new();
        raw.extend(0u32.to_be_bytes());
        raw.extend(3u16.to_be_bytes());
        raw.extend(b"src");
        raw.extend(2u16.to_be_bytes());
        raw.extend(b"k1");
        let got = cache_key(DekSourceType::AesGcmKey, b"src", "k1", std::iter::empty());
        assert_eq!(&got[..], digest::digest(&digest::SHA256, &raw).as_ref());
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = cache_key(DekSourceType::AesGcmKey, b"src", "k", std::iter::empty());
        assert_ne!(
            base,
            cache_key(
                DekSourceType::HkdfSha256XnonceAesGcmSeed,
                b"src",
                "k",
                std::iter::empty()
            )
        );
        assert_ne!(
            base,
            cache_key(DekSourceType::AesGcmKey, b"srd", "k", std::iter::empty())
        );
        assert_ne!(
            base,
            cache_key(DekSourceType::AesGcmKey, b"src", "l", std::iter::empty())
        );
        assert_ne!(
            base,
            cache_key(
                DekSourceType::AesGcmKey,
                b"src",
                "k",
                [(&b"a.b"[..], &b""[..])].into_iter()
            )
        );
    }

    #[test]
    fn bounded_least_recently_used() {
        let c = DekCache::new(2, Duration::from_secs(60));
        c.insert([1; 32], key());
        c.insert([2; 32], key());
        assert!(c.get(&[1; 32]).is_some());
        c.insert([3; 32], key());
        assert_eq!(c.len(), 2);
        assert!(
            c.get(&[2; 32]).is_none(),
            "the least recently used entry goes"
        );
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
    }

    #[test]
    fn entries_expire_and_clear_drops_them() {
        let c = DekCache::new(10, Duration::from_millis(20));
        let k = key();
        c.insert([1; 32], Arc::clone(&k));
        assert!(c.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get(&[1; 32]).is_none());
        c.insert([2; 32], key());
        c.clear();
        assert_eq!(c.len(), 0);
        assert_eq!(
            Arc::strong_count(&k),
            1,
            "the cache holds no reference after clear"
        );
    }
}
