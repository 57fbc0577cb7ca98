//! The PKCS#11 token: the module loaded once, the token found by label or
//! slot, one login, a pool of sessions sized for concurrency, and recovery
//! when the token goes away.
//!
//! A call takes a session from the pool (opening one while fewer than the
//! pool's size exist, else waiting a bounded time), runs, and gives it
//! back. A failure that means the session, the login or the token itself
//! is gone (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//! CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN,
//! CKR_DEVICE_ERROR, CKR_CRYPTOKI_NOT_INITIALIZED...) drops every session
//! and the module's state (C_Finalize); the next call initialises the
//! module again, finds the token again (its slot may have changed), logs
//! in and carries on: the backend recovers by itself when the token comes
//! back, and says UNAVAILABLE, with the reason, until then.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use crate::backend::BackendError;

/// Which token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenChoice {
    /// The token with this label (the usual way: slots may be renumbered).
    Label(String),
    /// The token in this slot.
    Slot(u64),
}

impl std::fmt::Display for TokenChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenChoice::Label(l) => write!(f, "token {l:?}"),
            TokenChoice::Slot(s) => write!(f, "the token in slot {s}"),
        }
    }
}

/// How to reach the token. The PIN never leaves its wiping buffer.
pub(crate) struct TokenConfig {
    /// The PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token.
    pub token: TokenChoice,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// Most sessions open at once.
    pub sessions: usize,
}

/// A connected token: the module's context and what was found.
pub(crate) struct Live {
    ctx: Pkcs11,
    slot: Slot,
    /// The token's serial number (public).
    pub serial: String,
    /// Counts connections: object handles found on an earlier one are stale.
    pub generation: u64,
}

struct Pool {
    live: Option<Live>,
    idle: Vec<Session>,
    /// Sessions of `live`: idle and handed out.
    open: usize,
    /// Sessions of `live` handed out to calls running now.
    out: usize,
    generations: u64,
    /// Why the last connection attempt failed, and when it was made.
    down: Option<(String, Instant)>,
    /// A lost connection whose calls are still running, and how many:
    /// C_Finalize waits for the last (the standard leaves it undefined
    /// while other threads are in the module), and so does the next
    /// C_Initialize.
    draining: Option<(Live, usize)>,
    /// When a vanished key object last made the pool start over.
    suspected: Option<Instant>,
}

/// The token, shared by every call.
pub(crate) struct Token {
    cfg: TokenConfig,
    pool: Mutex<Pool>,
    freed: Condvar,
}

/// How long a call waits for a free session before it reports the token
/// busy (inside the apiserver's 3 s deadline).
const SESSION_WAIT: Duration = Duration::from_secs(2);
/// While the token is unreachable, calls within this long of the last
/// attempt fail at once with its reason instead of trying again (a network
/// HSM's connect timeout must not hold every request).
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Most often a vanished key object makes the connection start over.
const SUSPECT_EVERY: Duration = Duration::from_secs(2);

/// The short name of a PKCS#11 return value (`CKR_PIN_INCORRECT` reads as
/// `PinIncorrect`; the crate's Display is a paragraph of the spec).
pub(crate) fn rv_name(e: &P11Error) -> String {
    match e {
        P11Error::Pkcs11(rv, f) => format!("{rv:?} from {f:?}"),
        other => other.to_string(),
    }
}

/// Whether `e` means the session, the login or the token is gone (so the
/// pool starts over), rather than a refusal of this one call.
fn is_connection_loss(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError
                | RvError::SlotIdInvalid,
            _
        )
    )
}

impl Token {
    /// A token that connects on first use.
    pub(crate) fn new(cfg: TokenConfig) -> Self {
        Token {
            cfg,
            pool: Mutex::new(Pool {
                live: None,
                idle: Vec::new(),
                open: 0,
                out: 0,
                generations: 0,
                down: None,
                draining: None,
                suspected: None,
            }),
            freed: Condvar::new(),
        }
    }

