use std::fmt;

use zeroize::Zeroizing;

/// A tenant (platform or auditor) of this service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(i64);

impl TenantId {
    pub fn new(id: i64) -> Self {
        Self(id)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const MAX_ID_LEN: usize = 128;

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// A platform's own id for one of its users. It is personal data: it has no
/// `Display`, its `Debug` is redacted, it is zeroized on drop, and the only
/// thing done with it is pseudonymization.
pub struct SubjectId(Zeroizing<String>);

impl SubjectId {
    /// `None` when empty, longer than 128 bytes or holding control characters.
    pub fn parse(id: String) -> Option<Self> {
        let id = Zeroizing::new(id);
        valid_id(&id).then_some(Self(id))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectId(<redacted>)")
    }
}

/// A platform's id for one event; the key of idempotent retries. Treated as
/// possibly personal (platforms choose it): only its keyed hash is stored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(id: String) -> Option<Self> {
        valid_id(&id).then_some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_redacted() {
        assert!(SubjectId::parse(String::new()).is_none());
        assert!(SubjectId::parse("a\nb".into()).is_none());
        assert!(SubjectId::parse("x".repeat(129)).is_none());
        let id = SubjectId::parse("13800138000-alice".into()).unwrap();
        assert!(!format!("{id:?}").contains("alice"));
        let ev = EventId::parse("ev-alice-1".into()).unwrap();
        assert!(!format!("{ev:?}").contains("alice"));
    }
}

/// What a tenant may do, by kind of caller; `policies/access.toml` maps
/// roles to actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A platform reporting its users' behaviours and serving them.
    Platform,
    /// An auditor: the audit log and aggregates, never personal data.
    Auditor,
    /// An operator's tenant for administrative actions.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Platform, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Stable byte for the audit log's binary encoding.
    pub fn to_code(self) -> u8 {
        match self {
            Role::Platform => 1,
            Role::Auditor => 2,
            Role::Admin => 3,
        }
    }

    pub fn from_audit_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.to_code() == code)
    }
}
