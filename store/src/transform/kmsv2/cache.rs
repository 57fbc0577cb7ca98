//! Unwrapped seeds and DEKs, so that reads call the plugin's Decrypt only on
//! a miss.
//!
//! An entry is found by the fields upstream's cache key covers
//! (`generateCacheKey`: source type, `encryptedDEKSource`, `keyID` and the
//! annotations), compared in full: a [`Source`]. Upstream hashes those
//! fields with SHA-256 for every value read; here the map is keyed by
//! `encryptedDEKSource` (the plugin's ciphertext, unique per seed) with a
//! cheap hash, and the other fields are compared on a hit, so a read costs
//! no digest. [`cache_key`] (upstream's SHA-256 layout: source type (u32),
//! u16-length-prefixed `encryptedDEKSource` and `keyID`, and when there are
//! annotations their count (u32) and each key and value u16-length-prefixed
//! in key order, all big-endian) still names a source where a fixed-size key
//! is wanted: the Decrypt calls in flight.
//!
//! Reads are lock-free: the map is replaced whole on each insert
//! (copy-on-write behind an `ArcSwap`), which happens only after a plugin
//! Decrypt or a new write seed, and a hit neither locks nor writes memory
//! that other readers share (its recency is stored only when an insert has
//! happened since the entry's last use), nor clones the key: the caller uses
//! it in place. Entries live for a TTL (24 h upstream) and the cache is
//! bounded: when full, the least recently used entry goes. Values are wiped
//! when the last reference to them is dropped (eviction, [`DekCache::clear`],
//! or the cache itself, once no read still holds an old map).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ring::digest;

use super::dek::UnwrappedKey;
use super::envelope::{DekSourceType, EncryptedObjectRef, encode_tail, tail_dek_source};

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

/// What names a DEK source: the fields of an `EncryptedObject` that
/// upstream's cache key covers, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    source_type: DekSourceType,
    encrypted_dek_source: Arc<[u8]>,
    key_id: Box<str>,
    /// In key order, as the object's map.
    annotations: Box<[Annotation]>,
}

/// An annotation's key and value, owned.
type Annotation = (Box<str>, Box<[u8]>);