    /// Loads the module, finds the token, logs in (the first session).
    fn connect(&self, generation: u64) -> Result<(Live, Session), BackendError> {
        let unavailable = |what: String| BackendError::Unavailable(what);
        let ctx = Pkcs11::new(&self.cfg.module).map_err(|e| {
            BackendError::Config(format!(
                "pkcs11-module={:?} cannot be loaded: {e}",
                self.cfg.module.display().to_string()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "the PKCS#11 module failed to start (C_Initialize: {})",
                    rv_name(&e)
                )));
            }
        }
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| unavailable(format!("listing the slots: {}", rv_name(&e))))?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim().to_string();
            let hit = match &self.cfg.token {
                TokenChoice::Label(l) => *l == label,
                TokenChoice::Slot(s) => *s == slot.id(),
            };
            if hit {
                found = Some((slot, info.serial_number().trim().to_string()));
                break;
            }
            labels.push(format!("{label:?} (slot {})", slot.id()));
        }
        let Some((slot, serial)) = found else {
            return Err(unavailable(format!(
                "no {} (tokens present: {})",
                self.cfg.token,
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            )));
        };
        let session = ctx.open_rw_session(slot).map_err(|e| {
            unavailable(format!(
                "opening a session on {}: {}",
                self.cfg.token,
                rv_name(&e)
            ))
        })?;
        let pin = cryptoki::types::AuthPin::from(self.cfg.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(BackendError::Denied(format!(
                    "the PIN is not {}'s user PIN (CKR_PIN_INCORRECT); a few more wrong tries lock the token",
                    self.cfg.token
                )));
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(BackendError::Denied(format!(
                    "{}'s user PIN is locked (CKR_PIN_LOCKED): the security officer must reset it",
                    self.cfg.token
                )));
            }
            Err(e) => {
                return Err(unavailable(format!(
                    "logging in to {}: {}",
                    self.cfg.token,
                    rv_name(&e)
                )));
            }
        }
        Ok((
            Live {
                ctx,
                slot,
                serial,
                generation,
            },
            session,
        ))
    }

    /// Takes a session (connecting when needed).
    fn take(&self) -> Result<(Session, u64, String), BackendError> {
        let mut pool = kms_proto::sync::lock(&self.pool);
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            let busy = if pool.live.is_some() {
                match self.take_live(&mut pool) {
                    Some(taken) => return taken,
                    None => format!(
                        "all {} sessions with {} are busy",
                        pool.open, self.cfg.token
                    ),
                }
            } else if pool.draining.is_some() {
                format!(
                    "{} went away and calls on the lost connection are still running",
                    self.cfg.token
                )
            } else {
                return self.connect_pool(&mut pool);
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::Unavailable(busy));
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Connects (no connection, none draining) and takes its first session.
    fn connect_pool(&self, pool: &mut Pool) -> Result<(Session, u64, String), BackendError> {
        if let Some((why, at)) = &pool.down
            && at.elapsed() < RETRY_AFTER
        {
            return Err(BackendError::Unavailable(why.clone()));
        }
        pool.generations += 1;
        let generation = pool.generations;
        match self.connect(generation) {
            Ok((live, session)) => {
                if pool.down.take().is_some() {
                    tracing::info!(token = %self.cfg.token, "PKCS#11 token reachable again");
                }
                let serial = live.serial.clone();
                pool.live = Some(live);
                pool.open = 1;
                pool.out = 1;
                Ok((session, generation, serial))
            }
            Err(e) => {
                let msg = e.to_string();
                if pool.down.as_ref().map(|(m, _)| m.as_str()) != Some(msg.as_str()) {
                    tracing::warn!(token = %self.cfg.token, error = %msg, "PKCS#11 token unavailable");
                }
                // Only an unreachable token is retried after a pause; a
                // refused PIN or an unloadable module is said every time.
                pool.down = match e {
                    BackendError::Unavailable(_) => Some((msg, Instant::now())),
                    _ => None,
                };
                Err(e)
            }
        }
    }

    /// An idle or new session of the live connection; `None` when all
    /// are busy.
    fn take_live(&self, pool: &mut Pool) -> Option<Result<(Session, u64, String), BackendError>> {
        let live = pool.live.as_ref()?;
        let (generation, serial) = (live.generation, live.serial.clone());
        if let Some(s) = pool.idle.pop() {
            pool.out += 1;
            return Some(Ok((s, generation, serial)));
        }
        if pool.open >= self.cfg.sessions.max(1) {
            return None;
        }
        // Read-write: generating and destroying token objects need it.
        match live.ctx.open_rw_session(live.slot) {
            Ok(s) => {
                pool.open += 1;
                pool.out += 1;
                Some(Ok((s, generation, serial)))
            }
            Err(e) if is_connection_loss(&e) => {
                let why = format!("{} went away: {}", self.cfg.token, rv_name(&e));
                self.start_over(pool, why);
                Some(Err(BackendError::Unavailable(format!(
                    "{} went away: {}",
                    self.cfg.token,
                    rv_name(&e)
                ))))
            }
            Err(e) => Some(Err(BackendError::Unavailable(format!(
                "opening a session on {}: {}",
                self.cfg.token,
                rv_name(&e)
            )))),
        }
    }

    /// Drops the live connection: its idle sessions close now, the module
    /// is finalized once the calls still running on it return, and the
    /// next call connects again.
    fn start_over(&self, pool: &mut Pool, why: String) {
        tracing::warn!(token = %self.cfg.token, reason = %why, "PKCS#11 connection dropped; connecting again on the next call");
        pool.idle.clear();
        if let Some(live) = pool.live.take() {
            if pool.out == 0 {
                let _ = live.ctx.finalize();
            } else {
                pool.draining = Some((live, pool.out));
            }
        }
        pool.open = 0;
        pool.out = 0;
        // The next call tries at once: the token may be back already.
        pool.down = Some((
            why,
            Instant::now()
                .checked_sub(RETRY_AFTER)
                .unwrap_or_else(Instant::now),
        ));
        self.freed.notify_all();
    }

    /// Gives a session back after a call (`lost`: the call found the
    /// connection gone).
    fn give_back(&self, session: Session, generation: u64, lost: Option<&P11Error>) {
        let mut pool = kms_proto::sync::lock(&self.pool);
        if pool.live.as_ref().map(|l| l.generation) == Some(generation) {
            pool.out = pool.out.saturating_sub(1);
            match lost {
                Some(e) => {
                    drop(session);
                    let why = format!("{} went away: {}", self.cfg.token, rv_name(e));
                    self.start_over(&mut pool, why);
                }
                None => {
                    pool.idle.push(session);
                    self.freed.notify_one();
                }
            }
            return;
        }
        // A call on a connection already dropped.
        drop(session);
        let finished = match pool.draining.as_mut() {
            Some((live, running)) if live.generation == generation => {
                *running = running.saturating_sub(1);
                *running == 0
            }
            _ => false,
        };
        if finished && let Some((live, _)) = pool.draining.take() {
            let _ = live.ctx.finalize();
            self.freed.notify_all();
        }
    }

    /// Runs `f` on a session. `generation` tells `f` whether object handles
    /// it found before are still valid; `serial` is the token's.
    pub(crate) fn with_session<T>(
        &self,
        f: impl FnOnce(&Session, u64, &str) -> Result<T, P11Error>,
    ) -> Result<T, CallError> {
        let (session, generation, serial) = self.take().map_err(CallError::Backend)?;
        let r = f(&session, generation, &serial);
        let lost = match &r {
            Err(e) if is_connection_loss(e) => Some(e),
            _ => None,
        };
        self.give_back(session, generation, lost);
        r.map_err(|e| {
            if is_connection_loss(&e) {
                CallError::Backend(BackendError::Unavailable(format!(
                    "{} went away: {}",
                    self.cfg.token,
                    rv_name(&e)
                )))
            } else {
                CallError::Token(e)
            }
        })
    }

    /// Called when a key object found before is no longer in the token on
    /// connection `generation`: the module's view of the token may be
    /// stale (a token reinserted, an HSM failed over), so the connection
    /// starts over, at most once per [`SUSPECT_EVERY`].
    pub(crate) fn object_vanished(&self, generation: u64) {
        let mut pool = kms_proto::sync::lock(&self.pool);
        if pool.live.as_ref().map(|l| l.generation) != Some(generation) {
            return;
        }
        if pool.suspected.is_some_and(|t| t.elapsed() < SUSPECT_EVERY) {
            return;
        }
        pool.suspected = Some(Instant::now());
        let why = format!(
            "a key object found before is gone from {}; reading the token again",
            self.cfg.token
        );
        self.start_over(&mut pool, why);
    }
}

/// A call's failure: the token refused the operation itself, or the
/// backend could not run it.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The token answered this error (the session is fine).
    Token(P11Error),
    /// Connecting or the connection failed (already a backend error).
    Backend(BackendError),
}
