//! The one thread that owns the TPM connection.
//!
//! tss-esapi's `Context` takes `&mut self` for every command and is not
//! `Sync`; the worker owns it and runs jobs sent over a channel, one at a
//! time, answering on a oneshot channel. Around the jobs it manages the
//! connection's life:
//!
//! - **connect on demand**, and **release when idle** (no job for
//!   [`IDLE`]): the primary, the session and any cached object are flushed
//!   and the connection closed, leaving the TPM's few slots to other
//!   clients such as `kms-plugin key rotate` run while `serve` runs; with
//!   `/dev/tpmrm0` it costs one CreatePrimary per burst of calls.
//! - **drop the connection after any TPM error**, which flushes everything
//!   it held: no path leaves an object or a session behind.
//! - **retry when the TPM is full**: swtpm and raw TPMs hold three objects
//!   and three sessions, shared by every client (swtpm's transport opens a
//!   connection per command, so clients interleave). On OBJECT_MEMORY and
//!   the like the worker releases its own slots, waits a little and runs
//!   the job again (jobs are `FnMut` for that). Under continuous load it
//!   lets go of its slots every [`LEASE`] for a moment, so a `key` command
//!   run meanwhile gets its turn.
//! - **notice an outage and recover by itself**: a transport error marks
//!   the TPM down (with the reason, for healthz) and every [`RETRY`] the
//!   worker tries to reconnect, so the plugin recovers when the TPM comes
//!   back, without a restart and without waiting for a call.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::conn::Conn;
use super::{Tcti, TpmError};

/// How long an idle connection is kept before it is released.
pub const IDLE: Duration = Duration::from_millis(50);
/// How often a down TPM is probed.
pub const RETRY: Duration = Duration::from_millis(500);
/// How long a caller waits for a job before it reports the TPM unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a job is tried while the TPM is full (about 5 s in all).
const FULL_ATTEMPTS: u32 = 100;
/// On a TPM without a resource manager, the longest the worker holds its
/// slots under continuous load before it lets go for [`YIELD`], so that
/// another client (`key rotate` while serving) gets its turn.
pub const LEASE: Duration = Duration::from_millis(250);
/// See [`LEASE`].
pub const YIELD: Duration = Duration::from_millis(30);

/// A pause of about `base` (50 % to 150 %), so clients that collide do not
/// retry in lockstep.
fn jittered(base: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    base / 2 + base * u32::from(b[0]) / 255
}

/// What a job tells the worker about the connection after it ran.
enum After {
    /// Keep it.
    Keep,
    /// Drop it (flushing everything): the TPM refused something.
    Drop,
    /// The connection is broken: drop it and mark the TPM down.
    Lost(String),
}

type Job = Box<dyn FnOnce(Result<&mut Conn, TpmError>) -> After + Send>;

/// A handle to the worker thread. Dropping it stops the thread after it
/// released the TPM (flushing what it held), waiting up to a few seconds.
pub struct Worker {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    down: Arc<Down>,
    tcti: Tcti,
    thread: Mutex<Option<(JoinHandle<()>, mpsc::Receiver<()>)>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(kms_proto::sync::lock(&self.tx).take());
        if let Some((h, done)) = kms_proto::sync::lock(&self.thread).take() {
            // A TPM that hangs must not hang the process on exit.
            if done.recv_timeout(Duration::from_secs(5)).is_ok() {
                let _ = h.join();
            }
        }
    }
}

