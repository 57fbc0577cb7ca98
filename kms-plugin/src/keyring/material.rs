//! Backend-specific key material as stored in the ring: named base64 fields,
//! held in wiping buffers and never printed.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// Named binary fields of one key's material (e.g. `key` for software, or
/// `public`/`private` TPM blobs). Stored base64-encoded. A clone is another
/// wiping buffer (for a key export); there is still no way to print it.
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Material(BTreeMap<String, Zeroizing<String>>);

impl Material {
    /// Material with one field.
    pub fn single(name: &str, bytes: &[u8]) -> Self {
        let mut m = Material::default();
        m.insert(name, bytes);
        m
    }

    /// Sets field `name`.
    pub fn insert(&mut self, name: &str, bytes: &[u8]) {
        self.0
            .insert(name.to_string(), Zeroizing::new(B64.encode(bytes)));
    }

    /// Decodes field `name`.
    pub fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let v = self
            .0
            .get(name)
            .ok_or_else(|| format!("material has no {name:?} field"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(v.len()));
        B64.decode_vec(v.as_bytes(), &mut out)
            .map_err(|_| format!("material field {name:?} is not valid base64"))?;
        Ok(out)
    }

    /// Field names, for diagnostics.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.fields()).finish()?;
        f.write_str(" <redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_redacts() {
        let m = Material::single("key", &[0xAB; 32]);
        assert_eq!(&m.get("key").unwrap()[..], &[0xAB; 32]);
        assert!(m.get("other").is_err());
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("q6ur"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }
}
