//! The key objects: how a ring entry names one (its [`Reference`]), how it
//! is found, checked, generated, used and destroyed in the token.
//!
//! A ring entry's material is three public facts: the object's CKA_ID,
//! the token's serial number and the key's check value (the AES-256
//! encryption of one fixed block under the key, computed in the token).
//! The key_id is derived from them, so [`Reference::decode`] checks an
//! entry arriving from outside without the token, and [`find`] checks that
//! the object the token holds under that CKA_ID is that key: an object
//! planted under the same CKA_ID, or a key of another token, is refused.

use std::sync::{Arc, Mutex};

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::format;
use super::token::{CallError, Token};
use crate::backend::BackendError;
use crate::keyring::{KeyEntry, Material};

/// Material field: the object's CKA_ID.
const ID: &str = "id";
/// Material field: the token's serial number.
const SERIAL: &str = "token-serial";
/// Material field: the key's check value.
const KCV: &str = "kcv";
/// The block whose encryption is the check value.
const KCV_BLOCK: &[u8; 16] = b"kms-plugin/kcv01";
/// The longest CKA_ID accepted from a ring.
const MAX_ID: usize = 64;

/// The public facts naming one key object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// CKA_ID.
    pub id: Vec<u8>,
    /// The serial number of the token holding it.
    pub serial: String,
    /// AES-256-ECB of [`KCV_BLOCK`] under the key.
    pub kcv: [u8; 16],
}

/// The key_id of the key `r` names, version `version` of ring `ring_id`.
pub(crate) fn derive_key_id(ring_id: &str, version: u64, r: &Reference) -> String {
    let h = crate::backend::key_id_hash(&[r.serial.as_bytes(), &r.id, &r.kcv]);
    format!("p11-{ring_id}-v{version}-{h}")
}

impl Reference {
    /// Decodes a ring entry's material and checks the key_id against it
    /// (no token needed).
    pub(crate) fn decode(ring_id: &str, e: &KeyEntry) -> Result<Self, String> {
        if e.algorithm != super::SCHEME {
            return Err(format!(
                "key {} has algorithm {:?}, expected {:?}",
                e.key_id,
                e.algorithm,
                super::SCHEME
            ));
        }
        let m = e
            .material
            .as_ref()
            .ok_or_else(|| format!("key {} has no material", e.key_id))?;
        let field = |name: &str| m.get(name).map_err(|r| format!("key {}: {r}", e.key_id));
        let id = field(ID)?.to_vec();
        if id.is_empty() || id.len() > MAX_ID {
            return Err(format!(
                "key {}: material field \"id\" must be 1 to {MAX_ID} bytes, not {}",
                e.key_id,
                id.len()
            ));
        }
        let serial = String::from_utf8(field(SERIAL)?.to_vec())
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                format!(
                    "key {}: material field \"token-serial\" is not a token serial (1 to 16 printable characters)",
                    e.key_id
                )
            })?;
        let kcv: [u8; 16] = field(KCV)?
            .as_slice()
            .try_into()
            .map_err(|_| format!("key {}: material field \"kcv\" must be 16 bytes", e.key_id))?;
        if let Some(extra) = m.fields().find(|f| ![ID, SERIAL, KCV].contains(f)) {
            return Err(format!(
                "key {}: unknown material field {extra:?}",
                e.key_id
            ));
        }
        let r = Reference { id, serial, kcv };
        if derive_key_id(ring_id, e.version, &r) != e.key_id {
            return Err(format!(
                "key {} does not match its token object reference (corrupted or edited ring)",
                e.key_id
            ));
        }
        Ok(r)
    }

    /// Writes the reference into ring material.
    pub(crate) fn to_material(&self, m: &mut Material) {
        m.insert(ID, &self.id);
        m.insert(SERIAL, self.serial.as_bytes());
        m.insert(KCV, &self.kcv);
    }

    /// `CKA_ID 6b6d..` for messages (not secret).
    fn describe(&self) -> String {
        format!(
            "CKA_ID {} in token serial {}",
            hex::encode(&self.id),
            self.serial
        )
    }
}

