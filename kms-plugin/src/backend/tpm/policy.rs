//! Authorization policies of the KEK objects.
//!
//! | `--pcrs` | `--shareable` | authPolicy                        | userWithAuth |
//! |----------|---------------|-----------------------------------|--------------|
//! | no       | no            | empty                             | yes          |
//! | no       | yes           | PolicyCommandCode(Duplicate)      | yes          |
//! | yes      | either        | PolicyPCR(selection, digest)      | no           |
//!
//! - Without PCRs, using the key (Unseal, EncryptDecrypt2, HMAC) needs only
//!   its empty auth value, given through the salted HMAC session.
//! - With PCRs, every use needs a policy session in which PolicyPCR was
//!   satisfied: the PCR values must equal those at creation.
//! - Duplication (the DUP role) always needs a policy session. A shareable
//!   key without PCRs allows it through PolicyCommandCode(Duplicate); a
//!   shareable key with PCRs allows it under the same PCR policy as its use,
//!   so a key can never be copied out of the TPM in a platform state in
//!   which it could not be used. Keys that are not shareable have fixedTPM
//!   and fixedParent set: the TPM refuses to duplicate them at all.
//!
//! The PCR selection and their digest at creation are recorded with the key
//! in the ring (`pcrs`, `pcr-digest`): the TPM enforces the policy; the
//! record lets us say which PCRs a key is bound to when it stops unsealing.

use std::str::FromStr;

use tss_esapi::constants::{CommandCode, SessionType};
use tss_esapi::handles::SessionHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    Digest, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, SymmetricDefinition,
};

use super::conn::Conn;
use super::{TpmError, tss};
use crate::keyring::Material;

/// Ring material field: the PCR selection as text (`sha256:0,7`).
pub const FIELD_PCRS: &str = "pcrs";
/// Ring material field: the digest of the selected PCR values at creation.
pub const FIELD_PCR_DIGEST: &str = "pcr-digest";

/// A PCR selection in one bank, e.g. `sha256:0,7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrPolicy {
    bank: &'static str,
    pcrs: Vec<u8>,
}

impl FromStr for PcrPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (bank, list) = s
            .split_once(':')
            .ok_or_else(|| "expected BANK:PCR[,PCR...], e.g. sha256:0,7".to_string())?;
        let bank = match bank {
            "sha1" => "sha1",
            "sha256" => "sha256",
            "sha384" => "sha384",
            other => {
                return Err(format!(
                    "unknown PCR bank {other:?}: choose sha256, sha384 or sha1"
                ));
            }
        };
        let mut pcrs = Vec::new();
        for p in list.split(',') {
            let n: u8 = p
                .trim()
                .parse()
                .ok()
                .filter(|n| *n < 24)
                .ok_or_else(|| format!("{p:?} is not a PCR index (0 to 23)"))?;
            if pcrs.contains(&n) {
                return Err(format!("PCR {n} is listed twice"));
            }
            pcrs.push(n);
        }
        pcrs.sort_unstable();
        Ok(PcrPolicy { bank, pcrs })
    }
}

impl std::fmt::Display for PcrPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.pcrs.iter().map(u8::to_string).collect();
        write!(f, "{}:{}", self.bank, list.join(","))
    }
}

impl PcrPolicy {
    fn hash_alg(&self) -> HashingAlgorithm {
        match self.bank {
            "sha1" => HashingAlgorithm::Sha1,
            "sha384" => HashingAlgorithm::Sha384,
            _ => HashingAlgorithm::Sha256,
        }
    }

    fn slots(&self) -> Vec<PcrSlot> {
        self.pcrs
            .iter()
            .filter_map(|n| PcrSlot::try_from(1u32 << n).ok())
            .collect()
    }

    /// The TPM selection list.
    pub fn selection(&self) -> Result<PcrSelectionList, TpmError> {
        PcrSelectionListBuilder::new()
            .with_selection(self.hash_alg(), &self.slots())
            .build()
            .map_err(|e| TpmError::Invalid(format!("PCR selection {self}: {e}")))
    }

    /// The SHA-256 digest of the selected PCRs' current values, in
    /// selection order, as PolicyPCR computes it.
    pub fn current_digest(&self, conn: &mut Conn) -> Result<Vec<u8>, TpmError> {
        let data = tss_esapi::abstraction::pcr::read_all(conn.ctx(), self.selection()?)
            .map_err(tss("reading PCRs"))?;
        let bank = data
            .pcr_bank(self.hash_alg())
            .ok_or_else(|| TpmError::Invalid(format!("the TPM has no {} PCR bank", self.bank)))?;
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        for slot in self.slots() {
            let d = bank.get_digest(slot).ok_or_else(|| {
                TpmError::Invalid(format!(
                    "the TPM did not return PCR {slot:?} of {}",
                    self.bank
                ))
            })?;
            h.update(d.value());
        }
        Ok(h.finish().as_ref().to_vec())
    }

