//! A KMS v2 provider with a fixed seed and no plugin, for benchmarks, tests
//! and fuzz targets only: built with `cfg(test)` or the cargo feature
//! `test-support`, never in a release build of the binary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::dek::SEED_LEN;
use super::options::KmsOptions;
use super::state::WriteState;
use super::transformer::{KmsV2Transformer, Shared, check_name};
use crate::transform::TransformError;
use crate::wipe::Wiped;

impl KmsV2Transformer {
    /// A provider with a fixed seed and no plugin, for benchmarks, tests and
    /// fuzz targets only (cargo feature `test-support`, never on in a
    /// release build): seals with `seed` under `key_id` (wrapped form
    /// `encrypted_dek_source`), never refuses a write, opens what it sealed,
    /// and fails any read that would need the plugin.
    pub fn from_seed_for_bench(
        name: &str,
        key_id: &str,
        encrypted_dek_source: &[u8],
        seed: Wiped<Vec<u8>>,
    ) -> Result<Self, TransformError> {
        check_name(name)?;
        if seed.len() < SEED_LEN {
            return Err(TransformError::Config(format!(
                "a seed needs at least {SEED_LEN} bytes"
            )));
        }
        let shared = Arc::new(Shared::new(
            name,
            "(none)".into(),
            None,
            KmsOptions::default(),
        ));
        let st = WriteState::new(
            seed,
            key_id.to_string(),
            encrypted_dek_source,
            &BTreeMap::new(),
        );
        shared.cache.insert(st.source.clone(), Arc::clone(st.key()));
        shared
            .state
            .install(st, Instant::now(), std::time::Duration::MAX);
        Ok(KmsV2Transformer {
            shared,
            poller: None,
        })
    }
}
