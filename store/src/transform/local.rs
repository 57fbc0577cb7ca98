//! The seam of the providers with local keys (aesgcm, aescbc, secretbox):
//! a [`LocalCipher`] says how one key seals and opens the bytes after the
//! prefix; [`LocalTransformer`] does everything else, once for all of them
//! (the key name and prefix, the length checks, the errors, `inspect`).
//!
//! Stored bytes: `<kind prefix><key name>:` ‖ the cipher's body. The kind
//! prefix comes from the provider table ([`ProviderKind::prefix`]).

use super::{EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::wipe::Wiped;

/// One key of a local-key provider: seals and opens the body of a value.
/// Implementations hold the expanded key, wipe it on drop, and have no
/// `Debug` and no `Clone`.
pub trait LocalCipher: Sized + Send + Sync + 'static {
    /// The provider kind; its row of the provider table gives the prefix.
    const KIND: ProviderKind;
    /// How messages name one of its values: `an aesgcm value`.
    const VALUE: &'static str;
    /// The key sizes it takes, in bytes (the configuration checks them too).
    const KEY_SIZES: &'static [usize];

    /// The cipher for `key`, whose length is one of [`KEY_SIZES`](Self::KEY_SIZES).
    fn new(key: &[u8]) -> Result<Self, TransformError>;

    /// Why `body` (the bytes after the prefix) cannot be one of its values,
    /// judged from public facts (lengths) alone.
    fn check_body(body: &[u8]) -> Result<(), String>;

    /// How many bytes [`seal_into`](Self::seal_into) appends for a
    /// plaintext of `len` bytes.
    fn sealed_len(len: usize) -> usize;

    /// Appends the sealed body of `plaintext` to `out`; `aad` is the etcd
    /// key (ciphers without additional data ignore it).
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError>;

    /// Opens a body that passed [`check_body`](Self::check_body); `None`
    /// when it does not authenticate (or its padding is wrong): one opaque
    /// failure, whatever was wrong.
    fn open_body(&self, body: &[u8], aad: &[u8]) -> Option<Wiped<Vec<u8>>>;
}

/// One key of a local-key provider as a [`Transformer`]: seals with it,
/// opens values carrying its prefix.
pub struct LocalTransformer<C> {
    name: String,
    prefix: Vec<u8>,
    bits: usize,
    cipher: C,
}

/// Key names end up in the stored prefix: non-empty and without `:`.
fn check_key_name(name: &str) -> Result<(), TransformError> {
    if name.is_empty() || name.contains(':') {
        return Err(TransformError::Config(format!(
            "invalid key name {name:?}: it must be non-empty and must not contain ':'"
        )));
    }
    Ok(())
}

/// `16, 24 or 32`.
fn sizes_text(sizes: &[usize]) -> String {
    match sizes {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(usize::to_string).collect();
            format!("{} or {last}", init.join(", "))
        }
    }
}

impl<C: LocalCipher> LocalTransformer<C> {
    /// Builds the transformer for key `name` from its raw bytes. The bytes
    /// are not kept: only the cipher's expanded key is.
    pub fn new(name: &str, key: &[u8]) -> Result<Self, TransformError> {
        check_key_name(name)?;
        if !C::KEY_SIZES.contains(&key.len()) {
            return Err(TransformError::Config(format!(
                "{} key {name:?}: a key must be {} bytes, got {}",
                C::KIND,
                sizes_text(C::KEY_SIZES),
                key.len()
            )));
        }
        Ok(LocalTransformer {
            name: name.to_owned(),
            prefix: format!("{}{name}:", C::KIND.prefix()).into_bytes(),
            bits: key.len() * 8,
            cipher: C::new(key)?,
        })
    }

    /// The key length in bits.
    pub fn key_bits(&self) -> usize {
        self.bits
    }

    /// The body of a stored value, checked for shape.
    fn body<'a>(&self, stored: &'a [u8], etcd_key: &str) -> Result<&'a [u8], TransformError> {
        let malformed = |reason: String| TransformError::Malformed {
            etcd_key: etcd_key.to_owned(),
            reason,
        };
        let body = stored.strip_prefix(self.prefix.as_slice()).ok_or_else(|| {
            malformed(format!(
                "not {} of key {:?} (prefix mismatch)",
                C::VALUE,
                self.name
            ))
        })?;
        C::check_body(body).map_err(malformed)?;
        Ok(body)
    }
}

impl<C: LocalCipher> Transformer for LocalTransformer<C> {
    fn kind(&self) -> ProviderKind {
        C::KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::with_capacity(self.prefix.len() + C::sealed_len(plaintext.len()));
        out.extend_from_slice(&self.prefix);
        self.cipher
            .seal_into(&mut out, plaintext, etcd_key.as_bytes())?;
        Ok(out)
    }

    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        let body = self.body(stored, etcd_key)?;
        let plaintext = self
            .cipher
            .open_body(body, etcd_key.as_bytes())
            .ok_or_else(|| TransformError::DecryptionFailed {
                etcd_key: etcd_key.to_owned(),
            })?;
        Ok(Opened {
            plaintext,
            stale: false,
        })
    }

    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        self.body(stored, etcd_key)?;
        Ok(EnvelopeInfo::from_prefix(
            C::KIND,
            self.name.clone(),
            stored.len(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_a_sentence() {
        assert_eq!(sizes_text(&[32]), "32");
        assert_eq!(sizes_text(&[16, 24, 32]), "16, 24 or 32");
    }
}
