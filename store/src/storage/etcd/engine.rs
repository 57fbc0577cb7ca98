//! [`EtcdEngine`]: the [`StorageEngine`] over an etcd cluster (see the
//! module documentation of [`super`] for the layout and the guarantees).

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};

use super::EtcdConfig;
use super::failover::{Member, Members};
use super::tls::client_tls;
use crate::runtime;
use crate::storage::{Page, Precondition, ScanFn, StorageEngine, StorageError, Versioned};

/// Largest gRPC message accepted from etcd: a page of large Secrets.
const MAX_MESSAGE: usize = 1 << 30;

/// etcd-backed storage.
pub struct EtcdEngine {
    members: Arc<Members>,
}

impl std::fmt::Debug for EtcdEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdEngine")
            .field("endpoints", &self.members.urls())
            .field("timeout", &self.members.timeout)
            .finish_non_exhaustive()
    }
}

/// The smallest key greater than every key starting with `prefix`
/// (etcd's `range_end` for a prefix); `\0` (to the end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn to_versioned(kv: etcd_client::KeyValue) -> Result<Versioned, StorageError> {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key).map_err(|e| {
        StorageError::Corrupt(format!(
            "an etcd key is not UTF-8: {:?}",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })?;
    Ok(Versioned {
        key,
        value,
        create_revision: create_revision as u64,
        mod_revision: mod_revision as u64,
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> u64 {
    h.map(|h| h.revision()).unwrap_or(0).max(0) as u64
}

fn compares(key: &str, pre: Precondition) -> Vec<Compare> {
    match pre {
        Precondition::None => Vec::new(),
        // mod_revision 0: the key does not exist (the apiserver's create).
        Precondition::Absent => vec![Compare::mod_revision(key, CompareOp::Equal, 0)],
        // The version check makes ModRevision(0) a conflict, as in RocksDB.
        Precondition::ModRevision(r) => vec![
            Compare::mod_revision(key, CompareOp::Equal, r as i64),
            Compare::version(key, CompareOp::Greater, 0),
        ],
    }
}

fn conflict(key: &str, pre: Precondition, current: Option<&Versioned>) -> StorageError {
    let reason = match (pre, current) {
        (Precondition::Absent, Some(c)) => {
            format!("it already exists (mod revision {})", c.mod_revision)
        }
        (Precondition::ModRevision(want), Some(c)) => format!(
            "it was modified (mod revision {}, expected {want})",
            c.mod_revision
        ),
        (Precondition::ModRevision(want), None) => {
            format!("it no longer exists (expected mod revision {want})")
        }
        (p, c) => format!(
            "precondition {p:?} failed (current mod revision {:?})",
            c.map(|c| c.mod_revision)
        ),
    };
    StorageError::Conflict {
        key: key.to_string(),
        reason,
    }
}

/// The value the `or_else` get of a failed transaction returned.
fn failed_txn_current(resp: &etcd_client::TxnResponse) -> Result<Option<Versioned>, StorageError> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(mut g) = op {
            return g
                .take_kvs()
                .into_iter()
                .next()
                .map(to_versioned)
                .transpose();
        }
    }
    Ok(None)
}

