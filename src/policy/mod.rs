//! The policy files the service enforces: loaded from a directory or from
//! the copy compiled into the binary, validated (each file and across
//! files), and identified by a digest that is written into the audit log on
//! every load.

mod access;
mod consent;
mod points;
mod retention;

use std::fmt;
use std::path::Path;

pub use access::{AccessPolicy, Permission, RolePolicy};
pub use consent::{ConsentPolicy, Language, Purpose, PurposePolicy};
pub use points::{ExpiryPolicy, PointsPolicy, MAX_EXPIRY_DAYS, MAX_EXPIRY_MONTHS};
pub use retention::{ClassPolicy, DataClass, RetentionPolicy};

use crate::domain::Methodology;
#[cfg(test)]
use crate::domain::Role;

/// The shipped policies, compiled in so `serve` works with no files around.
const EMBEDDED: &[(&str, &str)] = &[
    ("access.toml", include_str!("../../policies/access.toml")),
    ("consent.toml", include_str!("../../policies/consent.toml")),
    ("methodology.toml", include_str!("../../policies/methodology.toml")),
    ("points.toml", include_str!("../../policies/points.toml")),
    ("retention.toml", include_str!("../../policies/retention.toml")),
];

/// The policy files this version knows. Any other `.toml` in the directory is
/// refused rather than silently ignored.
const KNOWN_FILES: &[&str] = &[
    "access.toml",
    "consent.toml",
    "methodology.toml",
    "points.toml",
    "retention.toml",
];

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
    pub consent: ConsentPolicy,
    pub retention: RetentionPolicy,
    pub access: AccessPolicy,
    pub points: PointsPolicy,
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
        let invalid = |file: &str| {
            let file = file.to_owned();
            move |reason| PolicyError::Invalid { file, reason }
        };
        let methodology_text = text("methodology.toml")?;
        let methodology = Methodology::from_toml(&methodology_text).map_err(invalid("methodology.toml"))?;
        let consent = ConsentPolicy::from_toml(&text("consent.toml")?).map_err(invalid("consent.toml"))?;
        let retention = RetentionPolicy::from_toml(&text("retention.toml")?).map_err(invalid("retention.toml"))?;
        let access = AccessPolicy::from_toml(&text("access.toml")?).map_err(invalid("access.toml"))?;
        let points = PointsPolicy::from_toml(&text("points.toml")?).map_err(invalid("points.toml"))?;

        for (purpose, p) in &consent.purposes {
            if !DataClass::ALL.iter().any(|c| c.as_str() == p.retention) {
                return Err(invalid("consent.toml")(format!(
                    "purpose {purpose} has no retention: {:?} is not a class of retention.toml",
                    p.retention
                )));
            }
        }
        // A retry must be recognized for as long as the event it repeats is
        // accepted, or it would be counted twice.
        if retention.days(DataClass::IdempotencyKeys) <= u32::from(methodology.accept_days) {
            return Err(invalid("retention.toml")(format!(
                "idempotency_keys must be kept longer than the {} days events are accepted late",
                methodology.accept_days
            )));
        }
        Ok(Self {
            methodology,
            consent,
            retention,
            access,
            points,
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

    fn shipped_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in EMBEDDED {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn edit(dir: &Path, file: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(dir.join(file), text.replacen(from, to, 1)).unwrap();
    }

    fn refusal(file: &str, from: &str, to: &str) -> String {
        let dir = shipped_copy();
        edit(dir.path(), file, from, to);
        PolicySet::load(Some(dir.path())).unwrap_err().to_string()
    }

    #[test]
    fn digest_changes_with_any_byte_and_unknown_files_are_refused() {
        let dir = shipped_copy();
        let a = PolicySet::load(Some(dir.path())).unwrap().digest;
        edit(dir.path(), "access.toml", "[roles.admin]", "\n[roles.admin]");
        assert_ne!(a, PolicySet::load(Some(dir.path())).unwrap().digest);
        std::fs::write(dir.path().join("extra.toml"), "").unwrap();
        assert!(matches!(
            PolicySet::load(Some(dir.path())),
            Err(PolicyError::Unknown { .. })
        ));
    }

    #[test]
    fn missing_files_are_named() {
        let dir = shipped_copy();
        std::fs::remove_file(dir.path().join("retention.toml")).unwrap();
        let err = PolicySet::load(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("retention.toml"), "{err}");
    }

    #[test]
    fn purposes_need_a_notice_and_a_retention() {
        let err = refusal("consent.toml", "notice = \"Your recorded", "notice = \" \"\n# \"");
        assert!(err.contains("rewards has no notice"), "{err}");
        let err = refusal("consent.toml", "retention = \"records\"", "retention = \"forever\"");
        assert!(err.contains("accounting has no retention"), "{err}");
        let err = refusal("consent.toml", "retention = \"records\"", "# no retention");
        assert!(err.contains("consent.toml"), "{err}");
        let err = refusal("consent.toml", "notice_zh = \"您记录", "notice_zh = \" \"\n# \"");
        assert!(err.contains("rewards has no notice in Chinese"), "{err}");
        let err = refusal("consent.toml", "title_zh = \"获得和兑换积分\"", "");
        assert!(err.contains("title_zh"), "{err}");
        let err = refusal("consent.toml", "[purposes.statistics]", "[purposes.statistic]");
        assert!(err.contains("statistic"), "{err}");
    }

    #[test]
    fn retention_and_access_are_checked() {
        assert!(refusal("retention.toml", "[classes.audit_entries]", "[classes.audit]").contains("audit"));
        let err = refusal("retention.toml", "days = 45", "days = 30");
        assert!(err.contains("idempotency_keys must be kept longer"), "{err}");
        let err = refusal(
            "access.toml",
            "actions = [\"audit.read\"",
            "actions = [\"subjects.read\", \"audit.read\"",
        );
        assert!(err.contains("auditors never see personal data"), "{err}");
        assert!(refusal("access.toml", "\"events.record\"", "\"events.delete\"").contains("access.toml"));
    }

    #[test]
    fn points_expiry_is_at_most_ten_years() {
        let err = refusal("points.toml", "[default]", "[default]\nmonths = 121");
        assert!(
            err.contains("points.toml") && err.contains("at most ten years"),
            "{err}"
        );
        let dir = shipped_copy();
        edit(dir.path(), "points.toml", "[default]", "[default]\nmonths = 120");
        let loaded = PolicySet::load(Some(dir.path())).unwrap();
        assert!(loaded.points.any_expiry());
        assert_ne!(
            loaded.digest,
            PolicySet::load(None).unwrap().digest,
            "the digest covers points.toml"
        );
    }

    #[test]
    fn roles_map_to_permissions() {
        let p = PolicySet::load(None).unwrap();
        assert!(p.access.allows(Role::Platform, Permission::RecordEvents));
        assert!(!p.access.allows(Role::Auditor, Permission::ReadSubjects));
        assert!(!p.access.allows(Role::Admin, Permission::RecordEvents));
    }
}
