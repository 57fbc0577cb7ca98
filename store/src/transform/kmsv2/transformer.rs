//! [`KmsV2Transformer`]: the `kms` provider with `apiVersion: v2`, as the
//! store's synchronous [`Transformer`].
//!
//! The Status poller and the plugin calls run on the store's shared runtime
//! ([`crate::runtime`]). `seal` never calls the plugin: it uses the current
//! write state. `open` calls the plugin (Decrypt) only when the DEK source is
//! not in the cache, and then blocks the calling thread until the answer or
//! the per-call timeout. Both are meant for plain threads; called from inside
//! a tokio runtime, a cache miss hands the call to the shared runtime and
//! waits for it (inside `block_in_place` on a multi-thread runtime), so it
//! works but blocks that runtime's thread for up to the timeout.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kms_proto::Endpoint;
use kms_proto::v2::DecryptRequest;
use tokio::task::AbortHandle;

use super::cache::{DekCache, Source, cache_key_of};
use super::dek::{OpenError, SEED_OVERHEAD, UnwrappedKey};
use super::envelope::{
    DekSourceType, EncryptedObjectRef, KMS_V2_PREFIX, decode_encrypted_object, field_header_len,
    parse_envelope, put_encrypted_data_header, split_data,
};
use super::flight::Flights;
use super::health::{HealthRecord, KmsHealth, poll};
use super::options::{DEFAULT_CALL_TIMEOUT, KmsOptions};
use super::plugin::{PluginCalls, PluginClient};
use super::state::{StateCell, WriteState};
use crate::encryption_config::KmsProviderConfig;
use crate::runtime;
use crate::stages::{self, Stage};
use crate::transform::{EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::wipe::Wiped;
use kms_proto::contract::error_chain;

/// What the provider, its poller and its plugin calls share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) prefix: Vec<u8>,
    pub(crate) endpoint: String,
    pub(crate) plugin: Option<Arc<PluginClient>>,
    pub(crate) state: StateCell,
    pub(crate) cache: DekCache,
    /// Decrypts in flight, so that concurrent misses share one call.
    pub(crate) flights: Flights<Arc<UnwrappedKey>>,
    pub(crate) health: HealthRecord,
    pub(crate) options: KmsOptions,
    pub(crate) rotation: tokio::sync::Mutex<()>,
}

/// The KMS v2 envelope provider: encrypts each value with a key derived from
/// a DEK seed that the KMS plugin wraps, exactly as kube-apiserver does.
///
/// Dropping it stops its poller; the seeds it holds are wiped.
pub struct KmsV2Transformer {
    pub(super) shared: Arc<Shared>,
    pub(super) poller: Option<AbortHandle>,
}

impl std::fmt::Debug for KmsV2Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsV2Transformer")
            .field("name", &self.shared.name)
            .field("endpoint", &self.shared.endpoint)
            .field("key_id", &self.current_key_id())
            .finish_non_exhaustive()
    }
}

impl KmsV2Transformer {
    /// Starts the provider: checks the configuration, calls Status, wraps a
    /// new seed with Encrypt, then polls Status in the background.
    ///
    /// Fails with [`TransformError::Config`] for an unusable configuration
    /// and [`TransformError::Kms`] (naming the endpoint and what went wrong)
    /// when the plugin is unreachable, unhealthy or answers badly.
    pub fn new(config: &KmsProviderConfig, options: KmsOptions) -> Result<Self, TransformError> {
        let mut t = Self::start(config, options)?;
        let shared = Arc::clone(&t.shared);
        t.run(async move { shared.check().await })
            .and_then(|r| r)
            .map_err(|reason| TransformError::Kms {
                provider: t.shared.name.clone(),
                reason: format!(
                    "cannot start with the plugin at {}: {reason}",
                    t.shared.endpoint
                ),
            })?;
        t.spawn_poller()?;
        Ok(t)
    }

    /// Starts the provider even if the plugin does not answer yet: until a
    /// check passes, writes are refused ([`TransformError::WriteRefused`])
    /// and reads work as far as the plugin's Decrypt (or the cache) allows;
    /// every value read is then stale. The first check runs now; later ones
    /// follow the unhealthy interval until one passes.
    pub fn new_degraded(
        config: &KmsProviderConfig,
        options: KmsOptions,
    ) -> Result<Self, TransformError> {
        let mut t = Self::start(config, options)?;
        let shared = Arc::clone(&t.shared);
        let _ = t.run(async move { shared.check().await });
        t.spawn_poller()?;
        Ok(t)
    }

