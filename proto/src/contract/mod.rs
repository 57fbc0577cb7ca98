//! The KMS v2 contract both sides of the socket honour, in one place: the
//! limits kube-apiserver enforces, the fully-qualified-domain-name rule for
//! annotation keys, the checks it makes of every Status and Encrypt answer,
//! the request `uid`, and the safe rendering of untrusted text in messages.
//!
//! The plugin's service (requests), its `probe` (answers, as the apiserver
//! judges them) and the store's KMS provider (answers, and every stored
//! `EncryptedObject`) all call these functions; nothing else writes the rules.

mod answers;
mod fqdn;
mod limits;
mod text;
mod uid;

pub use answers::{
    API_VERSION, HEALTHZ_OK, SUPPORTED_VERSIONS, encrypt_problems, status_problems,
    validate_encrypt, validate_status,
};
pub use fqdn::{fqdn_problem, is_fully_qualified_domain_name, is_rfc1123_label_shaped};
pub use limits::{
    LenError, MAX_ANNOTATIONS, MAX_CIPHERTEXT, MAX_KEY_ID, MAX_REQUEST_BYTES, MAX_UID, check_len,
    validate_annotations, validate_ciphertext, validate_key_id,
};
pub use text::{error_chain, printable};
pub use uid::uuid_v4;
