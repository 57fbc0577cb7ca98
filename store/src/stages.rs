//! Where an operation's time goes, stage by stage, for `secret-store bench`.
//!
//! The store's write and read paths mark their stages with [`time`]: the
//! engine call, the codec, validation, the provider's seal or open, and
//! inside the KMS v2 provider the envelope parse, the DEK cache lookup, the
//! key derivation and the AEAD pass. Nothing is measured unless the calling
//! thread asked for it ([`Recording::start`]): then each stage adds its
//! nanoseconds to counters of that thread alone, so measuring never makes
//! threads share memory. Off, a mark costs one read of a thread-local flag.
//!
//! Each stage counts its own time only: stages marked inside another (the
//! KMS v2 stages inside [`Stage::Transform`]) are left out of it, so the
//! stages of an operation add up to at most its time, and what
//! [`Stage::Transform`] keeps is the provider's work outside its marked
//! stages (identity: the copy; KMS v2: buffers and framing).
//!
//! Two levels: [`Level::Coarse`] times the provider and the engine only
//! (two clock pairs per operation, the bench's concurrent phases);
//! [`Level::Full`] times every stage (the bench's single-threaded
//! breakdown, where the clock reads themselves do not change the rates).

use std::cell::Cell;
use std::time::Instant;

/// A stage of a write or a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The storage engine's call (get, put).
    Engine,
    /// The provider chain's seal or open, less the stages marked inside it.
    Transform,
    /// Create's defaulting and validation of the Secret.
    Validate,
    /// Serialising the Secret (protobuf or JSON).
    Encode,
    /// Deserialising the Secret.
    Decode,
    /// KMS v2: the prefix, the `EncryptedObject` and the write-state check.
    Parse,
    /// KMS v2: the DEK cache lookup (plugin calls on a miss included).
    Cache,
    /// KMS v2: HKDF-SHA256 of the value's key and its AES key schedule.
    Derive,
    /// The AEAD pass (and the copy into the plaintext buffer when opening).
    Aead,
}

impl Stage {
    /// Every stage, in the order the bench prints them.
    pub const ALL: [Stage; 9] = [
        Stage::Engine,
        Stage::Transform,
        Stage::Validate,
        Stage::Encode,
        Stage::Decode,
        Stage::Parse,
        Stage::Cache,
        Stage::Derive,
        Stage::Aead,
    ];

    /// The stage's name in the bench's output.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Engine => "engine",
            Stage::Transform => "transform",
            Stage::Validate => "validate",
            Stage::Encode => "encode",
            Stage::Decode => "decode",
            Stage::Parse => "parse",
            Stage::Cache => "cache",
            Stage::Derive => "derive",
            Stage::Aead => "aead",
        }
    }

    fn level(self) -> Level {
        match self {
            Stage::Engine | Stage::Transform => Level::Coarse,
            _ => Level::Full,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How much a recording thread measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// The engine and the provider.
    Coarse,
    /// Every stage.
    Full,
}

/// Nanoseconds per stage, indexed as [`Stage::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageNanos(pub [u64; Stage::ALL.len()]);

impl StageNanos {
    /// The nanoseconds of `stage`.
    pub fn get(&self, stage: Stage) -> u64 {
        self.0[stage.index()]
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &StageNanos) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

thread_local! {
    static LEVEL: Cell<Level> = const { Cell::new(Level::Off) };
    static NANOS: Cell<StageNanos> = const { Cell::new(StageNanos([0; Stage::ALL.len()])) };
    /// Nanoseconds of the stages timed inside the one running now.
    static NESTED: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f`, adding its time (less that of the stages timed inside it) to
/// `stage` when this thread records it.
#[inline]
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    if LEVEL.with(Cell::get) < stage.level() {
        return f();
    }
    let outer = NESTED.with(|n| n.replace(0));
    let t = Instant::now();
    let out = f();
    let spent = t.elapsed().as_nanos() as u64;
    let inner = NESTED.with(|n| n.replace(outer + spent));
    NANOS.with(|n| {
        let mut v = n.get();
        v.0[stage.index()] += spent.saturating_sub(inner);
        n.set(v);
    });
    out
}

/// This thread's recording; it stops when dropped.
pub struct Recording(());

impl Recording {
    /// Starts recording this thread's stages at `level`, from zero.
    pub fn start(level: Level) -> Recording {
        NANOS.with(|n| n.set(StageNanos::default()));
        NESTED.with(|n| n.set(0));
        LEVEL.with(|l| l.set(level));
        Recording(())
    }

    /// What this thread recorded so far.
    pub fn nanos(&self) -> StageNanos {
        NANOS.with(Cell::get)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        LEVEL.with(|l| l.set(Level::Off));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(us: u64) {
        let t = Instant::now();
        while t.elapsed().as_micros() < u128::from(us) {}
    }

    #[test]
    fn nothing_is_recorded_unless_asked() {
        time(Stage::Engine, || spin(50));
        let r = Recording::start(Level::Coarse);
        assert_eq!(r.nanos(), StageNanos::default());
    }

    #[test]
    fn levels_choose_the_stages() {
        let r = Recording::start(Level::Coarse);
        time(Stage::Engine, || spin(200));
        time(Stage::Derive, || spin(200));
        let n = r.nanos();
        assert!(n.get(Stage::Engine) >= 200_000, "{n:?}");
        assert_eq!(n.get(Stage::Derive), 0, "derive is a full-level stage");
        drop(r);
        let r = Recording::start(Level::Full);
        let wall = Instant::now();
        time(Stage::Transform, || {
            spin(100);
            time(Stage::Aead, || spin(300));
        });
        let wall = wall.elapsed().as_nanos() as u64;
        let n = r.nanos();
        let (own, aead) = (n.get(Stage::Transform), n.get(Stage::Aead));
        assert!(aead >= 300_000 && own >= 100_000, "{n:?}");
        assert!(
            own + aead <= wall,
            "transform keeps its own time, not the nested stage's: {n:?}, {wall} ns in all"
        );
        drop(r);
        time(Stage::Aead, || spin(10));
        assert_eq!(Recording::start(Level::Full).nanos(), StageNanos::default());
    }

    #[test]
    fn threads_record_apart() {
        let _r = Recording::start(Level::Full);
        std::thread::spawn(|| time(Stage::Engine, || spin(100)))
            .join()
            .unwrap();
        assert_eq!(_r.nanos().get(Stage::Engine), 0);
    }

    #[test]
    fn every_stage_has_its_index() {
        for (i, s) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i, "{}", s.name());
        }
    }
}
