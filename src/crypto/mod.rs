//! Key material and the three cryptographic operations the ledger performs:
//! deriving keys from the root key, pseudonymizing external ids, and sealing
//! record contents.
//!
//! Key hierarchy (see SECURITY.md):
//!
//! ```text
//! root key (32 B, key file; never in the database)
//!  ├─ HKDF "pseudonym" ....... keyed-BLAKE3 key for subject ids and event ids
//!  └─ HKDF(salt = subject salt)
//!       ├─ "record/k{version}" AES-256-GCM key for that subject's records
//!       ├─ "ledger-ref" ...... the subject's reference in the ledger tables
//!       └─ "audit-ref" ....... the subject's reference in the audit log
//! ```

mod keyring;
mod keys;
mod pseudonym;
mod seal;

pub use keyring::{keyring_path, Keyring};
pub use keys::{KeyError, RootKey, SubjectKeys, SubjectSalt};
pub use pseudonym::{AuditRef, EventKey, Pseudonym, PseudonymKey, SubjectRef};
pub use seal::{open, seal, OpenError, RecordAad};

/// Fills a fresh array from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS RNG failing is not recoverable: refuse to run without entropy.
    getrandom::getrandom(&mut out).expect("the operating system's random number generator failed");
    out
}