/// One key ready for use: its reference and the object's handle on the
/// current connection (handles do not survive a reconnect).
pub(crate) struct Pkcs11Key {
    /// Its key_id.
    pub key_id: Arc<str>,
    reference: Reference,
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

/// Why [`find`] could not make a key usable.
pub(crate) enum FindError {
    /// This key cannot be used (the others can): the reason.
    Unusable(String),
    /// The token failed.
    Backend(BackendError),
}

/// What went wrong finding an object on a session.
enum Lookup {
    Found(ObjectHandle),
    Problem(String),
}

/// The template every KEK object matches.
fn template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Id(id.to_vec()),
    ]
}

/// The check value of `handle`'s key, computed in the token.
fn check_value(s: &Session, handle: ObjectHandle) -> Result<[u8; 16], P11Error> {
    let out = s.encrypt(&Mechanism::AesEcb, handle, KCV_BLOCK)?;
    out.as_slice().try_into().map_err(|_| {
        P11Error::Pkcs11(
            RvError::FunctionFailed,
            cryptoki::context::Function::Encrypt,
        )
    })
}

/// Finds `r`'s object on session `s` and checks it is that key, stored as
/// a KEK must be (sensitive, never extractable, encrypt and decrypt).
fn lookup(s: &Session, serial: &str, r: &Reference) -> Result<Lookup, P11Error> {
    if serial != r.serial {
        return Ok(Lookup::Problem(format!(
            "the key is {} but this token's serial is {serial} (another token, or an HSM partition this node does not share)",
            r.describe()
        )));
    }
    let found = s.find_objects(&template(&r.id))?;
    let handle = match found.as_slice() {
        [h] => *h,
        [] => {
            return Ok(Lookup::Problem(format!(
                "no AES key object with {} (destroyed, or never created in this token)",
                r.describe()
            )));
        }
        many => {
            return Ok(Lookup::Problem(format!(
                "{} AES key objects share {}: refusing to guess",
                many.len(),
                r.describe()
            )));
        }
    };
    let attrs = s.get_attributes(
        handle,
        &[
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ],
    )?;
    for a in &attrs {
        let wrong = match a {
            Attribute::Sensitive(false) => Some("not CKA_SENSITIVE"),
            Attribute::Extractable(true) => Some("CKA_EXTRACTABLE"),
            Attribute::Encrypt(false) => Some("not allowed to encrypt"),
            Attribute::Decrypt(false) => Some("not allowed to decrypt"),
            _ => None,
        };
        if let Some(w) = wrong {
            return Ok(Lookup::Problem(format!(
                "the object with {} is {w}: not usable as a KEK",
                r.describe()
            )));
        }
    }
    if check_value(s, handle)? != r.kcv {
        return Ok(Lookup::Problem(format!(
            "the object with {} is not the key this ring lists (its check value differs: replaced or planted)",
            r.describe()
        )));
    }
    Ok(Lookup::Found(handle))
}

/// Finds and checks the object of ring entry `e` (whose reference `r` is
/// already decoded).
pub(crate) fn find(
    token: &Token,
    _ring_id: &str,
    e: &KeyEntry,
    r: Reference,
) -> Result<Pkcs11Key, FindError> {
    let found = token
        .with_session(|s, generation, serial| {
            Ok(lookup(s, serial, &r)?.map_found(|h| (generation, h)))
        })
        .map_err(|e| FindError::Backend(super::call_error(e)))?;
    match found {
        Ok(cached) => Ok(Pkcs11Key {
            key_id: e.key_id.as_str().into(),
            reference: r,
            handle: Mutex::new(Some(cached)),
        }),
        Err(reason) => Err(FindError::Unusable(format!("key {}: {reason}", e.key_id))),
    }
}

impl Lookup {
    fn map_found<T>(self, f: impl FnOnce(ObjectHandle) -> T) -> Result<T, String> {
        match self {
            Lookup::Found(h) => Ok(f(h)),
            Lookup::Problem(p) => Err(p),
        }
    }
}

/// How a wrap or unwrap went wrong on the token's side of a call.
enum Use<T> {
    Done(T),
    /// The object is gone or changed since the key was loaded (on this
    /// connection generation).
    Lost(String, u64),
}

impl Pkcs11Key {
    /// The handle valid on connection `generation`, looked up again after
    /// a reconnect.
    fn handle(
        &self,
        s: &Session,
        generation: u64,
        serial: &str,
    ) -> Result<Result<ObjectHandle, String>, P11Error> {
        if let Some((g, h)) = *kms_proto::sync::lock(&self.handle)
            && g == generation
        {
            return Ok(Ok(h));
        }
        let found = lookup(s, serial, &self.reference)?.map_found(|h| h);
        if let Ok(h) = found {
            *kms_proto::sync::lock(&self.handle) = Some((generation, h));
        }
        Ok(found)
    }

