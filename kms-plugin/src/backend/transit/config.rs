//! The transit backend's options, parsed and checked before anything binds:
//! every refusal names the option (`transit-addr="..." is not valid: ...`).
//! No option takes a secret; the files that hold one are checked here for
//! existence and permissions (their content is read by `auth`), and a
//! value that looks like a token rather than a path is never echoed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::backend::options::ConnectOptions;

/// The default Transit mount.
pub(crate) const DEFAULT_MOUNT: &str = "transit";
/// The default AppRole mount.
pub(crate) const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// The longest key name accepted (the key_id holds it, within 1024 bytes).
const MAX_KEY_NAME: usize = 128;
/// The longest mount path or namespace accepted.
const MAX_PATH: usize = 256;

/// How the plugin authenticates to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthConfig {
    /// A token read from this file (again whenever the file changes).
    TokenFile(PathBuf),
    /// An AppRole login with the role_id and secret_id in these files.
    AppRole {
        /// The AppRole auth mount (`approle`).
        mount: String,
        /// The file holding the role_id.
        role_id_file: PathBuf,
        /// The file holding the secret_id.
        secret_id_file: PathBuf,
    },
}

/// The TLS files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// CA certificates (PEM); the system trust store when `None`.
    pub ca: Option<PathBuf>,
    /// Client certificate and its key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The validated options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TransitConfig {
    /// The server's base URL (scheme, host, port; no path).
    pub addr: Url,
    /// The Transit mount, without slashes at either end.
    pub mount: String,
    /// The key name.
    pub key: String,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// How to authenticate.
    pub auth: AuthConfig,
    /// TLS settings (https only).
    pub tls: TlsFiles,
}

fn invalid(key: &str, value: &str, why: impl std::fmt::Display) -> String {
    format!("{key}={value:?} is not valid: {why}")
}

/// Whether `host` is a loopback address (or `localhost`).
fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
        }
        None => false,
    }
}

/// Parses `--transit-addr`.
pub(crate) fn parse_addr(value: &str) -> Result<Url, String> {
    let key = "transit-addr";
    let url = Url::parse(value).map_err(|e| invalid(key, value, e))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                key,
                value,
                "http:// is only allowed to a loopback address (a dev server): use https://",
            ));
        }
        other => {
            return Err(invalid(
                key,
                value,
                format!("scheme {other}:// is not supported: use https://HOST:PORT"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(invalid(key, value, "no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            value,
            "credentials do not belong in the address: use --transit-token-file or AppRole files",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            value,
            "give only scheme, host and port (the API path /v1/... is added by the plugin)",
        ));
    }
    Ok(url)
}

/// Refuses an empty `part` of `value`, or one over `max` bytes.
fn check_length(key: &str, value: &str, part: &str, max: usize) -> Result<(), String> {
    if part.is_empty() {
        return Err(invalid(key, value, "must not be empty"));
    }
    if part.len() > max {
        return Err(invalid(key, value, format!("longer than {max} characters")));
    }
    Ok(())
}

/// A Transit key name as Transit's routes accept it: word characters,
/// dots and dashes, starting and ending with a word character.
pub(crate) fn check_key_name(value: &str) -> Result<(), String> {
    let key = "transit-key";
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    check_length(key, value, value, MAX_KEY_NAME)?;
    let ok = value.chars().all(|c| word(c) || c == '-' || c == '.')
        && value.starts_with(word)
        && value.ends_with(word);
    if !ok {
        return Err(invalid(
            key,
            value,
            "Transit key names are letters, digits, _, - and ., starting and ending with a letter, digit or _",
        ));
    }
    Ok(())
}

/// A mount path or namespace: segments of letters, digits, `_`, `-`, `.`
/// separated by `/` (slashes at either end are dropped).
pub(crate) fn parse_path(key: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim_matches('/');
    check_length(key, value, trimmed, MAX_PATH)?;
    for seg in trimmed.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(invalid(
                key,
                value,
                "path segments are letters, digits, _, - and ., separated by /",
            ));
        }
    }
    Ok(trimmed.to_string())
}

/// Whether a value given for a file option looks like a token or secret
/// id pasted in place of a path; such a value is never echoed.
fn looks_like_a_secret(value: &str) -> bool {
    let token_prefix = ["hvs.", "hvb.", "hvr.", "s.", "b.", "r."]
        .iter()
        .any(|p| value.starts_with(p));
    let uuid_like = value.len() == 36
        && value.chars().filter(|c| *c == '-').count() == 4
        && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    !value.contains('/') && (token_prefix || uuid_like)
}

