//! Root key versions after the first. Version 1 is the root key file itself
//! and stays there for good: the pseudonym key, the subjects' ledger and
//! audit references and the checkpoint signing key derive from it, and
//! none of them can change (the platforms' user ids, which pseudonyms are
//! computed from, are never stored). Later versions only seal records.
//!
//! They live in a keyring file beside the root key file (`root.key` ->
//! `root.keyring`), one `<version> <64 hex>` line each, written atomically
//! (a private temporary file, fsynced, then renamed over the old one) and
//! readable by its owner only. The database holds only their fingerprints.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use super::keys::{KeyError, RootKey};

/// Root keys of versions 2 and up, zeroized on drop (each `RootKey` is).
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<u32, RootKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where the keyring of `root_key_file` lives: beside it, extension `keyring`.
pub fn keyring_path(root_key_file: &Path) -> PathBuf {
    let path = root_key_file.with_extension("keyring");
    if path == root_key_file {
        // A root key file named `*.keyring` keeps its own name.
        return PathBuf::from(format!("{}.versions", root_key_file.display()));
    }
    path
}

impl Keyring {
    /// Reads the keyring file; a missing file is an empty keyring.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let malformed = || KeyError::Malformed {
            path: path.display().to_string(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
        let mut keys = BTreeMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (version, hex_key) = line.split_once(' ').ok_or_else(malformed)?;
            let version: u32 = version.parse().map_err(|_| malformed())?;
            let mut key = [0u8; 32];
            if version < 2 || hex::decode_to_slice(hex_key.trim(), &mut key).is_err() {
                key.zeroize();
                return Err(malformed());
            }
            if keys.insert(version, RootKey::from_bytes(key)).is_some() {
                return Err(malformed());
            }
            key.zeroize();
        }
        Ok(Self { keys })
    }

    /// Writes the keyring atomically, mode 0600: readers see the old file
    /// or the new one, never a part.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("keyring");
        let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(super::random_bytes::<6>())));
        let mut text = Zeroizing::new(String::from(
            "# carbon-ledger root key versions 2 and up (version 1 is the root key file); keep with it, back up apart\n",
        ));
        for (version, key) in &self.keys {
            text.push_str(&format!("{version} "));
            let hex_key = Zeroizing::new(key.to_hex());
            text.push_str(&hex_key);
            text.push('\n');
        }
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename is durable once the directory is.
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn get(&self, version: u32) -> Option<&RootKey> {
        self.keys.get(&version)
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Adds (or replaces) a version.
    pub fn insert(&mut self, version: u32, key: RootKey) {
        self.keys.insert(version, key);
    }

    /// Drops a version's key (zeroized); whether it was there.
    pub fn remove(&mut self, version: u32) -> bool {
        self.keys.remove(&version).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_privately_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_path(&dir.path().join("root.key"));
        assert_eq!(path, dir.path().join("root.keyring"));
        assert_eq!(
            keyring_path(Path::new("k.keyring")),
            PathBuf::from("k.keyring.versions")
        );
        assert_eq!(keyring_path(Path::new("/s/key")), PathBuf::from("/s/key.keyring"));
        assert!(Keyring::load(&path).unwrap().versions().next().is_none());
        let mut ring = Keyring::default();
        ring.insert(2, RootKey::from_bytes([2; 32]));
        ring.insert(3, RootKey::from_bytes([3; 32]));
        ring.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut again = Keyring::load(&path).unwrap();
        assert_eq!(again.versions().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            again.get(3).unwrap().fingerprint(),
            RootKey::from_bytes([3; 32]).fingerprint()
        );
        assert!(again.remove(2));
        again.save(&path).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().versions().collect::<Vec<_>>(), vec![3]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(!format!("{again:?}").contains("0303"));
    }

    #[test]
    fn malformed_keyrings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.keyring");
        let cases = [
            "2 nothex".to_owned(),
            format!("1 {}", "00".repeat(32)),
            "x 00".to_owned(),
            "2".to_owned(),
        ];
        for text in cases {
            std::fs::write(&path, text).unwrap();
            assert!(matches!(Keyring::load(&path), Err(KeyError::Malformed { .. })));
        }
        let line = format!("2 {}\n", "ab".repeat(32));
        std::fs::write(&path, line.repeat(2)).unwrap();
        assert!(Keyring::load(&path).is_err(), "a version twice is refused");
    }
}
