//! One operation against a cluster: try a member, on a failure that allows
//! it try the next, until one answers or the operation's deadline passes;
//! then say clearly what every member did (unreachable, no leader, timed
//! out), so "no quorum" and "unreachable" read differently.
//!
//! Failures are sorted by what they mean for a write:
//! - *not sent*: the member never took the request (connection refused,
//!   `etcdserver: no leader` under the require-leader header, too many
//!   requests): retrying is always safe;
//! - *ambiguous*: the request may have been committed (the connection broke
//!   mid-call, the attempt timed out, `etcdserver: leader changed`,
//!   `request timed out`): it is retried too, since every write is a
//!   compare-and-swap transaction, and the caller resolves what it sees
//!   afterwards (see the engine's `put`);
//! - *fatal*: retrying cannot help (value too large, out of space,
//!   permission denied): returned at once.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::KvClient;
use tokio::time::Instant;

use super::super::StorageError;

/// What a failed attempt means for a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The member did not take the request.
    NotSent,
    /// The request may have been applied.
    Ambiguous,
    /// Retrying cannot help.
    Fatal,
}

/// Why an attempt failed, for the final message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// No connection could be made.
    Unreachable,
    /// The connection broke during the call.
    ConnectionLost,
    /// The member has no leader (the cluster lost quorum, or is electing).
    NoLeader,
    /// The member or the attempt timed out.
    TimedOut,
    /// Anything else.
    Other,
}

/// One failed attempt.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) fault: Fault,
    pub(super) cause: Cause,
    pub(super) detail: String,
}

/// `message: root cause`, without the Debug noise of tonic's Display.
fn chain(top: &str, e: &dyn std::error::Error) -> String {
    let mut root = None;
    let mut src = e.source();
    while let Some(c) = src {
        root = Some(c.to_string());
        src = c.source();
    }
    match root {
        Some(r) if !top.contains(&r) => format!("{top}: {r}"),
        _ => top.to_string(),
    }
}

fn looks_like_connect_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "tcp connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
        "client error (connect)",
        "invalid peer certificate",
        "certificate",
        "handshake",
    ]
    .iter()
    .any(|p| t.contains(p))
}

fn status_failure(s: &tonic::Status) -> Failure {
    let m = s.message();
    let detail = chain(m, s);
    let f = |fault, cause| Failure {
        fault,
        cause,
        detail: detail.clone(),
    };
    if m.contains("no leader") {
        return f(Fault::NotSent, Cause::NoLeader);
    }
    if m.contains("too many requests") {
        return f(Fault::NotSent, Cause::Other);
    }
    if m.contains("leader changed") {
        return f(Fault::Ambiguous, Cause::NoLeader);
    }
    if m.contains("timed out") {
        return f(Fault::Ambiguous, Cause::TimedOut);
    }
    if m.contains("request is too large") {
        return Failure {
            fault: Fault::Fatal,
            cause: Cause::Other,
            detail: format!(
                "{m}: the value exceeds the members' --max-request-bytes (1.5 MiB by default)"
            ),
        };
    }
    if m.contains("database space exceeded") {
        return Failure {
            fault: Fault::Fatal,
            cause: Cause::Other,
            detail: format!(
                "{m}: etcd raised its NOSPACE alarm; compact and defragment it, or raise --quota-backend-bytes"
            ),
        };
    }
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
            if looks_like_connect_error(&detail) =>
        {
            f(Fault::NotSent, Cause::Unreachable)
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled => {
            f(Fault::Ambiguous, Cause::ConnectionLost)
        }
        Code::DeadlineExceeded => f(Fault::Ambiguous, Cause::TimedOut),
        Code::ResourceExhausted => f(Fault::NotSent, Cause::Other),
        _ => f(Fault::Fatal, Cause::Other),
    }
}

/// Sorts a client error.
pub(super) fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => status_failure(s),
        etcd_client::Error::TransportError(t) => Failure {
            fault: Fault::NotSent,
            cause: Cause::Unreachable,
            detail: chain(&t.to_string(), t),
        },
        etcd_client::Error::IoError(io) => Failure {
            fault: Fault::Ambiguous,
            cause: Cause::ConnectionLost,
            detail: io.to_string(),
        },
        other => Failure {
            fault: Fault::Fatal,
            cause: Cause::Other,
            detail: other.to_string(),
        },
    }
}