impl EtcdEngine {
    /// Connects (lazily: nothing is dialled until the first operation) to
    /// the members of `config`. Fails only on unusable settings (a TLS file
    /// that cannot be read, a URL tonic refuses).
    pub fn open(config: &EtcdConfig) -> Result<Self, StorageError> {
        let rt = runtime::shared()?;
        let tls = config.tls.as_ref().map(client_tls).transpose()?;
        let connect_timeout = config.timeout.min(std::time::Duration::from_secs(2));
        let mut members = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            let bad = |e: Box<dyn std::error::Error + Send + Sync>| StorageError::Engine {
                context: format!("etcd endpoint {url} is not usable"),
                source: e,
            };
            let mut ep = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| bad(e.into()))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                .keep_alive_timeout(std::time::Duration::from_secs(5));
            if let Some(tls) = &tls {
                ep = ep.tls_config(tls.clone()).map_err(|e| bad(e.into()))?;
            }
            let channel = {
                let _enter = rt.enter();
                ep.connect_lazy()
            };
            let options = etcd_client::ConnectOptions::new().with_require_leader(true);
            let client = runtime::block_on(etcd_client::Client::from_channel(
                etcd_client::Channel::Tonic(channel),
                Some(options),
            ))?
            .map_err(|e| bad(e.into()))?;
            let kv = client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            members.push(Member {
                url: url.clone(),
                kv,
            });
        }
        Ok(EtcdEngine {
            members: Arc::new(Members::new(members, config.timeout)),
        })
    }

    /// The member URLs, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members.urls()
    }

    /// Runs an etcd future to completion from synchronous code.
    fn run<F>(&self, fut: F) -> Result<F::Output, StorageError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(runtime::block_on(fut)?)
    }

    /// Runs one transaction `when(pre) then(op) else(get key)`.
    fn txn(
        &self,
        key: &str,
        pre: Precondition,
        then: TxnOp,
        op: String,
    ) -> Result<(etcd_client::TxnResponse, bool), StorageError> {
        let txn = Txn::new()
            .when(compares(key, pre))
            .and_then(vec![then])
            .or_else(vec![TxnOp::get(key, None)]);
        let members = Arc::clone(&self.members);
        self.run(async move {
            members
                .call(|mut kv: KvClient| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await
                .map(|d| (d.value, d.ambiguous))
                .map_err(|f| f.into_error(&op, true))
        })?
    }

    /// A page at `revision` (the latest when `None`).
    fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<Page, StorageError> {
        let start: Vec<u8> = match start_after {
            Some(k) => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            None => prefix.as_bytes().to_vec(),
        };
        let end = prefix_end(prefix.as_bytes());
        let members = Arc::clone(&self.members);
        let op = format!("list {prefix}");
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let (resp, more) = self.run(async move {
            let resp = members
                .call(|mut kv: KvClient| {
                    let (start, end) = (start.clone(), end.clone());
                    // limit 0 is "no limit" to etcd: ask for one key to learn the revision.
                    let mut opts = GetOptions::new().with_range(end).with_limit(limit_i.max(1));
                    if let Some(r) = revision {
                        opts = opts.with_revision(i64::try_from(r).unwrap_or(i64::MAX));
                    }
                    async move { kv.get(start, Some(opts)).await }
                })
                .await
                .map_err(|f| f.into_error(&op, false))?
                .value;
            let more = resp.more();
            Ok::<_, StorageError>((resp, more))
        })??;
        let revision = header_revision(resp.header());
        let mut resp = resp;
        let mut items = Vec::new();
        if limit > 0 {
            for kv in resp.take_kvs() {
                items.push(to_versioned(kv)?);
            }
        }
        let continue_after = if more && limit > 0 {
            items.last().map(|v| v.key.clone())
        } else {
            None
        };
        Ok(Page {
            items,
            continue_after,
            revision,
        })
    }

    /// Deletes every key starting with `prefix` (one range delete); returns
    /// how many. Not part of [`StorageEngine`]: for the bench's clean-up and
    /// tests.
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        check_broad_prefix(prefix)?;
        let members = Arc::clone(&self.members);
        let (start, end) = (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()));
        let op = format!("delete prefix {prefix}");
        self.run(async move {
            members
                .call(|mut kv: KvClient| {
                    let (start, end) = (start.clone(), end.clone());
                    async move {
                        kv.delete(
                            start,
                            Some(etcd_client::DeleteOptions::new().with_range(end)),
                        )
                        .await
                    }
                })
                .await
                .map(|d| d.value.deleted().max(0) as u64)
                .map_err(|f| f.into_error(&op, true))
        })?
    }
}

fn check_broad_prefix(prefix: &str) -> Result<(), StorageError> {
    if prefix.len() < 2 || !prefix.starts_with('/') {
        return Err(StorageError::Config(format!(
            "refusing to delete the key prefix {prefix:?}: too broad"
        )));
    }
    Ok(())
}

