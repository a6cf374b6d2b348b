use std::fmt;

use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::domain::{EventId, SubjectId, TenantId};

/// The keyed-hash key for external ids, derived from the root key.
#[derive(ZeroizeOnDrop)]
pub struct PseudonymKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

impl PseudonymKey {
    pub(super) fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self(key)
    }

    fn hash(&self, domain: &[u8], tenant: TenantId, id: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        // Length-prefixed fields: no two (domain, tenant, id) inputs collide.
        hasher.update(&(domain.len() as u64).to_be_bytes());
        hasher.update(domain);
        hasher.update(&tenant.get().to_be_bytes());
        hasher.update(&(id.len() as u64).to_be_bytes());
        hasher.update(id.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The one way to turn a platform's user id into something storable. The
    /// tenant is part of the input, so the same person at two platforms has
    /// two unlinkable pseudonyms.
    pub fn pseudonymize(&self, tenant: TenantId, subject: &SubjectId) -> Pseudonym {
        Pseudonym(self.hash(b"subject", tenant, subject.expose()))
    }

    /// A keyed fingerprint of an event's content (its subject and coarse
    /// record), stored with its idempotency key so a reused event id with
    /// different content is told apart from a retry. Keyed, because the
    /// coarse content has little entropy and an unkeyed hash of it could be
    /// inverted by trying every possibility.
    pub fn event_fingerprint(&self, subject: &SubjectRef, content: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"\x0bfingerprint");
        hasher.update(subject.as_bytes());
        hasher.update(content);
        *hasher.finalize().as_bytes()
    }

    /// The idempotency key of a platform's event id. Event ids are the
    /// platform's free text and may carry personal data, so only this keyed
    /// hash is stored.
    pub fn event_key(&self, tenant: TenantId, event: &EventId) -> EventKey {
        EventKey(self.hash(b"event", tenant, event.as_str()))
    }

    /// The lookup key of a platform's redemption reference for one subject:
    /// references are the platform's free text, so only this keyed hash is
    /// stored in clear (the reference itself is sealed).
    pub fn redemption_key(&self, subject: &SubjectRef, reference: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"\x0aredemption");
        hasher.update(subject.as_bytes());
        hasher.update(reference.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The lookup key of a platform's reference for a transfer of points to
    /// a linked account: as for redemptions, only this keyed hash is stored.
    pub fn transfer_key(&self, subject: &SubjectRef, reference: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"\x08transfer");
        hasher.update(subject.as_bytes());
        hasher.update(reference.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// A keyed fingerprint of a redemption's content (points and
    /// description), so a reused reference with other content is told
    /// apart from a retry.
    pub fn redemption_fingerprint(&self, subject: &SubjectRef, points: i64, description: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"\x16redemption-fingerprint");
        hasher.update(subject.as_bytes());
        hasher.update(&points.to_be_bytes());
        hasher.update(description.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// What is stored of a link code: a keyed hash, so a copy of the
    /// database cannot redeem an outstanding code. The code is not tied to
    /// a tenant here: the redeeming platform is another one.
    pub fn link_code_hash(&self, code: &str) -> [u8; 32] {
        self.hash(b"link-code", TenantId::new(0), code)
    }
}

/// A subject's per-tenant pseudonym: keyed BLAKE3 of the external id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; 32]);

impl Pseudonym {
    /// Re-reads a pseudonym the access layer stored earlier; it cannot be
    /// made from an external id this way.
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({}…)", hex::encode(&self.0[..4]))
    }
}

/// A subject's reference in the ledger tables, derived from their salt. The
/// pseudonym (recomputable from the external id) appears only in the key
/// store; ledger rows carry this instead, so once the salt is deleted from
/// every copy of the key store, no copy of the ledger links to the person.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectRef([u8; 32]);

impl SubjectRef {
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectRef({}…)", hex::encode(&self.0[..4]))
    }
}

/// Keyed hash of a platform's event id, used for idempotency.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey([u8; 32]);

impl EventKey {
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A subject's reference in the audit log, derived from their salt: it ties
/// their audit entries together while the salt exists and to nobody after
/// erasure.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditRef([u8; 16]);

impl AuditRef {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for AuditRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditRef({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RootKey;

    fn subject(s: &str) -> SubjectId {
        SubjectId::parse(s.to_owned()).unwrap()
    }

    #[test]
    fn pseudonyms_are_per_tenant_and_stable() {
        let key = RootKey::from_bytes([3; 32]).pseudonym_key();
        let (t1, t2) = (TenantId::new(1), TenantId::new(2));
        let alice = subject("13800138000-alice");
        assert_eq!(key.pseudonymize(t1, &alice), key.pseudonymize(t1, &alice));
        assert_ne!(key.pseudonymize(t1, &alice), key.pseudonymize(t2, &alice));
        assert_ne!(key.pseudonymize(t1, &alice), key.pseudonymize(t1, &subject("bob")));
    }

    #[test]
    fn pseudonyms_depend_on_the_root_key() {
        let alice = subject("alice");
        let t = TenantId::new(1);
        let a = RootKey::from_bytes([1; 32]).pseudonym_key().pseudonymize(t, &alice);
        let b = RootKey::from_bytes([2; 32]).pseudonym_key().pseudonymize(t, &alice);
        assert_ne!(a, b);
    }

    #[test]
    fn event_keys_and_pseudonyms_are_domain_separated() {
        let key = RootKey::from_bytes([3; 32]).pseudonym_key();
        let t = TenantId::new(1);
        let p = key.pseudonymize(t, &subject("x"));
        let e = key.event_key(t, &EventId::parse("x".to_owned()).unwrap());
        assert_ne!(p.as_bytes(), e.as_bytes());
    }
}