    fn start(config: &KmsProviderConfig, options: KmsOptions) -> Result<Self, TransformError> {
        if config.api_version != "v2" {
            return Err(TransformError::Config(format!(
                "kms provider {:?}: apiVersion {:?} is not handled by the KMS v2 provider (only \"v2\"; KMS v1 is disabled by default since Kubernetes 1.29)",
                config.name, config.api_version
            )));
        }
        check_name(&config.name)?;
        let endpoint = Endpoint::parse(&config.endpoint).map_err(|e| {
            TransformError::Config(format!("kms provider {:?}: endpoint {e}", config.name))
        })?;
        let timeout = if config.timeout.is_zero() {
            DEFAULT_CALL_TIMEOUT
        } else {
            config.timeout
        };
        let plugin = Arc::new(PluginClient::new(endpoint.clone(), timeout));
        let shared = Arc::new(Shared::new(
            &config.name,
            endpoint.to_string(),
            Some(plugin),
            options,
        ));
        Ok(KmsV2Transformer {
            shared,
            poller: None,
        })
    }

    fn spawn_poller(&mut self) -> Result<(), TransformError> {
        let rt = runtime::shared().map_err(|e| self.kms_error(error_chain(&e)))?;
        let task = rt.spawn(poll(Arc::downgrade(&self.shared)));
        self.poller = Some(task.abort_handle());
        Ok(())
    }

