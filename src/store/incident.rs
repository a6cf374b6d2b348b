//! The incident query: whose data one tenant (or a leaked key of it)
//! touched between two days, read from the verified audit log, for a
//! breach notice (PIPL Art. 57, GDPR Art. 33–34). Subjects appear as their
//! audit references, never as ids; a platform's own list of its user ids
//! is turned into the same references (pseudonym, then key, then HKDF) to
//! say which of them were touched.

use std::collections::BTreeMap;

use super::{audit_log, Store, StoreError};
use crate::audit::{Action, AuditEntry, ReadScope, VerifyError};
use crate::crypto::AuditRef;
use crate::domain::{Day, SubjectId, TenantId};

/// What one subject's entries in the window record.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubjectAccesses {
    /// Entries per kind of access, e.g. `read_records` or `record_written`.
    pub kinds: BTreeMap<&'static str, u32>,
    pub first_day: String,
    pub last_day: String,
}

/// The accesses of one tenant in a window of days.
#[derive(Clone, Debug, Default)]
pub struct AccessReport {
    /// How many entries the verified log holds.
    pub entries_verified: u64,
    /// How many of the oldest were emptied by retention: accesses they
    /// recorded can no longer be listed.
    pub emptied: u64,
    /// By audit reference.
    pub subjects: BTreeMap<[u8; 16], SubjectAccesses>,
    /// The tenant's entries in the window that concern no one person
    /// (e.g. reading the audit log or reports), by kind.
    pub other: BTreeMap<&'static str, u32>,
}

/// The kind of access an entry records.
pub fn kind_of(action: &Action) -> &'static str {
    match action {
        Action::RecordWritten { .. } => "record_written",
        Action::SubjectRead { scope, .. } => match scope {
            ReadScope::Account => "read_account",
            ReadScope::Records => "read_records",
            ReadScope::Consents => "read_consents",
            ReadScope::Export => "export",
            ReadScope::LinkedAccount => "read_linked_account",
            ReadScope::Accesses => "read_accesses",
        },
        Action::ConsentChanged { granted: true, .. } => "consent_granted",
        Action::ConsentChanged { granted: false, .. } => "consent_withdrawn",
        Action::NoticeLanguage { .. } => "consent_notice_language",
        Action::WithdrawnDataDeleted { .. } => "withdrawn_data_deleted",
        Action::SubjectErased { .. } => "erased",
        Action::PolicyLoaded { .. } => "policy_loaded",
        Action::TenantCreated { .. } => "tenant_created",
        Action::RetentionSwept(_) => "retention_swept",
        Action::KeysReshredded { .. } => "keys_reshredded",
        Action::OrphansPurged { .. } => "orphans_purged",
        Action::RootKeyRotated { .. } => "root_key_rotated",
        Action::RecordsResealed { .. } => "records_resealed",
        Action::RootKeyRetired { .. } => "root_key_retired",
        Action::TenantKeyRotated { .. } => "tenant_key_rotated",
        Action::PointsRedeemed { .. } => "points_redeemed",
        Action::PointsRefunded { .. } => "points_refunded",
        Action::PointsExpired { .. } => "points_expired",
        Action::RedemptionsRead { .. } => "read_redemptions",
        Action::PointsTransferred { .. } => "points_transferred",
        Action::LinkCodeIssued { .. } => "link_code_issued",
        Action::ConsoleLinkIssued { .. } => "console_link_issued",
        Action::ConsoleOpened { .. } => "console_opened",
        Action::AccountsLinked { .. } => "accounts_linked",
        Action::AccountsUnlinked { .. } => "accounts_unlinked",
        Action::CountedElsewhere { .. } => "counted_elsewhere",
    }
}

impl Store {
    /// The accesses `tenant` made from `since` to `until` (whole UTC days,
    /// both included), gathered while the whole log is verified: a log that
    /// does not verify gives no answer but the entry that failed.
    pub async fn audit_accesses(
        &self,
        tenant: TenantId,
        since: Day,
        until: Day,
    ) -> Result<Result<AccessReport, VerifyError>, StoreError> {
        let (from, to) = (i64::from(since.days()) * 86_400, (i64::from(until.days()) + 1) * 86_400);
        let mut report = AccessReport::default();
        let mut observe = |entry: &AuditEntry| {
            if entry.actor != Some(tenant) || entry.at < from || entry.at >= to {
                return;
            }
            let kind = kind_of(&entry.action);
            let Some(subject) = entry.action.subject() else {
                *report.other.entry(kind).or_default() += 1;
                return;
            };
            let day = Day::from_days(entry.at.div_euclid(86_400)).map_or_else(String::new, |d| d.to_string());
            let s = report.subjects.entry(*subject.as_bytes()).or_default();
            *s.kinds.entry(kind).or_default() += 1;
            if s.first_day.is_empty() {
                s.first_day = day.clone();
            }
            s.last_day = day;
        };
        let check =
            audit_log::verify_observing(&self.ledger, self.engine, &self.signer.verifier(), &[], &mut observe).await?;
        Ok(check.map(|log| AccessReport {
            entries_verified: log.entries,
            emptied: log.emptied,
            ..report
        }))
    }

    /// The audit reference of each of `tenant`'s user ids, derived as the
    /// service derives it; `None` for one it holds no key for (never
    /// enrolled, or erased: an erased person's entries link to nobody).
    pub async fn audit_refs_of(
        &self,
        tenant: TenantId,
        ids: &[SubjectId],
    ) -> Result<Vec<Option<AuditRef>>, StoreError> {
        let mut refs = Vec::with_capacity(ids.len());
        for id in ids {
            let pseudonym = self.pseudonyms.pseudonymize(tenant, id);
            let r = self
                .key_of(&pseudonym)
                .await?
                .map(|key| self.subject_keys(&key.salt).audit_ref);
            refs.push(r);
        }
        Ok(refs)
    }
}
