//! Creating tpm-resident KEKs: two objects made inside the TPM
//! (sensitiveDataOrigin: nobody ever sees them), checked with a round trip
//! before they are recorded.

use std::sync::Arc;

use tss_esapi::interface_types::algorithm::PublicAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;

use super::tpm::{UnwrapError, key_template, unwrap, wrap};
use super::{AES, HMAC, NAME, ResidentKey, SCHEME, derive_key_id};
use crate::backend::tpm::object::ObjectBlob;
use crate::backend::tpm::policy;
use crate::backend::tpm::worker::Worker;
use crate::backend::tpm::{MintOptions, TpmError, tss};
use crate::backend::{BackendError, KeyMinter, MintedKey};
use crate::keyring::Material;

/// Creates resident KEKs for the `key` commands.
pub(crate) struct ResidentMinter {
    /// The TPM.
    pub worker: Arc<Worker>,
    /// PCR binding and shareability.
    pub opts: MintOptions,
}

impl KeyMinter for ResidentMinter {
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
                "unknown algorithm {algorithm:?}; tpm-resident keys use {SCHEME}"
            )));
        }
        let opts = self.opts.clone();
        let ring_id = ring_id.to_string();
        let (key_id, aes, hmac, digest) = self.worker.call_blocking(move |conn| {
            let digest = match &opts.pcrs {
                Some(p) => Some(p.current_digest(conn)?),
                None => None,
            };
            let pcrs = opts.pcrs.as_ref().zip(digest.as_deref());
            let (auth_policy, uwa) = policy::object_policy(conn, pcrs, opts.shareable)?;
            let parent = conn.primary()?;
            let mut make = |kind| -> Result<ObjectBlob, TpmError> {
                let public = key_template(kind, auth_policy.clone(), uwa, opts.shareable)?;
                let r = conn
                    .ctx()
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.create(parent, public, None, None, None, None)
                    })
                    .map_err(tss("creating a resident key (TPM2_Create)"))?;
                Ok(ObjectBlob {
                    public: r.out_public,
                    private: r.out_private,
                })
            };
            let aes = make(PublicAlgorithm::SymCipher)?;
            let hmac = make(PublicAlgorithm::KeyedHash)?;
            let key_id = derive_key_id(&ring_id, version, &aes, &hmac)?;
            // Check the pair works before it is recorded.
            let key = ResidentKey {
                key_id: key_id.as_str().into(),
                aes: aes.clone(),
                hmac: hmac.clone(),
                pcrs: opts.pcrs.clone(),
            };
            let probe = [0x5au8; 32];
            let ct = wrap(conn, &key, &probe)?;
            match unwrap(conn, &key, &ct) {
                Ok(pt) if pt[..] == probe[..] => {}
                Ok(_) | Err(UnwrapError::DecryptionFailed | UnwrapError::Malformed(_)) => {
                    return Err(TpmError::Invalid(
                        "a new resident key failed its round trip".into(),
                    ));
                }
                Err(UnwrapError::Tpm(e)) => return Err(e),
            }
            conn.drop_cached();
            Ok((key_id, aes, hmac, digest))
        })?;
        let mut material = Material::default();
        aes.to_material(&mut material, AES)?;
        hmac.to_material(&mut material, HMAC)?;
        if let (Some(p), Some(d)) = (&self.opts.pcrs, &digest) {
            p.to_material(d, &mut material);
        }
        Ok(MintedKey {
            key_id,
            algorithm: SCHEME.to_string(),
            material,
        })
    }
}
