//! The unix socket kube-apiserver connects to: refuse what must not be
//! touched, recover from a crash's stale socket, bind with mode 0600.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use kms_proto::Endpoint;

use crate::fsutil;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another process answers on the socket.
    #[error(
        "{0} is in use: another process is serving on it (stop it first, or choose another --listen-addr)"
    )]
    Live(String),
    /// A symlink sits at the socket path.
    #[error("{0} is a symbolic link; refusing to follow or remove it")]
    Symlink(PathBuf),
    /// A non-socket file sits at the socket path.
    #[error("{0} exists and is not a socket ({1}); refusing to remove it")]
    NotASocket(PathBuf, &'static str),
    /// The socket's directory could not be created or used.
    #[error("socket directory {0}: {1}")]
    Dir(PathBuf, io::Error),
    /// Probing, removing, binding or chmod failed.
    #[error("{what} {endpoint}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound listening socket; removes its file on [`BoundSocket::cleanup`]
/// if the file is still the one it created.
pub struct BoundSocket {
    /// The listener, non-blocking.
    pub listener: StdUnixListener,
    path: Option<PathBuf>,
    ino: u64,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// Makes the path usable: creates a missing parent directory 0700, removes a
/// stale socket (a socket nothing answers on), and refuses a live socket, a
/// symlink or any other file.
fn clear_path(path: &Path, endpoint: &str) -> Result<(), ListenError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    fsutil::ensure_private_dir(parent).map_err(|e| ListenError::Dir(parent.to_path_buf(), e))?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Io {
                what: "inspecting",
                endpoint: endpoint.to_string(),
                source,
            });
        }
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(ListenError::Symlink(path.to_path_buf()));
    }
    if !ft.is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf(), kind_of(ft)));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::Live(endpoint.to_string())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::warn!(socket = %path.display(), "removing stale socket left by a previous run (nothing answers on it)");
            std::fs::remove_file(path).map_err(|source| ListenError::Io {
                what: "removing stale socket",
                endpoint: endpoint.to_string(),
                source,
            })
        }
        Err(source) => Err(ListenError::Io {
            what: "probing existing socket",
            endpoint: endpoint.to_string(),
            source,
        }),
    }
}

/// Binds `endpoint`. Path sockets get mode 0600, or 0660 and group `gid`.
pub fn bind(endpoint: &Endpoint, gid: Option<u32>) -> Result<BoundSocket, ListenError> {
    let name = endpoint.to_string();
    let io_err = |what: &'static str| {
        let name = name.clone();
        move |source| ListenError::Io {
            what,
            endpoint: name,
            source,
        }
    };
    let (listener, path, ino) = match endpoint {
        Endpoint::Path(path) => {
            clear_path(path, &name)?;
            let mode = if gid.is_some() { 0o660 } else { 0o600 };
            // The socket file takes its mode from the umask at bind(2): set
            // it for exactly that call, so nothing changes the mode by path
            // afterwards (a path that could by then name something else).
            // Start-up is single-threaded here: no other file is created
            // meanwhile.
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777 & !mode));
            let bound = StdUnixListener::bind(path);
            rustix::process::umask(old);
            let l = bound.map_err(io_err("binding"))?;
            if let Some(g) = gid {
                // The group, without following a symlink put in its place.
                rustix::fs::chownat(
                    rustix::fs::CWD,
                    path,
                    None,
                    Some(rustix::fs::Gid::from_raw(g)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err("changing group of")(e.into()))?;
            }
            let meta = std::fs::symlink_metadata(path).map_err(io_err("inspecting"))?;
            if !meta.file_type().is_socket() || meta.mode() & 0o777 != mode {
                return Err(ListenError::Io {
                    what: "checking",
                    endpoint: name.clone(),
                    source: io::Error::other(format!(
                        "the socket file changed under us (mode {:o}, expected {mode:o})",
                        meta.mode() & 0o777
                    )),
                });
            }
            (l, Some(path.clone()), meta.ino())
        }
        Endpoint::Abstract(_) => {
            tracing::warn!(endpoint = %name, "abstract sockets have no file permissions: any process in this network namespace can connect");
            let addr = endpoint.socket_addr().map_err(io_err("resolving"))?;
            let l = StdUnixListener::bind_addr(&addr).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    ListenError::Live(name.clone())
                } else {
                    io_err("binding")(e)
                }
            })?;
            (l, None, 0)
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(io_err("configuring"))?;
    Ok(BoundSocket {
        listener,
        path,
        ino,
    })
}

impl BoundSocket {
    /// Removes the socket file if it is still ours (same inode).
    pub fn cleanup(&self) {
        if let Some(p) = &self.path
            && let Ok(m) = std::fs::symlink_metadata(p)
            && m.ino() == self.ino
            && m.file_type().is_socket()
            && let Err(e) = std::fs::remove_file(p)
        {
            tracing::warn!(socket = %p.display(), error = %e, "could not remove socket");
        }
    }
}

/// Resolves a group name or numeric id via /etc/group.
pub fn resolve_group(spec: &str) -> Result<u32, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to resolve {spec:?}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _ = f.next()?;
            let gid = f.next()?.parse::<u32>().ok()?;
            (name == spec).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group named {spec:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(p: &Path) -> Endpoint {
        Endpoint::Path(p.to_path_buf())
    }

    #[test]
    fn binds_0600_and_creates_private_parent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/kms/plugin.sock");
        let s = bind(&ep(&p), None).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(p.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        // A second bind while the first listens: refused as live.
        let e = bind(&ep(&p), None).err().unwrap();
        assert!(matches!(e, ListenError::Live(_)), "{e}");
        s.cleanup();
        assert!(!p.exists());
    }

    #[test]
    fn a_group_socket_is_0660_with_that_group_and_the_umask_is_restored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.sock");
        let gid = rustix::process::getegid().as_raw();
        let before = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let s = bind(&ep(&p), Some(gid)).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o660);
        assert_eq!(m.gid(), gid);
        let after = rustix::process::umask(before);
        assert_eq!(after.bits(), 0o022, "bind put the umask back");
        s.cleanup();
    }

    #[test]
    fn removes_a_stale_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        drop(StdUnixListener::bind(&p).unwrap()); // file stays, nothing listens
        assert!(p.exists());
        let s = bind(&ep(&p), None).unwrap();
        s.cleanup();
    }

    #[test]
    fn refuses_files_symlinks_and_dirs() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("file.sock");
        std::fs::write(&f, b"precious").unwrap();
        assert!(matches!(
            bind(&ep(&f), None),
            Err(ListenError::NotASocket(_, "a regular file"))
        ));
        assert_eq!(std::fs::read(&f).unwrap(), b"precious");
        let l = d.path().join("link.sock");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(matches!(bind(&ep(&l), None), Err(ListenError::Symlink(_))));
        let dir = d.path().join("dir.sock");
        std::fs::create_dir(&dir).unwrap();
        assert!(matches!(
            bind(&ep(&dir), None),
            Err(ListenError::NotASocket(_, "a directory"))
        ));
    }

    #[test]
    fn abstract_sockets_bind_and_refuse_duplicates() {
        let name = format!("kms-plugin-test-{}", std::process::id());
        let e = Endpoint::Abstract(name);
        let _s = bind(&e, None).unwrap();
        assert!(matches!(bind(&e, None), Err(ListenError::Live(_))));
    }

    #[test]
    fn resolves_groups() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
