//! The HTTP client of the transit backend: one pooled HTTP/1.1 client
//! (reqwest over rustls with ring), every call under a deadline inside the
//! apiserver's 3 s, bounded retries with backoff on 5xx, 429 and
//! connection errors, none on other 4xx, and errors that name their cause:
//! a policy refusal (403), a missing key or mount (404), a sealed server,
//! a TLS failure, an unreachable server, an answer that is not Transit's.
//!
//! Every attempt is counted in `kms_plugin_backend_calls_total` (by call
//! and outcome), so the load the plugin puts on the server is visible.
//! Bodies that carry plaintext are wiped when the client drops them; the
//! copies inside the HTTP and TLS stacks are theirs (as for any client).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::config::TlsFiles;
use crate::backend::{Fault, ServiceCallLabels, ServiceCalls};

/// The whole budget of one Encrypt or Decrypt, retries included: inside
/// the apiserver's 3 s deadline, with room for the gRPC round trip.
pub(crate) const CALL_BUDGET: Duration = Duration::from_millis(2500);
/// The budget of a call made at start-up or from the reload loop.
pub(crate) const BACKGROUND_BUDGET: Duration = Duration::from_secs(5);
/// How long a TCP connect (and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// The first backoff; doubled each retry, with jitter.
const BACKOFF: Duration = Duration::from_millis(50);
/// The largest answer read (Transit's are a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;

