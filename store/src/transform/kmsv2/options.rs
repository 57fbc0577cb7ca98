//! The provider's timing and cache knobs; the defaults are kube-apiserver's.

use std::time::Duration;

/// How the KMS v2 provider polls its plugin, how long it keeps writing
/// through an outage, and how much it caches. [`Default`] gives the
/// apiserver's values; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsOptions {
    /// Status poll interval while the plugin is healthy (apiserver: 1 min).
    pub healthy_poll_interval: Duration,
    /// Status poll interval while it is not (apiserver: 10 s).
    pub unhealthy_poll_interval: Duration,
    /// How long after the last healthy Status writes keep using the current
    /// seed (apiserver: 3 min).
    pub write_window: Duration,
    /// How long an unwrapped seed or DEK stays in the read cache
    /// (apiserver: 24 h).
    pub cache_ttl: Duration,
    /// Most unwrapped seeds or DEKs held; the least recently used goes first.
    pub cache_capacity: usize,
}

/// The apiserver's Status interval while healthy.
pub const DEFAULT_HEALTHY_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// The apiserver's Status interval while unhealthy.
pub const DEFAULT_UNHEALTHY_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// The apiserver's write window after the last healthy Status.
pub const DEFAULT_WRITE_WINDOW: Duration = Duration::from_secs(3 * 60);
/// The apiserver's DEK cache TTL.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Our bound on cached seeds: far above the few key_ids x restarts a real
/// cluster accumulates.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;
/// The per-call timeout when the configuration gives none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for KmsOptions {
    fn default() -> Self {
        KmsOptions {
            healthy_poll_interval: DEFAULT_HEALTHY_POLL_INTERVAL,
            unhealthy_poll_interval: DEFAULT_UNHEALTHY_POLL_INTERVAL,
            write_window: DEFAULT_WRITE_WINDOW,
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_apiservers() {
        let o = KmsOptions::default();
        assert_eq!(o.healthy_poll_interval, Duration::from_secs(60));
        assert_eq!(o.unhealthy_poll_interval, Duration::from_secs(10));
        assert_eq!(o.write_window, Duration::from_secs(180));
        assert_eq!(o.cache_ttl, Duration::from_secs(86_400));
    }
}
