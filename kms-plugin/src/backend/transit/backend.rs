//! The transit [`KeyBackend`]: Encrypt and Decrypt are calls to Transit;
//! Status reads the cached active key_id, which the reload loop refreshes
//! (at most every [`KEY_REFRESH`], and at once when a Decrypt names a
//! version newer than the cache knows: another node saw a rotation first).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use reqwest::Method;
use zeroize::Zeroizing;

use super::auth::Auth;
use super::config::TransitConfig;
use super::format;
use super::http::{self, Answer, Call, Http, TransitError, parse_json};
use super::keys::{self, Health, Identity, KeyInfo};
use crate::backend::{BackendError, KeyBackend, Refresh, ServiceCalls, Wrapped};
use kms_proto::contract::MAX_CIPHERTEXT;

/// How often the reload loop reads the key (a rotation shows within this).
pub(crate) const KEY_REFRESH: Duration = Duration::from_secs(5);
/// A Decrypt naming an unknown newer version reads the key at most this often.
const FORCED_REFRESH: Duration = Duration::from_secs(1);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The key as last read, and where it lives.
#[derive(Debug, PartialEq, Eq)]
struct KeyState {
    identity: Identity,
    info: KeyInfo,
}

/// The API paths of the key.
struct Paths {
    encrypt: String,
    decrypt: String,
    key: String,
    shown: String,
}

/// The transit backend.
pub(crate) struct TransitBackend {
    http: Http,
    auth: Auth,
    paths: Paths,
    cfg: TransitConfig,
    state: ArcSwap<KeyState>,
    last_read: Mutex<Instant>,
    last_forced: Mutex<Option<Instant>>,
    reading: tokio::sync::Mutex<()>,
    calls: ServiceCalls,
}

#[derive(serde::Deserialize)]
struct EncryptAnswer {
    data: EncryptData,
}

