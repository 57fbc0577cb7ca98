//! The endpoint syntax kube-apiserver uses for KMS plugins: `unix:///abs/path`
//! or, on Linux, `unix:///@name` for an abstract socket.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest path a `sockaddr_un` can hold, without the trailing NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// A parsed KMS plugin endpoint.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A socket file at an absolute path.
    Path(PathBuf),
    /// A Linux abstract-namespace socket (`unix:///@name`), no file on disk.
    Abstract(String),
}

/// Why an endpoint string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not `unix://`.
    #[error(
        "{0:?} is not valid: only unix:// endpoints are supported (unix:///path/to.sock or unix:///@name)"
    )]
    Scheme(String),
    /// The path is empty or relative.
    #[error("{0:?} is not valid: the socket path must be absolute (unix:///path/to.sock)")]
    NotAbsolute(String),
    /// The path is longer than a unix socket address can hold.
    #[error("{0:?} is not valid: the socket path is {1} bytes, the limit is {MAX_UNIX_PATH}")]
    TooLong(String, usize),
    /// `unix:///@` with no name.
    #[error("{0:?} is not valid: the abstract socket name is empty")]
    EmptyAbstract(String),
    /// NUL bytes or other characters a socket path cannot carry.
    #[error("{0:?} is not valid: the path contains a NUL byte")]
    Nul(String),
}

impl Endpoint {
    /// Parses `unix:///path` or `unix:///@name`.
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let rest = s
            .strip_prefix("unix://")
            .ok_or_else(|| EndpointError::Scheme(s.to_string()))?;
        if rest.contains('\0') {
            return Err(EndpointError::Nul(s.to_string()));
        }
        if let Some(name) = rest.strip_prefix("/@") {
            if name.is_empty() {
                return Err(EndpointError::EmptyAbstract(s.to_string()));
            }
            // The abstract name occupies sun_path after a leading NUL.
            if name.len() > MAX_UNIX_PATH - 1 {
                return Err(EndpointError::TooLong(s.to_string(), name.len() + 1));
            }
            return Ok(Endpoint::Abstract(name.to_string()));
        }
        if !rest.starts_with('/') || rest.len() < 2 {
            return Err(EndpointError::NotAbsolute(s.to_string()));
        }
        if rest.len() > MAX_UNIX_PATH {
            return Err(EndpointError::TooLong(s.to_string(), rest.len()));
        }
        Ok(Endpoint::Path(PathBuf::from(rest)))
    }

    /// The socket file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Endpoint::Path(p) => Some(p),
            Endpoint::Abstract(_) => None,
        }
    }

    /// The `std` socket address to bind or connect to.
    pub fn socket_addr(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        match self {
            Endpoint::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            Endpoint::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Path(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Abstract(n) => write!(f, "unix:///@{n}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_abstract_names() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/kms.sock").unwrap(),
            Endpoint::Path("/var/run/kms.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:///@kms").unwrap(),
            Endpoint::Abstract("kms".into())
        );
        assert_eq!(
            Endpoint::parse("unix:///@kms").unwrap().to_string(),
            "unix:///@kms"
        );
        assert_eq!(
            Endpoint::parse("unix:///a/b.sock").unwrap().to_string(),
            "unix:///a/b.sock"
        );
    }

    #[test]
    fn refuses_malformed_endpoints() {
        for bad in [
            "",
            "tcp://127.0.0.1:1",
            "/var/run/kms.sock",
            "unix://",
            "unix:///",
            "unix://relative.sock",
            "unix:///@",
            "unix:///a\0b",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains("is not valid"), "{bad:?}: {err}");
        }
        let long = format!("unix:///{}", "x".repeat(200));
        assert!(matches!(
            Endpoint::parse(&long),
            Err(EndpointError::TooLong(_, _))
        ));
    }
}
