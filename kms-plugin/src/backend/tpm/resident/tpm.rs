//! The TPM commands of the tpm-resident backend: the key templates, loading
//! a key's two objects under the session that authorises them, and wrap and
//! unwrap as TPM2_EncryptDecrypt2 (AES-256-CFB) and TPM2_HMAC, the MAC
//! checked (in constant time) before anything is decrypted.

use subtle::ConstantTimeEq;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm, SymmetricMode};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, InitialValue, KeyedHashScheme, MaxBuffer, Public, PublicBuilder,
    PublicKeyedHashParameters, SymmetricCipherParameters, SymmetricDefinitionObject,
};
use zeroize::Zeroizing;

use super::ResidentKey;
use super::format::{self, IV_LEN};
use crate::backend::tpm::conn::Conn;
use crate::backend::tpm::policy;
use crate::backend::tpm::{TpmError, is_policy_failure, tss};

/// The public template of one of a key's two objects.
pub(crate) fn key_template(
    kind: PublicAlgorithm,
    auth_policy: Digest,
    uwa: bool,
    shareable: bool,
) -> Result<Public, TpmError> {
    let build = || -> tss_esapi::Result<Public> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(!shareable)
            .with_fixed_parent(!shareable)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(uwa)
            .with_no_da(true)
            .with_sign_encrypt(true)
            .with_decrypt(kind == PublicAlgorithm::SymCipher)
            .build()?;
        let b = PublicBuilder::new()
            .with_public_algorithm(kind)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(auth_policy);
        match kind {
            PublicAlgorithm::SymCipher => b
                .with_symmetric_cipher_parameters(SymmetricCipherParameters::new(
                    SymmetricDefinitionObject::AES_256_CFB,
                ))
                .with_symmetric_cipher_unique_identifier(Digest::default())
                .build(),
            _ => b
                .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
                    KeyedHashScheme::HMAC_SHA_256,
                ))
                .with_keyed_hash_unique_identifier(Digest::default())
                .build(),
        }
    };
    build().map_err(|e| TpmError::Invalid(format!("resident key template: {e}")))
}

/// Runs `f` with the key's two handles loaded and the session that
/// authorises their use: the salted HMAC session, or (PCR-bound keys) a
/// salted policy session whose PolicyPCR `f` re-satisfies before each use.
pub(crate) fn with_key<T>(
    conn: &mut Conn,
    key: &ResidentKey,
    f: impl FnOnce(
        &mut Conn,
        [KeyHandle; 2],
        &dyn Fn(&mut Conn) -> Result<AuthSession, TpmError>,
    ) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let hs = conn.cached(&key.key_id, &[&key.aes, &key.hmac])?;
    let hs = [hs[0], hs[1]];
    match &key.pcrs {
        None => f(conn, hs, &|c: &mut Conn| c.param_session()),
        Some(p) => conn
            .with_policy_session(|conn, ps, s| {
                f(conn, hs, &move |c: &mut Conn| {
                    policy::satisfy_use(c, ps, p)?;
                    Ok(s)
                })
            })
            .map_err(|e| {
                if is_policy_failure(&e) {
                    policy::policy_error(&key.key_id, p, "use", &e)
                } else {
                    e
                }
            }),
    }
}

/// The session for the HMAC command. Its input (header, key_id, IV,
/// ciphertext) and output (the tag) are public, so without a PCR policy it
/// needs no parameter encryption: a password session with the key's empty
/// auth value saves one HMAC-session round of ESYS work (~2.5 ms on
/// tpm2-tss 3.2). PCR-bound keys need their policy session.
fn mac_auth(
    conn: &mut Conn,
    key: &ResidentKey,
    auth: &dyn Fn(&mut Conn) -> Result<AuthSession, TpmError>,
) -> Result<AuthSession, TpmError> {
    match key.pcrs {
        None => Ok(AuthSession::Password),
        Some(_) => auth(conn),
    }
}

fn tpm_hmac(
    conn: &mut Conn,
    h: KeyHandle,
    s: AuthSession,
    data: Vec<u8>,
) -> Result<Vec<u8>, TpmError> {
    let buf =
        MaxBuffer::try_from(data).map_err(|e| TpmError::Invalid(format!("MAC input: {e}")))?;
    let tag = conn
        .ctx()
        .execute_with_session(Some(s), |c| c.hmac(h.into(), buf, HashingAlgorithm::Sha256))
        .map_err(tss("HMAC"))?;
    Ok(tag.value().to_vec())
}

fn tpm_cfb(
    conn: &mut Conn,
    h: KeyHandle,
    s: AuthSession,
    decrypt: bool,
    iv: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let iv =
        InitialValue::try_from(iv.to_vec()).map_err(|e| TpmError::Invalid(format!("IV: {e}")))?;
    let input = MaxBuffer::try_from(data.to_vec())
        .map_err(|e| TpmError::Invalid(format!("cipher input: {e}")))?;
    let (out, _) = conn
        .ctx()
        .execute_with_session(Some(s), |c| {
            c.encrypt_decrypt_2(h, decrypt, SymmetricMode::Cfb, input, iv)
        })
        .map_err(tss("EncryptDecrypt2"))?;
    Ok(Zeroizing::new(out.value().to_vec()))
}

/// Wraps `plaintext` with `key` in the TPM.
pub(crate) fn wrap(
    conn: &mut Conn,
    key: &ResidentKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv)
        .map_err(|_| TpmError::Invalid("the OS random number generator failed".into()))?;
    let key_id = key.key_id.clone();
    let (ct, tag) = with_key(conn, key, |conn, [aes, hmac], auth| {
        let s = auth(conn)?;
        let ct = tpm_cfb(conn, aes, s, false, &iv, plaintext)?;
        let s = mac_auth(conn, key, auth)?;
        let tag = tpm_hmac(conn, hmac, s, format::mac_input(&key_id, &iv, &ct))?;
        Ok((ct, tag))
    })?;
    Ok(format::assemble(&iv, &ct, &tag))
}

/// Why an unwrap failed: the ciphertext (no TPM involved) or the TPM.
pub(crate) enum UnwrapError {
    /// Not a tpm-resident ciphertext.
    Malformed(&'static str),
    /// The tag does not verify.
    DecryptionFailed,
    /// The TPM failed.
    Tpm(TpmError),
}

/// Unwraps `ciphertext` with `key` in the TPM: MAC first, then decrypt.
pub(crate) fn unwrap(
    conn: &mut Conn,
    key: &ResidentKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let format::Parts { iv, ct, tag } =
        format::parse(ciphertext).map_err(UnwrapError::Malformed)?;
    if !format::mac_fits(&key.key_id, ct.len()) {
        // Encrypt never makes such a ciphertext.
        return Err(UnwrapError::DecryptionFailed);
    }
    let key_id = key.key_id.clone();
    let r = with_key(conn, key, |conn, [aes, hmac], auth| {
        let s = mac_auth(conn, key, auth)?;
        let want = tpm_hmac(conn, hmac, s, format::mac_input(&key_id, iv, ct))?;
        if !bool::from(want.ct_eq(tag)) {
            return Ok(None);
        }
        let s = auth(conn)?;
        tpm_cfb(conn, aes, s, true, iv, ct).map(Some)
    });
    match r {
        Ok(Some(pt)) => Ok(pt),
        Ok(None) => Err(UnwrapError::DecryptionFailed),
        Err(e) => Err(UnwrapError::Tpm(e)),
    }
}