#[derive(serde::Deserialize)]
struct EncryptData {
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct DecryptAnswer {
    data: DecryptData,
}

#[derive(serde::Deserialize)]
struct DecryptData {
    plaintext: Zeroizing<String>,
}

#[derive(serde::Deserialize)]
struct KeyAnswer {
    data: serde_json::Value,
}

/// What an encrypt or decrypt sends.
enum Data<'a> {
    /// Encrypt: the base64 plaintext.
    Plaintext(&'a str),
    /// Decrypt: Transit's `vault:v<N>:...` ciphertext.
    Ciphertext(&'a str),
}

#[derive(serde::Serialize)]
struct Req<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<&'a str>,
    /// Encrypt with exactly the version Status reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
    associated_data: &'a str,
    /// For a derived key: the same bytes as the associated data.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

/// The JSON body of an encrypt or decrypt with `version`, binding the
/// format and version as associated data, written into one wiped buffer.
fn request(
    version: u32,
    derived: bool,
    data: Data<'_>,
) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    let ad = B64.encode(format::associated_data(version));
    let (plaintext, ciphertext, key_version, len) = match data {
        Data::Plaintext(p) => (Some(p), None, Some(version), p.len()),
        Data::Ciphertext(c) => (None, Some(c), None, c.len()),
    };
    let req = Req {
        plaintext,
        ciphertext,
        key_version,
        associated_data: &ad,
        context: derived.then_some(ad.as_str()),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(len + 2 * ad.len() + 128));
    serde_json::to_writer(&mut *out, &req)
        .map_err(|e| BackendError::Internal(format!("transit request body: {e}")))?;
    Ok(out)
}

impl TransitBackend {
    /// Connects: reads the server's cluster id and the key (and logs in,
    /// for AppRole), so a wrong address, key, mount, policy or credential
    /// is refused before the socket is bound. The start-up calls run on a
    /// runtime of their own (`serve` opens backends before its runtime).
    pub(crate) fn open(cfg: TransitConfig) -> Result<TransitBackend, BackendError> {
        let calls = ServiceCalls::default();
        let start = Http::new(
            cfg.addr.clone(),
            cfg.namespace.as_deref(),
            &cfg.tls,
            calls.clone(),
        )?;
        let auth = Auth::new(cfg.auth.clone());
        let paths = Paths {
            encrypt: format!("{}/encrypt/{}", cfg.mount, cfg.key),
            decrypt: format!("{}/decrypt/{}", cfg.mount, cfg.key),
            key: format!("{}/keys/{}", cfg.mount, cfg.key),
            shown: format!("key {} at mount {}", cfg.key, cfg.mount),
        };
        let state = std::thread::scope(|s| {
            s.spawn(|| -> Result<KeyState, BackendError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        BackendError::Internal(format!("transit start-up runtime: {e}"))
                    })?;
                rt.block_on(async {
                    let deadline = Instant::now() + http::BACKGROUND_BUDGET;
                    let st = read_state(&start, &auth, &cfg, &paths, deadline).await?;
                    auth.maintain(&start).await?;
                    Ok(st)
                })
            })
            .join()
            .unwrap_or_else(|_| Err(BackendError::Internal("transit start-up panicked".into())))
        })?;
        tracing::info!(
            transit.addr = %start.addr(),
            transit.mount = %cfg.mount,
            transit.key = %cfg.key,
            transit.key_type = %state.info.key_type,
            transit.latest_version = state.info.latest,
            transit.min_decryption_version = state.info.min_decryption,
            transit.cluster_id = %state.identity.cluster_id,
            "transit key read"
        );
        // Serve with an empty pool: the start-up runtime's connections are gone.
        let http = start.fresh()?;
        Ok(TransitBackend {
            http,
            auth,
            paths,
            cfg,
            state: ArcSwap::from_pointee(state),
            last_read: Mutex::new(Instant::now()),
            last_forced: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            calls,
        })
    }

    /// Reads the key again and keeps what it found; returns the state
    /// before and after.
    async fn reread(
        &self,
        deadline: Instant,
    ) -> Result<(Arc<KeyState>, Arc<KeyState>), BackendError> {
        let _one = self.reading.lock().await;
        let before = self.state.load_full();
        *kms_proto::sync::lock(&self.last_read) = Instant::now();
        let st =
            Arc::new(read_state(&self.http, &self.auth, &self.cfg, &self.paths, deadline).await?);
        if *st != *before {
            self.state.store(st.clone());
            if st.identity.cluster_id != before.identity.cluster_id {
                tracing::warn!(from = %before.identity.cluster_id, to = %st.identity.cluster_id, "transit: the server's cluster id changed (another cluster at this address): key_ids change with it");
            }
        }
        Ok((before, st))
    }

    /// The version a Decrypt's key_id names, checked against the key.
    async fn decrypt_version(&self, key_id: &str) -> Result<u32, BackendError> {
        let unknown = || BackendError::UnknownKeyId(key_id.to_string());
        let version = keys::version_of(&self.cfg.key, key_id).ok_or_else(unknown)?;
        let judge = |st: &KeyState| -> Option<Result<u32, BackendError>> {
            match st.info.versions.get(&version) {
                Some(id) if &**id == key_id => Some(Ok(version)),
                Some(_) => Some(Err(unknown())),
                None if version < st.info.min_decryption => {
                    Some(Err(BackendError::Retired(key_id.to_string())))
                }
                None if version > st.info.latest => None,
                None => Some(Err(unknown())),
            }
        };
        if let Some(r) = judge(&self.state.load()) {
            return r;
        }
        // A version newer than the cache: read the key now (rate-limited).
        let due = {
            let mut last = kms_proto::sync::lock(&self.last_forced);
            let due = last.is_none_or(|t| t.elapsed() >= FORCED_REFRESH);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.reread(Instant::now() + http::CALL_BUDGET).await?;
        }
        judge(&self.state.load()).unwrap_or_else(|| Err(unknown()))
    }

    /// Posts `req` to the key's `path` (encrypt or decrypt) within the
    /// call budget; a refusal is its error (Transit's "key not found"
    /// as a missing key).
    async fn post(
        &self,
        op: &'static str,
        what: &str,
        path: &str,
        req: Zeroizing<Vec<u8>>,
    ) -> Result<Answer, TransitError> {
        let deadline = Instant::now() + http::CALL_BUDGET;
        let call = key_call(op, what, Method::POST, path, Some(req));
        let a = authed(&self.http, &self.auth, call, deadline).await?;
        if a.status.is_success() {
            return Ok(a);
        }
        let e = self
            .http
            .refusal(what, &a, || self.denied_hint("update", path));
        if e.status() == Some(400) && e.message().contains("not found") {
            return Err(TransitError::Missing {
                addr: self.http.addr().to_string(),
                what: self.paths.shown.clone(),
                detail: format!("{} (deleted since the plugin started?)", e.message()),
            });
        }
        Err(e)
    }

    fn denied_hint(&self, capability: &str, path: &str) -> String {
        format!(
            "{} is revoked or expired, or its policy lacks {capability} on {path}",
            self.auth.describe()
        )
    }
}

