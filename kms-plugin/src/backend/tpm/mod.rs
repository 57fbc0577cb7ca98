//! The TPM 2.0 backends.
//!
//! - [`sealed`]: `tpm-sealed`: each KEK is 32 random bytes sealed under the
//!   TPM's storage primary key; `serve` unseals them into locked memory and
//!   wraps in software with the same format as the software backend.
//! - [`resident`]: `tpm-resident`: the KEK is a pair of TPM keys (AES-256
//!   and HMAC-SHA256) that never leave the TPM; every wrap and unwrap is a
//!   TPM command (encrypt-then-MAC).
//!
//! Shared parts, one concept per file: [`tcti`] (where the TPM is),
//! [`worker`] (the one thread that owns the TPM connection, reconnects and
//! releases it), [`conn`] (one connection: cached primary and session,
//! flushing on every path), [`primary`] (the storage key from a fixed
//! template), [`policy`] (PCR and duplication policies), [`object`] (TPM
//! blobs in the key ring), [`duplicate`] (sharing a KEK with another node's
//! TPM). See `docs/tpm.md` for the design and the operator's view.

pub mod conn;
pub mod duplicate;
pub mod object;
pub mod policy;
pub mod primary;
pub mod resident;
pub mod sealed;
pub mod tcti;
pub mod worker;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

pub use tcti::Tcti;

use self::worker::Worker;
use super::BackendError;
use super::options::{ConnectOptions, Kind, OptionSpec, Scope};
use super::registry::MintRequest;
use crate::keyring::KeyEntry;

/// Why a TPM operation failed. Never carries key material.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TPM cannot be reached (connection refused or lost, or busy).
    #[error("TPM unavailable: {0}")]
    Unavailable(String),
    /// The TPM refused a command.
    #[error("{what}: {detail}")]
    Command {
        /// What we were doing.
        what: &'static str,
        /// The decoded response code.
        detail: String,
        /// The raw TSS2 response code.
        rc: u32,
    },
    /// A key bound to PCRs does not unseal or cannot be used: the platform
    /// state changed since it was created.
    #[error("{0}")]
    PolicyFailed(String),
    /// Bad input: a ring entry, a blob, a target or bundle file.
    #[error("{0}")]
    Invalid(String),
}

impl TpmError {
    /// Whether the TPM cannot be used right now (gone, busy, or its PCRs no
    /// longer satisfy a key's policy) rather than refusing a command: the
    /// caller sees UNAVAILABLE and may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TpmError::Unavailable(_) | TpmError::PolicyFailed(_))
    }
}

/// The raw TSS2 response code of a tss-esapi error (0 for wrapper errors).
/// tss-esapi keeps the code private; its `Debug` form shows it as `.0: N`.
pub fn raw_rc(e: &tss_esapi::Error) -> u32 {
    let dbg = format!("{e:?}");
    dbg.split_once(".0: ")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

const LAYER_TPM: u32 = 0x00;
const LAYER_ESYS: u32 = 0x07;
const LAYER_TCTI: u32 = 0x0A;

/// Whether `rc` means the connection to the TPM is broken (or the TPM asks
/// to be retried later), rather than a refusal of this one command.
pub fn is_connection_error(rc: u32) -> bool {
    let layer = (rc >> 16) & 0xff;
    let base = rc & 0xffff;
    match layer {
        LAYER_TCTI => true,
        // NO_CONNECTION, TRY_AGAIN, IO_ERROR, BAD_SEQUENCE (a previous call
        // died half-way), MALFORMED_RESPONSE, INSUFFICIENT_RESPONSE.
        LAYER_ESYS => matches!(base, 7 | 8 | 9 | 10 | 17 | 19),
        // TPM warnings that ask for a retry: YIELDED, CANCELED, TESTING,
        // NV_RATE, RETRY, NV_UNAVAILABLE.
        LAYER_TPM => {
            rc & 0x80 == 0
                && rc & 0x900 == 0x900
                && matches!(rc & 0x7f, 0x08 | 0x09 | 0x0A | 0x20 | 0x22 | 0x23)
        }
        _ => false,
    }
}

fn layer_name(rc: u32) -> &'static str {
    match (rc >> 16) & 0xff {
        LAYER_TPM => "tpm",
        LAYER_ESYS => "esys",
        0x08 => "sys",
        0x09 => "mu",
        LAYER_TCTI => "tcti",
        0x0B | 0x0C => "resource manager",
        _ => "tss",
    }
}

