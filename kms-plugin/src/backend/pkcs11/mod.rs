//! `pkcs11`: KEKs that are AES-256 key objects in a PKCS#11 token (an HSM:
//! Thales Luna, YubiHSM 2, AWS CloudHSM, Azure Dedicated HSM; SoftHSM2 for
//! development). A key is generated in the token (CKA_SENSITIVE, not
//! CKA_EXTRACTABLE, CKA_TOKEN) and never exists outside it; every wrap and
//! unwrap is a token operation (CKM_AES_GCM, see [`format`]).
//!
//! The key ring lists the keys, as for the other backends: each entry's
//! material is only the object's reference (its CKA_ID) and the token's
//! serial number, none of it secret. So staged rotation, fingerprints,
//! import of another node's entries (nodes sharing one HSM partition) and
//! the reload rules are the same as everywhere; retirement destroys the
//! token object (C_DestroyObject).
//!
//! key_id = `p11-<ring id>-v<version>-<h>` with `h` the first 6 bytes of
//! SHA-256 over the token's serial and the key's check value (AES-256 of a
//! fixed block under the key, computed in the token): from public facts
//! only, stable across restarts, never reused.
//!
//! One concept per file: [`format`] (the ciphertext), `token` (module,
//! login, session pool, recovery), `key` (the key objects); this file is
//! the backend.

pub(crate) mod format;
mod key;
mod token;

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use self::key::Pkcs11Key;
use self::token::{CallError, Token, TokenChoice, TokenConfig};
use super::options::{ConnectOptions, Kind, OptionSpec, Scope};
use super::registry::{BackendRow, MintRequest, Portability};
use super::ring::{LoadError, Loaded, RingBackend, RingKeys};
use super::{BackendError, KeyBackend, KeyMinter, MintedKey};
use crate::keyring::{KeyEntry, Keyring, Material};

/// The backend name in rings and flags.
pub const NAME: &str = "pkcs11";
/// The scheme name recorded as the key's algorithm.
pub const SCHEME: &str = "pkcs11-aes-256-gcm";
/// The environment variable that may hold the user PIN instead of a file.
pub const PIN_ENV: &str = "KMS_PLUGIN_PKCS11_PIN";
/// Sessions open at once unless `--pkcs11-sessions` says otherwise.
const DEFAULT_SESSIONS: usize = 4;

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "pkcs11-module",
        value_name: "PATH",
        help: "pkcs11: the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so",
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "pkcs11-token-label",
        value_name: "LABEL",
        help: "pkcs11: the token's label (or --pkcs11-slot)",
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "pkcs11-slot",
        value_name: "N",
        help: "pkcs11: the token's slot number (or --pkcs11-token-label)",
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "pkcs11-pin-file",
        value_name: "FILE",
        help: "pkcs11: a file holding the user PIN (mode 0600, owned by this user or root); else $KMS_PLUGIN_PKCS11_PIN",
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    },
    OptionSpec {
        name: "pkcs11-sessions",
        value_name: "N",
        help: "pkcs11: sessions open at once (default 4)",
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    },
];

/// The registry row.
pub(crate) const ROW: BackendRow = BackendRow {
    name: NAME,
    ring: true,
    summary: "KEKs generated in a PKCS#11 token (an HSM); every wrap and unwrap runs in it",
    options: OPTIONS,
    retirement: "the key object was destroyed in the token (C_DestroyObject). Nothing outside the token ever held it; a copy survives only in the token's own backups or clones (HSM backup tokens, partition replicas): destroy it there too",
    check: |o| token_config(o).map(|_| ()),
    verify: |ring_id, e| key::Reference::decode(ring_id, e).map(|_| ()),
    open,
    minter,
    destroy: Some(destroy),
    export: Portability::Reference,
};

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> String {
    format!("{key}={value:?} is not valid: {why}")
}