impl StorageEngine for EtcdEngine {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        let members = Arc::clone(&self.members);
        let k = key.to_string();
        let op = format!("get {key}");
        self.run(async move {
            let mut resp = members
                .call(|mut kv: KvClient| {
                    let k = k.clone();
                    async move { kv.get(k, None).await }
                })
                .await
                .map_err(|f| f.into_error(&op, false))?
                .value;
            resp.take_kvs()
                .into_iter()
                .next()
                .map(to_versioned)
                .transpose()
        })?
    }

    fn put(&self, key: &str, value: &[u8], pre: Precondition) -> Result<u64, StorageError> {
        let (resp, ambiguous) =
            self.txn(key, pre, TxnOp::put(key, value, None), format!("put {key}"))?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        let current = failed_txn_current(&resp)?;
        // An earlier attempt was cut off and this one found the key changed:
        // if it holds exactly our bytes (sealed values carry random nonces,
        // so no other writer produces them), the earlier attempt committed.
        if ambiguous && let Some(c) = current.as_ref().filter(|c| c.value == value) {
            return Ok(c.mod_revision);
        }
        Err(conflict(key, pre, current.as_ref()))
    }

    fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StorageError> {
        let (resp, ambiguous) =
            self.txn(key, pre, TxnOp::delete(key, None), format!("delete {key}"))?;
        if resp.succeeded() {
            let deleted = resp.op_responses().into_iter().any(|op| match op {
                TxnOpResponse::Delete(d) => d.deleted() > 0,
                _ => false,
            });
            // After a cut-off attempt the key may be gone because of it.
            return Ok(deleted || (ambiguous && pre != Precondition::Absent));
        }
        let current = failed_txn_current(&resp)?;
        if ambiguous && current.is_none() && matches!(pre, Precondition::ModRevision(_)) {
            return Ok(true);
        }
        Err(conflict(key, pre, current.as_ref()))
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        self.list_at(prefix, start_after, limit, None)
    }

    fn scan(
        &self,
        prefix: &str,
        page_size: usize,
        f: &mut ScanFn<'_>,
    ) -> Result<u64, StorageError> {
        // Every page at the first page's revision, as the apiserver's
        // continue tokens pin a paginated list.
        let first = self.list_at(prefix, None, page_size.max(1), None)?;
        let revision = first.revision;
        let mut page = first;
        loop {
            for item in std::mem::take(&mut page.items) {
                f(item)?;
            }
            let Some(after) = page.continue_after.take() else {
                return Ok(revision);
            };
            page = self
                .list_at(prefix, Some(&after), page_size.max(1), Some(revision))
                .map_err(|e| match e {
                    StorageError::Rejected(m) if m.contains("compacted") => StorageError::Rejected(format!(
                        "the listing of {prefix} was pinned to revision {revision}, which etcd compacted while it ran: list again ({m})"
                    )),
                    other => other,
                })?;
        }
    }

    fn revision(&self) -> Result<u64, StorageError> {
        let members = Arc::clone(&self.members);
        self.run(async move {
            let resp = members
                .call(|mut kv: KvClient| async move {
                    kv.get(vec![0u8], Some(GetOptions::new().with_count_only()))
                        .await
                })
                .await
                .map_err(|f| f.into_error("revision", false))?
                .value;
            Ok(header_revision(resp.header()))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/secrets/"), b"/registry/secrets0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn preconditions_become_compares() {
        assert!(compares("/k", Precondition::None).is_empty());
        assert_eq!(compares("/k", Precondition::Absent).len(), 1);
        assert_eq!(compares("/k", Precondition::ModRevision(7)).len(), 2);
    }

    #[test]
    fn an_unreachable_cluster_is_named_as_such() {
        // A port nothing listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = EtcdConfig::new(
            vec![format!("http://127.0.0.1:{port}")],
            None,
            std::time::Duration::from_millis(600),
        )
        .unwrap();
        let e = EtcdEngine::open(&cfg).unwrap();
        let err = e.get("/registry/secrets/a/b").unwrap_err();
        let m = err.to_string();
        assert!(matches!(err, StorageError::Unavailable(_)), "{m}");
        assert!(m.contains("etcd is unreachable"), "{m}");
        assert!(
            m.contains(&format!("http://127.0.0.1:{port}: unreachable")),
            "{m}"
        );
        // And from inside a runtime, without panicking.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { e.revision().unwrap_err() });
        assert!(err.to_string().contains("unreachable"), "{err}");
        rt.block_on(async move { drop(e) });
        let e = rt.block_on(async { EtcdEngine::open(&cfg).unwrap() });
        let err = rt.block_on(async { e.get("/k").unwrap_err() });
        assert!(err.to_string().contains("unreachable"), "{err}");
        rt.block_on(async move { drop(e) });
    }
}
