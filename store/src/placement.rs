//! A stored value must be the object its key names. aesgcm and kms v2 bind
//! a value to its key (the key is the AEAD's associated data), so a value
//! copied under another key does not even open; aescbc, secretbox and
//! identity have no such binding and open it as if it belonged there. The
//! decoded object's namespace and name are then the only evidence: `verify`
//! reports such a value, and `rewrap` refuses to seal it for the key it was
//! copied to.

use crate::secret::Secret;
use crate::store::SecretStore;

/// A value whose object is not the one its key names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "decrypts to Secret {namespace}/{name}, not the object its key names (copied from another key?)"
)]
pub struct Misplaced {
    /// The namespace the object names.
    pub namespace: String,
    /// The name the object names.
    pub name: String,
}

/// Checks that `secret`, decoded from the value at `key`, is the object
/// `key` names in `store`.
pub fn check(store: &SecretStore, key: &str, secret: &Secret) -> Result<(), Misplaced> {
    let (ns, name) = store.split_key(key).unwrap_or(("", ""));
    if secret.metadata.namespace == ns && secret.metadata.name == name {
        Ok(())
    } else {
        Err(Misplaced {
            namespace: secret.metadata.namespace.clone(),
            name: secret.metadata.name.clone(),
        })
    }
}
