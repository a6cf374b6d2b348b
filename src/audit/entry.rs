//! Canonical binary encoding of an audit entry, version 1.
//!
//! ```text
//! entry   = version:u8(=1) seq:u64 at:i64 actor:i64 tag:u8 body
//! string  = len:u16 utf8-bytes
//! body    = per tag, fields in the order of the enum below
//! ```
//!
//! Integers are big-endian; `actor` 0 is the operator (a command run on the
//! server). Decoding is strict: trailing bytes, unknown tags or versions are
//! errors, so one entry has exactly one encoding.

use crate::crypto::AuditRef;
use crate::domain::{Day, Role, TenantId};
use crate::policy::Purpose;

const VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    /// Unix seconds when the entry was appended.
    pub at: i64,
    /// The acting tenant; `None` for the operator.
    pub actor: Option<TenantId>,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadScope {
    Account,
    Records,
    Consents,
    Export,
    /// The consolidated view of linked accounts.
    LinkedAccount,
    /// The audit entries that concern the person (the console's "who
    /// touched my data").
    Accesses,
}

/// How many rows of each class an erasure purged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureCounts {
    pub records: u32,
    pub ledger_entries: u32,
    pub idempotency_keys: u32,
    pub consents: u32,
    pub consent_history: u32,
}

