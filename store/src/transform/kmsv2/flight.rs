//! One plugin Decrypt per DEK source at a time: when several readers miss
//! the cache for the same key at once (every reader of a freshly started
//! store does), the first one calls the plugin and the others wait for its
//! answer, instead of each sending the same Decrypt.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use super::cache::CacheKey;
use kms_proto::sync;

struct Slot<T> {
    result: Mutex<Option<Result<T, String>>>,
    ready: Condvar,
}

/// Calls in flight, by cache key.
pub(crate) struct Flights<T> {
    calls: Mutex<HashMap<CacheKey, Arc<Slot<T>>>>,
}

/// Publishes the leader's result (or, if `fetch` panicked, an error) and
/// retires the slot, so that waiters never hang.
struct Publish<'a, T> {
    flights: &'a Flights<T>,
    key: CacheKey,
    slot: Arc<Slot<T>>,
    result: Option<Result<T, String>>,
}

impl<T> Drop for Publish<'_, T> {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err("the call for this key failed unexpectedly".into()));
        *sync::lock(&self.slot.result) = Some(result);
        let mut calls = sync::lock(&self.flights.calls);
        if calls
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            calls.remove(&self.key);
        }
        drop(calls);
        self.slot.ready.notify_all();
    }
}

impl<T: Clone> Flights<T> {
    pub(crate) fn new() -> Self {
        Flights {
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// `fetch()` for `key`, unless a call for `key` is already running: then
    /// its result (success or error), once it is there. `wait` runs the
    /// blocking wait (so a caller inside a tokio runtime can wrap it in
    /// `block_in_place`).
    pub(crate) fn run(
        &self,
        key: CacheKey,
        fetch: impl FnOnce() -> Result<T, String>,
        wait: impl FnOnce(&mut dyn FnMut()),
    ) -> Result<T, String> {
        let (slot, leader) = {
            let mut calls = sync::lock(&self.calls);
            match calls.get(&key) {
                Some(s) => (Arc::clone(s), false),
                None => {
                    let s = Arc::new(Slot {
                        result: Mutex::new(None),
                        ready: Condvar::new(),
                    });
                    calls.insert(key, Arc::clone(&s));
                    (s, true)
                }
            }
        };
        if leader {
            let mut publish = Publish {
                flights: self,
                key,
                slot: Arc::clone(&slot),
                result: None,
            };
            let result = fetch();
            publish.result = Some(result.clone());
            drop(publish);
            return result;
        }
        let mut out = None;
        wait(&mut || {
            let mut r = sync::lock(&slot.result);
            while r.is_none() {
                r = kms_proto::sync::wait(&slot.ready, r);
            }
            out = r.clone();
        });
        out.unwrap_or_else(|| Err("the call for this key did not finish".into()))
    }

    /// Calls in flight (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        sync::lock(&self.calls).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Barrier, mpsc};
    use std::time::Duration;

    fn direct(f: &mut dyn FnMut()) {
        f()
    }

    #[test]
    fn concurrent_misses_share_one_call() {
        let flights = Flights::<u32>::new();
        let calls = AtomicUsize::new(0);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let start = Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        flights.run(
                            [1; 32],
                            || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                // Hold the call open until the test says so.
                                sync::lock(&gate).recv().unwrap();
                                Ok(42)
                            },
                            direct,
                        )
                    })
                })
                .collect();
            // Everyone is waiting on the one call before it finishes.
            std::thread::sleep(Duration::from_millis(100));
            release.send(()).unwrap();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| r == &Ok(42)), "{results:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the slot is retired");
    }

    #[test]
    fn errors_reach_every_waiter_and_the_next_miss_calls_again() {
        let flights = Flights::<u32>::new();
        let start = Barrier::new(4);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        flights.run(
                            [2; 32],
                            || {
                                std::thread::sleep(Duration::from_millis(50));
                                Err("plugin down".to_string())
                            },
                            direct,
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            results.iter().all(|r| r == &Err("plugin down".to_string())),
            "{results:?}"
        );
        assert_eq!(flights.run([2; 32], || Ok(7), direct), Ok(7));
    }

    #[test]
    fn a_panicking_call_does_not_strand_its_waiters() {
        let flights = Flights::<u32>::new();
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    flights.run(
                        [3; 32],
                        || {
                            entered_tx.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(100));
                            panic!("boom")
                        },
                        direct,
                    )
                }))
            });
            entered_rx.recv().unwrap();
            let waiter = flights.run([3; 32], || Ok(1), direct);
            // Either it waited for the leader (an error) or came after it.
            assert!(matches!(waiter, Err(_) | Ok(1)), "{waiter:?}");
            assert!(leader.join().unwrap().is_err());
        });
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let flights = Flights::<u32>::new();
        let got = flights.run(
            [4; 32],
            || flights.run([5; 32], || Ok(5), direct).map(|v| v + 1),
            direct,
        );
        assert_eq!(got, Ok(6));
    }
}
