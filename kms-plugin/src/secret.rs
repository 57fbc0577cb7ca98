//! Key material in memory: one 32-byte key per locked, non-dumpable page.
//!
//! A [`SecretKey`] lives in its own page-aligned allocation so that `mlock`
//! and `munlock` of one key never affect another (page locks do not nest),
//! and `MADV_DONTDUMP` keeps it out of core dumps even where `serve` could
//! not disable them. The bytes are wiped with volatile writes before the
//! page is unlocked and freed. There is no `Debug`, `Display` or `Clone`
//! that could copy or print the key; reading it needs a call whose name says
//! it is dangerous.
//!
//! This is the crate's one module of `unsafe` code (the lint is denied
//! everywhere else): the page allocation, locking and wiping above, and
//! [`set_env_before_threads`], the one environment write of start-up.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroize;

/// Length of every KEK and seed this crate handles.
pub const KEY_LEN: usize = 32;

/// The system's page size (4 KiB on x86-64, 16 or 64 KiB on some arm64
/// and ppc64 kernels): a key's allocation is exactly one page, so locking
/// and unlocking it never touches another allocation.
fn page() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

fn page_layout() -> Layout {
    let p = page();
    // A page size is a power of two at least KEY_LEN: the layout is valid.
    Layout::from_size_align(p, p).unwrap_or(Layout::new::<[u8; KEY_LEN]>())
}

static LOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// A 256-bit key in a locked page, wiped on drop.
pub struct SecretKey {
    page: NonNull<u8>,
    locked: bool,
}

// SAFETY: the page is exclusively owned by this value; access goes through
// `&self`/`&mut self` like any owned buffer.
unsafe impl Send for SecretKey {}
// SAFETY: shared access is read-only.
unsafe impl Sync for SecretKey {}

impl SecretKey {
    /// Copies `bytes` (exactly 32) into a new locked page. The caller should
    /// wipe its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut k = Self::zeroed();
        k.bytes_mut().copy_from_slice(bytes);
        Some(k)
    }

    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = Self::zeroed();
        getrandom::fill(k.bytes_mut())?;
        Ok(k)
    }

    fn zeroed() -> Self {
        let layout = page_layout();
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(page) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `page` is a live, page-aligned allocation of one page we own.
        let locked = unsafe { rustix::mm::mlock(page.as_ptr().cast(), layout.size()) }.is_ok();
        if !locked && !LOCK_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "could not mlock key memory (RLIMIT_MEMLOCK too low or CAP_IPC_LOCK missing); keys may be swapped to disk"
            );
        }
        // SAFETY: same allocation; advice only affects core dumps.
        let _ = unsafe {
            rustix::mm::madvise(
                page.as_ptr().cast(),
                layout.size(),
                rustix::mm::Advice::LinuxDontDump,
            )
        };
        SecretKey { page, locked }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the first KEY_LEN bytes of our page, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.page.as_ptr(), KEY_LEN) }
    }

    /// The key bytes. Every caller is a place key material can leak from:
    /// never log, format or copy what this returns into a non-wiping buffer.
    pub fn dangerous_expose(&self) -> &[u8; KEY_LEN] {
        // SAFETY: the first KEY_LEN bytes of our page, shared borrow.
        unsafe { &*(self.page.as_ptr() as *const [u8; KEY_LEN]) }
    }

    /// Whether the page is locked in RAM (it may be swapped otherwise).
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for SecretKey {
    #[inline(never)]
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        // SAFETY: we own the page; unlocking and freeing exactly what we made.
        unsafe {
            if self.locked {
                let _ = rustix::mm::munlock(self.page.as_ptr().cast(), page_layout().size());
            }
            // Back to the mapping's usual advice: a page handed back to the
            // allocator no longer splits its mapping in two, so memory that
            // is freed and reused many times (a fuzzer, the sanitizer's
            // quarantine) does not pile up mappings until mmap fails.
            let _ = rustix::mm::madvise(
                self.page.as_ptr().cast(),
                page_layout().size(),
                rustix::mm::Advice::LinuxDoDump,
            );
            dealloc(self.page.as_ptr(), page_layout());
        }
    }
}

/// Sets an environment variable of this process. Call it only while the
/// process has one thread (start-up, before the runtime and any worker):
/// the environment is not safe to change while another thread may read it.
#[cfg(not(test))]
pub(crate) fn set_env_before_threads(key: &str, value: &str) {
    // SAFETY: the callers run before any other thread of this process exists
    // (`serve` opens its backend before starting the runtime; the key
    // commands are single-threaded), so nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var(key, value) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_of_fixed_length() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.dangerous_expose(), b.dangerous_expose());
        assert!(SecretKey::from_slice(&[1u8; 31]).is_none());
        assert!(SecretKey::from_slice(&[1u8; 33]).is_none());
        let c = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(c.dangerous_expose(), &[7u8; 32]);
    }

    #[test]
    fn a_key_takes_exactly_one_page_of_the_system() {
        let p = rustix::param::page_size();
        assert_eq!(page_layout().size(), p);
        assert_eq!(page_layout().align(), p);
        let k = SecretKey::generate().unwrap();
        assert_eq!(k.page.as_ptr() as usize % p, 0, "page-aligned");
    }

    #[test]
    fn many_keys_can_coexist() {
        let keys: Vec<_> = (0..64).map(|_| SecretKey::generate().unwrap()).collect();
        let distinct: std::collections::HashSet<_> =
            keys.iter().map(|k| *k.dangerous_expose()).collect();
        assert_eq!(distinct.len(), 64);
    }
}
