//! Noticing that the ring file was replaced (by a `key` command) while
//! `serve` runs: a cheap `stat` per poll, a reload only on change.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::file::stat_ring;

/// The identity of one version of the ring file.
pub type RingStat = Option<(u64, u64, u64, i64, i64, i64)>;

/// Remembers which version of the ring file a backend has loaded.
pub struct RingWatcher {
    dir: PathBuf,
    loaded: Mutex<RingStat>,
}

impl RingWatcher {
    /// A watcher for the ring in `dir`, taking the file as it is now as
    /// loaded. Call it before loading, so a change in between is noticed.
    pub fn new(dir: &Path) -> Self {
        RingWatcher {
            dir: dir.to_path_buf(),
            loaded: Mutex::new(stat_ring(dir)),
        }
    }

    /// The file's current identity when it differs from the loaded one.
    pub fn changed(&self) -> Option<RingStat> {
        let now = stat_ring(&self.dir);
        (*kms_proto::sync::lock(&self.loaded) != now).then_some(now)
    }

    /// Records that the version `stat` (from [`RingWatcher::changed`]) is loaded.
    pub fn loaded(&self, stat: RingStat) {
        *kms_proto::sync::lock(&self.loaded) = stat;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_replacement_only() {
        let d = tempfile::tempdir().unwrap();
        let p = super::super::ring_path(d.path());
        std::fs::write(&p, b"a").unwrap();
        let w = RingWatcher::new(d.path());
        assert!(w.changed().is_none());
        crate::fsutil::write_atomic(&p, b"b").unwrap();
        let s = w.changed().expect("replacement noticed");
        w.loaded(s);
        assert!(w.changed().is_none());
    }
}
