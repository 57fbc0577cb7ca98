//! One connection to the TPM, owned by the [`worker`](super::worker) thread.
//!
//! It caches what is costly to make: the storage primary (CreatePrimary is
//! ~3 ms on swtpm) and a *salted* HMAC session used for parameter
//! encryption, so that secrets crossing the bus (a KEK being sealed or
//! unsealed, a seed being wrapped) are encrypted with a key only this
//! process and the TPM know. Everything else (loaded objects, policy
//! sessions) is flushed on every path by the `with_*` helpers; dropping the
//! connection flushes the cached objects too. swtpm (and a TPM without a
//! resource manager) holds only three transient objects and three sessions:
//! at most the primary plus two loaded objects, and two sessions, are used
//! at once.

use tss_esapi::Context;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{CapabilityData, Public, SymmetricDefinition};

use super::object::ObjectBlob;
use super::{Tcti, TpmError, primary, tss};

/// A live connection and its cached primary and session.
pub struct Conn {
    ctx: Context,
    primary: Option<(KeyHandle, Public)>,
    session: Option<AuthSession>,
    /// Objects kept loaded between calls (the active tpm-resident key), by tag.
    cached: Option<(String, Vec<KeyHandle>)>,
}

impl Conn {
    /// Connects. On a raw device without a resource manager (`/dev/tpm0`,
    /// opened by one process at a time), transient objects and sessions an
    /// earlier client left behind (a process killed mid-call) are flushed
    /// first: they are garbage and would fill the TPM's few slots. swtpm's
    /// transport opens a TCP connection per command, so several clients
    /// interleave there and nothing found is known to be garbage: nothing is
    /// flushed, and a full TPM is retried (see the worker).
    pub fn open(tcti: &Tcti) -> Result<Conn, TpmError> {
        let ctx = Context::new(tcti.name_conf()).map_err(|e| match tss("connecting")(e) {
            TpmError::Command { detail, .. } => {
                TpmError::Unavailable(format!("connecting to {tcti}: {detail}"))
            }
            TpmError::Unavailable(d) => TpmError::Unavailable(format!("{d} ({tcti})")),
            other => other,
        })?;
        let mut c = Conn {
            ctx,
            primary: None,
            session: None,
            cached: None,
        };
        if tcti.is_exclusive_raw_device() {
            c.flush_orphans()?;
        }
        Ok(c)
    }