impl ReadScope {
    fn code(self) -> u8 {
        match self {
            ReadScope::Account => 1,
            ReadScope::Records => 2,
            ReadScope::Consents => 3,
            ReadScope::Export => 4,
            ReadScope::LinkedAccount => 5,
            ReadScope::Accesses => 6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            ReadScope::Account,
            ReadScope::Records,
            ReadScope::Consents,
            ReadScope::Export,
            ReadScope::LinkedAccount,
            ReadScope::Accesses,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

/// How many rows of each class a retention sweep purged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub records: u64,
    pub ledger_entries: u64,
    pub idempotency_keys: u64,
    pub consent_history: u64,
    pub audit_entries: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Policies were loaded (at start-up): their digest and methodology.
    PolicyLoaded {
        digest: [u8; 32],
        methodology_version: String,
    },
    TenantCreated {
        tenant: TenantId,
        role: Role,
        name: String,
    },
    /// A behaviour was recorded with the credit it earned.
    RecordWritten {
        subject: AuditRef,
        record_id: [u8; 16],
        kind: String,
        variant: Option<String>,
        day: Day,
        reduction_mg: i64,
        points: i64,
        methodology_version: String,
        capped: bool,
    },
    /// Personal data was read.
    SubjectRead {
        subject: AuditRef,
        scope: ReadScope,
        items: u32,
    },
    /// Consent was granted (`kinds`: comma-separated, `*` for all) or withdrawn.
    ConsentChanged {
        subject: AuditRef,
        purpose: Purpose,
        granted: bool,
        notice_version: u32,
        kinds: String,
    },
    /// Data held only for a withdrawn purpose was deleted; the points of the
    /// deleted ledger entries were kept in one carried-over entry.
    WithdrawnDataDeleted {
        subject: AuditRef,
        purpose: Purpose,
        records: u32,
        ledger_entries: u32,
    },
    /// The retention sweeper purged data past its period.
    RetentionSwept(SweepCounts),
    /// A person was erased: their key (named by its random id, as in the
    /// tombstone list) was deleted, then their rows.
    SubjectErased {
        subject: AuditRef,
        key_id: [u8; 16],
        counts: ErasureCounts,
    },
    /// Keys named in the tombstone list were found again (a restored key
    /// store) and deleted.
    KeysReshredded {
        keys: u32,
    },
    /// Rows whose subject's key is gone (an erasure interrupted between
    /// shredding and purging, or re-shredded keys) were purged.
    OrphansPurged {
        rows: u64,
    },
    /// A new root key version (named by its public fingerprint) was
    /// introduced; new records are sealed under it.
    RootKeyRotated {
        version: u32,
        fingerprint: [u8; 16],
    },
    /// Records sealed under older versions were opened and sealed again
    /// under `version`: one entry per re-seal transaction.
    RecordsResealed {
        version: u32,
        records: u32,
    },
    /// No record is sealed under `version` any more, and none may be: its
    /// key material is dropped.
    RootKeyRetired {
        version: u32,
    },
    /// A tenant's API key was replaced; the old one is refused from then on.
    TenantKeyRotated {
        tenant: TenantId,
    },
    /// Points were spent: the redemption's random id, the points (positive)
    /// and the balance left.
    PointsRedeemed {
        subject: AuditRef,
        redemption_id: [u8; 16],
        points: i64,
        balance: i64,
    },
    /// A redemption was refunded by a reversing entry.
    PointsRefunded {
        subject: AuditRef,
        redemption_id: [u8; 16],
        points: i64,
        balance: i64,
    },
    /// The sweeper expired unspent points of a platform's accounts (oldest
    /// first, by the expiry each credit carries): how many accounts, how
    /// many points in all.
    PointsExpired {
        tenant: TenantId,
        accounts: u32,
        points: i64,
    },
    /// A person's redemptions were read.
    RedemptionsRead {
        subject: AuditRef,
        items: u32,
    },
    /// Points moved between a person's linked accounts: one entry per side,
    /// logged under that side's platform (points negative on the sending
    /// side, positive on the receiving one), paired by the transfer and
    /// link ids; the balance is that side's after it.
    PointsTransferred {
        subject: AuditRef,
        transfer_id: [u8; 16],
        link_id: [u8; 16],
        points: i64,
        balance: i64,
    },
    /// A platform issued a link code for its account (the code itself is
    /// never logged).
    LinkCodeIssued {
        subject: AuditRef,
    },
    /// A platform asked for a console link for its user (the token itself
    /// is never logged).
    ConsoleLinkIssued {
        subject: AuditRef,
    },
    /// A console link was opened: a session for the person began. Reads
    /// and changes made in it follow as their own entries.
    ConsoleOpened {
        subject: AuditRef,
    },
    /// Two accounts were linked: one entry per side, logged under that
    /// side's platform; the link id pairs them (the entries name no other
    /// platform, so neither platform's stream shows who the other is).
    AccountsLinked {
        subject: AuditRef,
        link_id: [u8; 16],
    },
    /// A link was removed: one entry per side, as for linking.
    AccountsUnlinked {
        subject: AuditRef,
        link_id: [u8; 16],
        reason: UnlinkReason,
    },
    /// Part of a record's credit was claimed already by a linked account
    /// (the record's own entry holds what it earned).
    CountedElsewhere {
        subject: AuditRef,
        record_id: [u8; 16],
        link_id: [u8; 16],
        reduction_mg: i64,
        points: i64,
    },
    /// The language the notice of a consent just granted was shown in
    /// (`zh-CN` or `en`), appended right after its `ConsentChanged`.
    NoticeLanguage {
        subject: AuditRef,
        purpose: Purpose,
        notice_version: u32,
        language: String,
    },
}

/// Why a link was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlinkReason {
    /// A platform asked (`DELETE .../links/{link}`).
    Requested,
    /// One side was erased.
    Erased,
    /// One side withdrew the `interconnection` consent.
    ConsentWithdrawn,
}

impl UnlinkReason {
    fn code(self) -> u8 {
        match self {
            UnlinkReason::Requested => 1,
            UnlinkReason::Erased => 2,
            UnlinkReason::ConsentWithdrawn => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            UnlinkReason::Requested,
            UnlinkReason::Erased,
            UnlinkReason::ConsentWithdrawn,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnlinkReason::Requested => "requested",
            UnlinkReason::Erased => "erased",
            UnlinkReason::ConsentWithdrawn => "consent_withdrawn",
        }
    }
}

impl Action {
    fn tag(&self) -> u8 {
        match self {
            Action::PolicyLoaded { .. } => 1,
            Action::TenantCreated { .. } => 2,
            Action::RecordWritten { .. } => 3,
            Action::SubjectRead { .. } => 4,
            Action::ConsentChanged { .. } => 5,
            Action::WithdrawnDataDeleted { .. } => 6,
            Action::RetentionSwept(_) => 7,
            Action::SubjectErased { .. } => 8,
            Action::KeysReshredded { .. } => 9,
            Action::OrphansPurged { .. } => 10,
            Action::RootKeyRotated { .. } => 11,
            Action::RecordsResealed { .. } => 12,
            Action::RootKeyRetired { .. } => 13,
            Action::TenantKeyRotated { .. } => 14,
            Action::PointsRedeemed { .. } => 20,
            Action::PointsRefunded { .. } => 21,
            Action::PointsExpired { .. } => 22,
            Action::RedemptionsRead { .. } => 23,
            Action::PointsTransferred { .. } => 24,
            Action::LinkCodeIssued { .. } => 30,
            Action::ConsoleLinkIssued { .. } => 60,
            Action::ConsoleOpened { .. } => 61,
            Action::AccountsLinked { .. } => 31,
            Action::AccountsUnlinked { .. } => 32,
            Action::CountedElsewhere { .. } => 33,
            Action::NoticeLanguage { .. } => 50,
        }
    }

