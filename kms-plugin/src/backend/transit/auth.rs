//! The token the transit backend calls with: read from a file (and again
//! whenever the file changes: a new token is picked up without a restart),
//! or from an AppRole login (role_id and secret_id read from their files at
//! each login). A token with a TTL is renewed before it expires
//! (`auth/token/renew-self` at half its TTL); an AppRole token that
//! can no longer be renewed, or that the server refuses, is replaced by a
//! new login.
//!
//! Tokens and secret ids live only in [`Zeroizing`] buffers here (the
//! HTTP client copies the header it sends); nothing prints them: [`Token`]
//! has a redacting `Debug`, and errors name the file, never its content.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use zeroize::Zeroizing;

use super::config::AuthConfig;
use super::http::{Call, Http, TransitError, parse_json};

/// The longest credential accepted from a file.
const MAX_CREDENTIAL: usize = 4096;
/// An AppRole token this close to its expiry (or a quarter of its TTL, if
/// less) is replaced by a new login.
const RELOGIN_MARGIN: Duration = Duration::from_secs(10);

/// A token, wiped on drop, never printed.
pub(crate) struct Token {
    secret: Zeroizing<String>,
    /// Which token this is (a new one each read or login).
    pub generation: u64,
}

impl Token {
    /// The token, for the request header.
    pub(crate) fn expose(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<redacted>, generation {})", self.generation)
    }
}

/// What identifies a version of a file: a new token written in place or
/// renamed over the old one changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Reads one credential from `path` (`what` names the option): trimmed,
/// non-empty, visible ASCII, at most 4 KiB. Errors never show the content.
pub(crate) fn read_credential(what: &str, path: &Path) -> Result<Zeroizing<String>, TransitError> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| TransitError::Credential(format!("{what} {shown}: cannot read: {e}")))?;
    let mut raw = Zeroizing::new(Vec::new());
    file.take(MAX_CREDENTIAL as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| TransitError::Credential(format!("{what} {shown}: cannot read: {e}")))?;
    if raw.len() > MAX_CREDENTIAL {
        return Err(TransitError::Credential(format!(
            "{what} {shown} is over {MAX_CREDENTIAL} bytes: not a token or id"
        )));
    }
    let text = raw.trim_ascii();
    if text.is_empty() {
        return Err(TransitError::Credential(format!("{what} {shown} is empty")));
    }
    if !text.iter().all(|b| b.is_ascii_graphic()) {
        return Err(TransitError::Credential(format!(
            "{what} {shown} holds something other than one token or id (spaces, control or non-ASCII characters)"
        )));
    }
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    for b in text {
        out.push(char::from(*b));
    }
    Ok(out)
}

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    /// The token file version the token came from.
    stamp: Option<Stamp>,
    /// Whether the token's TTL is known (looked up or given by a login).
    ttl_known: bool,
    /// When to renew it.
    renew_at: Option<Instant>,
    /// When to replace it, shortly before it expires (AppRole: a new
    /// login then).
    replace_at: Option<Instant>,
    generation: u64,
}

/// The TTL facts of a token.
#[derive(serde::Deserialize)]
struct TtlData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(serde::Deserialize)]
struct Lookup {
    data: TtlData,
}

#[derive(serde::Deserialize)]
struct AuthAnswer {
    auth: LoginAuth,
}

#[derive(serde::Deserialize)]
struct LoginAuth {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(serde::Deserialize)]
struct RenewAnswer {
    auth: RenewAuth,
}

#[derive(serde::Deserialize)]
struct RenewAuth {
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

/// The token source and its renewal.
pub(crate) struct Auth {
    cfg: AuthConfig,
    state: Mutex<State>,
    login: tokio::sync::Mutex<()>,
}

impl Auth {
    /// A token source for `cfg` (nothing is read yet).
    pub(crate) fn new(cfg: AuthConfig) -> Auth {
        Auth {
            cfg,
            state: Mutex::new(State::default()),
            login: tokio::sync::Mutex::new(()),
        }
    }