/// Turns a tss-esapi error into ours: connection problems become
/// [`TpmError::Unavailable`], the rest [`TpmError::Command`].
pub fn tss(what: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |e| {
        let rc = raw_rc(&e);
        let detail = match e {
            tss_esapi::Error::WrapperError(k) => format!("{k}"),
            tss_esapi::Error::Tss2Error(code) => {
                format!("{code} ({} rc {rc:#x})", layer_name(rc))
            }
        };
        if is_connection_error(rc) {
            TpmError::Unavailable(format!("{what}: {detail}"))
        } else {
            TpmError::Command { what, detail, rc }
        }
    }
}

/// Whether the TPM refused for lack of room: OBJECT_MEMORY, SESSION_MEMORY,
/// MEMORY, SESSION_HANDLES, OBJECT_HANDLES. Another client holds the slots
/// (swtpm and raw TPMs have three of each); worth a retry.
pub fn is_tpm_full(e: &TpmError) -> bool {
    match e {
        TpmError::Command { rc, .. } => {
            (rc >> 16) & 0xff == LAYER_TPM
                && rc & 0x80 == 0
                && rc & 0x900 == 0x900
                && matches!(rc & 0x7f, 0x02..=0x06)
        }
        _ => false,
    }
}

/// Whether a TPM refusal is a failed policy (PCR values changed).
pub fn is_policy_failure(e: &TpmError) -> bool {
    match e {
        TpmError::Command { rc, .. } => {
            let rc = *rc;
            if (rc >> 16) & 0xff != LAYER_TPM {
                return false;
            }
            if rc & 0x80 != 0 {
                // Format one: POLICY_FAIL, PCR... (error number in bits 0..5).
                matches!(rc & 0x3f, 0x1D | 0x24)
            } else {
                // Format zero: POLICY, PCR, PCR_CHANGED.
                matches!(rc & 0x7f, 0x26..=0x28)
            }
        }
        _ => false,
    }
}

/// `TSS2_LOG=all+none` unless the operator set `TSS2_LOG`: tpm2-tss writes
/// its own error lines to stderr, which is our log stream (and would break
/// JSON logs); our errors carry the decoded response codes instead. Also
/// turns off the `log` records of tss-esapi (an ERROR line for every
/// refused command, including the retried "TPM full" ones, and INFO lines
/// for every connection), for the same reason.
/// Called before any other thread exists (`serve` opens the backend before
/// starting its runtime; the `key` commands are single-threaded).
pub fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        set_tss_log();
    }
    log::set_max_level(log::LevelFilter::Off);
}

#[cfg(not(test))]
fn set_tss_log() {
    // Called before any other thread exists: see `quiet_tss_logging`.
    crate::secret::set_env_before_threads("TSS2_LOG", "all+none");
}

#[cfg(test)]
fn set_tss_log() {
    // Tests run on many threads; leave the environment alone.
}

/// Options for creating TPM keys.
#[derive(Clone, Debug, Default)]
pub struct MintOptions {
    /// Bind the key to these PCR values.
    pub pcrs: Option<policy::PcrPolicy>,
    /// Allow the key to be duplicated to another node's TPM (`key share`).
    pub shareable: bool,
}

/// The options of both TPM backends.
pub(crate) const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "tcti",
        value_name: "TCTI",
        help: "TPM backends: the TPM transport: device:/dev/tpmrm0, swtpm:host=H,port=P, tabrmd (default: $TCTI)",
        env: Some("TCTI"),
        scope: Scope::Connect,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "pcrs",
        value_name: "BANK:PCRS|none",
        help: "TPM backends: bind the new key to these PCR values, e.g. sha256:0,7, or `none` (default: as the key it follows; none for `key init`)",
        env: None,
        scope: Scope::Create,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "shareable",
        value_name: "BOOL",
        help: "TPM backends: let the new key be copied to other nodes' TPMs with `key share` (default: as the key it follows; not shareable for `key init`)",
        env: None,
        scope: Scope::Create,
        kind: Kind::Switch,
    },
];