    fn flush_orphans(&mut self) -> Result<(), TpmError> {
        for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
            let (data, _) = self
                .ctx
                .execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, 32))
                .map_err(tss("listing transient handles"))?;
            let CapabilityData::Handles(list) = data else {
                continue;
            };
            for h in list.iter() {
                let raw = u32::from(*h);
                if raw & 0xff00_0000 != first & 0xff00_0000 {
                    continue;
                }
                // Sessions of another client cannot always be named through
                // ESYS; a failure here is logged and ignored.
                let r = self
                    .ctx
                    .execute_without_session(|c| c.tr_from_tpm_public(*h))
                    .and_then(|o| self.ctx.flush_context(o));
                match r {
                    Ok(()) => tracing::info!(
                        handle = format!("{raw:#x}"),
                        "flushed a handle an earlier TPM client left behind"
                    ),
                    Err(e) => {
                        tracing::debug!(handle = format!("{raw:#x}"), error = %e, "could not flush a stale handle")
                    }
                }
            }
        }
        Ok(())
    }

    /// The raw context, for commands the helpers do not cover.
    pub fn ctx(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// A live round trip: 8 bytes from the TPM's RNG.
    pub fn probe(&mut self) -> Result<(), TpmError> {
        let r = self
            .ctx
            .execute_without_session(|c| c.get_random(8))
            .map_err(tss("GetRandom"))?;
        if r.len() != 8 {
            return Err(TpmError::Unavailable(
                "GetRandom returned a short answer".into(),
            ));
        }
        Ok(())
    }

    /// The storage primary, created on first use.
    pub fn primary(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some((h, _)) = &self.primary {
            return Ok(*h);
        }
        let (h, p) = primary::create(&mut self.ctx)?;
        self.primary = Some((h, p));
        Ok(h)
    }

    /// The storage primary's public area.
    pub fn primary_public(&mut self) -> Result<Public, TpmError> {
        self.primary()?;
        Ok(self.primary.as_ref().map(|p| p.1.clone()).expect("primary"))
    }

    fn start_salted(&mut self, kind: SessionType) -> Result<AuthSession, TpmError> {
        let salt = self.primary()?;
        let s = self
            .ctx
            .start_auth_session(
                Some(salt),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tss("starting a salted session"))?
            .ok_or_else(|| TpmError::Invalid("the TPM returned no session".into()))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(s, attrs, mask) {
            self.flush_session(s);
            return Err(tss("setting session attributes")(e));
        }
        Ok(s)
    }

    /// The cached salted HMAC session with parameter encryption both ways.
    /// Authorises objects whose auth value is empty (`userWithAuth`).
    pub fn param_session(&mut self) -> Result<AuthSession, TpmError> {
        if let Some(s) = self.session {
            return Ok(s);
        }
        let s = self.start_salted(SessionType::Hmac)?;
        self.session = Some(s);
        Ok(s)
    }

    /// Runs `f` with a fresh salted policy session (parameter encryption
    /// both ways) and flushes the session afterwards, on every path.
    pub fn with_policy_session<T>(
        &mut self,
        f: impl FnOnce(&mut Conn, PolicySession, AuthSession) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let s = self.start_salted(SessionType::Policy)?;
        let ps = PolicySession::try_from(s)
            .map_err(|_| TpmError::Invalid("not a policy session".into()))?;
        let r = f(self, ps, s);
        self.flush_session(s);
        r
    }

    fn flush_session(&mut self, s: AuthSession) {
        if let Err(e) = self.ctx.flush_context(SessionHandle::from(s).into()) {
            tracing::debug!(error = %e, "flushing a session failed");
        }
    }

    /// Flushes a transient object, logging (not returning) a failure: the
    /// caller's own result matters more, and a dead connection is dropped
    /// (and so cleaned up) by the worker anyway.
    pub fn flush(&mut self, h: KeyHandle) {
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(h)) {
            tracing::debug!(error = %e, "flushing a transient object failed");
        }
    }

    /// Loads `obj` under the storage primary.
    pub fn load(&mut self, obj: &ObjectBlob) -> Result<KeyHandle, TpmError> {
        let parent = self.primary()?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent, obj.private.clone(), obj.public.clone())
            })
            .map_err(tss("loading a key blob (is this the TPM that made it?)"))
    }

    /// Loads `obj`, runs `f` with its handle, flushes it on every path.
    pub fn with_loaded<T>(
        &mut self,
        obj: &ObjectBlob,
        f: impl FnOnce(&mut Conn, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        self.drop_cached();
        let h = self.load(obj)?;
        let r = f(self, h);
        self.flush(h);
        r
    }

    /// The handles of objects cached under `tag`, loading `objs` (and
    /// evicting whatever was cached before) when the tag differs.
    pub fn cached(&mut self, tag: &str, objs: &[&ObjectBlob]) -> Result<Vec<KeyHandle>, TpmError> {
        if let Some((t, hs)) = &self.cached
            && t == tag
        {
            return Ok(hs.clone());
        }
        self.drop_cached();
        let mut hs = Vec::with_capacity(objs.len());
        for o in objs {
            match self.load(o) {
                Ok(h) => hs.push(h),
                Err(e) => {
                    for h in hs {
                        self.flush(h);
                    }
                    return Err(e);
                }
            }
        }
        self.cached = Some((tag.to_string(), hs.clone()));
        Ok(hs)
    }

    /// Flushes everything cached (objects, session, primary), leaving the
    /// TPM's slots to other clients; the next call re-creates what it needs.
    pub fn release(&mut self) {
        self.drop_cached();
        if let Some(s) = self.session.take() {
            self.flush_session(s);
        }
        if let Some((h, _)) = self.primary.take() {
            self.flush(h);
        }
    }

    /// Flushes the cached objects.
    pub fn drop_cached(&mut self) {
        if let Some((_, hs)) = self.cached.take() {
            for h in hs {
                self.flush(h);
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.release();
        // The Context's own drop flushes anything else it still tracks.
    }
}
