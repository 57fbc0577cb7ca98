//! Object and request uids: random version 4 UUIDs, as upstream's
//! `uuid.NewUUID()` makes them, formatted by the KMS contract's
//! [`uuid_v4`](kms_proto::contract::uuid_v4).

/// A fresh random (version 4) UUID: a Secret's `metadata.uid`, a KMS
/// request's `uid`.
pub(crate) fn new_uid() -> String {
    kms_proto::contract::uuid_v4(crate::rand::array())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_uid(), u);
    }
}
