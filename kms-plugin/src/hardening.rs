//! Process hardening for `serve` and the key commands: the helpers live in
//! [`kms_proto::process`], shared with secret-store; this re-export keeps
//! the call sites as they are.

pub(crate) use kms_proto::process::{disable_core_dumps, private_umask};
