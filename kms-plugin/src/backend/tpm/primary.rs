//! The storage primary key: an ECC P-256 restricted decryption key in the
//! owner hierarchy, made from a fixed template (the TCG "SRK" template:
//! AES-128-CFB for its children, SHA-256 names, `unique` all zero).
//!
//! A primary key is derived from the hierarchy's seed and the template, so
//! `TPM2_CreatePrimary` with the same template gives the same key on the
//! same TPM every time: nothing has to be persisted in the TPM's NV memory,
//! and every child blob in the ring loads after a reboot. It changes only
//! when the owner hierarchy is cleared (`tpm2_clear`), which makes every
//! sealed KEK of that TPM unusable by design.
//!
//! The owner hierarchy's authorization value is assumed empty (the default
//! on Linux servers); a TPM whose owner auth is set refuses CreatePrimary
//! with an authorization error, which is reported as such.

use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    EccPoint, Public, PublicBuilder, PublicEccParametersBuilder, SymmetricDefinitionObject,
};

use super::{TpmError, object, tss};

/// The storage primary's template.
pub fn template() -> Result<Public, TpmError> {
    let build = || -> tss_esapi::Result<Public> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
    };
    build().map_err(|e| TpmError::Invalid(format!("storage key template: {e}")))
}

/// Creates the storage primary; returns its handle and public area.
pub fn create(ctx: &mut Context) -> Result<(KeyHandle, Public), TpmError> {
    let template = template()?;
    let r = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| match tss("creating the storage primary key")(e) {
            TpmError::Command { what, detail, rc } if rc & 0x3f == 0x22 || rc & 0x3f == 0x0e => {
                TpmError::Command {
                    what,
                    detail: format!(
                        "{detail}; is an owner hierarchy authorization value set? This plugin needs an empty owner auth"
                    ),
                    rc,
                }
            }
            other => other,
        })?;
    Ok((r.key_handle, r.out_public))
}

/// The fingerprint an operator compares out of band: SHA-256 of the
/// storage key's TPM name, hex in groups of four.
pub fn fingerprint(public: &Public) -> Result<String, TpmError> {
    let name = object::name(public)?;
    let h = hex::encode(ring::digest::digest(&ring::digest::SHA256, &name));
    let groups: Vec<&str> = (0..h.len()).step_by(4).map(|i| &h[i..i + 4]).collect();
    Ok(format!("sha256:{}", groups.join(":")))
}

/// Whether `public` looks like a storage key this plugin can duplicate to:
/// a restricted decryption key with SHA-256 names and an AES-128-CFB (or
/// AES-256-CFB) child protection, ECC or RSA.
pub fn check_target(public: &Public) -> Result<(), TpmError> {
    let a = public.object_attributes();
    if !(a.restricted() && a.decrypt() && !a.sign_encrypt()) {
        return Err(TpmError::Invalid(
            "the target is not a storage key (restricted decryption key)".into(),
        ));
    }
    if public.name_hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(TpmError::Invalid(
            "the target storage key does not use SHA-256 names".into(),
        ));
    }
    match public {
        Public::Ecc { .. } | Public::Rsa { .. } => Ok(()),
        _ => Err(TpmError::Invalid(
            "the target storage key is neither ECC nor RSA".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_a_storage_key() {
        let t = template().unwrap();
        check_target(&t).unwrap();
        let fp = fingerprint(&t).unwrap();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64 + 15, "{fp}");
    }
}
