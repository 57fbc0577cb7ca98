//! Plugin health and DEK-seed rotation, as the apiserver's KMS v2 probe does
//! it (`kmsv2PluginProbe.check` and `rotateDEKOnKeyIDChange`).
//!
//! Every check calls Status and validates it. When the key_id is the one of
//! the current seed, the seed's write deadline moves to now + the window.
//! When it differs (or there is no seed yet) a new random seed is wrapped by
//! Encrypt; the answer is validated and must carry Status' key_id, then the
//! new state replaces the old one atomically. Any failure leaves the current
//! seed as it was: writable until its deadline, readable for ever.
//!
//! The poller runs on the provider's runtime: every healthy interval while
//! checks pass, every unhealthy interval while they fail.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use kms_proto::contract::{validate_encrypt, validate_status};

use super::dek::generate_seed;
use super::state::WriteState;
use super::transformer::Shared;

/// The provider's view of its plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsHealth {
    /// The last check passed (Status healthy and, when needed, a new seed
    /// wrapped).
    pub healthy: bool,
    /// When the last check passed.
    pub last_healthy: Option<SystemTime>,
    /// Why the last failed check failed (kept until a check passes).
    pub last_error: Option<String>,
    /// Since when checks have been failing, while they are.
    pub failing_since: Option<SystemTime>,
    /// The API version the plugin reported last.
    pub plugin_version: Option<String>,
    /// The key_id new values are written under, if there is a seed.
    pub key_id: Option<String>,
    /// Whether a write now would be accepted.
    pub writable: bool,
}

#[derive(Default)]
struct Record {
    healthy: bool,
    last_healthy: Option<SystemTime>,
    last_error: Option<String>,
    failing_since: Option<SystemTime>,
    version: Option<String>,
}

/// The outcome of the checks so far.
pub(crate) struct HealthRecord {
    record: Mutex<Record>,
    /// When the provider started.
    pub(crate) started: SystemTime,
}

/// The parts of the record a refusal message or a snapshot needs.
pub(crate) struct HealthFacts {
    pub(crate) healthy: bool,
    pub(crate) last_healthy: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
    pub(crate) failing_since: Option<SystemTime>,
    pub(crate) version: Option<String>,
}

impl HealthRecord {
    pub(crate) fn new() -> Self {
        HealthRecord {
            record: Mutex::new(Record::default()),
            started: SystemTime::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        kms_proto::sync::lock(&self.record)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.lock().healthy
    }

    fn ok(&self, version: String) {
        let mut r = self.lock();
        r.healthy = true;
        r.last_healthy = Some(SystemTime::now());
        r.last_error = None;
        r.failing_since = None;
        r.version = Some(version);
    }

    fn failed(&self, error: &str) {
        let mut r = self.lock();
        r.healthy = false;
        r.last_error = Some(error.to_string());
        if r.failing_since.is_none() {
            r.failing_since = Some(SystemTime::now());
        }
    }

    pub(crate) fn facts(&self) -> HealthFacts {
        let r = self.lock();
        HealthFacts {
            healthy: r.healthy,
            last_healthy: r.last_healthy,
            last_error: r.last_error.clone(),
            failing_since: r.failing_since,
            version: r.version.clone(),
        }
    }
}

impl Shared {
    /// One check: Status, then keep or replace the seed. Concurrent checks
    /// run one after the other, so one key_id change wraps one seed.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let _one_at_a_time = self.rotation.lock().await;
        match self.check_locked().await {
            Ok(version) => {
                self.health.ok(version);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    kms.provider = %self.name,
                    kms.endpoint = %self.endpoint,
                    error = %e,
                    "KMS v2 plugin check failed"
                );
                self.health.failed(&e);
                Err(e)
            }
        }
    }

    async fn check_locked(&self) -> Result<String, String> {
        let plugin = self
            .plugin
            .as_ref()
            .ok_or_else(|| "no plugin is attached to this provider".to_string())?;
        let status = plugin.status().await?;
        validate_status(&status)?;
        {
            let r = self.health.lock();
            if let Some(prev) = r.version.as_deref()
                && prev != status.version
            {
                tracing::warn!(
                    kms.provider = %self.name,
                    from = prev,
                    to = %status.version,
                    "KMS plugin changed its API version"
                );
            }
        }
        // The new deadline counts from before the Encrypt call, as upstream.
        let now = Instant::now();
        let window = self.options.write_window;
        if let Some(st) = self.state.load_full()
            && st.key_id == status.key_id
        {
            self.state.extend(&st, now, window);
            // Keeps the current seed warm in the read cache (upstream re-adds
            // it on every write).
            self.cache.insert(st.source.clone(), Arc::clone(st.key()));
            st.set_readable(true);
            return Ok(status.version);
        }
        let seed = generate_seed();
        let resp = plugin.encrypt(&seed).await.map_err(|e| {
            format!(
                "Status reported key_id {:?} but wrapping a new DEK seed failed: {e}",
                status.key_id
            )
        })?;
        // The plugin may have activated another key between the two calls
        // (an operator's `key activate` lands at any instant). Then a second
        // Status reports the key Encrypt used, and the seed is good; a
        // mismatch that persists is refused, as the apiserver refuses it.
        let status = if resp.key_id != status.key_id {
            let again = plugin.status().await?;
            validate_status(&again)?;
            if again.key_id == resp.key_id {
                tracing::info!(
                    kms.provider = %self.name,
                    from = %status.key_id,
                    to = %again.key_id,
                    "the plugin's active key changed during the seed's Encrypt; using the new one"
                );
                again
            } else {
                status
            }
        } else {
            status
        };
        validate_encrypt(&resp, &status.key_id)?;
        let previous = self.state.load_full().map(|s| s.key_id.clone());
        let st = WriteState::new(seed, resp.key_id, &resp.ciphertext, &resp.annotations);
        self.cache.insert(st.source.clone(), Arc::clone(st.key()));
        let st = self.state.install(st, now, window);
        tracing::info!(
            kms.provider = %self.name,
            kms.key_id = %st.key_id,
            previous_key_id = previous.as_deref().unwrap_or(""),
            "new DEK seed wrapped by the KMS plugin"
        );
        Ok(status.version)
    }
}

/// Polls until the provider is dropped.
pub(crate) async fn poll(shared: Weak<Shared>) {
    loop {
        let interval = match shared.upgrade() {
            Some(s) if s.health.is_healthy() => s.options.healthy_poll_interval,
            Some(s) => s.options.unhealthy_poll_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        let _ = s.check().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_the_first_failure_time_and_clears_on_success() {
        let h = HealthRecord::new();
        assert!(!h.is_healthy());
        h.failed("a");
        let first = h.facts().failing_since.unwrap();
        h.failed("b");
        let f = h.facts();
        assert_eq!(f.failing_since, Some(first));
        assert_eq!(f.last_error.as_deref(), Some("b"));
        h.ok("v2".into());
        let f = h.facts();
        assert!(f.healthy && f.last_error.is_none() && f.failing_since.is_none());
        assert_eq!(f.version.as_deref(), Some("v2"));
        assert!(f.last_healthy.is_some());
    }
}
