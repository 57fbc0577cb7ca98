//! Randomness from the operating system, fetched in batches.
//!
//! Every nonce, `info` and seed comes from the OS RNG (`getrandom`). A syscall
//! costs ~0.5-0.7 us here, more than sealing a 1 KiB value, so each thread
//! fetches 4 KiB at a time and hands out fresh, never-reused slices of it. The
//! batch is wiped as it is consumed and when the thread ends. Bytes are never
//! reused: the cursor only moves forward and a refill overwrites the buffer.

use std::cell::RefCell;

use zeroize::Zeroize;

const BATCH: usize = 4096;

struct Pool {
    buf: Box<[u8; BATCH]>,
    pos: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { buf: Box::new([0u8; BATCH]), pos: BATCH });
}

/// Fills `out` with random bytes from the OS.
///
/// Panics only if the OS RNG itself fails, which on Linux means the process
/// cannot safely do any cryptography.
pub fn fill(out: &mut [u8]) {
    if out.len() > BATCH / 4 {
        getrandom::fill(out).expect("the OS random number generator failed");
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if BATCH - p.pos < out.len() {
            getrandom::fill(&mut p.buf[..]).expect("the OS random number generator failed");
            p.pos = 0;
        }
        let start = p.pos;
        let end = start + out.len();
        out.copy_from_slice(&p.buf[start..end]);
        p.buf[start..end].zeroize();
        p.pos = end;
    });
}

/// Returns `N` random bytes from the OS.
pub fn array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    fill(&mut a);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_the_same_bytes_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(array::<16>()), "a 16-byte draw repeated");
        }
    }

    #[test]
    fn large_requests_bypass_the_pool() {
        let mut a = vec![0u8; 8192];
        fill(&mut a);
        assert!(a.iter().any(|&b| b != 0));
    }
}