/// Reads the PIN from its file (checked: a regular file, not a symlink,
/// 0600 or stricter, owned by this user or root) or the environment.
fn read_pin(o: &ConnectOptions) -> Result<Zeroizing<String>, String> {
    if let Some(path) = o.get("pkcs11-pin-file") {
        let p = Path::new(path);
        let meta = std::fs::symlink_metadata(p).map_err(|e| bad("pkcs11-pin-file", path, e))?;
        use std::os::unix::fs::MetadataExt;
        if !meta.file_type().is_file() {
            return Err(bad(
                "pkcs11-pin-file",
                path,
                "not a regular file (a symlink is refused)",
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(bad(
                "pkcs11-pin-file",
                path,
                format!(
                    "mode {:o}: group and others must have no access (chmod 600)",
                    meta.mode() & 0o777
                ),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(bad(
                "pkcs11-pin-file",
                path,
                format!(
                    "owned by uid {}, not by this user ({me}) or root",
                    meta.uid()
                ),
            ));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| bad("pkcs11-pin-file", path, e))?,
        );
        let pin = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
        if pin.is_empty() {
            return Err(bad("pkcs11-pin-file", path, "the file is empty"));
        }
        return Ok(pin);
    }
    match std::env::var(PIN_ENV) {
        Ok(v) if !v.is_empty() => Ok(Zeroizing::new(v)),
        _ => Err(format!(
            "pkcs11 needs the user PIN: --pkcs11-pin-file FILE (mode 0600) or ${PIN_ENV} (never a flag value)"
        )),
    }
}

/// The token settings, validated (before anything binds).
fn token_config(o: &ConnectOptions) -> Result<TokenConfig, String> {
    let module = o
        .get("pkcs11-module")
        .ok_or("pkcs11-module is required with backend=pkcs11 (e.g. --pkcs11-module /usr/lib/softhsm/libsofthsm2.so)")?;
    let meta = std::fs::metadata(module).map_err(|e| bad("pkcs11-module", module, e))?;
    if !meta.is_file() {
        return Err(bad("pkcs11-module", module, "not a file"));
    }
    let token = match (o.get("pkcs11-token-label"), o.get("pkcs11-slot")) {
        (Some(l), None) if !l.is_empty() => TokenChoice::Label(l.to_string()),
        (None, Some(s)) => TokenChoice::Slot(s.parse().map_err(|e| bad("pkcs11-slot", s, e))?),
        (Some(_), Some(_)) => {
            return Err("give --pkcs11-token-label or --pkcs11-slot, not both".into());
        }
        _ => {
            return Err(
                "pkcs11 needs the token: --pkcs11-token-label LABEL (or --pkcs11-slot N)".into(),
            );
        }
    };
    let sessions = match o.get("pkcs11-sessions") {
        None => DEFAULT_SESSIONS,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => return Err(bad("pkcs11-sessions", s, "must be between 1 and 256")),
        },
    };
    Ok(TokenConfig {
        module: module.into(),
        token,
        pin: read_pin(o)?,
        sessions,
    })
}

fn token(o: &ConnectOptions) -> Result<Arc<Token>, BackendError> {
    Ok(Arc::new(Token::new(
        token_config(o).map_err(BackendError::Config)?,
    )))
}

/// Attempts to reach the token at start before `serve` gives up: a module
/// may miss a token for a moment (a network HSM's first connection,
/// SoftHSM2 reading a token another process is writing).
const START_ATTEMPTS: u32 = 5;
const START_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

fn open(dir: Option<&Path>, o: &ConnectOptions) -> Result<Arc<dyn KeyBackend>, BackendError> {
    let dir = super::registry::ring_dir(dir)?;
    let token = token(o)?;
    let mut attempt = 1;
    loop {
        match Pkcs11Backend::open(
            dir,
            Pkcs11Keys {
                token: token.clone(),
            },
        ) {
            Err(BackendError::Unavailable(why)) if attempt < START_ATTEMPTS => {
                tracing::warn!(attempt, reason = %why, "PKCS#11 token not usable yet; trying again");
                std::thread::sleep(START_PAUSE);
                attempt += 1;
            }
            other => return Ok(Arc::new(other?)),
        }
    }
}

fn minter(req: &MintRequest<'_>) -> Result<Box<dyn KeyMinter>, BackendError> {
    Ok(Box::new(Pkcs11Minter {
        token: token(req.connect)?,
    }))
}

/// Destroys a retiring key's object in the token; says what it did.
fn destroy(o: &ConnectOptions, ring_id: &str, e: &KeyEntry) -> Result<String, BackendError> {
    let token = token(o)?;
    let r = key::Reference::decode(ring_id, e).map_err(BackendError::Config)?;
    key::destroy(&token, &r)
}

/// Maps what the token answered to the backend's errors.
fn call_error(e: CallError) -> BackendError {
    match e {
        CallError::Backend(b) => b,
        CallError::Token(t) => {
            BackendError::Internal(format!("the token refused: {}", token::rv_name(&t)))
        }
    }
}

/// The `pkcs11` part of a [`RingBackend`]: keys are token objects; every
/// wrap and unwrap runs in the token, on a session of the pool, on
/// tokio's blocking threads.
pub(crate) struct Pkcs11Keys {
    token: Arc<Token>,
}

/// The `pkcs11` backend.
pub(crate) type Pkcs11Backend = RingBackend<Pkcs11Keys>;

impl RingKeys for Pkcs11Keys {
    type Key = Pkcs11Key;
    const NAME: &'static str = NAME;
    const HARDWARE_BACKED: bool = true;

    fn key_id(key: &Pkcs11Key) -> &Arc<str> {
        &key.key_id
    }

    fn max_plaintext(_: &Pkcs11Key) -> usize {
        format::MAX_PLAINTEXT
    }

    fn load(&self, ring: &Keyring, entries: &[&KeyEntry]) -> Result<Loaded<Pkcs11Key>, LoadError> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let r = key::Reference::decode(&ring.ring_id, e).map_err(LoadError::Invalid)?;
            match key::find(&self.token, &ring.ring_id, e, r) {
                Ok(k) => out.push(Ok(k)),
                Err(key::FindError::Unusable(reason)) => out.push(Err(reason)),
                Err(key::FindError::Backend(b)) => return Err(LoadError::Backend(b)),
            }
        }
        Ok(out)
    }

    async fn wrap(&self, key: &Arc<Pkcs11Key>, plaintext: &[u8]) -> Result<Vec<u8>, BackendError> {
        let (token, key, pt) = (
            self.token.clone(),
            key.clone(),
            Zeroizing::new(plaintext.to_vec()),
        );
        blocking(move || key.wrap(&token, &pt)).await
    }

    async fn unwrap(
        &self,
        key: &Arc<Pkcs11Key>,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        format::parse(ciphertext).map_err(|m| BackendError::Malformed(m.to_string()))?;
        let (token, key, ct) = (self.token.clone(), key.clone(), ciphertext.to_vec());
        blocking(move || key.unwrap(&token, &ct)).await
    }

    fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn probe(&self) -> Result<(), BackendError> {
        let token = self.token.clone();
        blocking(move || key::probe(&token)).await
    }
}

/// Runs a token call on tokio's blocking threads (PKCS#11 calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Internal(format!("a token call's thread failed: {e}")))?
}

/// Creates pkcs11 keys for the `key` commands: generated in the token.
pub(crate) struct Pkcs11Minter {
    token: Arc<Token>,
}

impl KeyMinter for Pkcs11Minter {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec![SCHEME]
    }

    fn mint(
        &self,
        ring_id: &str,
        version: u64,
        algorithm: &str,
    ) -> Result<MintedKey, BackendError> {
        if algorithm != SCHEME {
            return Err(BackendError::Config(format!(
                "unknown algorithm {algorithm:?}; pkcs11 keys use {SCHEME}"
            )));
        }
        let (key_id, r) = key::generate(&self.token, ring_id, version)?;
        let mut material = Material::default();
        r.to_material(&mut material);
        Ok(MintedKey {
            key_id,
            algorithm: SCHEME.to_string(),
            material,
        })
    }
}

#[cfg(test)]
mod tests;