/// Why a call to Transit failed. Never carries a token, a secret id or
/// plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// No answer: connection refused or reset, name resolution, timeout.
    #[error("Transit at {addr} cannot be reached ({what}): {detail}")]
    Unreachable {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
        /// The cause, in words.
        detail: String,
        /// The client's error.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The TLS handshake failed (certificate, CA, protocol).
    #[error(
        "TLS with Transit at {addr} failed ({what}): {detail}; check --transit-ca-file (the CA that signed the server's certificate), the server's name in --transit-addr and the client certificate"
    )]
    Tls {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
        /// The TLS error.
        detail: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server is sealed.
    #[error("Transit at {addr} is sealed ({what}): unseal it (bao operator unseal)")]
    Sealed {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
    },
    /// 403: the token's policy does not allow the call, or the token is
    /// revoked or expired.
    #[error("Transit at {addr} refused {what}: permission denied ({hint})")]
    Denied {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
        /// What the policy must grant, or which credential was refused.
        hint: String,
    },
    /// 404 (or Transit's "key not found"): the mount or the key is missing.
    #[error("Transit at {addr} has no such {what}: {detail}")]
    Missing {
        /// The server address.
        addr: String,
        /// What is missing.
        what: String,
        /// The server's words and the options to check.
        detail: String,
    },
    /// Another HTTP error.
    #[error("Transit at {addr} answered {what} with HTTP {status}: {message}")]
    Status {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's `errors`.
        message: String,
    },
    /// An answer that is not what Transit sends (not JSON, a field
    /// missing, a ciphertext without its version).
    #[error("Transit at {addr} answered {what} with something Transit does not send: {detail}")]
    BadAnswer {
        /// The server address.
        addr: String,
        /// The call.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A credential file cannot be used (missing, unreadable, malformed).
    #[error("{0}")]
    Credential(String),
}

impl TransitError {
    /// Who is at fault (the gRPC code follows): unreachable, sealed,
    /// missing and server errors are UNAVAILABLE (the operator fixes the
    /// server and the plugin recovers by itself); a refusal is
    /// PERMISSION_DENIED; an answer that is not Transit's, or another
    /// refusal of the request, is INTERNAL.
    pub fn fault(&self) -> Fault {
        match self {
            TransitError::Unreachable { .. }
            | TransitError::Tls { .. }
            | TransitError::Sealed { .. }
            | TransitError::Missing { .. }
            | TransitError::Credential(_) => Fault::Unavailable,
            TransitError::Denied { .. } => Fault::Denied,
            TransitError::Status { status, .. } if *status >= 500 || *status == 429 => {
                Fault::Unavailable
            }
            TransitError::Status { .. } | TransitError::BadAnswer { .. } => Fault::Internal,
        }
    }

    /// The HTTP status of a refusal, if this is one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            TransitError::Denied { .. } => Some(403),
            TransitError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's words, for a refusal.
    pub(crate) fn message(&self) -> &str {
        match self {
            TransitError::Status { message, .. } => message,
            TransitError::Missing { detail, .. } => detail,
            _ => "",
        }
    }
}

/// The rustls configuration for `tls`: its CA file, else the system's
/// trust store; its client certificate, if any. The error names the file.
pub(crate) fn tls_config(tls: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &tls.ca {
        Some(ca) => {
            let shown = ca.display();
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("transit-ca-file={shown:?} is not valid: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("transit-ca-file={shown:?} is not valid: {e}"))?;
            if certs.is_empty() {
                return Err(format!(
                    "transit-ca-file={shown:?} is not valid: no certificate in it (PEM, BEGIN CERTIFICATE)"
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("transit-ca-file={shown:?} is not valid: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("TLS: the system's trust store cannot be used: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        }
    };
    let mut cfg = match &tls.client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "transit-client-cert-file={:?} is not valid: {e}",
                        cert.display()
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "transit-client-cert-file={:?} is not valid: no certificate in it",
                    cert.display()
                ));
            }
            // The key's bytes: pki-types wipes them on drop.
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "transit-client-key-file={:?} is not valid: {e}",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                format!(
                    "transit-client-key-file={:?} does not go with the client certificate: {e}",
                    key.display()
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One call's answer: its status and body (wiped on drop).
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Zeroizing<Vec<u8>>,
}

/// A request.
pub(crate) struct Call<'a> {
    /// The counter label (`encrypt`, `decrypt`, `key`, `health`, `login`,
    /// `renew`, `lookup`).
    pub op: &'static str,
    /// What it is, for messages (`decrypt with key k at transit`).
    pub what: &'a str,
    /// GET or POST.
    pub method: Method,
    /// The API path after `/v1/`.
    pub path: &'a str,
    /// The token, if the call needs one.
    pub token: Option<&'a str>,
    /// Whether the namespace header applies (not to `sys/health`).
    pub namespaced: bool,
    /// The JSON body (wiped when the client drops it).
    pub body: Option<Zeroizing<Vec<u8>>>,
}

/// The server's `errors`, joined, printable, bounded.
pub(crate) fn error_words(body: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let words = v
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        });
    match words {
        Some(w) if !w.is_empty() => kms_proto::contract::printable(&w, 300),
        Some(_) => "(no message)".into(),
        None => format!(
            "(not a Transit error body: {})",
            kms_proto::contract::printable(
                &String::from_utf8_lossy(&body[..body.len().min(80)]),
                80
            )
        ),
    }
}

/// The TLS error in `e`'s causes, if any. The client nests it in
/// `io::Error`s (whose `source()` skips what they wrap), so those are
/// opened too.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(t) = tls_cause(inner)
        {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// The innermost cause's words (the useful part of a client error).
fn root_words(e: &(dyn std::error::Error + 'static)) -> String {
    let mut words = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        words = c.to_string();
        cur = c.source();
    }
    words
}

/// The client, the server's address, the namespace and the call counter.
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    addr: String,
    namespace: Option<HeaderValue>,
    calls: ServiceCalls,
    tls: rustls::ClientConfig,
}

impl Http {
    /// A client for `base`, counting its calls in `calls`.
    pub(crate) fn new(
        base: Url,
        namespace: Option<&str>,
        tls: &TlsFiles,
        calls: ServiceCalls,
    ) -> Result<Http, TransitError> {
        let tls = tls_config(tls).map_err(TransitError::Credential)?;
        let namespace = namespace
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|e| TransitError::Credential(format!("transit-namespace: {e}")))?;
        let addr = base.as_str().trim_end_matches('/').to_string();
        let client = Self::client(&tls, &addr)?;
        Ok(Http {
            client,
            base,
            addr,
            namespace,
            calls,
            tls,
        })
    }

    fn client(tls: &rustls::ClientConfig, addr: &str) -> Result<reqwest::Client, TransitError> {
        let mut headers = HeaderMap::new();
        headers.insert("X-Vault-Request", HeaderValue::from_static("true"));
        reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .user_agent(concat!("kms-plugin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransitError::Unreachable {
                addr: addr.to_string(),
                what: "building the HTTP client".into(),
                detail: root_words(&e),
                source: Some(e),
            })
    }

    /// The same client with an empty connection pool (after the start-up
    /// calls, made on a runtime that is gone).
    pub(crate) fn fresh(&self) -> Result<Http, TransitError> {
        Ok(Http {
            client: Self::client(&self.tls, &self.addr)?,
            base: self.base.clone(),
            addr: self.addr.clone(),
            namespace: self.namespace.clone(),
            calls: self.calls.clone(),
            tls: self.tls.clone(),
        })
    }

    /// The server address, for messages.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    fn count(&self, op: &'static str, outcome: &'static str) {
        self.calls
            .get_or_create(&ServiceCallLabels { op, outcome })
            .inc();
    }

    /// Sends `call`, retrying what may succeed on a second try (no answer,
    /// 5xx but a sealed server, 429) with backoff until `deadline`.
    /// Answers with any other status are returned for the caller to judge.
    pub(crate) async fn send(
        &self,
        call: Call<'_>,
        deadline: Instant,
    ) -> Result<Answer, TransitError> {
        let url = self
            .base
            .join(&format!("v1/{}", call.path))
            .map_err(|e| TransitError::Credential(format!("the API path {:?}: {e}", call.path)))?;
        let body = call.body.map(|b| bytes::Bytes::from_owner(WipedBody(b)));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let result = if left < Duration::from_millis(10) {
                Err(None)
            } else {
                self.attempt(
                    &call.method,
                    &url,
                    call.token,
                    call.namespaced,
                    body.clone(),
                    left,
                )
                .await
                .map_err(Some)
            };
            let retry_after = |attempt: u32| -> Option<Duration> {
                if attempt >= MAX_ATTEMPTS {
                    return None;
                }
                let pause = backoff(attempt);
                (Instant::now() + pause + Duration::from_millis(50) < deadline).then_some(pause)
            };
            match result {
                Ok(answer) => {
                    let s = answer.status;
                    let outcome = match s.as_u16() {
                        200..=299 => "ok",
                        400..=499 => "refused",
                        _ => "failed",
                    };
                    self.count(call.op, outcome);
                    let sealed = s == StatusCode::SERVICE_UNAVAILABLE
                        && error_words(&answer.body).contains("sealed");
                    if sealed {
                        return Err(TransitError::Sealed {
                            addr: self.addr.clone(),
                            what: call.what.to_string(),
                        });
                    }
                    let retryable = matches!(s.as_u16(), 429 | 500 | 502 | 503 | 504);
                    if retryable && let Some(pause) = retry_after(attempt) {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    if e.is_some() {
                        self.count(call.op, "unreachable");
                    }
                    let tls = e.as_ref().and_then(|e| tls_cause(e));
                    if tls.is_none()
                        && let Some(pause) = retry_after(attempt)
                    {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(self.no_answer(call.what, e, tls));
                }
            }
        }
    }

    fn no_answer(
        &self,
        what: &str,
        e: Option<reqwest::Error>,
        tls: Option<String>,
    ) -> TransitError {
        let addr = self.addr.clone();
        let what = what.to_string();
        match (e, tls) {
            (Some(source), Some(detail)) => TransitError::Tls {
                addr,
                what,
                detail,
                source,
            },
            (Some(source), None) => {
                let detail = if source.is_timeout() {
                    "no answer within the call's deadline".to_string()
                } else {
                    root_words(&source)
                };
                TransitError::Unreachable {
                    addr,
                    what,
                    detail,
                    source: Some(source),
                }
            }
            (None, _) => TransitError::Unreachable {
                addr,
                what,
                detail: "no answer within the call's deadline".into(),
                source: None,
            },
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        token: Option<&str>,
        namespaced: bool,
        body: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .timeout(timeout);
        if let Some(t) = token {
            // A header the client copies; marked sensitive so no Debug
            // output of it shows the token.
            if let Ok(mut v) = HeaderValue::from_str(t) {
                v.set_sensitive(true);
                req = req.header("X-Vault-Token", v);
            }
        }
        if namespaced && let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let mut resp = req.send().await?;
        let status = resp.status();
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }
}

impl Http {
    /// The error for an answer that is not a success: 403 is a refusal
    /// (`hint` says what the token needs), 404 a missing mount or key, the
    /// rest the server's status and words.
    pub(crate) fn refusal(
        &self,
        what: &str,
        a: &Answer,
        hint: impl FnOnce() -> String,
    ) -> TransitError {
        let addr = self.addr.clone();
        let words = error_words(&a.body);
        match a.status.as_u16() {
            403 => TransitError::Denied {
                addr,
                what: what.to_string(),
                hint: hint(),
            },
            404 => TransitError::Missing {
                addr,
                what: what.to_string(),
                detail: format!("HTTP 404: {words}"),
            },
            status => TransitError::Status {
                addr,
                what: what.to_string(),
                status,
                message: words,
            },
        }
    }

    /// A malformed answer to `what`.
    pub(crate) fn bad_answer(&self, what: &str, detail: impl Into<String>) -> TransitError {
        TransitError::BadAnswer {
            addr: self.addr.clone(),
            what: what.to_string(),
            detail: detail.into(),
        }
    }
}

/// The JSON of a successful answer, typed; a body that is not JSON of
/// that shape is a [`TransitError::BadAnswer`] naming what is wrong.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    http: &Http,
    what: &str,
    a: &Answer,
) -> Result<T, TransitError> {
    serde_json::from_slice(&a.body).map_err(|e| {
        // serde_json's message names the position and what it expected;
        // it quotes a value only where a string came in place of another
        // type, and the fields that hold secrets (plaintext, client_token)
        // are strings.
        http.bad_answer(what, format!("not the JSON Transit sends ({e})"))
    })
}

/// A request body that is wiped when the client drops its last reference.
struct WipedBody(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for WipedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The pause before retry `attempt` (1-based): 50 ms doubling, ±50 %.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    let mut r = [0u8; 2];
    let jitter = match getrandom::fill(&mut r) {
        Ok(()) => f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_words(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
            "1 error occurred: * permission denied"
        );
        assert_eq!(error_words(br#"{"errors":[]}"#), "(no message)");
        assert!(error_words(b"<html>bad gateway</html>").contains("not a Transit error body"));
    }

    #[test]
    fn tls_errors_are_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert_eq!(
            tls_cause(&outer).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        assert_eq!(tls_cause(&std::io::Error::other("refused")), None);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for a in 1..=MAX_ATTEMPTS {
            let b = backoff(a);
            let base = BACKOFF * 2u32.pow(a - 1);
            assert!(b >= base / 2 && b <= base * 3 / 2, "{a}: {b:?}");
        }
    }

    #[test]
    fn faults() {
        let addr = || "https://x".to_string();
        let s = |status| TransitError::Status {
            addr: addr(),
            what: "w".into(),
            status,
            message: String::new(),
        };
        assert_eq!(s(503).fault(), Fault::Unavailable);
        assert_eq!(s(429).fault(), Fault::Unavailable);
        assert_eq!(s(400).fault(), Fault::Internal);
        let d = TransitError::Denied {
            addr: addr(),
            what: "w".into(),
            hint: "h".into(),
        };
        assert_eq!(d.fault(), Fault::Denied);
        let sealed = TransitError::Sealed {
            addr: addr(),
            what: "w".into(),
        };
        assert_eq!(sealed.fault(), Fault::Unavailable);
        assert!(sealed.to_string().contains("sealed"));
    }
}