    /// Which credential the plugin uses, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.cfg {
            AuthConfig::TokenFile(p) => format!("the token in {}", p.display()),
            AuthConfig::AppRole { role_id_file, .. } => {
                format!(
                    "the AppRole token of the role_id in {}",
                    role_id_file.display()
                )
            }
        }
    }

    fn token_file(&self) -> Option<&PathBuf> {
        match &self.cfg {
            AuthConfig::TokenFile(p) => Some(p),
            AuthConfig::AppRole { .. } => None,
        }
    }

    /// The token to call with: the token file's (read again when it
    /// changed), or the AppRole login's (logging in when there is none or
    /// it is about to expire).
    pub(crate) async fn token(
        &self,
        http: &Http,
        deadline: Instant,
    ) -> Result<Arc<Token>, TransitError> {
        if let Some(path) = self.token_file() {
            return self.read_token_file(path);
        }
        {
            let st = kms_proto::sync::lock(&self.state);
            if let Some(t) = &st.token
                && st.replace_at.is_none_or(|e| e > Instant::now())
            {
                return Ok(t.clone());
            }
        }
        self.login(http, deadline, None).await
    }

    fn read_token_file(&self, path: &Path) -> Result<Arc<Token>, TransitError> {
        let now = stamp(path).map_err(|e| {
            TransitError::Credential(format!(
                "transit-token-file {}: cannot read: {e}",
                path.display()
            ))
        })?;
        let mut st = kms_proto::sync::lock(&self.state);
        if st.stamp == Some(now)
            && let Some(t) = &st.token
        {
            return Ok(t.clone());
        }
        let secret = read_credential("transit-token-file", path)?;
        st.generation += 1;
        let t = Arc::new(Token {
            secret,
            generation: st.generation,
        });
        if st.token.is_some() {
            tracing::info!(file = %path.display(), "transit token file changed; using the new token");
        }
        st.token = Some(t.clone());
        st.stamp = Some(now);
        st.ttl_known = false;
        st.renew_at = None;
        st.replace_at = None;
        Ok(t)
    }

    /// Logs in with the AppRole files, unless another caller just did
    /// (then its token is used): `stale` is the token a caller found
    /// refused.
    async fn login(
        &self,
        http: &Http,
        deadline: Instant,
        stale: Option<u64>,
    ) -> Result<Arc<Token>, TransitError> {
        let AuthConfig::AppRole {
            mount,
            role_id_file,
            secret_id_file,
        } = &self.cfg
        else {
            return Err(TransitError::Credential("no AppRole configured".into()));
        };
        let _one = self.login.lock().await;
        {
            // Another caller may have logged in while this one waited.
            let st = kms_proto::sync::lock(&self.state);
            if let Some(t) = &st.token
                && stale != Some(t.generation)
                && st.replace_at.is_none_or(|e| e > Instant::now())
            {
                return Ok(t.clone());
            }
        }
        let role_id = read_credential("transit-role-id-file", role_id_file)?;
        let secret_id = read_credential("transit-secret-id-file", secret_id_file)?;
        #[derive(serde::Serialize)]
        struct Login<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        // Written into one wiped buffer, large enough not to move.
        let mut body = Zeroizing::new(Vec::with_capacity(role_id.len() + secret_id.len() + 64));
        serde_json::to_writer(
            &mut *body,
            &Login {
                role_id: &role_id,
                secret_id: &secret_id,
            },
        )
        .map_err(|e| TransitError::Credential(format!("AppRole login body: {e}")))?;
        let path = format!("auth/{mount}/login");
        let what = format!("the AppRole login at auth/{mount}");
        let a = http
            .send(
                Call {
                    op: "login",
                    what: &what,
                    method: Method::POST,
                    path: &path,
                    token: None,
                    namespaced: true,
                    body: Some(body),
                },
                deadline,
            )
            .await?;
        if !a.status.is_success() {
            return Err(http.refusal(&what, &a, || {
                format!(
                    "the role_id in {} and the secret_id in {} were refused: a wrong or expired secret_id, or the role's bound CIDRs",
                    role_id_file.display(),
                    secret_id_file.display()
                )
            }));
        }
        let ans: AuthAnswer = parse_json(http, &what, &a)?;
        if ans.auth.client_token.is_empty() {
            return Err(http.bad_answer(&what, "an empty client_token"));
        }
        let mut st = kms_proto::sync::lock(&self.state);
        st.generation += 1;
        let t = Arc::new(Token {
            secret: ans.auth.client_token,
            generation: st.generation,
        });
        st.token = Some(t.clone());
        set_ttl(&mut st, ans.auth.lease_duration, ans.auth.renewable);
        tracing::info!(
            ttl_s = ans.auth.lease_duration,
            renewable = ans.auth.renewable,
            "transit: AppRole login"
        );
        Ok(t)
    }

    /// After a 403 with token `t`: an AppRole token is dropped so the next
    /// call logs in again (its secret_id may still be good); a token file
    /// is read again at the next call if it changed (it always is).
    pub(crate) fn refused(&self, t: &Token) {
        if self.token_file().is_some() {
            return;
        }
        let mut st = kms_proto::sync::lock(&self.state);
        if st
            .token
            .as_ref()
            .is_some_and(|c| c.generation == t.generation)
        {
            st.token = None;
        }
    }

    /// Whether a 403 with token `t` may be cured by a new AppRole login
    /// (once per refused token).
    pub(crate) fn can_login_again(&self, t: &Token) -> bool {
        self.token_file().is_none()
            && kms_proto::sync::lock(&self.state)
                .token
                .as_ref()
                .is_none_or(|c| c.generation == t.generation)
    }

    /// Keeps the token alive: learns its TTL once (`lookup-self`), renews
    /// it at half of it (`renew-self`), and for AppRole logs in again
    /// when it can no longer be renewed. Called from the reload loop.
    pub(crate) async fn maintain(&self, http: &Http) -> Result<(), TransitError> {
        let deadline = Instant::now() + super::http::BACKGROUND_BUDGET;
        let t = self.token(http, deadline).await?;
        let (ttl_known, renew_at) = {
            let st = kms_proto::sync::lock(&self.state);
            (st.ttl_known, st.renew_at)
        };
        if !ttl_known {
            let what = "looking up the token (auth/token/lookup-self)";
            let a = http
                .send(
                    Call {
                        op: "lookup",
                        what,
                        method: Method::GET,
                        path: "auth/token/lookup-self",
                        token: Some(t.expose()),
                        namespaced: true,
                        body: None,
                    },
                    deadline,
                )
                .await?;
            let mut st = kms_proto::sync::lock(&self.state);
            if a.status.is_success() {
                let l: Lookup = parse_json(http, what, &a)?;
                set_ttl(&mut st, l.data.ttl, l.data.renewable);
                if l.data.ttl > 0 {
                    tracing::info!(
                        ttl_s = l.data.ttl,
                        renewable = l.data.renewable,
                        "transit token looked up"
                    );
                }
            } else {
                // A policy without lookup-self: the TTL stays unknown, and
                // the token is used until the server refuses it.
                st.ttl_known = true;
                st.renew_at = None;
                tracing::warn!(error = %http.refusal(what, &a, || self.describe()), "transit: the token's TTL cannot be looked up; it will not be renewed");
            }
            return Ok(());
        }
        if renew_at.is_none_or(|r| r > Instant::now()) {
            return Ok(());
        }
        let what = "renewing the token (auth/token/renew-self)";
        let a = http
            .send(
                Call {
                    op: "renew",
                    what,
                    method: Method::POST,
                    path: "auth/token/renew-self",
                    token: Some(t.expose()),
                    namespaced: true,
                    body: Some(Zeroizing::new(b"{}".to_vec())),
                },
                deadline,
            )
            .await?;
        if !a.status.is_success() {
            let e = http.refusal(what, &a, || {
                format!("{} cannot be renewed", self.describe())
            });
            if self.token_file().is_none() {
                self.refused(&t);
                self.login(http, deadline, Some(t.generation)).await?;
                return Ok(());
            }
            kms_proto::sync::lock(&self.state).renew_at =
                Some(Instant::now() + Duration::from_secs(30));
            return Err(e);
        }
        let r: RenewAnswer = parse_json(http, what, &a)?;
        let mut st = kms_proto::sync::lock(&self.state);
        if st
            .token
            .as_ref()
            .is_some_and(|c| c.generation == t.generation)
        {
            set_ttl(&mut st, r.auth.lease_duration, r.auth.renewable);
        }
        tracing::debug!(ttl_s = r.auth.lease_duration, "transit token renewed");
        Ok(())
    }

    /// Logs in again after the token `t` was refused (AppRole only).
    pub(crate) async fn login_again(
        &self,
        http: &Http,
        deadline: Instant,
        t: &Token,
    ) -> Result<Arc<Token>, TransitError> {
        self.refused(t);
        self.login(http, deadline, Some(t.generation)).await
    }
}