    /// Records the selection and its digest in a key's material.
    pub fn to_material(&self, digest: &[u8], m: &mut Material) {
        m.insert(FIELD_PCRS, self.to_string().as_bytes());
        m.insert(FIELD_PCR_DIGEST, digest);
    }

    /// The selection recorded in a key's material, if any.
    pub fn from_material(m: &Material) -> Result<Option<PcrPolicy>, TpmError> {
        if !m.fields().any(|f| f == FIELD_PCRS) {
            return Ok(None);
        }
        let raw = m.get(FIELD_PCRS).map_err(TpmError::Invalid)?;
        let text = std::str::from_utf8(&raw)
            .map_err(|_| TpmError::Invalid("pcrs field is not text".into()))?;
        text.parse()
            .map(Some)
            .map_err(|e| TpmError::Invalid(format!("pcrs field {text:?}: {e}")))
    }
}

/// The authPolicy and userWithAuth attribute of a new KEK object.
pub fn object_policy(
    conn: &mut Conn,
    pcrs: Option<(&PcrPolicy, &[u8])>,
    shareable: bool,
) -> Result<(Digest, bool), TpmError> {
    if pcrs.is_none() && !shareable {
        return Ok((Digest::default(), true));
    }
    let ctx = conn.ctx();
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Trial,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("starting a trial session"))?
        .ok_or_else(|| TpmError::Invalid("the TPM returned no session".into()))?;
    let ps =
        PolicySession::try_from(s).map_err(|_| TpmError::Invalid("not a policy session".into()))?;
    let r = (|| {
        match pcrs {
            Some((p, digest)) => {
                let d = Digest::try_from(digest.to_vec())
                    .map_err(|e| TpmError::Invalid(format!("PCR digest: {e}")))?;
                ctx.policy_pcr(ps, d, p.selection()?)
                    .map_err(tss("PolicyPCR (trial)"))?;
            }
            None => ctx
                .policy_command_code(ps, CommandCode::Duplicate)
                .map_err(tss("PolicyCommandCode (trial)"))?,
        }
        ctx.policy_get_digest(ps).map_err(tss("PolicyGetDigest"))
    })();
    let _ = ctx.flush_context(SessionHandle::from(s).into());
    Ok((r?, pcrs.is_none()))
}

/// Satisfies a key's policy in `session` for a use of the key (Unseal,
/// EncryptDecrypt2, HMAC): PolicyPCR with the TPM's current values, which
/// only authorises the command if they equal those at creation.
pub fn satisfy_use(
    conn: &mut Conn,
    session: PolicySession,
    pcrs: &PcrPolicy,
) -> Result<(), TpmError> {
    let sel = pcrs.selection()?;
    conn.ctx()
        .policy_pcr(session, Digest::default(), sel)
        .map_err(tss("PolicyPCR"))
}

/// Satisfies a shareable key's policy for TPM2_Duplicate.
pub fn satisfy_duplicate(
    conn: &mut Conn,
    session: PolicySession,
    pcrs: Option<&PcrPolicy>,
) -> Result<(), TpmError> {
    match pcrs {
        Some(p) => satisfy_use(conn, session, p),
        None => conn
            .ctx()
            .policy_command_code(session, CommandCode::Duplicate)
            .map_err(tss("PolicyCommandCode")),
    }
}

/// The clear error for a key bound to PCRs that the TPM refused.
pub fn policy_error(key_id: &str, pcrs: &PcrPolicy, op: &str, e: &TpmError) -> TpmError {
    TpmError::PolicyFailed(format!(
        "key {key_id} is bound to PCRs {pcrs} and the TPM refused to {op} it: \
         the platform state (the values of PCRs {pcrs}) changed since the key was created; \
         boot into the measured state again, or use another key ({e})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_selections() {
        let p: PcrPolicy = "sha256:7,0".parse().unwrap();
        assert_eq!(p.to_string(), "sha256:0,7");
        p.selection().unwrap();
        for (bad, want) in [
            ("0,7", "BANK:PCR"),
            ("md5:1", "unknown PCR bank"),
            ("sha256:24", "not a PCR index"),
            ("sha256:", "not a PCR index"),
            ("sha256:1,1", "twice"),
        ] {
            let e = bad.parse::<PcrPolicy>().unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let mut m = Material::default();
        p.to_material(&[1; 32], &mut m);
        assert_eq!(PcrPolicy::from_material(&m).unwrap(), Some(p));
        assert_eq!(
            PcrPolicy::from_material(&Material::default()).unwrap(),
            None
        );
    }
}