/// Whether the TPM is down, and why. The flag is read on every tpm-sealed
/// Encrypt/Decrypt: an atomic load, the reason only when it is set.
#[derive(Default)]
struct Down {
    flag: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Down {
    fn is_down(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn reason(&self) -> Option<String> {
        if !self.is_down() {
            return None;
        }
        kms_proto::sync::lock(&self.reason).clone()
    }
}

fn set_down(down: &Down, reason: String) {
    let mut d = kms_proto::sync::lock(&down.reason);
    if d.as_deref() != Some(reason.as_str()) {
        tracing::warn!(reason = %reason, "TPM unavailable");
    }
    *d = Some(reason);
    down.flag.store(true, Ordering::Release);
}

fn set_up(down: &Down) {
    if !down.is_down() {
        return;
    }
    let mut d = kms_proto::sync::lock(&down.reason);
    down.flag.store(false, Ordering::Release);
    if d.take().is_some() {
        tracing::info!("TPM reachable again");
    }
}

fn run(rx: mpsc::Receiver<Job>, tcti: Tcti, down: Arc<Down>) {
    let mut conn: Option<Conn> = None;
    let mut held_since = std::time::Instant::now();
    let shared = !tcti.is_resource_managed();
    loop {
        if shared && conn.is_some() && held_since.elapsed() > LEASE {
            // Busy for a while: give other clients of this TPM a turn.
            conn = None;
            std::thread::sleep(jittered(YIELD));
        }
        let is_down = down.is_down();
        let wait = if conn.is_some() {
            Some(IDLE)
        } else if is_down {
            Some(RETRY)
        } else {
            None
        };
        let job = match wait {
            Some(d) => match rx.recv_timeout(d) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => break,
            },
        };
        let Some(job) = job else {
            if conn.take().is_none() {
                // Down: probe. On success keep the connection (released
                // when idle) and mark the TPM up.
                match Conn::open(&tcti).and_then(|mut c| c.probe().map(|()| c)) {
                    Ok(c) => {
                        set_up(&down);
                        held_since = std::time::Instant::now();
                        conn = Some(c);
                    }
                    Err(e) => set_down(&down, e.to_string()),
                }
            }
            continue;
        };
        if conn.is_none() {
            match Conn::open(&tcti) {
                Ok(c) => {
                    held_since = std::time::Instant::now();
                    conn = Some(c);
                }
                Err(e) => {
                    set_down(&down, e.to_string());
                    let _ = job(Err(e));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let after =
            std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(c)))).unwrap_or(After::Drop);
        match after {
            After::Keep => set_up(&down),
            After::Drop => {
                set_up(&down);
                conn = None;
            }
            After::Lost(reason) => {
                set_down(&down, reason);
                conn = None;
            }
        }
    }
    // The last handle is gone: release the TPM.
    drop(conn);
}

impl Worker {
    /// Starts the worker thread for `tcti`. It connects on the first job.
    pub fn spawn(tcti: Tcti) -> Arc<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel();
        let down = Arc::new(Down::default());
        let (d, t) = (down.clone(), tcti.clone());
        let h = std::thread::Builder::new()
            .name("tpm-worker".into())
            .spawn(move || {
                run(rx, t, d);
                let _ = done_tx.send(());
            })
            .expect("spawning the TPM worker thread");
        Arc::new(Worker {
            tx: Mutex::new(Some(tx)),
            down,
            tcti,
            thread: Mutex::new(Some((h, done_rx))),
        })
    }

    /// Why the TPM is unavailable, when the last attempt to reach it failed.
    pub fn down_reason(&self) -> Option<String> {
        self.down.reason()
    }

    fn submit<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, TpmError>>, TpmError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let r = match conn {
                Ok(c) => {
                    let mut attempt = 1;
                    loop {
                        let r = f(c);
                        match &r {
                            Err(e) if super::is_tpm_full(e) && attempt < FULL_ATTEMPTS => {
                                tracing::debug!(error = %e, attempt, "TPM full; releasing our slots and retrying");
                                c.release();
                                let base = Duration::from_millis(u64::from(attempt.min(10)) * 5);
                                std::thread::sleep(jittered(base));
                                attempt += 1;
                            }
                            Err(e) if super::is_tpm_full(e) => {
                                break Err(TpmError::Unavailable(format!(
                                    "the TPM stayed full (another client holds its object or session slots): {e}"
                                )));
                            }
                            _ => break r,
                        }
                    }
                }
                Err(e) => Err(e),
            };
            let after = match &r {
                Ok(_) => After::Keep,
                Err(TpmError::Unavailable(m)) => After::Lost(format!("TPM unavailable: {m}")),
                Err(TpmError::Command { .. } | TpmError::PolicyFailed(_)) => After::Drop,
                Err(TpmError::Invalid(_)) => After::Keep,
            };
            let _ = tx.send(r);
            after
        });
        self.tx
            .lock()
            .expect("tpm channel mutex")
            .as_ref()
            .ok_or_else(|| TpmError::Unavailable("the TPM worker is stopping".into()))?
            .send(job)
            .map_err(|_| TpmError::Unavailable("the TPM worker thread is gone".into()))?;
        Ok(rx)
    }

    fn lost(&self) -> TpmError {
        TpmError::Unavailable("the TPM worker thread stopped".into())
    }

    fn timed_out(&self) -> TpmError {
        let reason = format!(
            "no answer from the TPM at {} within {}s",
            self.tcti,
            CALL_TIMEOUT.as_secs()
        );
        set_down(&self.down, format!("TPM unavailable: {reason}"));
        TpmError::Unavailable(reason)
    }

    /// Runs `f` on the worker's connection and waits for it (async). `f`
    /// may run more than once when the TPM is full.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut Conn) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, TpmError> {
        let rx = self.submit(f)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Runs `f` on the worker's connection and waits for it, blocking the
    /// calling thread (start-up and the `key` commands; never inside the
    /// async runtime).
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut Conn) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, TpmError> {
        let rx = self.submit(f)?;
        let (tx, done) = mpsc::channel();
        // A oneshot receiver has no timed blocking receive: bridge it.
        std::thread::spawn(move || {
            let _ = tx.send(rx.blocking_recv());
        });
        match done.recv_timeout(CALL_TIMEOUT) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => Err(self.timed_out()),
        }
    }
}