/// One member: its URL and a KV client on its own lazy connection (dialled
/// again on the next call after it breaks, so a restarted member is used
/// again).
pub(super) struct Member {
    pub(super) url: String,
    pub(super) kv: KvClient,
}

/// The members of a cluster and the one that answered last.
pub(super) struct Members {
    pub(super) members: Vec<Member>,
    preferred: AtomicUsize,
    pub(super) timeout: Duration,
}

/// A call that succeeded, and whether an earlier attempt of it may have
/// been applied too.
pub(super) struct Done<T> {
    pub(super) value: T,
    pub(super) ambiguous: bool,
}

/// A call that failed on every attempt.
pub(super) struct Failed {
    fatal: Option<(String, Failure)>,
    per_member: Vec<(String, Option<Failure>)>,
    ambiguous: bool,
    timeout: Duration,
}

impl Members {
    pub(super) fn new(members: Vec<Member>, timeout: Duration) -> Self {
        Members {
            members,
            preferred: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The member URLs, comma-separated.
    pub(super) fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| m.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `f` against one member after another until one succeeds, a
    /// fatal failure, or the deadline.
    pub(super) async fn call<T, F, Fut>(&self, mut f: F) -> Result<Done<T>, Failed>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let deadline = Instant::now() + self.timeout;
        // One slow member must not use up the whole budget of the operation.
        let per_attempt = (self.timeout / n as u32).max(self.timeout.min(Duration::from_secs(1)));
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut last: Vec<Option<Failure>> = vec![None; n];
        let mut ambiguous = false;
        let mut backoff = Duration::from_millis(25);
        let mut i = start;
        loop {
            let m = &self.members[i];
            let now = Instant::now();
            let budget = per_attempt.min(deadline.saturating_duration_since(now));
            let failure = match tokio::time::timeout(budget, f(m.kv.clone())).await {
                Ok(Ok(value)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(Done { value, ambiguous });
                }
                Ok(Err(e)) => classify(&e),
                Err(_) => Failure {
                    fault: Fault::Ambiguous,
                    cause: Cause::TimedOut,
                    detail: format!("no answer within {} ms", budget.as_millis()),
                },
            };
            tracing::debug!(
                etcd.member = %m.url,
                etcd.fault = ?failure.fault,
                "etcd attempt failed: {}",
                failure.detail
            );
            match failure.fault {
                Fault::Fatal => {
                    return Err(Failed {
                        fatal: Some((m.url.clone(), failure)),
                        per_member: Vec::new(),
                        ambiguous,
                        timeout: self.timeout,
                    });
                }
                Fault::Ambiguous => ambiguous = true,
                Fault::NotSent => {}
            }
            // An attempt cut short by the operation's deadline says less
            // than what this member answered before.
            let truncated = failure.cause == Cause::TimedOut && budget < per_attempt;
            if !(truncated && last[i].is_some()) {
                last[i] = Some(failure);
            }
            i = (i + 1) % n;
            let now = Instant::now();
            if now >= deadline {
                return Err(Failed {
                    fatal: None,
                    per_member: self
                        .members
                        .iter()
                        .map(|m| m.url.clone())
                        .zip(last)
                        .collect(),
                    ambiguous,
                    timeout: self.timeout,
                });
            }
            if i == start {
                // Every member failed once: give an election time to finish.
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(Duration::from_millis(400));
            }
        }
    }
}

impl Failed {
    /// The error for `op` (e.g. `put /registry/secrets/a/b`); `write` adds
    /// the warning that an ambiguous write may have been applied.
    pub(super) fn into_error(self, op: &str, write: bool) -> StorageError {
        let maybe = if write && self.ambiguous {
            "; an attempt was cut off, so the write may or may not have been applied: read the key before retrying"
        } else {
            ""
        };
        if let Some((url, f)) = self.fatal {
            return StorageError::Rejected(format!("etcd {op}: {url}: {}{maybe}", f.detail));
        }
        let t = humantime::format_duration(self.timeout);
        let tried = self.per_member.iter().filter(|(_, f)| f.is_some()).count();
        let causes: Vec<Cause> = self
            .per_member
            .iter()
            .filter_map(|(_, f)| f.as_ref().map(|f| f.cause))
            .collect();
        let each = self
            .per_member
            .iter()
            .map(|(url, f)| match f {
                None => format!("{url}: not tried"),
                Some(f) => format!("{url}: {} ({})", describe(f.cause), f.detail),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let headline = if tried > 0 && causes.iter().all(|c| *c == Cause::Unreachable) {
            format!("etcd is unreachable: no member accepted a connection within {t}")
        } else if causes.contains(&Cause::NoLeader) {
            format!(
                "etcd has no quorum: no leader could be reached within {t} (a majority of the members is down or partitioned)"
            )
        } else {
            format!("etcd did not answer within {t} (no quorum, or overloaded)")
        };
        StorageError::Unavailable(format!("etcd {op}: {headline} [{each}]{maybe}"))
    }
}

fn describe(c: Cause) -> &'static str {
    match c {
        Cause::Unreachable => "unreachable",
        Cause::ConnectionLost => "connection lost",
        Cause::NoLeader => "no leader",
        Cause::TimedOut => "timed out",
        Cause::Other => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_a_retry_may_do() {
        let c = |s: tonic::Status| {
            let f = status_failure(&s);
            (f.fault, f.cause)
        };
        assert_eq!(
            c(tonic::Status::unavailable("etcdserver: no leader")),
            (Fault::NotSent, Cause::NoLeader)
        );
        assert_eq!(
            c(tonic::Status::unavailable("etcdserver: request timed out")),
            (Fault::Ambiguous, Cause::TimedOut)
        );
        assert_eq!(
            c(tonic::Status::unavailable("etcdserver: leader changed")),
            (Fault::Ambiguous, Cause::NoLeader)
        );
        assert_eq!(
            c(tonic::Status::unavailable(
                "error trying to connect: tcp connect error: Connection refused (os error 111)"
            )),
            (Fault::NotSent, Cause::Unreachable)
        );
        assert_eq!(
            c(tonic::Status::unknown("h2 protocol error: broken pipe")),
            (Fault::Ambiguous, Cause::ConnectionLost)
        );
        assert_eq!(
            c(tonic::Status::invalid_argument(
                "etcdserver: request is too large"
            ))
            .0,
            Fault::Fatal
        );
        assert_eq!(
            c(tonic::Status::permission_denied(
                "etcdserver: permission denied"
            ))
            .0,
            Fault::Fatal
        );
    }

    #[test]
    fn the_final_message_tells_no_quorum_from_unreachable() {
        let failed = |fs: Vec<Option<Failure>>| Failed {
            fatal: None,
            per_member: fs
                .into_iter()
                .enumerate()
                .map(|(i, f)| (format!("http://127.0.0.1:{}", 2379 + i), f))
                .collect(),
            ambiguous: false,
            timeout: Duration::from_secs(2),
        };
        let unreachable = || {
            Some(Failure {
                fault: Fault::NotSent,
                cause: Cause::Unreachable,
                detail: "connection refused".into(),
            })
        };
        let e = failed(vec![unreachable(), unreachable()]).into_error("get k", false);
        assert!(
            e.to_string().starts_with(
                "etcd get k: etcd is unreachable: no member accepted a connection within 2s"
            ),
            "{e}"
        );
        let no_leader = Some(Failure {
            fault: Fault::NotSent,
            cause: Cause::NoLeader,
            detail: "etcdserver: no leader".into(),
        });
        let e = failed(vec![unreachable(), no_leader, unreachable()]).into_error("put k", true);
        let m = e.to_string();
        assert!(m.contains("etcd has no quorum"), "{m}");
        assert!(m.contains("http://127.0.0.1:2380: no leader"), "{m}");
        assert!(!m.contains("may or may not"), "{m}");
        assert!(matches!(e, StorageError::Unavailable(_)));
    }
}