impl Source {
    /// The source of a seed the plugin wrapped as `encrypted_dek_source`.
    pub(crate) fn new(
        source_type: DekSourceType,
        encrypted_dek_source: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Self {
        Source {
            source_type,
            encrypted_dek_source: encrypted_dek_source.into(),
            key_id: key_id.into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_slice().into()))
                .collect(),
        }
    }

    /// The source of a stored object.
    pub(crate) fn of(o: &EncryptedObjectRef<'_>) -> Self {
        Source {
            source_type: o.dek_source_type,
            encrypted_dek_source: o.encrypted_dek_source.into(),
            key_id: o.key_id.into(),
            annotations: o
                .annotations
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    /// The key_id the source was wrapped under.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// How the source is to be read.
    pub(crate) fn source_type(&self) -> DekSourceType {
        self.source_type
    }

    /// Fields 2-5 of an `EncryptedObject` of this source, as this crate and
    /// upstream encode them (`encode_tail`).
    pub(crate) fn tail(&self) -> Box<[u8]> {
        encode_tail(
            &self.key_id,
            &self.encrypted_dek_source,
            self.annotations.iter().map(|(k, v)| (k.as_bytes(), &v[..])),
            self.source_type,
        )
        .into_boxed_slice()
    }

    /// Whether `o` was written with this source: every field equal.
    pub(crate) fn matches(&self, o: &EncryptedObjectRef<'_>) -> bool {
        o.dek_source_type == self.source_type
            && o.key_id == &*self.key_id
            && o.encrypted_dek_source == &self.encrypted_dek_source[..]
            && o.annotations.len() == self.annotations.len()
            && o.annotations
                .iter()
                .zip(self.annotations.iter())
                .all(|((k1, v1), (k2, v2))| *k1 == &**k2 && *v1 == &**v2)
    }
}

struct Entry {
    source: Source,
    /// `source.tail()`: what a stored object of this source ends with.
    tail: Box<[u8]>,
    key: Arc<UnwrappedKey>,
    expires: Instant,
    /// When the entry was last used, on the clock of [`DekCache::inserts`].
    last_used: AtomicU64,
}

/// Entries by `encryptedDEKSource`; more than one only when stored objects
/// share a plugin ciphertext but differ in another field.
type Map = HashMap<Arc<[u8]>, Vec<Arc<Entry>>, SourceHash>;

/// A bounded, expiring map from DEK source to unwrapped key.
pub(crate) struct DekCache {
    map: ArcSwap<Map>,
    /// Serialises inserts and clears (each builds the next map).
    writer: Mutex<()>,
    ttl: Duration,
    capacity: usize,
    /// Inserts so far: the clock of the least-recently-used order (insert
    /// n adds an entry at 2n; a use after it counts 2n + 1).
    inserts: AtomicU64,
    hash: SourceHash,
}

impl DekCache {
    /// A cache of at most `capacity` (at least 1) entries living `ttl` each.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        let hash = SourceHash::random();
        DekCache {
            map: ArcSwap::from_pointee(Map::with_hasher(hash)),
            writer: Mutex::new(()),
            ttl,
            capacity: capacity.max(1),
            inserts: AtomicU64::new(0),
            hash,
        }
    }

    /// Runs `f` with the key of `o`'s source, if cached and not expired;
    /// the key is used in place, not cloned.
    pub(crate) fn with<R>(
        &self,
        o: &EncryptedObjectRef<'_>,
        f: impl FnOnce(&UnwrappedKey) -> R,
    ) -> Option<R> {
        let map = self.map.load();
        self.find(&map, o).map(|e| f(&e.key))
    }

    /// Runs `f` with the key and source of the entry whose
    /// [`Source::tail`] is `tail` byte for byte, if cached and not expired:
    /// the read path's shortcut past decoding and validating the object
    /// (see `envelope::split_data`).
    pub(crate) fn with_tail<R>(
        &self,
        tail: &[u8],
        f: impl FnOnce(&UnwrappedKey, &Source) -> R,
    ) -> Option<R> {
        let map = self.map.load();
        let e = map
            .get(tail_dek_source(tail)?)?
            .iter()
            .find(|e| *e.tail == *tail)?;
        self.touch(e).map(|e| f(&e.key, &e.source))
    }

    /// The key of `o`'s source, if cached and not expired.
    pub(crate) fn get(&self, o: &EncryptedObjectRef<'_>) -> Option<Arc<UnwrappedKey>> {
        let map = self.map.load();
        self.find(&map, o).map(|e| Arc::clone(&e.key))
    }

    fn find<'m>(&self, map: &'m Map, o: &EncryptedObjectRef<'_>) -> Option<&'m Entry> {
        let e = map
            .get(o.encrypted_dek_source)?
            .iter()
            .find(|e| e.source.matches(o))?;
        self.touch(e)
    }

    /// `e`, unless expired, marked as used.
    fn touch<'m>(&self, e: &'m Entry) -> Option<&'m Entry> {
        if Instant::now() >= e.expires {
            return None;
        }
        // Written only when an insert happened since the last use, so hits
        // in a steady state only read the entry. A use after insert n counts
        // 2n + 1: later than the entry that insert added (2n).
        let now = 2 * self.inserts.load(Ordering::Relaxed) + 1;
        if e.last_used.load(Ordering::Relaxed) != now {
            e.last_used.store(now, Ordering::Relaxed);
        }
        Some(e)
    }

    /// Caches `key` for `source` for a full TTL (replacing any entry),
    /// dropping expired entries and, when full, the least recently used one.
    pub(crate) fn insert(&self, source: Source, key: Arc<UnwrappedKey>) {
        let _writer = kms_proto::sync::lock(&self.writer);
        let now = Instant::now();
        let mut map: Map = (**self.map.load()).clone();
        if let Some(v) = map.get_mut(&source.encrypted_dek_source[..]) {
            v.retain(|e| e.source != source);
        }
        map.retain(|_, v| !v.is_empty());
        if count(&map) >= self.capacity {
            for v in map.values_mut() {
                v.retain(|e| e.expires > now);
            }
            map.retain(|_, v| !v.is_empty());
        }
        if count(&map) >= self.capacity
            && let Some((eds, i)) = map
                .iter()
                .flat_map(|(k, v)| v.iter().enumerate().map(move |(i, e)| (k, i, e)))
                .min_by_key(|(_, _, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, i, _)| (Arc::clone(k), i))
        {
            let v = map.get_mut(&eds[..]).expect("just found");
            v.remove(i);
            if v.is_empty() {
                map.remove(&eds[..]);
            }
        }
        let tick = 2 * (self.inserts.fetch_add(1, Ordering::Relaxed) + 1);
        let eds = Arc::clone(&source.encrypted_dek_source);
        map.entry(eds).or_default().push(Arc::new(Entry {
            tail: source.tail(),
            source,
            key,
            expires: now + self.ttl,
            last_used: AtomicU64::new(tick),
        }));
        self.map.store(Arc::new(map));
    }

    /// Drops every entry (their keys are wiped once no read holds them).
    pub(crate) fn clear(&self) {
        let _writer = kms_proto::sync::lock(&self.writer);
        self.map.store(Arc::new(Map::with_hasher(self.hash)));
    }

    /// How many entries are held (expired ones included until swept).
    pub(crate) fn len(&self) -> usize {
        count(&self.map.load())
    }
}

