//! Kubernetes conventions the store follows wherever it meets them, in one
//! place: object uids.

mod uid;

pub(crate) use uid::new_uid;
