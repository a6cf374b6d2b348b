//! `policies/consent.toml`: the purposes personal data is processed for.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The purposes this service processes personal data for. The set is fixed
/// by what the code does; the policy file gives each its notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Record behaviours and compute reductions; necessary for an account.
    Accounting,
    /// Award and redeem points.
    Rewards,
    /// Link accounts across platforms.
    Interconnection,
    /// Inclusion in aggregate reports.
    Statistics,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Accounting,
        Purpose::Rewards,
        Purpose::Interconnection,
        Purpose::Statistics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Accounting => "accounting",
            Purpose::Rewards => "rewards",
            Purpose::Interconnection => "interconnection",
            Purpose::Statistics => "statistics",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Stable byte for the audit log's binary encoding.
    pub fn code(self) -> u8 {
        match self {
            Purpose::Accounting => 1,
            Purpose::Rewards => 2,
            Purpose::Interconnection => 3,
            Purpose::Statistics => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposePolicy {
    pub title: String,
    /// The text the platform shows the person.
    pub notice: String,
    /// Raised whenever the notice changes; older consents stop counting.
    pub notice_version: u32,
    /// Whether the account cannot exist without it.
    pub necessary: bool,
    /// The retention class (retention.toml) of the data held for it.
    pub retention: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentPolicy {
    pub purposes: BTreeMap<Purpose, PurposePolicy>,
}

impl ConsentPolicy {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: ConsentPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        for purpose in Purpose::ALL {
            let Some(p) = policy.purposes.get(&purpose) else {
                return Err(format!("purpose {purpose} is missing"));
            };
            if p.notice.trim().is_empty() || p.title.trim().is_empty() {
                return Err(format!("purpose {purpose} has no notice"));
            }
            if p.notice_version == 0 {
                return Err(format!("purpose {purpose}: notice_version starts at 1"));
            }
            if p.retention.trim().is_empty() {
                return Err(format!("purpose {purpose} has no retention"));
            }
        }
        if !policy.purposes[&Purpose::Accounting].necessary {
            return Err("purpose accounting is necessary for an account".into());
        }
        Ok(policy)
    }

    pub fn get(&self, purpose: Purpose) -> &PurposePolicy {
        // `from_toml` refuses a file without every purpose.
        &self.purposes[&purpose]
    }
}