fn count(map: &Map) -> usize {
    map.values().map(Vec::len).sum()
}

/// The map's hash of an `encryptedDEKSource`: a multiply-rotate over 8-byte
/// words from a random start (a few nanoseconds for a 100-byte ciphertext,
/// where SipHash takes about a hundred). Flooding does not apply: an entry
/// is only added after the plugin decrypted its source.
#[derive(Clone, Copy)]
pub(crate) struct SourceHash(u64);

impl SourceHash {
    fn random() -> Self {
        SourceHash(u64::from_le_bytes(crate::rand::array::<8>()))
    }
}

impl BuildHasher for SourceHash {
    type Hasher = WordHasher;
    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.0)
    }
}

/// See [`SourceHash`].
pub(crate) struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wipe::Wiped;

    /// A TTL the test's first use comes well within, even on a loaded
    /// machine (20 ms was not), and a sleep past it.
    const SHORT_TTL: Duration = Duration::from_millis(300);
    const PAST_SHORT_TTL: Duration = Duration::from_millis(400);

    fn key() -> Arc<UnwrappedKey> {
        Arc::new(UnwrappedKey::Seed(super::super::dek::SeedKey::new(
            &[1; 32],
        )))
    }

    fn obj<'a>(eds: &'a [u8], key_id: &'a str) -> EncryptedObjectRef<'a> {
        EncryptedObjectRef {
            encrypted_data: &[0; 60],
            key_id,
            encrypted_dek_source: eds,
            annotations: BTreeMap::new(),
            dek_source_type: DekSourceType::HkdfSha256XnonceAesGcmSeed,
        }
    }

    fn hit(c: &DekCache, o: &EncryptedObjectRef<'_>) -> bool {
        c.with(o, |_| ()).is_some()
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
    fn with_tail_needs_the_whole_tail() {
        let c = DekCache::new(10, Duration::from_secs(60));
        let mut o = obj(b"src-1", "k1");
        o.annotations.insert("a.io", b"1");
        let src = Source::of(&o);
        c.insert(src.clone(), key());
        let tail = src.tail();
        let got = c.with_tail(&tail, |_, s| (s.key_id().to_owned(), s.source_type()));
        assert_eq!(
            got,
            Some(("k1".to_owned(), DekSourceType::HkdfSha256XnonceAesGcmSeed))
        );
        // The same plugin ciphertext with another key_id, annotation or
        // source type, a byte more or less: no hit.
        let mut other = o.clone();
        other.key_id = "k2";
        let mut more = o.clone();
        more.annotations.insert("b.io", b"");
        let mut legacy = o.clone();
        legacy.dek_source_type = DekSourceType::AesGcmKey;
        for s in [&other, &more, &legacy] {
            assert!(c.with_tail(&Source::of(s).tail(), |_, _| ()).is_none());
        }
        assert!(c.with_tail(&tail[..tail.len() - 1], |_, _| ()).is_none());
        let mut longer = tail.to_vec();
        longer.extend([0x78, 0x01]);
        assert!(c.with_tail(&longer, |_, _| ()).is_none());
        assert!(c.with_tail(b"", |_, _| ()).is_none());
    }

    #[test]
    fn with_tail_misses_once_expired() {
        let c = DekCache::new(10, SHORT_TTL);
        let src = Source::of(&obj(b"src-1", "k1"));
        c.insert(src.clone(), key());
        assert!(c.with_tail(&src.tail(), |_, _| ()).is_some());
        std::thread::sleep(PAST_SHORT_TTL);
        assert!(c.with_tail(&src.tail(), |_, _| ()).is_none());
    }

    /// A hit needs every field of the source equal, not only the plugin's
    /// ciphertext the map is keyed by.
    #[test]
    fn every_part_of_the_source_must_match() {
        let c = DekCache::new(10, Duration::from_secs(60));
        let base = obj(b"wrapped-seed", "k1");
        c.insert(Source::of(&base), key());
        assert!(hit(&c, &base));
        assert!(!hit(&c, &obj(b"wrapped-seee", "k1")));
        assert!(!hit(&c, &obj(b"wrapped-seed", "k2")));
        let mut legacy = base.clone();
        legacy.dek_source_type = DekSourceType::AesGcmKey;
        assert!(!hit(&c, &legacy));
        let mut annotated = base.clone();
        annotated.annotations.insert("a.io", b"1");
        assert!(!hit(&c, &annotated));
        // The same ciphertext under another key_id is another entry.
        let other = Arc::new(UnwrappedKey::Legacy(Wiped::new(vec![2; 32])));
        c.insert(Source::of(&annotated), Arc::clone(&other));
        assert_eq!(c.len(), 2);
        assert!(
            c.with(&annotated, |k| matches!(k, UnwrappedKey::Legacy(_)))
                .unwrap()
        );
        assert!(
            c.with(&base, |k| matches!(k, UnwrappedKey::Seed(_)))
                .unwrap()
        );
        // Inserting a source again replaces its entry.
        c.insert(Source::of(&base), key());
        assert_eq!(c.len(), 2);
        assert!(Source::of(&base).matches(&base));
        assert!(!Source::of(&base).matches(&annotated));
    }

    #[test]
    fn a_hit_uses_the_key_in_place() {
        let c = DekCache::new(10, Duration::from_secs(60));
        let k = key();
        let o = obj(b"src", "k1");
        c.insert(Source::of(&o), Arc::clone(&k));
        let refs = c.with(&o, |_| Arc::strong_count(&k)).unwrap();
        assert_eq!(refs, 2, "the cache's and the test's: a hit clones nothing");
        assert!(Arc::ptr_eq(&c.get(&o).unwrap(), &k));
    }

    #[test]
    fn bounded_least_recently_used() {
        let c = DekCache::new(2, Duration::from_secs(60));
        let (o1, o2, o3) = (obj(b"1", "k"), obj(b"2", "k"), obj(b"3", "k"));
        c.insert(Source::of(&o1), key());
        c.insert(Source::of(&o2), key());
        assert!(hit(&c, &o1));
        c.insert(Source::of(&o3), key());
        assert_eq!(c.len(), 2);
        assert!(!hit(&c, &o2), "the least recently used entry goes");
        // Used after o3's insert: o3 is older than o1 now.
        assert!(hit(&c, &o1));
        let o4 = obj(b"4", "k");
        c.insert(Source::of(&o4), key());
        assert!(hit(&c, &o1) && hit(&c, &o4) && !hit(&c, &o3));
    }

    #[test]
    fn entries_expire_and_clear_drops_them() {
        let c = DekCache::new(10, SHORT_TTL);
        let k = key();
        let o1 = obj(b"1", "k");
        c.insert(Source::of(&o1), Arc::clone(&k));
        assert!(hit(&c, &o1));
        std::thread::sleep(PAST_SHORT_TTL);
        assert!(!hit(&c, &o1));
        assert!(c.get(&o1).is_none());
        c.insert(Source::of(&obj(b"2", "k")), key());
        c.clear();
        assert_eq!(c.len(), 0);
        assert_eq!(
            Arc::strong_count(&k),
            1,
            "the cache holds no reference after clear"
        );
    }

    /// Expired entries go before a live one is evicted.
    #[test]
    fn a_full_cache_sweeps_expired_entries_first() {
        let c = DekCache::new(2, Duration::from_millis(20));
        c.insert(Source::of(&obj(b"1", "k")), key());
        c.insert(Source::of(&obj(b"2", "k")), key());
        std::thread::sleep(Duration::from_millis(30));
        c.insert(Source::of(&obj(b"3", "k")), key());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn readers_on_many_threads_see_inserts() {
        let c = Arc::new(DekCache::new(64, Duration::from_secs(60)));
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let c = Arc::clone(&c);
                s.spawn(move || {
                    for i in 0..50u8 {
                        let eds = [t, i];
                        let o = obj(&eds, "k");
                        c.insert(Source::of(&o), key());
                        assert!(hit(&c, &o));
                    }
                });
            }
        });
        assert_eq!(c.len(), 64);
    }
}