    /// Runs a plugin future to completion from synchronous code.
    fn run<F>(&self, fut: F) -> Result<F::Output, String>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        runtime::block_on(fut).map_err(|e| error_chain(&e))
    }

    /// The key_id new values are written under, if there is a seed.
    pub fn current_key_id(&self) -> Option<String> {
        self.shared.state.load().as_ref().map(|s| s.key_id.clone())
    }

    /// The plugin calls made so far, by method.
    pub fn plugin_calls(&self) -> PluginCalls {
        self.shared
            .plugin
            .as_ref()
            .map(|p| p.calls())
            .unwrap_or_default()
    }

    /// Empties the cache of unwrapped seeds and DEKs (they are wiped), so the
    /// next read of each DEK source calls the plugin's Decrypt. The current
    /// write seed (which reads otherwise use directly) returns to reads at
    /// the next healthy Status; writes keep using it.
    pub fn clear_cache(&self) {
        if let Some(st) = self.shared.state.load().as_ref() {
            st.set_readable(false);
        }
        self.shared.cache.clear();
    }

    /// How many unwrapped seeds or DEKs the cache holds.
    pub fn cached_keys(&self) -> usize {
        self.shared.cache.len()
    }

    /// The plugin endpoint (`unix:///…`).
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The provider's view of its plugin.
    pub fn health(&self) -> KmsHealth {
        let f = self.shared.health.facts();
        let st = self.shared.state.load_full();
        KmsHealth {
            healthy: f.healthy,
            last_healthy: f.last_healthy,
            last_error: f.last_error,
            failing_since: f.failing_since,
            plugin_version: f.version,
            key_id: st.as_ref().map(|s| s.key_id.clone()),
            writable: st
                .as_ref()
                .is_some_and(|s| self.shared.state.writable(s, Instant::now())),
        }
    }

    /// Runs a check now (Status, and Encrypt if the key_id changed) instead
    /// of waiting for the poller.
    pub fn check_now(&self) -> Result<(), TransformError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.check().await })
            .and_then(|r| r)
            .map_err(|reason| self.kms_error(reason))
    }

    fn kms_error(&self, reason: String) -> TransformError {
        TransformError::Kms {
            provider: self.shared.name.clone(),
            reason: format!("plugin at {}: {reason}", self.shared.endpoint),
        }
    }

    /// The unwrapped seed or DEK of `obj` after a cache miss: from the
    /// plugin (or from the cache, when another reader filled it meanwhile).
    fn unwrap_key(
        &self,
        obj: &EncryptedObjectRef<'_>,
        etcd_key: &str,
    ) -> Result<Arc<UnwrappedKey>, TransformError> {
        let plugin = self.shared.plugin.clone().ok_or_else(|| {
            self.kms_error(format!(
                "the DEK source of {etcd_key} (key_id {:?}) is not cached and no plugin is attached",
                obj.key_id
            ))
        })?;
        // Concurrent misses on the same source share one Decrypt; each
        // caller words the error with its own key.
        let fetch = || -> Result<Arc<UnwrappedKey>, String> {
            // Another reader may have filled the cache since our miss.
            if let Some(k) = self.shared.cache.get(obj) {
                return Ok(k);
            }
            let req = DecryptRequest {
                ciphertext: obj.encrypted_dek_source.to_vec(),
                uid: String::new(),
                key_id: obj.key_id.to_string(),
                annotations: obj
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
            };
            let plaintext = self
                .run(async move { plugin.decrypt(req).await })
                .and_then(|r| r)?;
            let seed_mode = obj.dek_source_type == DekSourceType::HkdfSha256XnonceAesGcmSeed;
            let key = UnwrappedKey::from_plugin(seed_mode, plaintext)
                .map_err(|e| format!("its Decrypt answer: {e}"))?;
            let key = Arc::new(key);
            self.shared.cache.insert(Source::of(obj), Arc::clone(&key));
            Ok(key)
        };
        self.shared
            .flights
            .run(cache_key_of(obj), fetch, |wait| runtime::blocking(wait))
            .map_err(|e| {
                self.kms_error(format!(
                    "cannot unwrap the DEK source of {etcd_key} (key_id {:?}): {e}",
                    obj.key_id
                ))
            })
    }

    /// The result of opening `obj`'s data, its errors worded for `etcd_key`.
    fn opened(
        &self,
        opened: Result<Wiped<Vec<u8>>, OpenError>,
        source_type: DekSourceType,
        stale: bool,
        etcd_key: &str,
    ) -> Result<Opened, TransformError> {
        let plaintext = opened.map_err(|e| match e {
            OpenError::TooShort { len, min } => malformed(
                etcd_key,
                format_args!(
                    "encryptedData is {len} bytes; a {source_type} value has at least {min}"
                ),
            ),
            OpenError::Auth => TransformError::DecryptionFailed {
                etcd_key: etcd_key.to_string(),
            },
        })?;
        Ok(Opened { plaintext, stale })
    }

    /// Opens a value whose fields after the data are those of the write
    /// state or of a cached seed, byte for byte; `None` for any other value
    /// (another layout, or a source to decode, validate and maybe fetch).
    fn open_known(
        &self,
        body: &[u8],
        aad: &[u8],
        etcd_key: &str,
    ) -> Option<Result<Opened, TransformError>> {
        let seed = DekSourceType::HkdfSha256XnonceAesGcmSeed;
        let (data, tail, state) = stages::time(Stage::Parse, || {
            split_data(body).map(|(data, tail)| (data, tail, self.shared.state.load()))
        })?;
        if let Some(st) = state.as_ref()
            && st.readable()
            && *st.tail == *tail
        {
            let opened = st.key().open(data, aad);
            return Some(self.opened(opened, seed, false, etcd_key));
        }
        stages::time(Stage::Cache, || {
            self.shared.cache.with_tail(tail, |key, source| {
                let stale = stale(state.as_deref(), source.key_id(), source.source_type());
                let opened = key.open(data, aad);
                self.opened(opened, source.source_type(), stale, etcd_key)
            })
        })
    }

    fn refusal(&self, state: Option<&WriteState>) -> TransformError {
        let s = &self.shared;
        let f = s.health.facts();
        let last_error = match (&f.last_error, f.failing_since) {
            (Some(e), Some(t)) => format!("failing since {}: {e}", rfc3339(t)),
            (Some(e), None) => e.clone(),
            _ => "no error recorded".into(),
        };
        TransformError::WriteRefused(match state {
            None => format!(
                "kms provider {:?} (plugin at {}) has no DEK seed to write with: the plugin has not passed a Status + Encrypt check since the provider started at {}; {last_error}. Reads continue as far as cached keys and the plugin allow; writes start once the plugin answers",
                s.name,
                s.endpoint,
                rfc3339(s.health.started),
            ),
            Some(st) => format!(
                "kms provider {:?} (plugin at {}): no healthy Status since {} and the {} window during which writes may use the current DEK seed (key_id {:?}) is over; {last_error}. Reads of cached keys continue; writes resume when the plugin answers",
                s.name,
                s.endpoint,
                f.last_healthy
                    .map(rfc3339)
                    .unwrap_or_else(|| rfc3339(st.created)),
                humantime::format_duration(s.options.write_window),
                st.key_id,
            ),
        })
    }
}