    /// Runs `op` with the key's object, once more with a fresh lookup if
    /// the token says the handle is stale.
    fn with_object<T>(
        &self,
        token: &Token,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, P11Error>,
    ) -> Result<Use<T>, CallError> {
        token.with_session(|s, generation, serial| {
            for attempt in 0..2 {
                let h = match self.handle(s, generation, serial)? {
                    Ok(h) => h,
                    Err(reason) => return Ok(Use::Lost(reason, generation)),
                };
                match op(s, h) {
                    Err(P11Error::Pkcs11(
                        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                        _,
                    )) if attempt == 0 => {
                        *kms_proto::sync::lock(&self.handle) = None;
                    }
                    other => return other.map(Use::Done),
                }
            }
            Ok(Use::Lost(
                format!(
                    "the object with {} keeps disappearing",
                    self.reference.describe()
                ),
                generation,
            ))
        })
    }

    /// A key object found before is gone: the token connection starts
    /// over (it may see the object again) and the call is UNAVAILABLE.
    fn lost(&self, token: &Token, reason: String, generation: u64) -> BackendError {
        token.object_vanished(generation);
        BackendError::Unavailable(format!("key {}: {reason}", self.key_id))
    }

    /// Wraps `plaintext` (AES-256-GCM in the token, a fresh random IV).
    pub(crate) fn wrap(&self, token: &Token, plaintext: &[u8]) -> Result<Vec<u8>, BackendError> {
        if plaintext.len() > format::MAX_PLAINTEXT {
            return Err(BackendError::Malformed(format!(
                "plaintext is {} bytes, the most is {}",
                plaintext.len(),
                format::MAX_PLAINTEXT
            )));
        }
        let mut iv = [0u8; format::IV_LEN];
        getrandom::fill(&mut iv).map_err(BackendError::Rng)?;
        let aad = format::aad(&self.key_id);
        let sealed = self
            .with_object(token, |s, h| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &aad, (format::TAG_LEN as u64 * 8).into())?;
                s.encrypt(&Mechanism::AesGcm(params), h, plaintext)
            })
            .map_err(super::call_error)?;
        match sealed {
            Use::Done(sealed) => Ok(format::assemble(&iv, &sealed)),
            Use::Lost(reason, generation) => Err(self.lost(token, reason, generation)),
        }
    }

    /// Unwraps `ciphertext`; a ciphertext the key did not make (or made
    /// under another key_id) is `DecryptionFailed`.
    pub(crate) fn unwrap(
        &self,
        token: &Token,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let (iv, sealed) =
            format::parse(ciphertext).map_err(|m| BackendError::Malformed(m.to_string()))?;
        let aad = format::aad(&self.key_id);
        let opened = self.with_object(token, |s, h| {
            let mut iv = <[u8; format::IV_LEN]>::try_from(iv).map_err(|_| {
                P11Error::Pkcs11(RvError::ArgumentsBad, cryptoki::context::Function::Decrypt)
            })?;
            let params = GcmParams::new(&mut iv, &aad, (format::TAG_LEN as u64 * 8).into())?;
            match s.decrypt(&Mechanism::AesGcm(params), h, sealed) {
                Ok(pt) => Ok(Some(Zeroizing::new(pt))),
                // Tokens report a tag that does not verify in several
                // ways, some also used for real failures (SoftHSM2 says
                // CKR_GENERAL_ERROR): it is the ciphertext's fault when
                // the same session still answers.
                Err(e) if may_be_tag_failure(&e) && s.get_session_info().is_ok() => Ok(None),
                Err(e) => Err(e),
            }
        });
        match opened {
            Ok(Use::Done(Some(pt))) => Ok(pt),
            Ok(Use::Done(None)) => Err(BackendError::DecryptionFailed),
            Ok(Use::Lost(reason, generation)) => Err(self.lost(token, reason, generation)),
            Err(e) => Err(super::call_error(e)),
        }
    }
}