    /// The subject an entry concerns, if any.
    pub fn subject(&self) -> Option<&AuditRef> {
        match self {
            Action::RecordWritten { subject, .. }
            | Action::SubjectRead { subject, .. }
            | Action::ConsentChanged { subject, .. }
            | Action::WithdrawnDataDeleted { subject, .. }
            | Action::SubjectErased { subject, .. }
            | Action::PointsRedeemed { subject, .. }
            | Action::PointsRefunded { subject, .. }
            | Action::RedemptionsRead { subject, .. }
            | Action::PointsTransferred { subject, .. }
            | Action::LinkCodeIssued { subject }
            | Action::ConsoleLinkIssued { subject }
            | Action::ConsoleOpened { subject }
            | Action::AccountsLinked { subject, .. }
            | Action::AccountsUnlinked { subject, .. }
            | Action::CountedElsewhere { subject, .. }
            | Action::NoticeLanguage { subject, .. } => Some(subject),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed entry encoding: {0}")]
pub struct DecodeError(&'static str);

impl AuditEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(96);
        w.push(VERSION);
        w.extend_from_slice(&self.seq.to_be_bytes());
        w.extend_from_slice(&self.at.to_be_bytes());
        w.extend_from_slice(&self.actor.map_or(0, TenantId::get).to_be_bytes());
        w.push(self.action.tag());
        match &self.action {
            Action::PolicyLoaded {
                digest,
                methodology_version,
            } => {
                w.extend_from_slice(digest);
                put_str(&mut w, methodology_version);
            }
            Action::TenantCreated { tenant, role, name } => {
                w.extend_from_slice(&tenant.get().to_be_bytes());
                w.push(role.to_code());
                put_str(&mut w, name);
            }
            Action::RecordWritten {
                subject,
                record_id,
                kind,
                variant,
                day,
                reduction_mg,
                points,
                methodology_version,
                capped,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(record_id);
                put_str(&mut w, kind);
                put_str(&mut w, variant.as_deref().unwrap_or(""));
                w.extend_from_slice(&day.days().to_be_bytes());
                w.extend_from_slice(&reduction_mg.to_be_bytes());
                w.extend_from_slice(&points.to_be_bytes());
                put_str(&mut w, methodology_version);
                w.push(u8::from(*capped));
            }
            Action::SubjectRead { subject, scope, items } => {
                w.extend_from_slice(subject.as_bytes());
                w.push(scope.code());
                w.extend_from_slice(&items.to_be_bytes());
            }
            Action::ConsentChanged {
                subject,
                purpose,
                granted,
                notice_version,
                kinds,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.push(purpose.code());
                w.push(u8::from(*granted));
                w.extend_from_slice(&notice_version.to_be_bytes());
                put_str(&mut w, kinds);
            }
            Action::WithdrawnDataDeleted {
                subject,
                purpose,
                records,
                ledger_entries,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.push(purpose.code());
                w.extend_from_slice(&records.to_be_bytes());
                w.extend_from_slice(&ledger_entries.to_be_bytes());
            }
            Action::RetentionSwept(c) => {
                for n in [
                    c.records,
                    c.ledger_entries,
                    c.idempotency_keys,
                    c.consent_history,
                    c.audit_entries,
                ] {
                    w.extend_from_slice(&n.to_be_bytes());
                }
            }
            Action::SubjectErased {
                subject,
                key_id,
                counts: c,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(key_id);
                for n in [
                    c.records,
                    c.ledger_entries,
                    c.idempotency_keys,
                    c.consents,
                    c.consent_history,
                ] {
                    w.extend_from_slice(&n.to_be_bytes());
                }
            }
            Action::KeysReshredded { keys } => w.extend_from_slice(&keys.to_be_bytes()),
            Action::OrphansPurged { rows } => w.extend_from_slice(&rows.to_be_bytes()),
            Action::RootKeyRotated { version, fingerprint } => {
                w.extend_from_slice(&version.to_be_bytes());
                w.extend_from_slice(fingerprint);
            }
            Action::RecordsResealed { version, records } => {
                w.extend_from_slice(&version.to_be_bytes());
                w.extend_from_slice(&records.to_be_bytes());
            }
            Action::RootKeyRetired { version } => w.extend_from_slice(&version.to_be_bytes()),
            Action::TenantKeyRotated { tenant } => w.extend_from_slice(&tenant.get().to_be_bytes()),
            Action::PointsRedeemed {
                subject,
                redemption_id,
                points,
                balance,
            }
            | Action::PointsRefunded {
                subject,
                redemption_id,
                points,
                balance,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(redemption_id);
                w.extend_from_slice(&points.to_be_bytes());
                w.extend_from_slice(&balance.to_be_bytes());
            }
            Action::PointsExpired {
                tenant,
                accounts,
                points,
            } => {
                w.extend_from_slice(&tenant.get().to_be_bytes());
                w.extend_from_slice(&accounts.to_be_bytes());
                w.extend_from_slice(&points.to_be_bytes());
            }
            Action::RedemptionsRead { subject, items } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(&items.to_be_bytes());
            }
            Action::PointsTransferred {
                subject,
                transfer_id,
                link_id,
                points,
                balance,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(transfer_id);
                w.extend_from_slice(link_id);
                w.extend_from_slice(&points.to_be_bytes());
                w.extend_from_slice(&balance.to_be_bytes());
            }
            Action::LinkCodeIssued { subject }
            | Action::ConsoleLinkIssued { subject }
            | Action::ConsoleOpened { subject } => w.extend_from_slice(subject.as_bytes()),
            Action::AccountsLinked { subject, link_id } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(link_id);
            }
            Action::AccountsUnlinked {
                subject,
                link_id,
                reason,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(link_id);
                w.push(reason.code());
            }
            Action::CountedElsewhere {
                subject,
                record_id,
                link_id,
                reduction_mg,
                points,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.extend_from_slice(record_id);
                w.extend_from_slice(link_id);
                w.extend_from_slice(&reduction_mg.to_be_bytes());
                w.extend_from_slice(&points.to_be_bytes());
            }
            Action::NoticeLanguage {
                subject,
                purpose,
                notice_version,
                language,
            } => {
                w.extend_from_slice(subject.as_bytes());
                w.push(purpose.code());
                w.extend_from_slice(&notice_version.to_be_bytes());
                put_str(&mut w, language);
            }
        }
        w
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let seq = r.u64()?;
        let at = r.i64()?;
        let actor = match r.i64()? {
            0 => None,
            id => Some(TenantId::new(id)),
        };
        let action = match r.u8()? {
            1 => Action::PolicyLoaded {
                digest: r.array()?,
                methodology_version: r.string()?,
            },
            2 => Action::TenantCreated {
                tenant: TenantId::new(r.i64()?),
                role: Role::from_audit_code(r.u8()?).ok_or(DecodeError("unknown role"))?,
                name: r.string()?,
            },
            3 => Action::RecordWritten {
                subject: AuditRef::from_bytes(r.array()?),
                record_id: r.array()?,
                kind: r.string()?,
                variant: Some(r.string()?).filter(|v| !v.is_empty()),
                day: Day::from_days(i64::from(r.i32()?)).ok_or(DecodeError("day out of range"))?,
                reduction_mg: r.i64()?,
                points: r.i64()?,
                methodology_version: r.string()?,
                capped: r.flag()?,
            },
            4 => Action::SubjectRead {
                subject: AuditRef::from_bytes(r.array()?),
                scope: ReadScope::from_code(r.u8()?).ok_or(DecodeError("unknown read scope"))?,
                items: r.u32()?,
            },
            5 => Action::ConsentChanged {
                subject: AuditRef::from_bytes(r.array()?),
                purpose: r.purpose()?,
                granted: r.flag()?,
                notice_version: r.u32()?,
                kinds: r.string()?,
            },
            6 => Action::WithdrawnDataDeleted {
                subject: AuditRef::from_bytes(r.array()?),
                purpose: r.purpose()?,
                records: r.u32()?,
                ledger_entries: r.u32()?,
            },
            7 => Action::RetentionSwept(SweepCounts {
                records: r.u64()?,
                ledger_entries: r.u64()?,
                idempotency_keys: r.u64()?,
                consent_history: r.u64()?,
                audit_entries: r.u64()?,
            }),
            8 => Action::SubjectErased {
                subject: AuditRef::from_bytes(r.array()?),
                key_id: r.array()?,
                counts: ErasureCounts {
                    records: r.u32()?,
                    ledger_entries: r.u32()?,
                    idempotency_keys: r.u32()?,
                    consents: r.u32()?,
                    consent_history: r.u32()?,
                },
            },
            9 => Action::KeysReshredded { keys: r.u32()? },
            10 => Action::OrphansPurged { rows: r.u64()? },
            11 => Action::RootKeyRotated {
                version: r.u32()?,
                fingerprint: r.array()?,
            },
            12 => Action::RecordsResealed {
                version: r.u32()?,
                records: r.u32()?,
            },
            13 => Action::RootKeyRetired { version: r.u32()? },
            14 => Action::TenantKeyRotated {
                tenant: TenantId::new(r.i64()?),
            },
            20 => Action::PointsRedeemed {
                subject: AuditRef::from_bytes(r.array()?),
                redemption_id: r.array()?,
                points: r.i64()?,
                balance: r.i64()?,
            },
            21 => Action::PointsRefunded {
                subject: AuditRef::from_bytes(r.array()?),
                redemption_id: r.array()?,
                points: r.i64()?,
                balance: r.i64()?,
            },
            22 => Action::PointsExpired {
                tenant: TenantId::new(r.i64()?),
                accounts: r.u32()?,
                points: r.i64()?,
            },
            23 => Action::RedemptionsRead {
                subject: AuditRef::from_bytes(r.array()?),
                items: r.u32()?,
            },
            24 => Action::PointsTransferred {
                subject: AuditRef::from_bytes(r.array()?),
                transfer_id: r.array()?,
                link_id: r.array()?,
                points: r.i64()?,
                balance: r.i64()?,
            },
            30 => Action::LinkCodeIssued {
                subject: AuditRef::from_bytes(r.array()?),
            },
            60 => Action::ConsoleLinkIssued {
                subject: AuditRef::from_bytes(r.array()?),
            },
            61 => Action::ConsoleOpened {
                subject: AuditRef::from_bytes(r.array()?),
            },
            31 => Action::AccountsLinked {
                subject: AuditRef::from_bytes(r.array()?),
                link_id: r.array()?,
            },
            32 => Action::AccountsUnlinked {
                subject: AuditRef::from_bytes(r.array()?),
                link_id: r.array()?,
                reason: UnlinkReason::from_code(r.u8()?).ok_or(DecodeError("unknown unlink reason"))?,
            },
            33 => Action::CountedElsewhere {
                subject: AuditRef::from_bytes(r.array()?),
                record_id: r.array()?,
                link_id: r.array()?,
                reduction_mg: r.i64()?,
                points: r.i64()?,
            },
            50 => Action::NoticeLanguage {
                subject: AuditRef::from_bytes(r.array()?),
                purpose: r.purpose()?,
                notice_version: r.u32()?,
                language: r.string()?,
            },
            _ => return Err(DecodeError("unknown action tag")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self { seq, at, actor, action })
    }
}

impl AuditEntry {
    /// A JSON view of the entry for people and APIs; the hashed form is the
    /// binary encoding above. Subject references appear in hex.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let day = Day::from_days(self.at.div_euclid(86_400)).map(|d| d.to_string());
        let mut v = json!({ "seq": self.seq, "on": day, "actor_tenant": self.actor.map(TenantId::get) });
        let (name, details) = match &self.action {
            Action::PolicyLoaded {
                digest,
                methodology_version,
            } => (
                "policy_loaded",
                json!({"policy_digest": hex::encode(digest), "methodology_version": methodology_version}),
            ),
            Action::TenantCreated { tenant, role, name } => (
                "tenant_created",
                json!({"tenant": tenant.get(), "role": role.as_str(), "name": name}),
            ),
            Action::RecordWritten {
                subject,
                record_id,
                kind,
                variant,
                day,
                reduction_mg,
                points,
                methodology_version,
                capped,
            } => (
                "record_written",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "record_id": hex::encode(record_id),
                    "kind": kind, "variant": variant, "day": day.to_string(), "reduction_mg": reduction_mg,
                    "points": points, "methodology_version": methodology_version, "capped": capped,
                }),
            ),
            Action::SubjectRead { subject, scope, items } => (
                "subject_read",
                json!({"subject_ref": hex::encode(subject.as_bytes()), "scope": format!("{scope:?}").to_lowercase(), "items": items}),
            ),
            Action::ConsentChanged {
                subject,
                purpose,
                granted,
                notice_version,
                kinds,
            } => (
                "consent_changed",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "purpose": purpose.as_str(), "granted": granted,
                    "notice_version": notice_version, "kinds": kinds,
                }),
            ),
            Action::WithdrawnDataDeleted {
                subject,
                purpose,
                records,
                ledger_entries,
            } => (
                "withdrawn_data_deleted",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "purpose": purpose.as_str(),
                    "records": records, "ledger_entries": ledger_entries,
                }),
            ),
            Action::RetentionSwept(c) => (
                "retention_swept",
                json!({
                    "records": c.records, "ledger_entries": c.ledger_entries, "idempotency_keys": c.idempotency_keys,
                    "consent_history": c.consent_history, "audit_entries": c.audit_entries,
                }),
            ),
            Action::SubjectErased {
                subject,
                key_id,
                counts,
            } => (
                "subject_erased",
                json!({"subject_ref": hex::encode(subject.as_bytes()), "key_id": hex::encode(key_id), "counts": counts}),
            ),
            Action::KeysReshredded { keys } => ("keys_reshredded", json!({"keys": keys})),
            Action::OrphansPurged { rows } => ("orphans_purged", json!({"rows": rows})),
            Action::RootKeyRotated { version, fingerprint } => (
                "root_key_rotated",
                json!({"version": version, "fingerprint": hex::encode(fingerprint)}),
            ),
            Action::RecordsResealed { version, records } => {
                ("records_resealed", json!({"version": version, "records": records}))
            }
            Action::RootKeyRetired { version } => ("root_key_retired", json!({"version": version})),
            Action::TenantKeyRotated { tenant } => ("tenant_key_rotated", json!({"tenant": tenant.get()})),
            Action::PointsRedeemed {
                subject,
                redemption_id,
                points,
                balance,
            } => (
                "points_redeemed",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "redemption_id": hex::encode(redemption_id),
                    "points": points, "balance": balance,
                }),
            ),
            Action::PointsRefunded {
                subject,
                redemption_id,
                points,
                balance,
            } => (
                "points_refunded",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "redemption_id": hex::encode(redemption_id),
                    "points": points, "balance": balance,
                }),
            ),
            Action::PointsExpired {
                tenant,
                accounts,
                points,
            } => (
                "points_expired",
                json!({"tenant": tenant.get(), "accounts": accounts, "points": points}),
            ),
            Action::RedemptionsRead { subject, items } => (
                "redemptions_read",
                json!({"subject_ref": hex::encode(subject.as_bytes()), "items": items}),
            ),
            Action::PointsTransferred {
                subject,
                transfer_id,
                link_id,
                points,
                balance,
            } => (
                "points_transferred",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "transfer_id": hex::encode(transfer_id),
                    "link_id": hex::encode(link_id), "points": points, "balance": balance,
                }),
            ),
            Action::LinkCodeIssued { subject } => (
                "link_code_issued",
                json!({"subject_ref": hex::encode(subject.as_bytes())}),
            ),
            Action::ConsoleLinkIssued { subject } => (
                "console_link_issued",
                json!({"subject_ref": hex::encode(subject.as_bytes())}),
            ),
            Action::ConsoleOpened { subject } => (
                "console_opened",
                json!({"subject_ref": hex::encode(subject.as_bytes())}),
            ),
            Action::AccountsLinked { subject, link_id } => (
                "accounts_linked",
                json!({"subject_ref": hex::encode(subject.as_bytes()), "link_id": hex::encode(link_id)}),
            ),
            Action::AccountsUnlinked {
                subject,
                link_id,
                reason,
            } => (
                "accounts_unlinked",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "link_id": hex::encode(link_id),
                    "reason": reason.as_str(),
                }),
            ),
            Action::CountedElsewhere {
                subject,
                record_id,
                link_id,
                reduction_mg,
                points,
            } => (
                "counted_elsewhere",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "record_id": hex::encode(record_id),
                    "link_id": hex::encode(link_id), "reduction_mg": reduction_mg, "points": points,
                }),
            ),
            Action::NoticeLanguage {
                subject,
                purpose,
                notice_version,
                language,
            } => (
                "notice_language",
                json!({
                    "subject_ref": hex::encode(subject.as_bytes()), "purpose": purpose.as_str(),
                    "notice_version": notice_version, "language": language,
                }),
            ),
        };
        v["action"] = json!(name);
        v["details"] = details;
        v
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    // Strings in entries are policy names and versions: short by validation.
    let len = u16::try_from(s.len()).expect("audit strings are shorter than 64 KiB");
    w.extend_from_slice(&len.to_be_bytes());
    w.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("flag is not 0 or 1")),
        }
    }

    fn purpose(&mut self) -> Result<Purpose, DecodeError> {
        Purpose::from_code(self.u8()?).ok_or(DecodeError("unknown purpose"))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<AuditEntry> {
        let subject = AuditRef::from_bytes([5; 16]);
        let actions = vec![
            Action::PolicyLoaded {
                digest: [1; 32],
                methodology_version: "v1".into(),
            },
            Action::TenantCreated {
                tenant: TenantId::new(3),
                role: Role::Auditor,
                name: "city".into(),
            },
            Action::RecordWritten {
                subject,
                record_id: [2; 16],
                kind: "transit_ride".into(),
                variant: Some("bus".into()),
                day: Day::from_days(19_929).unwrap(),
                reduction_mg: 80_000,
                points: 10,
                methodology_version: "v1".into(),
                capped: false,
            },
            Action::RecordWritten {
                subject,
                record_id: [3; 16],
                kind: "clean_plate".into(),
                variant: None,
                day: Day::from_days(19_929).unwrap(),
                reduction_mg: 0,
                points: 0,
                methodology_version: "v1".into(),
                capped: true,
            },
            Action::SubjectRead {
                subject,
                scope: ReadScope::Records,
                items: 7,
            },
            Action::ConsentChanged {
                subject,
                purpose: Purpose::Rewards,
                granted: true,
                notice_version: 2,
                kinds: "*".into(),
            },
            Action::WithdrawnDataDeleted {
                subject,
                purpose: Purpose::Accounting,
                records: 4,
                ledger_entries: 4,
            },
            Action::LinkCodeIssued { subject },
            Action::ConsoleLinkIssued { subject },
            Action::ConsoleOpened { subject },
            Action::AccountsLinked {
                subject,
                link_id: [4; 16],
            },
            Action::AccountsUnlinked {
                subject,
                link_id: [4; 16],
                reason: UnlinkReason::ConsentWithdrawn,
            },
            Action::CountedElsewhere {
                subject,
                record_id: [2; 16],
                link_id: [4; 16],
                reduction_mg: 80_000,
                points: 10,
            },
            Action::SubjectErased {
                subject,
                key_id: [9; 16],
                counts: ErasureCounts {
                    records: 1,
                    ledger_entries: 2,
                    idempotency_keys: 3,
                    consents: 4,
                    consent_history: 5,
                },
            },
            Action::KeysReshredded { keys: 2 },
            Action::OrphansPurged { rows: 7 },
            Action::RootKeyRotated {
                version: 2,
                fingerprint: [4; 16],
            },
            Action::RecordsResealed {
                version: 2,
                records: 500,
            },
            Action::RootKeyRetired { version: 1 },
            Action::TenantKeyRotated {
                tenant: TenantId::new(3),
            },
            // Another person: the first is erased above.
            Action::PointsRedeemed {
                subject: AuditRef::from_bytes([6; 16]),
                redemption_id: [4; 16],
                points: 30,
                balance: 12,
            },
            Action::PointsRefunded {
                subject: AuditRef::from_bytes([6; 16]),
                redemption_id: [4; 16],
                points: 30,
                balance: 42,
            },
            Action::PointsExpired {
                tenant: TenantId::new(2),
                accounts: 3,
                points: 90,
            },
            Action::RedemptionsRead {
                subject: AuditRef::from_bytes([6; 16]),
                items: 2,
            },
            Action::PointsTransferred {
                subject: AuditRef::from_bytes([6; 16]),
                transfer_id: [8; 16],
                link_id: [9; 16],
                points: -12,
                balance: 30,
            },
            Action::NoticeLanguage {
                subject: AuditRef::from_bytes([6; 16]),
                purpose: Purpose::Accounting,
                notice_version: 1,
                language: "zh-CN".into(),
            },
            Action::RetentionSwept(SweepCounts {
                records: 1,
                ledger_entries: 2,
                idempotency_keys: 3,
                consent_history: 4,
                audit_entries: 5,
            }),
        ];
        actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| AuditEntry {
                seq: i as u64 + 1,
                at: 1_721_900_000,
                actor: Some(TenantId::new(1)),
                action,
            })
            .collect()
    }

    #[test]
    fn round_trips_every_action() {
        for entry in samples() {
            assert_eq!(AuditEntry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn decoding_is_strict() {
        let bytes = samples()[2].encode();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(AuditEntry::decode(&trailing).is_err());
        assert!(AuditEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(AuditEntry::decode(&version).is_err());
    }
}
