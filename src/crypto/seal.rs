//! Sealing of record contents.
//!
//! Wire format of a sealed blob: `nonce (12 bytes) || AES-256-GCM ciphertext
//! and tag`. The key is the subject's record key for the key version stored
//! beside the blob; the associated data binds the blob to its record id,
//! the subject's ledger reference and the key version, so a blob copied onto another row fails
//! to open; it also binds the record's kind and day, which are stored in
//! clear beside it, so editing those columns is detected too. Nonces are random: a subject's key seals few records, far below
//! the 2^32 messages a random 96-bit nonce allows.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::keys::SubjectKeys;
use super::pseudonym::SubjectRef;
use super::random_bytes;

const NONCE_LEN: usize = 12;

/// What a sealed record is bound to.
#[derive(Clone, Copy)]
pub struct RecordAad<'a> {
    pub record_id: &'a [u8; 16],
    pub subject: &'a SubjectRef,
    pub key_version: u32,
    /// The kind and day stored in clear beside the ciphertext.
    pub kind: &'a str,
    pub day: i32,
}

impl RecordAad<'_> {
    /// `"carbon-ledger/r1" || record id || subject || key version (u32) ||
    /// day (i32) || kind`, integers big-endian; the kind, last, needs no
    /// length prefix.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(76 + self.kind.len());
        out.extend_from_slice(b"carbon-ledger/r1");
        out.extend_from_slice(self.record_id);
        out.extend_from_slice(self.subject.as_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.day.to_be_bytes());
        out.extend_from_slice(self.kind.as_bytes());
        out
    }
}

/// Opening failed. Deliberately without detail: wrong key, wrong row and
/// tampering look the same.
#[derive(Debug, thiserror::Error)]
#[error("sealed record failed authentication")]
pub struct OpenError;

pub fn seal(keys: &SubjectKeys, aad: &RecordAad<'_>, plaintext: &[u8]) -> Vec<u8> {
    debug_assert_eq!(keys.key_version, aad.key_version);
    let cipher = Aes256Gcm::new_from_slice(keys.record_key.as_ref()).expect("32-byte key");
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let aad = aad.encode();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

pub fn open(keys: &SubjectKeys, aad: &RecordAad<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    // The key of the version the record says it was sealed under (bound
    // into the associated data): the current one or an older one in use.
    let Some(key) = keys.record_key_of(aad.key_version) else {
        return Err(OpenError);
    };
    if sealed.len() < NONCE_LEN {
        return Err(OpenError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad.encode(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{RootKey, SubjectSalt};

    fn fixture() -> (RootKey, SubjectRef, SubjectRef) {
        (
            RootKey::from_bytes([9; 32]),
            SubjectRef::from_bytes([1; 32]),
            SubjectRef::from_bytes([2; 32]),
        )
    }

    #[test]
    fn round_trip() {
        let (root, a, _) = fixture();
        let keys = root.subject_keys(&SubjectSalt::generate(), 1);
        let aad = RecordAad {
            record_id: &[1; 16],
            subject: &a,
            key_version: 1,
            kind: "clean_plate",
            day: 20_000,
        };
        let sealed = seal(&keys, &aad, b"coarse record");
        assert_eq!(open(&keys, &aad, &sealed).unwrap().as_slice(), b"coarse record");
        assert!(!sealed.windows(6).any(|w| w == b"coarse"));
    }

    #[test]
    fn wrong_binding_or_key_or_tampering_fails() {
        let (root, a, b) = fixture();
        let salt = SubjectSalt::generate();
        let keys = root.subject_keys(&salt, 1);
        let aad = RecordAad {
            record_id: &[1; 16],
            subject: &a,
            key_version: 1,
            kind: "clean_plate",
            day: 20_000,
        };
        let sealed = seal(&keys, &aad, b"x");

        let other_record = RecordAad {
            record_id: &[2; 16],
            ..aad
        };
        let other_subject = RecordAad { subject: &b, ..aad };
        assert!(open(&keys, &other_record, &sealed).is_err());
        assert!(open(&keys, &other_subject, &sealed).is_err());
        assert!(open(&keys, &RecordAad { kind: "walking", ..aad }, &sealed).is_err());
        assert!(open(&keys, &RecordAad { day: 20_001, ..aad }, &sealed).is_err());

        let other_salt_keys = root.subject_keys(&SubjectSalt::generate(), 1);
        assert!(open(&other_salt_keys, &aad, &sealed).is_err());

        let v2 = root.subject_keys(&salt, 2);
        assert!(open(&v2, &RecordAad { key_version: 2, ..aad }, &sealed).is_err());

        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&keys, &aad, &flipped).is_err());
        assert!(open(&keys, &aad, &sealed[..5]).is_err());
    }

    /// Frozen vector: the wire format and key derivation must not drift, or
    /// every stored record becomes unreadable.
    #[test]
    fn frozen_vector_opens() {
        let root = RootKey::from_bytes([0x42; 32]);
        let salt = SubjectSalt::from_slice(&[0x24; 32]).unwrap();
        let keys = root.subject_keys(&salt, 1);
        let subject = SubjectRef::from_stored(&[0x11; 32]).unwrap();
        let aad = RecordAad {
            record_id: &[0x22; 16],
            subject: &subject,
            key_version: 1,
            kind: "clean_plate",
            day: 20_000,
        };
        let sealed = hex::decode(FROZEN).unwrap();
        assert_eq!(open(&keys, &aad, &sealed).unwrap().as_slice(), b"frozen");
    }

    const FROZEN: &str = "a598e576978fe8d8fca68d564e3f179c9e829819a5e67bcf70d6de542adcdbaafac1";
}