/// The TCTI option, parsed: `tcti="..." is not valid: ...` on error.
pub(crate) fn tcti_option(o: &ConnectOptions, backend: &str) -> Result<Tcti, String> {
    let t = o.get("tcti").ok_or_else(|| {
        format!(
            "tcti is required with backend={backend} (e.g. --tcti device:/dev/tpmrm0, or set TCTI)"
        )
    })?;
    parse_tcti(t)
}

/// Parses a TCTI string: `tcti="..." is not valid: ...` on error.
pub(crate) fn parse_tcti(t: &str) -> Result<Tcti, String> {
    t.parse()
        .map_err(|e| format!("tcti={t:?} is not valid: {e}"))
}

/// Checks the connection options of a TPM backend.
pub(crate) fn check(o: &ConnectOptions, backend: &str) -> Result<(), String> {
    tcti_option(o, backend).map(|_| ())
}

/// Starts the TPM worker for the connection options.
pub(crate) fn worker(o: &ConnectOptions, backend: &str) -> Result<Arc<Worker>, BackendError> {
    quiet_tss_logging();
    let tcti = tcti_option(o, backend).map_err(BackendError::Config)?;
    Ok(Worker::spawn(tcti))
}

/// The options a new key of a TPM ring is made with: the flags, else those
/// of the key it follows (`like`), else none.
pub(crate) fn mint_options(
    req: &MintRequest<'_>,
    backend: &str,
) -> Result<MintOptions, BackendError> {
    let inherited = match req.like {
        Some(e) => inherited_options(backend, e)?,
        None => MintOptions::default(),
    };
    let pcrs = match req.create.get("pcrs") {
        Some("none") => None,
        Some(p) => Some(
            p.parse::<policy::PcrPolicy>()
                .map_err(|e| BackendError::Config(format!("pcrs={p:?} is not valid: {e}")))?,
        ),
        None => inherited.pcrs,
    };
    let shareable = req
        .create
        .switch("shareable")
        .map_err(BackendError::Config)?
        .unwrap_or(inherited.shareable);
    Ok(MintOptions { pcrs, shareable })
}

/// The options the key `entry` of a `backend` ring was created with, so a
/// rotation makes the new key the same way.
fn inherited_options(backend: &str, entry: &KeyEntry) -> Result<MintOptions, BackendError> {
    let Some(m) = &entry.material else {
        return Ok(MintOptions::default());
    };
    let first = duplicate::prefixes(backend)?[0];
    let blob = object::ObjectBlob::from_material(m, first)?;
    Ok(MintOptions {
        pcrs: policy::PcrPolicy::from_material(m)?,
        shareable: blob.is_duplicable(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_response_codes() {
        assert!(is_connection_error(0x000a000a)); // TCTI IO_ERROR
        assert!(is_connection_error(0x00070007)); // ESYS BAD_SEQUENCE
        assert!(is_connection_error(0x00000922)); // TPM_RC_RETRY
        assert!(!is_connection_error(0x0000099d)); // POLICY_FAIL
        assert!(!is_connection_error(0x00000101)); // TPM_RC_FAILURE
        assert!(!is_connection_error(0x000009a2)); // BAD_AUTH, session 1
        let e = TpmError::Command {
            what: "unseal",
            detail: String::new(),
            rc: 0x99d,
        };
        assert!(is_policy_failure(&e));
        let e = TpmError::Command {
            what: "unseal",
            detail: String::new(),
            rc: 0x98e,
        };
        assert!(!is_policy_failure(&e));
        for rc in [0x902, 0x903, 0x906] {
            let e = TpmError::Command {
                what: "load",
                detail: String::new(),
                rc,
            };
            assert!(is_tpm_full(&e), "{rc:#x}");
        }
    }
}