/// Sends `call` with the current token (its `token` is set here); a 403
/// with an AppRole token logs in again and sends it once more (the token
/// may have expired).
async fn authed(
    http: &Http,
    auth: &Auth,
    call: Call<'_>,
    deadline: Instant,
) -> Result<Answer, TransitError> {
    let mut token = auth.token(http, deadline).await?;
    let mut relogged = false;
    loop {
        let a = http
            .send(
                Call {
                    op: call.op,
                    what: call.what,
                    method: call.method.clone(),
                    path: call.path,
                    token: Some(token.expose()),
                    namespaced: call.namespaced,
                    body: call.body.clone(),
                },
                deadline,
            )
            .await?;
        if a.status.as_u16() == 403 {
            if !relogged && auth.can_login_again(&token) {
                relogged = true;
                token = auth.login_again(http, deadline, &token).await?;
                continue;
            }
            auth.refused(&token);
        }
        return Ok(a);
    }
}

/// A call to the key's paths (the token is added by [`authed`]).
fn key_call<'a>(
    op: &'static str,
    what: &'a str,
    method: Method,
    path: &'a str,
    body: Option<Zeroizing<Vec<u8>>>,
) -> Call<'a> {
    Call {
        op,
        what,
        method,
        path,
        token: None,
        namespaced: true,
        body,
    }
}

/// Reads the server's cluster id and the key's versions.
async fn read_state(
    http: &Http,
    auth: &Auth,
    cfg: &TransitConfig,
    paths: &Paths,
    deadline: Instant,
) -> Result<KeyState, BackendError> {
    let what = "reading the server's health (sys/health)";
    let a = http
        .send(
            Call {
                op: "health",
                what,
                method: Method::GET,
                path: "sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200&drsecondarycode=200",
                token: None,
                namespaced: false,
                body: None,
            },
            deadline,
        )
        .await?;
    if !a.status.is_success() {
        return Err(http
            .refusal(what, &a, || "sys/health needs no token".into())
            .into());
    }
    let v: serde_json::Value = parse_json(http, what, &a)?;
    let cluster_id = match keys::parse_health(&v).map_err(|e| http.bad_answer(what, e))? {
        Health::Ready(id) => id,
        Health::Sealed => {
            return Err(TransitError::Sealed {
                addr: http.addr().to_string(),
                what: what.to_string(),
            }
            .into());
        }
        Health::Uninitialized => {
            return Err(http
                .bad_answer(what, "the server is not initialised (bao operator init)")
                .into());
        }
    };
    let identity = Identity {
        cluster_id,
        namespace: cfg.namespace.clone().unwrap_or_default(),
        mount: cfg.mount.clone(),
        key: cfg.key.clone(),
    };
    let what = format!("reading {} ({})", paths.shown, paths.key);
    let a = authed(
        http,
        auth,
        key_call("key", &what, Method::GET, &paths.key, None),
        deadline,
    )
    .await?;
    if !a.status.is_success() {
        let e = http.refusal(&what, &a, || {
            format!(
                "{} is revoked or expired, or its policy lacks read on {}",
                auth.describe(),
                paths.key
            )
        });
        return Err(match e {
            TransitError::Missing { addr, detail, .. } => TransitError::Missing {
                addr,
                what: paths.shown.clone(),
                detail: format!(
                    "no key {} in a Transit engine at {} ({detail}; check --transit-key and --transit-mount{}; create it: bao write -f {})",
                    cfg.key,
                    cfg.mount,
                    if cfg.namespace.is_some() {
                        " and --transit-namespace"
                    } else {
                        ""
                    },
                    paths.key
                ),
            },
            e => e,
        }
        .into());
    }
    let k: KeyAnswer = parse_json(http, &what, &a)?;
    let info = keys::parse_key(&identity, &k.data).map_err(|e| http.bad_answer(&what, e))?;
    Ok(KeyState { identity, info })
}

