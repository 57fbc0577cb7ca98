//! How to reach an etcd cluster: member URLs, optional TLS client
//! certificates, the per-operation timeout. Everything is checked before
//! anything is dialled, and a bad value names itself.

use std::path::PathBuf;
use std::time::Duration;

use super::super::StorageError;

/// The default time one operation may take, failover and retries included
/// (etcdctl's `--command-timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS client settings, as etcdctl's `--cacert`, `--cert` and `--key`
/// (kube-apiserver's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA bundle that signed the members' serving certificates; without
    /// it, the system roots are not consulted and the connection fails.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`), for `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

impl EtcdTls {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Where and how to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Member client URLs (`http://127.0.0.1:2379` or `https://…`), in the
    /// order they are tried.
    pub endpoints: Vec<String>,
    /// TLS client settings; `None` for plain http.
    pub tls: Option<EtcdTls>,
    /// Time one operation may take, failover and retries included.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// A configuration for `endpoints` (comma-separated, as
    /// `--etcd-endpoints`), plain http, the default timeout.
    pub fn parse(endpoints: &str) -> Result<Self, StorageError> {
        Self::new(split_endpoints(endpoints), None, DEFAULT_TIMEOUT)
    }

    /// Checks and normalises the settings: at least one endpoint; each an
    /// `http://` or `https://` URL with a host and a port and nothing after
    /// it (`host:port` alone means http, or https when TLS settings are
    /// given); TLS settings only with https endpoints; a client certificate
    /// only with its key; a timeout of at least 100 ms.
    pub fn new(
        endpoints: Vec<String>,
        tls: Option<EtcdTls>,
        timeout: Duration,
    ) -> Result<Self, StorageError> {
        let bad = StorageError::Config;
        let tls = tls.filter(EtcdTls::is_set);
        if endpoints.is_empty() {
            return Err(bad(
                "etcd-endpoints is empty: give at least one member URL, e.g. http://127.0.0.1:2379"
                    .into(),
            ));
        }
        let mut out = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let e = e.trim();
            let url = if e.contains("://") {
                e.to_string()
            } else if tls.is_some() {
                format!("https://{e}")
            } else {
                format!("http://{e}")
            };
            let (scheme, rest) = url.split_once("://").expect("has a scheme");
            if scheme != "http" && scheme != "https" {
                return Err(bad(format!(
                    "etcd-endpoints={e:?} is not valid: only http:// and https:// are supported"
                )));
            }
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            let port_ok = authority
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if authority.contains('/') || !port_ok {
                return Err(bad(format!(
                    "etcd-endpoints={e:?} is not valid: expected {scheme}://HOST:PORT, e.g. {scheme}://127.0.0.1:2379"
                )));
            }
            if scheme == "http" && tls.is_some() {
                return Err(bad(format!(
                    "etcd-endpoints={e:?} is plain http but TLS client settings were given: use https:// endpoints with --etcd-cacert/--etcd-cert/--etcd-keyfile"
                )));
            }
            out.push(format!("{scheme}://{authority}"));
        }
        if let Some(t) = &tls {
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => {
                    return Err(bad(
                        "--etcd-cert needs --etcd-keyfile (the client certificate's private key)"
                            .into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(bad(
                        "--etcd-keyfile needs --etcd-cert (the client certificate)".into(),
                    ));
                }
                _ => {}
            }
        }
        if timeout < Duration::from_millis(100) {
            return Err(bad(format!(
                "etcd-timeout={} is too short: give at least 100ms",
                humantime::format_duration(timeout)
            )));
        }
        Ok(EtcdConfig {
            endpoints: out,
            tls,
            timeout,
        })
    }

    /// The endpoints as one comma-separated string, for messages.
    pub fn endpoints_list(&self) -> String {
        self.endpoints.join(",")
    }
}

/// Splits `a,b , c` into trimmed, non-empty parts.
pub fn split_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<EtcdConfig, StorageError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn endpoints_are_normalised() {
        let c = EtcdConfig::parse(" http://127.0.0.1:2379, 127.0.0.1:22379/ ").unwrap();
        assert_eq!(
            c.endpoints,
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        let tls = EtcdTls {
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        let c = EtcdConfig::new(vec!["10.0.0.1:2379".into()], Some(tls), DEFAULT_TIMEOUT).unwrap();
        assert_eq!(c.endpoints, ["https://10.0.0.1:2379"]);
    }

    #[test]
    fn bad_values_name_themselves() {
        assert!(msg(EtcdConfig::parse(" , ")).contains("etcd-endpoints is empty"));
        assert!(msg(EtcdConfig::parse("unix:///x")).contains("only http:// and https://"));
        assert!(msg(EtcdConfig::parse("http://h")).contains("expected http://HOST:PORT"));
        assert!(msg(EtcdConfig::parse("http://h:2379/v3")).contains("expected http://HOST:PORT"));
        let tls = EtcdTls {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(
            msg(EtcdConfig::new(
                vec!["http://h:1".into()],
                Some(tls.clone()),
                DEFAULT_TIMEOUT
            ))
            .contains("plain http but TLS")
        );
        assert!(
            msg(EtcdConfig::new(
                vec!["https://h:1".into()],
                Some(tls),
                DEFAULT_TIMEOUT
            ))
            .contains("--etcd-cert needs --etcd-keyfile")
        );
        assert!(
            msg(EtcdConfig::new(
                vec!["h:1".into()],
                None,
                Duration::from_millis(5)
            ))
            .contains("too short")
        );
    }
}
