//! `policies/retention.toml`: how long each class of data lives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    Records,
    LedgerEntries,
    IdempotencyKeys,
    ConsentHistory,
    AuditEntries,
}

impl DataClass {
    pub const ALL: [DataClass; 5] = [
        DataClass::Records,
        DataClass::LedgerEntries,
        DataClass::IdempotencyKeys,
        DataClass::ConsentHistory,
        DataClass::AuditEntries,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Records => "records",
            DataClass::LedgerEntries => "ledger_entries",
            DataClass::IdempotencyKeys => "idempotency_keys",
            DataClass::ConsentHistory => "consent_history",
            DataClass::AuditEntries => "audit_entries",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPolicy {
    pub days: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub classes: BTreeMap<DataClass, ClassPolicy>,
}

impl RetentionPolicy {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: RetentionPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        for class in DataClass::ALL {
            let Some(c) = policy.classes.get(&class) else {
                return Err(format!("data class {} has no retention period", class.as_str()));
            };
            if c.days == 0 || c.days > 36_500 {
                return Err(format!("{}: days must be between 1 and 36500", class.as_str()));
            }
            if c.reason.trim().is_empty() {
                return Err(format!("{}: give the reason for the period", class.as_str()));
            }
        }
        Ok(policy)
    }

    pub fn days(&self, class: DataClass) -> u32 {
        self.classes[&class].days
    }
}