/// Whether a C_Decrypt error may mean the tag did not verify: the
/// standard's CKR_ENCRYPTED_DATA_INVALID (or v3.0's
/// CKR_AEAD_DECRYPT_FAILED), or the generic failures some tokens answer
/// instead.
fn may_be_tag_failure(e: &P11Error) -> bool {
    const CKR_AEAD_DECRYPT_FAILED: u64 = 0x35;
    match e {
        P11Error::Pkcs11(rv, _) => match rv {
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::GeneralError
            | RvError::FunctionFailed => true,
            RvError::UnknownErrorCode(c) => *c == CKR_AEAD_DECRYPT_FAILED,
            _ => false,
        },
        _ => false,
    }
}

/// Generates version `version` of ring `ring_id` in the token; returns its
/// key_id and reference after a round trip through it.
pub(crate) fn generate(
    token: &Token,
    ring_id: &str,
    version: u64,
) -> Result<(String, Reference), BackendError> {
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(BackendError::Rng)?;
    let id = format!("{ring_id}-v{version}-{}", hex::encode(tag)).into_bytes();
    let label = format!("kms-plugin {ring_id} v{version}").into_bytes();
    let made = token
        .with_session(|s, generation, serial| {
            let mut attrs = template(&id);
            attrs.extend([
                Attribute::Label(label.clone()),
                Attribute::ValueLen(32u64.into()),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
            ]);
            let h = s.generate_key(&Mechanism::AesKeyGen, &attrs)?;
            let kcv = match check_value(s, h) {
                Ok(k) => k,
                Err(e) => {
                    let _ = s.destroy_object(h);
                    return Err(e);
                }
            };
            Ok((
                generation,
                h,
                Reference {
                    id: id.clone(),
                    serial: serial.to_string(),
                    kcv,
                },
            ))
        })
        .map_err(|e| match e {
            CallError::Token(t) => BackendError::Internal(format!(
                "generating an AES-256 key in the token: {} (does the token allow CKM_AES_KEY_GEN, CKM_AES_GCM and CKM_AES_ECB?)",
                super::token::rv_name(&t)
            )),
            CallError::Backend(b) => b,
        })?;
    let (generation, handle, reference) = made;
    let key_id = derive_key_id(ring_id, version, &reference);
    let key = Pkcs11Key {
        key_id: key_id.as_str().into(),
        reference: reference.clone(),
        handle: Mutex::new(Some((generation, handle))),
    };
    let probe = [0x5a_u8; 32];
    let ok = key
        .wrap(token, &probe)
        .and_then(|ct| key.unwrap(token, &ct))
        .map(|pt| pt.as_slice() == probe);
    match ok {
        Ok(true) => Ok((key_id, reference)),
        failed => {
            let _ = destroy(token, &reference);
            Err(BackendError::Internal(format!(
                "the new key failed its round trip through the token ({}); it was destroyed",
                match failed {
                    Err(e) => e.to_string(),
                    _ => "the seed came back different".into(),
                }
            )))
        }
    }
}

/// Destroys the object `r` names; says what it did. An object already
/// gone is not an error (a retirement run twice, or on a second node
/// sharing the partition).
pub(crate) fn destroy(token: &Token, r: &Reference) -> Result<String, BackendError> {
    token
        .with_session(|s, _, serial| {
            if serial != r.serial {
                return Ok(Err(format!(
                    "the key is {} but this token's serial is {serial}: nothing destroyed",
                    r.describe()
                )));
            }
            let found = s.find_objects(&template(&r.id))?;
            let mut destroyed = 0;
            for h in found {
                // Only the object that is this key: never another key that
                // happens to share the CKA_ID.
                if check_value(s, h)? == r.kcv {
                    s.destroy_object(h)?;
                    destroyed += 1;
                }
            }
            Ok(Ok(match destroyed {
                0 => format!("no object with {} was left to destroy", r.describe()),
                _ => format!("destroyed the key object with {}", r.describe()),
            }))
        })
        .map_err(|e| match e {
            CallError::Token(t) => BackendError::Internal(format!(
                "destroying the object with {}: {}",
                r.describe(),
                super::token::rv_name(&t)
            )),
            CallError::Backend(b) => b,
        })?
        .map_err(BackendError::Config)
}

/// A live check of the token: a session answers.
pub(crate) fn probe(token: &Token) -> Result<(), BackendError> {
    token
        .with_session(|s, _, _| s.get_session_info().map(|_| ()))
        .map_err(super::call_error)
}