/// Records a token's TTL: renew at half of it, replace (AppRole: log in
/// again) 10 s (or a quarter of it) before it expires; a TTL of 0 never
/// expires.
fn set_ttl(st: &mut State, ttl: u64, renewable: bool) {
    st.ttl_known = true;
    if ttl == 0 {
        st.renew_at = None;
        st.replace_at = None;
        return;
    }
    let now = Instant::now();
    let ttl = Duration::from_secs(ttl);
    st.replace_at = Some(now + ttl - RELOGIN_MARGIN.min(ttl / 4));
    st.renew_at = renewable.then(|| now + ttl / 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "  hvs.secret-token-value\n").unwrap();
        assert_eq!(
            &*read_credential("x", &p).unwrap(),
            "hvs.secret-token-value"
        );
        for (content, want) in [
            (&b"\n \n"[..], "is empty"),
            (b"two words", "something other than one token"),
            (b"caf\xc3\xa9", "something other than one token"),
            (&[b'a'; 5000][..], "over 4096 bytes"),
        ] {
            std::fs::write(&p, content).unwrap();
            let e = read_credential("x", &p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(
                !e.contains("two words") && !e.contains("aaaa"),
                "content echoed: {e}"
            );
        }
        let e = read_credential("x", &d.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_changed_token_file_is_read_again_and_tokens_do_not_print() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "hvs.first").unwrap();
        let a = Auth::new(AuthConfig::TokenFile(p.clone()));
        let t1 = a.read_token_file(&p).unwrap();
        assert_eq!(t1.expose(), "hvs.first");
        assert_eq!(a.read_token_file(&p).unwrap().generation, t1.generation);
        let tmp = d.path().join("t.new");
        std::fs::write(&tmp, "hvs.second").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let t2 = a.read_token_file(&p).unwrap();
        assert_eq!(t2.expose(), "hvs.second");
        assert!(t2.generation > t1.generation);
        assert!(!format!("{t2:?}").contains("second"));
        std::fs::remove_file(&p).unwrap();
        assert!(
            a.read_token_file(&p)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn ttls() {
        let mut st = State::default();
        set_ttl(&mut st, 0, true);
        assert!(st.renew_at.is_none() && st.replace_at.is_none() && st.ttl_known);
        set_ttl(&mut st, 30, true);
        let r = st.renew_at.unwrap() - Instant::now();
        assert!(
            r <= Duration::from_secs(15) && r > Duration::from_secs(14),
            "{r:?}"
        );
        assert!(
            st.replace_at.unwrap() > st.renew_at.unwrap(),
            "renewed first"
        );
        set_ttl(&mut st, 30, false);
        assert!(st.renew_at.is_none() && st.replace_at.is_some());
        set_ttl(&mut st, 4, true);
        let r = st.replace_at.unwrap() - Instant::now();
        assert!(
            r <= Duration::from_secs(3) && r > Duration::from_secs(2),
            "{r:?}"
        );
    }
}