impl Shared {
    pub(super) fn new(
        name: &str,
        endpoint: String,
        plugin: Option<Arc<PluginClient>>,
        options: KmsOptions,
    ) -> Self {
        let mut prefix = KMS_V2_PREFIX.to_vec();
        prefix.extend_from_slice(name.as_bytes());
        prefix.push(b':');
        Shared {
            name: name.to_string(),
            prefix,
            endpoint,
            plugin,
            state: StateCell::new(),
            cache: DekCache::new(options.cache_capacity, options.cache_ttl),
            flights: Flights::new(),
            health: HealthRecord::new(),
            options,
            rotation: tokio::sync::Mutex::new(()),
        }
    }
}

impl Drop for KmsV2Transformer {
    fn drop(&mut self) {
        // Never blocks, so dropping inside an async context is fine too.
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
    }
}

pub(super) fn check_name(name: &str) -> Result<(), TransformError> {
    if name.is_empty() || name.contains(':') {
        return Err(TransformError::Config(format!(
            "kms provider name {name:?} is not valid: it must be non-empty and must not contain ':'"
        )));
    }
    Ok(())
}

fn rfc3339(t: SystemTime) -> String {
    crate::k8s::time::format_system_time(t)
}

/// Whether a value of `key_id` and `source_type` is stale, as upstream
/// decides: another key_id or source type than the write state's (so every
/// `AES_GCM_KEY` value), or no write state.
fn stale(state: Option<&WriteState>, key_id: &str, source_type: DekSourceType) -> bool {
    state.is_none_or(|st| {
        st.key_id != key_id || source_type != DekSourceType::HkdfSha256XnonceAesGcmSeed
    })
}

fn malformed(etcd_key: &str, reason: impl std::fmt::Display) -> TransformError {
    TransformError::Malformed {
        etcd_key: etcd_key.to_string(),
        reason: reason.to_string(),
    }
}