/// Transit's words for a ciphertext that does not open.
fn does_not_open(words: &str) -> bool {
    [
        "message authentication failed",
        "invalid ciphertext",
        "unable to decrypt",
        "could not decode",
    ]
    .iter()
    .any(|w| words.contains(w))
}

#[async_trait::async_trait]
impl KeyBackend for TransitBackend {
    fn kind(&self) -> &'static str {
        super::NAME
    }

    fn is_hardware_backed(&self) -> bool {
        false
    }

    fn active_key_id(&self) -> Result<Arc<str>, BackendError> {
        Ok(self.state.load().info.active())
    }

    fn max_plaintext(&self) -> usize {
        MAX_CIPHERTEXT - format::HEADER_LEN - self.state.load().info.overhead
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let max = self.max_plaintext();
        if plaintext.len() > max {
            return Err(BackendError::TooLarge {
                len: plaintext.len(),
                max,
            });
        }
        let st = self.state.load_full();
        let version = st.info.latest;
        let key_id = st.info.active();
        let pt = Zeroizing::new(B64.encode(plaintext));
        let req = request(version, st.info.derived, Data::Plaintext(&pt))?;
        drop(pt);
        let what = format!("encrypt with {} v{version}", self.paths.shown);
        let a = self
            .post("encrypt", &what, &self.paths.encrypt, req)
            .await?;
        let ans: EncryptAnswer = parse_json(&self.http, &what, &a)?;
        let (got, raw) = format::from_vault(&ans.data.ciphertext)
            .map_err(|e| self.http.bad_answer(&what, e.0))?;
        if got != version {
            return Err(self
                .http
                .bad_answer(
                    &what,
                    format!("a ciphertext of version {got}, not of the version asked for"),
                )
                .into());
        }
        let ciphertext = format::encode(version, &raw).map_err(|e| BackendError::Internal(e.0))?;
        Ok(Wrapped { key_id, ciphertext })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let parsed = format::parse(ciphertext).map_err(|e| BackendError::Malformed(e.0))?;
        let version = self.decrypt_version(key_id).await?;
        if parsed.version != version {
            // A ciphertext of another version than its key_id's: no
            // confusion between versions, and no oracle.
            return Err(BackendError::DecryptionFailed);
        }
        let derived = self.state.load().info.derived;
        let ct = format::to_vault(version, parsed.transit);
        let req = request(version, derived, Data::Ciphertext(&ct))?;
        let what = format!("decrypt with {} v{version}", self.paths.shown);
        let a = match self.post("decrypt", &what, &self.paths.decrypt, req).await {
            Ok(a) => a,
            Err(e) if e.status() == Some(400) => {
                let words = e.message();
                if does_not_open(words) {
                    return Err(BackendError::DecryptionFailed);
                }
                if words.contains("too old") || words.contains("disallowed by policy") {
                    // Retired in Transit since the cache was read.
                    *kms_proto::sync::lock(&self.last_read) = Instant::now() - KEY_REFRESH;
                    return Err(BackendError::Retired(key_id.to_string()));
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let ans: DecryptAnswer = parse_json(&self.http, &what, &a)?;
        let mut out = Zeroizing::new(Vec::with_capacity(ans.data.plaintext.len()));
        B64.decode_vec(ans.data.plaintext.as_bytes(), &mut out)
            .map_err(|e| {
                self.http
                    .bad_answer(&what, format!("a plaintext that is not base64 ({e})"))
            })?;
        Ok(out)
    }

    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let renewal = self.auth.maintain(&self.http).await;
        let due = kms_proto::sync::lock(&self.last_read).elapsed() >= KEY_REFRESH;
        if due {
            let (before, after) = self.reread(Instant::now() + http::CALL_BUDGET).await?;
            renewal?;
            return Ok(Refresh {
                active: after.info.active(),
                changed: before.info.active() != after.info.active()
                    || before.info.versions != after.info.versions,
            });
        }
        renewal?;
        Ok(Refresh {
            active: self.state.load().info.active(),
            changed: false,
        })
    }

    fn service_calls(&self) -> Option<ServiceCalls> {
        Some(self.calls.clone())
    }
}
