//! `policies/access.toml`: which role may do which action.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::Role;

/// The actions the access layer checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "events.record")]
    RecordEvents,
    #[serde(rename = "subjects.read")]
    ReadSubjects,
    #[serde(rename = "consents.read")]
    ReadConsents,
    #[serde(rename = "consents.manage")]
    ManageConsents,
    #[serde(rename = "subjects.export")]
    ExportSubjects,
    #[serde(rename = "subjects.erase")]
    EraseSubjects,
    /// Redeem and refund a person's points.
    #[serde(rename = "points.redeem")]
    RedeemPoints,
    /// Link a person's accounts across platforms, unlink them, and read the
    /// consolidated view.
    #[serde(rename = "subjects.link")]
    LinkSubjects,
    /// Every audit entry, checkpoints and proofs.
    #[serde(rename = "audit.read")]
    ReadAudit,
    /// The tenant's own audit entries, checkpoints and proofs.
    #[serde(rename = "audit.read_own")]
    ReadOwnAudit,
    /// Reduction reports of every tenant.
    #[serde(rename = "reports.read")]
    ReadReports,
    /// The tenant's own reduction reports.
    #[serde(rename = "reports.read_own")]
    ReadOwnReports,
}

impl Permission {
    /// Whether the action touches personal data (never an auditor's).
    pub fn is_personal(self) -> bool {
        matches!(
            self,
            Permission::RecordEvents
                | Permission::ReadSubjects
                | Permission::ReadConsents
                | Permission::ManageConsents
                | Permission::ExportSubjects
                | Permission::EraseSubjects
                | Permission::RedeemPoints
                | Permission::LinkSubjects
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Permission::RecordEvents => "record behaviours",
            Permission::ReadSubjects => "read accounts and records",
            Permission::ReadConsents => "read consents",
            Permission::ManageConsents => "grant or withdraw consents",
            Permission::ExportSubjects => "export a person's data",
            Permission::EraseSubjects => "erase a person's data",
            Permission::RedeemPoints => "redeem or refund points",
            Permission::LinkSubjects => "link accounts across platforms",
            Permission::ReadAudit | Permission::ReadOwnAudit => "read the audit log",
            Permission::ReadReports | Permission::ReadOwnReports => "read reduction reports",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicy {
    pub description: String,
    pub actions: BTreeSet<Permission>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    pub roles: BTreeMap<Role, RolePolicy>,
}

impl AccessPolicy {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: AccessPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        for role in Role::ALL {
            if !policy.roles.contains_key(&role) {
                return Err(format!("role {} is missing", role.as_str()));
            }
        }
        if let Some(p) = policy.roles[&Role::Auditor].actions.iter().find(|p| p.is_personal()) {
            return Err(format!(
                "auditors never see personal data: remove {p:?} from roles.auditor"
            ));
        }
        Ok(policy)
    }

    pub fn allows(&self, role: Role, permission: Permission) -> bool {
        self.roles.get(&role).is_some_and(|r| r.actions.contains(&permission))
    }
}