impl Transformer for KmsV2Transformer {
    fn kind(&self) -> ProviderKind {
        ProviderKind::KmsV2
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn prefix(&self) -> &[u8] {
        &self.shared.prefix
    }

    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        let guard = self.shared.state.load();
        let Some(st) = guard.as_ref() else {
            return Err(self.refusal(None));
        };
        if !self.shared.state.writable(st, Instant::now()) {
            return Err(self.refusal(Some(st)));
        }
        let data_len = plaintext.len() + SEED_OVERHEAD;
        let prefix = &self.shared.prefix;
        let mut out = Vec::with_capacity(
            prefix.len() + field_header_len(data_len) + data_len + st.tail.len(),
        );
        out.extend_from_slice(prefix);
        put_encrypted_data_header(&mut out, data_len);
        st.seed()
            .seal_into(&mut out, plaintext, etcd_key.as_bytes());
        out.extend_from_slice(&st.tail);
        Ok(out)
    }

    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        let body = stored
            .strip_prefix(&self.shared.prefix[..])
            .ok_or_else(|| {
                malformed(
                    etcd_key,
                    format_args!(
                        "the value does not start with {:?}",
                        String::from_utf8_lossy(&self.shared.prefix)
                    ),
                )
            })?;
        let aad = etcd_key.as_bytes();
        // The shortcut for values in the layout every writer uses: their
        // fields after the data are compared, byte for byte, with those of
        // the write state or of a cached seed, which were validated when
        // they were made (`envelope::split_data`).
        if let Some(opened) = self.open_known(body, aad, etcd_key) {
            return opened;
        }
        let (obj, state) = stages::time(Stage::Parse, || {
            decode_encrypted_object(body).map(|obj| (obj, self.shared.state.load()))
        })
        .map_err(|e| malformed(etcd_key, e))?;
        // A value of the current seed opens with the write state's seed: no
        // cache lookup, no lock, no reference count.
        if let Some(st) = state.as_ref()
            && st.readable()
            && st.is_source_of(&obj)
        {
            let opened = st.key().open(obj.encrypted_data, aad);
            return self.opened(opened, obj.dek_source_type, false, etcd_key);
        }
        let stale = stale(state.as_deref(), obj.key_id, obj.dek_source_type);
        // Not held across a plugin call.
        drop(state);
        let cached = stages::time(Stage::Cache, || {
            self.shared
                .cache
                .with(&obj, |key| key.open(obj.encrypted_data, aad))
        });
        let opened = match cached {
            Some(opened) => opened,
            None => stages::time(Stage::Cache, || self.unwrap_key(&obj, etcd_key))?
                .open(obj.encrypted_data, aad),
        };
        self.opened(opened, obj.dek_source_type, stale, etcd_key)
    }

    fn is_current(&self, stored: &[u8]) -> bool {
        // The same rule as `open`'s staleness, from the envelope alone.
        let Some(body) = stored.strip_prefix(&self.shared.prefix[..]) else {
            return false;
        };
        if let Some((_, tail)) = split_data(body)
            && let Some(st) = self.shared.state.load().as_ref()
            && *st.tail == *tail
        {
            return true;
        }
        let Ok(obj) = decode_encrypted_object(body) else {
            return false;
        };
        match self.shared.state.load().as_ref() {
            Some(st) => {
                st.key_id == obj.key_id
                    && obj.dek_source_type == DekSourceType::HkdfSha256XnonceAesGcmSeed
            }
            None => false,
        }
    }

    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        let env = parse_envelope(stored).map_err(|e| malformed(etcd_key, e))?;
        if env.provider_name != self.shared.name {
            return Err(malformed(
                etcd_key,
                format_args!(
                    "the value belongs to kms provider {:?}, not {:?}",
                    env.provider_name, self.shared.name
                ),
            ));
        }
        let o = env.object;
        Ok(EnvelopeInfo {
            provider_kind: ProviderKind::KmsV2,
            provider_name: env.provider_name.to_string(),
            key_id: Some(o.key_id.to_string()),
            dek_source_type: Some(o.dek_source_type.as_str().to_string()),
            annotations: o
                .annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            stored_len: stored.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::kmsv2::dek::generate_seed;
    use proptest::prelude::*;
    use std::time::Duration;

    fn bench_transformer() -> KmsV2Transformer {
        KmsV2Transformer::from_seed_for_bench("unit", "kek-1", &[9; 60], generate_seed()).unwrap()
    }

    #[test]
    fn seal_open_round_trip_without_a_plugin() {
        let t = bench_transformer();
        for len in [0usize, 5, 1024, 100 * 1024] {
            let pt = vec![0x5a; len];
            let stored = t.seal(&pt, "/registry/secrets/ns/a").unwrap();
            assert!(stored.starts_with(b"k8s:enc:kms:v2:unit:"));
            let o = t.open(&stored, "/registry/secrets/ns/a").unwrap();
            assert_eq!(&o.plaintext[..], &pt[..]);
            assert!(!o.stale);
            assert!(matches!(
                t.open(&stored, "/registry/secrets/ns/b"),
                Err(TransformError::DecryptionFailed { etcd_key }) if etcd_key == "/registry/secrets/ns/b"
            ));
            let info = t.inspect(&stored, "k").unwrap();
            assert_eq!(info.key_id.as_deref(), Some("kek-1"));
            assert_eq!(
                info.dek_source_type.as_deref(),
                Some("HKDF_SHA256_XNONCE_AES_GCM_SEED")
            );
            assert_eq!(info.stored_len, stored.len());
        }
        assert_eq!(t.plugin_calls(), PluginCalls::default());
        assert_eq!(t.current_key_id().as_deref(), Some("kek-1"));
    }

    #[test]
    fn output_is_sized_exactly() {
        let t = bench_transformer();
        let stored = t.seal(&[1; 1000], "k").unwrap();
        assert_eq!(stored.capacity(), stored.len());
    }

    #[test]
    fn another_providers_value_is_malformed_here() {
        let t = bench_transformer();
        let other =
            KmsV2Transformer::from_seed_for_bench("other", "kek-1", &[9; 60], generate_seed())
                .unwrap();
        let stored = other.seal(b"x", "k").unwrap();
        assert!(matches!(
            t.open(&stored, "k"),
            Err(TransformError::Malformed { .. })
        ));
        assert!(matches!(
            t.inspect(&stored, "k"),
            Err(TransformError::Malformed { .. })
        ));
    }

    #[test]
    fn a_miss_without_a_plugin_is_a_kms_error_and_clear_cache_makes_misses() {
        // A value of another seed (another start of the store), whose
        // source this transformer knows only from its cache.
        let earlier =
            KmsV2Transformer::from_seed_for_bench("unit", "kek-1", &[8; 60], generate_seed())
                .unwrap();
        let old = earlier.seal(b"x", "k").unwrap();
        let t = bench_transformer();
        let key = earlier.shared.state.load_full().unwrap();
        t.shared
            .cache
            .insert(key.source.clone(), Arc::clone(key.key()));
        assert_eq!(&t.open(&old, "k").unwrap().plaintext[..], b"x");
        let current = t.seal(b"y", "k").unwrap();
        t.clear_cache();
        assert_eq!(t.cached_keys(), 0);
        let e = t.open(&old, "k").unwrap_err();
        assert!(matches!(e, TransformError::Kms { .. }), "{e}");
        assert!(e.to_string().contains("not cached"), "{e}");
        // The current seed's values miss too until the seed is cached again
        // (the poller's next healthy Status does it); writes go on.
        assert!(matches!(
            t.open(&current, "k"),
            Err(TransformError::Kms { .. })
        ));
        assert!(t.seal(b"z", "k").is_ok());
    }

    /// The same object in other protobuf layouts than the writers' (which
    /// the read shortcut takes): each must open exactly as the full decode
    /// reads it, Go's rules included (the last `encryptedData` wins).
    fn layouts(t: &KmsV2Transformer, stored: &[u8]) -> Vec<Vec<u8>> {
        let prefix = &t.shared.prefix[..];
        let body = &stored[prefix.len()..];
        let (data, tail) = split_data(body).expect("the writers' layout");
        let head = &body[..body.len() - tail.len()];
        let with = |parts: &[&[u8]]| {
            let mut v = prefix.to_vec();
            for p in parts {
                v.extend_from_slice(p);
            }
            v
        };
        let mut garbage = head.to_vec();
        let n = garbage.len();
        garbage[n - data.len()..].fill(0x55);
        vec![
            // The tail first.
            with(&[tail, head]),
            // An unknown field (15, varint) after the tail.
            with(&[head, tail, &[0x78u8, 0x01][..]]),
            // Garbage data first, the real data last: the last one counts.
            with(&[&garbage[..], tail, head]),
        ]
    }

    #[test]
    fn the_read_shortcut_and_the_full_decode_agree() {
        let t = bench_transformer();
        // An earlier start under the same key_id (not stale) and under
        // another (stale), both cached.
        let same =
            KmsV2Transformer::from_seed_for_bench("unit", "kek-1", &[8; 60], generate_seed())
                .unwrap();
        let other =
            KmsV2Transformer::from_seed_for_bench("unit", "kek-0", &[7; 60], generate_seed())
                .unwrap();
        for e in [&same, &other] {
            let st = e.shared.state.load_full().unwrap();
            t.shared
                .cache
                .insert(st.source.clone(), Arc::clone(st.key()));
        }
        for (writer, stale) in [(&t, false), (&same, false), (&other, true)] {
            let stored = writer.seal(b"payload", "/registry/secrets/ns/a").unwrap();
            let o = t.open(&stored, "/registry/secrets/ns/a").unwrap();
            assert_eq!((&o.plaintext[..], o.stale), (&b"payload"[..], stale));
            assert_eq!(t.is_current(&stored), !stale);
            for v in layouts(writer, &stored) {
                let o = t.open(&v, "/registry/secrets/ns/a").unwrap();
                assert_eq!((&o.plaintext[..], o.stale), (&b"payload"[..], stale));
                assert!(matches!(
                    t.open(&v, "/registry/secrets/ns/b"),
                    Err(TransformError::DecryptionFailed { .. })
                ));
            }
            // The shortcut words errors as the full decode does.
            assert!(matches!(
                t.open(&stored, "/registry/secrets/ns/b"),
                Err(TransformError::DecryptionFailed { .. })
            ));
        }
        assert_eq!(t.plugin_calls(), PluginCalls::default());
    }

    #[test]
    fn a_tail_that_differs_in_any_byte_is_not_taken_for_a_known_one() {
        let t = bench_transformer();
        let stored = t.seal(b"payload", "k").unwrap();
        let st = t.shared.state.load_full().unwrap();
        let tail_start = stored.len() - st.tail.len();
        for i in tail_start..stored.len() {
            let mut v = stored.clone();
            v[i] ^= 0x01;
            // Another source (not cached, no plugin), an invalid object or
            // broken protobuf: never the write state's seed.
            assert!(t.open(&v, "k").is_err(), "byte {i}");
        }
        // A too-short value of the known source says so.
        let mut short = t.shared.prefix.to_vec();
        put_encrypted_data_header(&mut short, 3);
        short.extend([1, 2, 3]);
        short.extend_from_slice(&st.tail);
        let e = t.open(&short, "k").unwrap_err();
        assert!(
            matches!(e, TransformError::Malformed { .. }) && e.to_string().contains("at least"),
            "{e}"
        );
    }

    #[test]
    fn names_and_configs_are_checked() {
        assert!(matches!(
            KmsV2Transformer::from_seed_for_bench("a:b", "k", &[1], generate_seed()),
            Err(TransformError::Config(_))
        ));
        let cfg = KmsProviderConfig {
            api_version: "v1".into(),
            name: "p".into(),
            endpoint: "unix:///tmp/x.sock".into(),
            timeout: Duration::from_secs(1),
        };
        let e = KmsV2Transformer::new(&cfg, KmsOptions::default()).unwrap_err();
        assert!(
            matches!(e, TransformError::Config(_)) && e.to_string().contains("\"v1\""),
            "{e}"
        );
        let cfg = KmsProviderConfig {
            api_version: "v2".into(),
            endpoint: "tcp://x".into(),
            ..cfg
        };
        let e = KmsV2Transformer::new(&cfg, KmsOptions::default()).unwrap_err();
        assert!(e.to_string().contains("tcp://x"), "{e}");
    }

    #[test]
    fn an_unreachable_plugin_fails_start_and_degraded_start_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = KmsProviderConfig {
            api_version: "v2".into(),
            name: "p".into(),
            endpoint: format!("unix://{}/absent.sock", dir.path().display()),
            timeout: Duration::from_millis(100),
        };
        let e = KmsV2Transformer::new(&cfg, KmsOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, TransformError::Kms { .. }), "{msg}");
        assert!(
            msg.contains("absent.sock") && msg.contains("Status failed"),
            "{msg}"
        );

        let t = KmsV2Transformer::new_degraded(&cfg, KmsOptions::default()).unwrap();
        let e = t.seal(b"x", "k").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, TransformError::WriteRefused(_)), "{msg}");
        assert!(
            msg.contains("\"p\"") && msg.contains("absent.sock") && msg.contains("failing since"),
            "{msg}"
        );
        assert!(!t.health().writable);
        assert_eq!(t.current_key_id(), None);
    }

    #[test]
    fn works_when_called_inside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = KmsProviderConfig {
            api_version: "v2".into(),
            name: "p".into(),
            endpoint: format!("unix://{}/absent.sock", dir.path().display()),
            timeout: Duration::from_millis(50),
        };
        for flavor in ["current", "multi"] {
            let rt = if flavor == "current" {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            rt.block_on(async {
                let t = KmsV2Transformer::new_degraded(&cfg, KmsOptions::default()).unwrap();
                assert!(t.check_now().is_err());
                drop(t);
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let t = bench_transformer();
            let mut stored = b"k8s:enc:kms:v2:unit:".to_vec();
            stored.extend(&bytes);
            prop_assert!(t.open(&stored, "k").is_err());
            let _ = t.inspect(&stored, "k");
            prop_assert!(t.open(&bytes, "k").is_err());
        }

        #[test]
        fn flipped_bytes_never_open(pos in 0usize..2000, bit in 0u8..8) {
            let t = bench_transformer();
            let stored = t.seal(&[7; 100], "k").unwrap();
            let mut bad = stored.clone();
            let i = pos % bad.len();
            bad[i] ^= 1 << bit;
            prop_assert!(t.open(&bad, "k").is_err());
        }
    }
}
