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

/// What the worker thread receives.
enum Message {
    /// A job.
    Job(Job),
    /// Tests only: the thread dies, as it would on a bug outside any job.
    #[cfg(test)]
    Die,
}

/// Jobs waiting at most: past that, a call is refused at once (the TPM
/// serves a few hundred a second; callers would time out waiting anyway).
pub const QUEUE: usize = 64;
/// Restarts within [`RESTART_WINDOW`] after which the worker is reported
/// dead for good (`/livez` fails and the kubelet restarts the process).
const RESTART_LIMIT: usize = 3;
/// See [`RESTART_LIMIT`].
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The running thread: where to send jobs, and how to see it end.
struct Thread {
    tx: mpsc::SyncSender<Message>,
    handle: JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

/// A handle to the worker thread. Dropping it stops the thread after it
/// released the TPM (flushing what it held), waiting up to a few seconds.
pub struct Worker {
    thread: Mutex<Option<Thread>>,
    down: Arc<Down>,
    tcti: Tcti,
    restarts: Mutex<Vec<std::time::Instant>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(t) = kms_proto::sync::lock(&self.thread).take() {
            drop(t.tx);
            // A TPM that hangs must not hang the process on exit.
            if t.done.recv_timeout(Duration::from_secs(5)).is_ok() {
                let _ = t.handle.join();
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

fn run(rx: mpsc::Receiver<Message>, tcti: Tcti, down: Arc<Down>) {
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
        let message = match wait {
            Some(d) => match rx.recv_timeout(d) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let job = match message {
            Some(Message::Job(j)) => Some(j),
            #[cfg(test)]
            Some(Message::Die) => panic!("the TPM worker thread was told to die (a test)"),
            None => None,
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

fn start_thread(tcti: &Tcti, down: &Arc<Down>) -> Thread {
    let (tx, rx) = mpsc::sync_channel::<Message>(QUEUE);
    let (done_tx, done_rx) = mpsc::channel();
    let (d, t) = (down.clone(), tcti.clone());
    let handle = std::thread::Builder::new()
        .name("tpm-worker".into())
        .spawn(move || {
            run(rx, t, d);
            let _ = done_tx.send(());
        })
        .expect("spawning the TPM worker thread");
    Thread {
        tx,
        handle,
        done: done_rx,
    }
}

impl Worker {
    /// Starts the worker thread for `tcti`. It connects on the first job.
    pub fn spawn(tcti: Tcti) -> Arc<Worker> {
        let down = Arc::new(Down::default());
        let thread = start_thread(&tcti, &down);
        Arc::new(Worker {
            thread: Mutex::new(Some(thread)),
            down,
            tcti,
            restarts: Mutex::new(Vec::new()),
        })
    }

    /// Why the TPM is unavailable, when the last attempt to reach it failed.
    pub fn down_reason(&self) -> Option<String> {
        self.down.reason()
    }

    /// Whether the worker thread is alive, and serves: `Err` with the
    /// reason when it died and was not started again, or died too often.
    pub fn liveness(&self) -> Result<(), String> {
        let recent = {
            let mut r = kms_proto::sync::lock(&self.restarts);
            r.retain(|t| t.elapsed() < RESTART_WINDOW);
            r.len()
        };
        if recent >= RESTART_LIMIT {
            return Err(format!(
                "the TPM worker thread died {recent} times in {}s",
                RESTART_WINDOW.as_secs()
            ));
        }
        match kms_proto::sync::lock(&self.thread).as_ref() {
            Some(t) if !t.handle.is_finished() => Ok(()),
            Some(_) => Err("the TPM worker thread died".into()),
            None => Err("the TPM worker is stopped".into()),
        }
    }

    /// Starts the thread again if it died; returns whether it did. Jobs that
    /// were queued for the dead thread fail (their callers see UNAVAILABLE).
    pub fn revive(&self) -> bool {
        let mut slot = kms_proto::sync::lock(&self.thread);
        match slot.as_ref() {
            Some(t) if t.handle.is_finished() => {}
            _ => return false,
        }
        tracing::error!("the TPM worker thread died; starting it again");
        *slot = Some(start_thread(&self.tcti, &self.down));
        kms_proto::sync::lock(&self.restarts).push(std::time::Instant::now());
        true
    }

    /// Tests only: kills the worker thread (as a bug outside any job would).
    #[cfg(test)]
    pub(crate) fn kill_for_test(&self) {
        if let Some(t) = kms_proto::sync::lock(&self.thread).as_ref() {
            let _ = t.tx.send(Message::Die);
        }
        for _ in 0..200 {
            if self.liveness().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn submit<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, TpmError>>, TpmError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller gave up (its deadline passed, the client went
            // away): nothing to do, and the TPM stays free for the others.
            if tx.is_closed() {
                return After::Keep;
            }
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
        let guard = kms_proto::sync::lock(&self.thread);
        let t = guard
            .as_ref()
            .ok_or_else(|| TpmError::Unavailable("the TPM worker is stopping".into()))?;
        match t.tx.try_send(Message::Job(job)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                return Err(TpmError::Unavailable(format!(
                    "the TPM has {QUEUE} calls waiting already; try again"
                )));
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(TpmError::Unavailable(
                    "the TPM worker thread is gone (it is started again within a second)".into(),
                ));
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::backend::tpm::testing::Swtpm;

    fn worker(tpm: &Swtpm) -> Arc<Worker> {
        Worker::spawn(tpm.tcti().parse().unwrap())
    }

    #[test]
    fn tpm_a_dead_worker_thread_is_seen_and_started_again() {
        let tpm = Swtpm::start();
        let w = worker(&tpm);
        w.call_blocking(|c| c.probe()).unwrap();
        assert!(w.liveness().is_ok());
        assert!(!w.revive(), "nothing to revive while alive");
        w.kill_for_test();
        let e = w.liveness().unwrap_err();
        assert!(e.contains("died"), "{e}");
        assert!(w.call_blocking(|c| c.probe()).is_err(), "no thread serves");
        assert!(w.revive());
        assert!(w.liveness().is_ok());
        w.call_blocking(|c| c.probe()).unwrap();
        // Dying again and again is reported for good (the kubelet restarts).
        for _ in 0..RESTART_LIMIT {
            w.kill_for_test();
            w.revive();
        }
        let e = w.liveness().unwrap_err();
        assert!(e.contains("times in"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tpm_jobs_whose_caller_left_are_dropped_and_the_queue_is_bounded() {
        let tpm = Swtpm::start();
        let w = worker(&tpm);
        w.call(|c| c.probe()).await.unwrap();
        // Hold the worker busy.
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let busy = w.submit(move |_| {
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        let busy = busy.unwrap();
        // A caller that gives up before its turn: its job never runs.
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        let gave_up = w.submit(move |_| {
            ran2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        drop(gave_up.unwrap());
        // Fill the queue: the next call is refused at once, not queued.
        let mut queued = Vec::new();
        let mut refused = None;
        for _ in 0..QUEUE + 2 {
            match w.submit(|_| Ok(())) {
                Ok(rx) => queued.push(rx),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("a full queue refuses").to_string();
        assert!(e.contains("calls waiting"), "{e}");
        release.store(true, Ordering::Relaxed);
        busy.await.unwrap().unwrap();
        for rx in queued {
            rx.await.unwrap().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "an abandoned job ran");
    }
}
