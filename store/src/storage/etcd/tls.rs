//! TLS client settings for the etcd members: the CA bundle and the client
//! certificate, read when the engine opens (the private key into a wiped
//! buffer).

use std::path::Path;

use super::EtcdTls;
use crate::storage::StorageError;

fn read_pem(what: &str, p: &Path) -> Result<Vec<u8>, StorageError> {
    std::fs::read(p).map_err(|source| StorageError::Io {
        what: format!("cannot read {what} {}", p.display()),
        source,
    })
}

/// The tonic TLS settings for `tls`, files read now.
pub(super) fn client_tls(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, StorageError> {
    let mut cfg = etcd_client::TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        cfg = cfg.ca_certificate(etcd_client::Certificate::from_pem(read_pem(
            "--etcd-cacert",
            ca,
        )?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let cert = read_pem("--etcd-cert", cert)?;
        let key = crate::wipe::Wiped::new(read_pem("--etcd-keyfile", key)?);
        cfg = cfg.identity(etcd_client::Identity::from_pem(cert, &*key));
    }
    Ok(cfg)
}
