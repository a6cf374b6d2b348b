//! The policy files the service enforces: loaded from a directory or from
//! the copy compiled into the binary, validated, and identified by a digest
//! that is written into the audit log on every load.

use std::fmt;
use std::path::Path;

use crate::domain::Methodology;

/// The shipped policies, compiled in so `serve` works with no files around.
const EMBEDDED: &[(&str, &str)] = &[("methodology.toml", include_str!("../../policies/methodology.toml"))];

/// The policy files this version knows. Any other `.toml` in the directory is
/// refused rather than silently ignored.
const KNOWN_FILES: &[&str] = &["methodology.toml"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("policy file {file} is missing from {dir}")]
    Missing { file: String, dir: String },
    #[error("{file} is not a policy file this version knows (known: {known})")]
    Unknown { file: String, known: String },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

/// BLAKE3 digest over every policy file's name and bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PolicyDigest(pub [u8; 32]);

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyDigest({self})")
    }
}

/// A validated, loaded set of policies.
#[derive(Debug)]
pub struct PolicySet {
    pub methodology: Methodology,
    /// The methodology file's text, kept so each version's exact rules can be
    /// stored beside the records computed under them.
    pub methodology_text: String,
    pub digest: PolicyDigest,
    pub source: String,
}

impl PolicySet {
    /// Loads `dir`, or the embedded policies when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<Self, PolicyError> {
        let files: Vec<(String, String)> = match dir {
            None => EMBEDDED
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            Some(dir) => read_dir(dir)?,
        };
        let source = dir.map_or_else(|| "embedded".to_owned(), |d| d.display().to_string());
        let text = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| PolicyError::Missing {
                    file: name.to_owned(),
                    dir: source.clone(),
                })
        };
        let methodology_text = text("methodology.toml")?;
        let methodology = Methodology::from_toml(&methodology_text).map_err(|reason| PolicyError::Invalid {
            file: "methodology.toml".into(),
            reason,
        })?;
        Ok(Self {
            methodology,
            methodology_text,
            digest: digest(&files),
            source,
        })
    }
}

fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".toml") {
            continue;
        }
        if !KNOWN_FILES.contains(&name.as_str()) {
            return Err(PolicyError::Unknown {
                file: name,
                known: KNOWN_FILES.join(", "),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        files.push((name, text));
    }
    Ok(files)
}

fn digest(files: &[(String, String)]) -> PolicyDigest {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut hasher = blake3::Hasher::new_derive_key("carbon-ledger 2026 policy set v1");
    for (name, text) in sorted {
        hasher.update(&(name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    PolicyDigest(*hasher.finalize().as_bytes())
}

/// The shipped methodology; for tests and tools.
pub fn default_methodology() -> Methodology {
    PolicySet::load(None)
        .expect("the embedded policies are valid")
        .methodology
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_and_directory_copies_agree() {
        let embedded = PolicySet::load(None).unwrap();
        let dir = PolicySet::load(Some(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")))).unwrap();
        assert_eq!(embedded.digest, dir.digest);
    }

    #[test]
    fn digest_changes_with_any_byte_and_unknown_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = EMBEDDED[0].1;
        std::fs::write(dir.path().join("methodology.toml"), text).unwrap();
        let a = PolicySet::load(Some(dir.path())).unwrap().digest;
        std::fs::write(dir.path().join("methodology.toml"), format!("{text}\n")).unwrap();
        assert_ne!(a, PolicySet::load(Some(dir.path())).unwrap().digest);
        std::fs::write(dir.path().join("extra.toml"), "").unwrap();
        assert!(matches!(
            PolicySet::load(Some(dir.path())),
            Err(PolicyError::Unknown { .. })
        ));
    }

    #[test]
    fn missing_methodology_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = PolicySet::load(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("methodology.toml"), "{err}");
    }
}
