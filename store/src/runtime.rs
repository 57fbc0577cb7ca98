//! The store's one tokio runtime, and the one bridge from its synchronous
//! API into async code.
//!
//! The store is synchronous (a [`Transformer`](crate::transform::Transformer)
//! and a [`StorageEngine`](crate::storage::StorageEngine) are called from
//! plain threads), while the KMS plugin client and the etcd client are
//! async. Both run on one shared runtime of two worker threads, started on
//! first use and kept for the life of the process: the KMS v2 providers'
//! Status pollers and plugin calls, and the etcd members' connections.
//!
//! `block_on` runs a future to completion from any thread: outside a
//! runtime by blocking on the shared one; inside a caller's runtime (where
//! `block_on` would panic) by spawning the future on the shared runtime and
//! waiting for its answer through `blocking`, so `block_on` is never
//! nested. Neither the seal nor the open hot path comes here: only plugin
//! calls, cache misses and etcd requests do.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

/// Worker threads of the shared runtime: the etcd client and the KMS plugin
/// calls never need more on the machines the store runs on.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Why async work could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The shared runtime could not be started (threads, timers, I/O driver).
    #[error("cannot start the store's async runtime")]
    Start(#[source] std::io::Error),
    /// The task running the future ended without an answer (it panicked).
    #[error("the store's async runtime dropped a task before it answered")]
    Lost,
}

/// The shared runtime, started on first use.
pub(crate) fn shared() -> Result<&'static Runtime, RuntimeError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("secret-store-io")
        .enable_all()
        .build()
        .map_err(RuntimeError::Start)?;
    if let Err(lost_race) = RUNTIME.set(rt) {
        // Another thread started one first; this one never ran anything.
        // (Dropping a runtime inside an async context panics; this never does.)
        lost_race.shutdown_background();
    }
    RUNTIME.get().ok_or(RuntimeError::Lost)
}

/// Runs `fut` on the shared runtime and waits for it, from any thread.
pub(crate) fn block_on<F>(fut: F) -> Result<F::Output, RuntimeError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = shared()?;
    if Handle::try_current().is_err() {
        return Ok(rt.block_on(fut));
    }
    // Inside someone else's runtime: block_on would panic, so the shared
    // runtime runs the future and this thread waits for the answer.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    blocking(move || rx.recv()).map_err(|_| RuntimeError::Lost)
}

/// Runs the blocking `wait` on this thread; inside a multi-threaded tokio
/// runtime through `block_in_place`, so that runtime's other tasks move on.
/// (A current-thread runtime has no other worker to hand them to.)
pub(crate) fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_plain_threads_and_from_inside_runtimes() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
        for multi in [false, true] {
            let rt = if multi {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .unwrap();
            let got = rt.block_on(async {
                block_on(async {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    8
                })
            });
            assert_eq!(got.unwrap(), 8);
        }
        assert!(std::ptr::eq(shared().unwrap(), shared().unwrap()));
    }

    #[test]
    fn a_panicking_task_is_an_error_not_a_hang() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            block_on(async {
                if true {
                    panic!("boom");
                }
                1
            })
        });
        assert!(matches!(got, Err(RuntimeError::Lost)));
    }
}
