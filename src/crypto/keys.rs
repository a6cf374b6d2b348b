use std::fmt;
use std::io::Write;
use std::path::Path;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::pseudonym::{AuditRef, PseudonymKey, SubjectRef};
use super::random_bytes;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the root key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot create the root key file {path}: {source}")]
    Create { path: String, source: std::io::Error },
    #[error("the root key file {path} must hold 32 bytes as 64 hexadecimal characters")]
    Malformed { path: String },
}

/// The 32-byte secret every other key is derived from. It never enters the
/// database; only its fingerprint does.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RootKey([u8; 32]);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Loads the key file; a missing file is an error.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(path, bytes),
            Err(source) => Err(KeyError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Loads the key file, or creates it (mode 0600) when it does not exist.
    /// Returns whether the key was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok((Self::parse(path, bytes)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.write_new(path).map_err(|source| KeyError::Create {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok((key, true))
            }
            Err(source) => Err(KeyError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
        let mut key = [0u8; 32];
        if hex::decode_to_slice(text, &mut key).is_err() {
            key.zeroize();
            return Err(KeyError::Malformed {
                path: path.display().to_string(),
            });
        }
        Ok(Self(key))
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        let mut text = Zeroizing::new(hex::encode(self.0));
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }

    /// A public fingerprint, stored in the database so that starting with a
    /// different key is refused instead of silently producing garbage.
    pub fn fingerprint(&self) -> String {
        let digest = blake3::derive_key("carbon-ledger 2026 root key fingerprint v1", &self.0);
        hex::encode(&digest[..16])
    }

    fn expand(&self, info: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(info.as_bytes(), out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    pub fn pseudonym_key(&self) -> PseudonymKey {
        PseudonymKey::new(self.expand("carbon-ledger/v1/pseudonym"))
    }

    /// The seed of the audit checkpoint signing key.
    pub fn audit_signing_seed(&self) -> Zeroizing<[u8; 32]> {
        self.expand("carbon-ledger/v1/audit-signing")
    }

    /// Keys of one subject: HKDF with the subject's random salt, so deleting
    /// the salt makes every copy of that subject's ciphertext unreadable.
    /// Everything from this (version 1) root key.
    pub fn subject_keys(&self, salt: &SubjectSalt, key_version: u32) -> SubjectKeys {
        self.subject_keys_under(salt, (key_version, self), &[])
    }

    /// Keys of one subject whose records are sealed under `sealing` (a key
    /// version and its root key) and may still be sealed under the versions
    /// in `also`. The subject's references always derive from this, the
    /// version 1 root key: they name the subject, and must not change with
    /// a rotation.
    pub fn subject_keys_under(
        &self,
        salt: &SubjectSalt,
        sealing: (u32, &RootKey),
        also: &[(u32, &RootKey)],
    ) -> SubjectKeys {
        let hk = Hkdf::<Sha256>::new(Some(&salt.0), &self.0);
        let mut audit_ref = [0u8; 16];
        hk.expand(b"carbon-ledger/v1/audit-ref", &mut audit_ref)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        let mut ledger_ref = [0u8; 32];
        hk.expand(b"carbon-ledger/v1/ledger-ref", &mut ledger_ref)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SubjectKeys {
            record_key: sealing.1.record_key(salt, sealing.0),
            key_version: sealing.0,
            older: also
                .iter()
                .filter(|(v, _)| *v != sealing.0)
                .map(|(v, root)| (*v, root.record_key(salt, *v)))
                .collect(),
            audit_ref: AuditRef::from_bytes(audit_ref),
            ledger_ref: SubjectRef::from_bytes(ledger_ref),
        }
    }

    /// The AES-256-GCM key of the subject's records sealed under
    /// `key_version`, whose root key this is.
    fn record_key(&self, salt: &SubjectSalt, key_version: u32) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(&salt.0), &self.0);
        let mut record_key = Zeroizing::new([0u8; 32]);
        hk.expand(
            format!("carbon-ledger/v1/record/k{key_version}").as_bytes(),
            record_key.as_mut(),
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        record_key
    }

    /// The key as the key files hold it.
    pub(super) fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A subject's random salt, kept in the key store, apart from the records.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SubjectSalt([u8; 32]);

impl fmt::Debug for SubjectSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectSalt(<redacted>)")
    }
}

impl SubjectSalt {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The keys of one subject, derived on demand and dropped (zeroized) after use.
pub struct SubjectKeys {
    /// The record key of `key_version`, the version new seals use.
    pub(super) record_key: Zeroizing<[u8; 32]>,
    pub key_version: u32,
    /// Record keys of older versions still in use, for opening only.
    pub(super) older: Vec<(u32, Zeroizing<[u8; 32]>)>,
    pub audit_ref: AuditRef,
    pub ledger_ref: SubjectRef,
}

impl SubjectKeys {
    /// The record key of `key_version`, if these keys hold it.
    pub(super) fn record_key_of(&self, key_version: u32) -> Option<&[u8; 32]> {
        if key_version == self.key_version {
            return Some(&self.record_key);
        }
        self.older.iter().find(|(v, _)| *v == key_version).map(|(_, k)| &**k)
    }

    /// Whether these keys can open records sealed under `key_version`.
    pub fn opens(&self, key_version: u32) -> bool {
        self.record_key_of(key_version).is_some()
    }
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("record_key", &"<redacted>")
            .field("key_version", &self.key_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let (key, created) = RootKey::load_or_create(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = RootKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key.fingerprint(), again.fingerprint());
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            RootKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let key = RootKey::from_bytes([7; 32]);
        let salt = SubjectSalt::generate();
        let keys = key.subject_keys(&salt, 1);
        for text in [format!("{key:?}"), format!("{salt:?}"), format!("{keys:?}")] {
            assert!(text.contains("redacted"), "{text}");
            assert!(!text.contains("7, 7"), "{text}");
        }
    }

    #[test]
    fn subject_keys_depend_on_salt_and_version() {
        let key = RootKey::from_bytes([1; 32]);
        let (a, b) = (SubjectSalt::generate(), SubjectSalt::generate());
        assert_ne!(*key.subject_keys(&a, 1).record_key, *key.subject_keys(&b, 1).record_key);
        assert_ne!(*key.subject_keys(&a, 1).record_key, *key.subject_keys(&a, 2).record_key);
        assert_ne!(key.subject_keys(&a, 1).audit_ref, key.subject_keys(&b, 1).audit_ref);
        assert_eq!(key.subject_keys(&a, 1).audit_ref, key.subject_keys(&a, 2).audit_ref);
    }

    #[test]
    fn a_new_root_version_changes_only_the_record_key() {
        let (v1, v2) = (RootKey::from_bytes([1; 32]), RootKey::from_bytes([2; 32]));
        let salt = SubjectSalt::generate();
        let old = v1.subject_keys(&salt, 1);
        let new = v1.subject_keys_under(&salt, (2, &v2), &[(1, &v1)]);
        assert_eq!(old.ledger_ref, new.ledger_ref);
        assert_eq!(old.audit_ref, new.audit_ref);
        assert_eq!(new.key_version, 2);
        assert_eq!(new.record_key_of(1), old.record_key_of(1));
        assert_ne!(new.record_key_of(2), v1.subject_keys(&salt, 2).record_key_of(2));
        assert!(new.opens(1) && new.opens(2) && !new.opens(3) && !old.opens(2));
    }
}