/// Checks a file option: it names a regular file this process can read,
/// and, for a file holding a secret, one that others cannot read and only
/// its owner can write.
pub(crate) fn check_file(key: &str, value: &str, secret: bool) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if secret && looks_like_a_secret(value) && !Path::new(value).exists() {
        return Err(format!(
            "{key} takes the path of a file, and the value given looks like the secret itself (not shown): write it into a file only the plugin's user can read (chmod 600) and pass that file's path"
        ));
    }
    if value.is_empty() {
        return Err(invalid(key, value, "must not be empty"));
    }
    let path = PathBuf::from(value);
    let meta = std::fs::metadata(&path).map_err(|e| invalid(key, value, e))?;
    if !meta.is_file() {
        return Err(invalid(key, value, "not a regular file"));
    }
    if secret {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o027 != 0 {
            return Err(invalid(
                key,
                value,
                format!(
                    "mode {mode:04o} lets others read it or its group write it: chmod 600 (or 640 for a group that needs it)"
                ),
            ));
        }
    }
    std::fs::File::open(&path).map_err(|e| invalid(key, value, e))?;
    Ok(path)
}

impl TransitConfig {
    /// Parses and checks the options of `serve` (and of the `key`
    /// commands, which then refuse the backend).
    pub(crate) fn from_options(o: &ConnectOptions) -> Result<TransitConfig, String> {
        let addr = o.get("transit-addr").ok_or(
            "transit-addr is required with backend=transit (e.g. --transit-addr https://openbao.example:8200)",
        )?;
        let addr = parse_addr(addr)?;
        let key = o.get("transit-key").ok_or(
            "transit-key is required with backend=transit (e.g. --transit-key kube-secrets)",
        )?;
        check_key_name(key)?;
        let mount = parse_path(
            "transit-mount",
            o.get("transit-mount").unwrap_or(DEFAULT_MOUNT),
        )?;
        let namespace = o
            .get("transit-namespace")
            .map(|n| parse_path("transit-namespace", n))
            .transpose()?;

        let token = o.get("transit-token-file");
        let role = o.get("transit-role-id-file");
        let secret = o.get("transit-secret-id-file");
        let approle_mount = o.get("transit-approle-mount");
        let auth = match (token, role, secret) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("transit-token-file and the AppRole files (transit-role-id-file, transit-secret-id-file) exclude each other: choose one way to log in".into());
            }
            (Some(t), None, None) => {
                if approle_mount.is_some() {
                    return Err("transit-approle-mount applies to an AppRole login only (transit-role-id-file, transit-secret-id-file)".into());
                }
                AuthConfig::TokenFile(check_file("transit-token-file", t, true)?)
            }
            (None, Some(r), Some(s)) => AuthConfig::AppRole {
                mount: parse_path(
                    "transit-approle-mount",
                    approle_mount.unwrap_or(DEFAULT_APPROLE_MOUNT),
                )?,
                role_id_file: check_file("transit-role-id-file", r, true)?,
                secret_id_file: check_file("transit-secret-id-file", s, true)?,
            },
            (None, Some(_), None) => {
                return Err(
                    "transit-role-id-file needs transit-secret-id-file for an AppRole login".into(),
                );
            }
            (None, None, Some(_)) => {
                return Err(
                    "transit-secret-id-file needs transit-role-id-file for an AppRole login".into(),
                );
            }
            (None, None, None) => {
                return Err("backend=transit needs a way to log in: --transit-token-file FILE, or --transit-role-id-file FILE with --transit-secret-id-file FILE".into());
            }
        };

        let ca = o
            .get("transit-ca-file")
            .map(|f| check_file("transit-ca-file", f, false))
            .transpose()?;
        let cert = o.get("transit-client-cert-file");
        let cert_key = o.get("transit-client-key-file");
        let client = match (cert, cert_key) {
            (Some(c), Some(k)) => Some((
                check_file("transit-client-cert-file", c, false)?,
                check_file("transit-client-key-file", k, true)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err("transit-client-cert-file needs transit-client-key-file".into());
            }
            (None, Some(_)) => {
                return Err("transit-client-key-file needs transit-client-cert-file".into());
            }
        };
        let tls = TlsFiles { ca, client };
        if addr.scheme() == "http" && tls != TlsFiles::default() {
            return Err(format!(
                "transit-ca-file and the client certificate apply to an https:// address, and transit-addr is {}",
                addr.as_str().trim_end_matches('/')
            ));
        }
        // Load the TLS files now, so a bad one is refused before binding.
        super::http::tls_config(&tls)?;
        Ok(TransitConfig {
            addr,
            mount,
            key: key.to_string(),
            namespace,
            auth,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn secret_file(dir: &Path, name: &str, mode: u32) -> String {
        let p = dir.join(name);
        std::fs::write(&p, "hvs.0123456789\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    }

    fn opts(pairs: &[(&str, &str)]) -> ConnectOptions {
        let mut o = ConnectOptions::default();
        for (k, v) in pairs {
            o.set(k, *v).unwrap();
        }
        o
    }

    #[test]
    fn addresses() {
        for ok in [
            "https://bao.example:8200",
            "https://10.0.0.1:8200/",
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            parse_addr(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, want) in [
            ("http://10.0.0.1:8200", "only allowed to a loopback"),
            ("http://bao.example", "only allowed to a loopback"),
            ("ftp://127.0.0.1", "not supported"),
            ("bao.example:8200", "not supported"),
            ("https://u:p@bao.example", "credentials"),
            (
                "https://bao.example/v1/transit",
                "only scheme, host and port",
            ),
            ("https://bao.example/?x=1", "only scheme, host and port"),
            ("not a url", "transit-addr=\"not a url\" is not valid"),
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn names_and_paths() {
        check_key_name("kube-secrets.v1_a").unwrap();
        for bad in ["", "-a", "a-", "a b", "a/b", &"k".repeat(129)] {
            assert!(check_key_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_path("transit-mount", "/kms/transit/").unwrap(),
            "kms/transit"
        );
        for bad in ["", "/", "a//b", "a/../b", "a b", "a?b"] {
            assert!(parse_path("transit-mount", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_and_files() {
        let d = tempfile::tempdir().unwrap();
        let tok = secret_file(d.path(), "token", 0o600);
        let open = secret_file(d.path(), "open", 0o644);
        let role = secret_file(d.path(), "role", 0o400);
        let sec = secret_file(d.path(), "secret", 0o640);
        let base = [
            ("transit-addr", "http://127.0.0.1:8200"),
            ("transit-key", "k"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            TransitConfig::from_options(&opts(&v))
        };
        let c = with(&[("transit-token-file", &tok)]).unwrap();
        assert_eq!(c.auth, AuthConfig::TokenFile(tok.clone().into()));
        assert_eq!(c.mount, "transit");
        let c = with(&[
            ("transit-role-id-file", &role),
            ("transit-secret-id-file", &sec),
        ])
        .unwrap();
        assert!(matches!(c.auth, AuthConfig::AppRole { ref mount, .. } if mount == "approle"));
        for (extra, want) in [
            (vec![], "needs a way to log in"),
            (vec![("transit-token-file", open.as_str())], "mode 0644"),
            (
                vec![("transit-token-file", "hvs.CAESIabcdef")],
                "looks like the secret itself",
            ),
            (
                vec![("transit-token-file", "/no/such/file")],
                "transit-token-file=\"/no/such/file\" is not valid",
            ),
            (
                vec![
                    ("transit-token-file", tok.as_str()),
                    ("transit-role-id-file", role.as_str()),
                ],
                "exclude each other",
            ),
            (
                vec![("transit-role-id-file", role.as_str())],
                "needs transit-secret-id-file",
            ),
            (
                vec![
                    ("transit-token-file", tok.as_str()),
                    ("transit-ca-file", tok.as_str()),
                ],
                "apply to an https:// address",
            ),
            (
                vec![
                    ("transit-token-file", tok.as_str()),
                    ("transit-approle-mount", "x"),
                ],
                "AppRole login only",
            ),
        ] {
            let e = with(&extra).unwrap_err();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.contains("hvs.CAES"), "a secret echoed: {e}");
        }
        let e = TransitConfig::from_options(&opts(&[("transit-key", "k")])).unwrap_err();
        assert!(e.contains("transit-addr is required"), "{e}");
    }

    #[test]
    fn bad_tls_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let tok = secret_file(d.path(), "token", 0o600);
        let ca = d.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = TransitConfig::from_options(&opts(&[
            ("transit-addr", "https://bao.example:8200"),
            ("transit-key", "k"),
            ("transit-token-file", &tok),
            ("transit-ca-file", ca.to_str().unwrap()),
        ]))
        .unwrap_err();
        assert!(
            e.contains("transit-ca-file") && e.contains("no certificate"),
            "{e}"
        );
    }
}
