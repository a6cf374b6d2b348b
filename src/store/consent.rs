//! Consent: grants and withdrawals with their append-only history, the
//! consent state ingest checks, and the purge of data held only for a
//! withdrawn purpose.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::sql::Params;
use super::{Access, Store, StoreError, WriteTx};
use crate::audit::{Action, ReadScope};
use crate::crypto::{AuditRef, SubjectRef, CURRENT_KEY_VERSION};
use crate::domain::{Day, SubjectId, TenantId};
use crate::policy::{Permission, Purpose};

/// The behaviour kinds a consent covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kinds {
    All,
    Only(BTreeSet<String>),
}

impl Kinds {
    pub fn covers(&self, kind: &str) -> bool {
        match self {
            Kinds::All => true,
            Kinds::Only(kinds) => kinds.contains(kind),
        }
    }

    fn encode(&self) -> String {
        match self {
            Kinds::All => "*".to_owned(),
            Kinds::Only(kinds) => kinds.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }

    /// The kinds covered, by name (all of the methodology's for `All`).
    pub fn list(&self, methodology: &crate::domain::Methodology) -> Vec<String> {
        match self {
            Kinds::All => methodology.kinds.keys().cloned().collect(),
            Kinds::Only(list) => list.iter().cloned().collect(),
        }
    }

    pub(super) fn decode(s: &str) -> Self {
        match s {
            "*" => Kinds::All,
            "" => Kinds::Only(BTreeSet::new()),
            list => Kinds::Only(list.split(',').map(str::to_owned).collect()),
        }
    }
}

/// One consent in force, as the platform sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConsentView {
    pub purpose: Purpose,
    pub notice_version: u32,
    /// False when the notice changed since: the consent no longer counts.
    pub current: bool,
    /// Whether it covers every kind, including kinds added later.
    pub all_kinds: bool,
    pub kinds: Vec<String>,
    pub granted_at: String,
}

/// The outcome of a grant or withdrawal.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConsentChange {
    pub purpose: Purpose,
    pub granted: bool,
    /// False for a withdrawal of a consent that was not given.
    pub changed: bool,
    /// Records deleted because they were held only for the withdrawn purpose
    /// (or for kinds the consent no longer covers).
    pub records_deleted: u64,
    /// Points of the deleted records' ledger entries, kept for the person.
    pub points_kept: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// The consents of a batch's subjects, for ingest.
#[derive(Default)]
pub(super) struct ConsentState {
    consents: HashMap<(SubjectRef, Purpose), (u32, Kinds)>,
}

impl ConsentState {
    /// Whether `subject` consents, under the current notice, to `purpose`
    /// for `kind`.
    pub(super) fn allows(&self, store: &Store, subject: &SubjectRef, purpose: Purpose, kind: &str) -> bool {
        let current = store.policies.consent.get(purpose).notice_version;
        self.consents
            .get(&(*subject, purpose))
            .is_some_and(|(version, kinds)| *version == current && kinds.covers(kind))
    }
}

fn rfc3339(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl Store {
    pub(super) async fn consent_state(
        &self,
        w: &mut WriteTx<'_>,
        tenant: TenantId,
        subjects: &[SubjectRef],
    ) -> Result<ConsentState, StoreError> {
        let mut state = ConsentState::default();
        for chunk in subjects.chunks(1000) {
            let mut p = Params::new(self.engine);
            let sql = format!(
                "SELECT subject, purpose, notice_version, kinds FROM consents WHERE tenant_id = {} AND subject IN ({})",
                p.one(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).persistent(false).bind(tenant.get());
            for s in chunk {
                q = q.bind(s.as_bytes().to_vec());
            }
            for row in q.fetch_all(w.conn()).await? {
                let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                    .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
                let Some(purpose) = Purpose::parse(&row.try_get::<String, _>(1)?) else {
                    continue;
                };
                let version = u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
                state.consents.insert(
                    (subject, purpose),
                    (version, Kinds::decode(&row.try_get::<String, _>(3)?)),
                );
            }
        }
        Ok(state)
    }

    /// Records the person's consent to the purpose of `access` under the notice version
    /// they were shown. Narrowing the kinds of `accounting` deletes the
    /// records of the kinds no longer covered.
    pub async fn grant_consent(
        &self,
        access: &Access,
        subject: &SubjectId,
        notice_version: u32,
        kinds: Kinds,
    ) -> Result<ConsentChange, StoreError> {
        let tenant = self.authorize(access, Permission::ManageConsents)?;
        let purpose = access.purpose;
        let current = self.policies.consent.get(purpose).notice_version;
        if notice_version != current {
            return Err(StoreError::StaleNotice {
                purpose,
                given: notice_version,
                current,
            });
        }
        if let Kinds::Only(list) = &kinds {
            if list.is_empty() {
                return Err(StoreError::Invalid("kinds, when given, names at least one kind".into()));
            }
            if list.iter().any(|k| !self.policies.methodology.kinds.contains_key(k)) {
                // The submitted name is not echoed: it could be anything.
                return Err(StoreError::Invalid(format!(
                    "kinds names a kind that is not a behaviour kind of methodology {}",
                    self.policies.methodology.version
                )));
            }
        }
        let lookup = self.pseudonyms.pseudonymize(tenant, subject);
        let key = self.key_or_create(&lookup, self.today_start()).await?;
        let keys = self.root.subject_keys(&key.salt, CURRENT_KEY_VERSION);
        let (ledger_ref, audit_ref) = (keys.ledger_ref, keys.audit_ref);

        let mut w = self.begin_write().await?;
        if self.ensure_not_erased(&mut w, &key.key_id).await.is_err() {
            return Err(StoreError::Conflict(
                "this person was erased a moment ago; ask again to open a new account".into(),
            ));
        }
        let encoded = kinds.encode();
        sqlx::query(
            "INSERT INTO consents (tenant_id, subject, purpose, notice_version, kinds, granted_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, subject, purpose) DO UPDATE SET notice_version = $4, kinds = $5, granted_at = $6",
        )
        .bind(tenant.get())
        .bind(ledger_ref.as_bytes().to_vec())
        .bind(purpose.as_str())
        .bind(i64::from(notice_version))
        .bind(&encoded)
        .bind(w.at)
        .execute(w.conn())
        .await?;
        history(&mut w, tenant, &ledger_ref, purpose, "grant", notice_version, &encoded).await?;
        w.append(
            Some(tenant),
            Action::ConsentChanged {
                subject: audit_ref,
                purpose,
                granted: true,
                notice_version,
                kinds: encoded,
            },
        );
        self.finish_change(w, tenant, &ledger_ref, audit_ref, purpose, &kinds, true)
            .await
    }

    /// Withdraws consent to the purpose of `access`, at once: nothing new is processed
    /// under it, and data held only for it is deleted (for `accounting`,
    /// every record; the points they earned stay the person's).
    pub async fn withdraw_consent(&self, access: &Access, subject: &SubjectId) -> Result<ConsentChange, StoreError> {
        let tenant = self.authorize(access, Permission::ManageConsents)?;
        let purpose = access.purpose;
        let (keys, key_id) = self.known_subject(tenant, subject).await?;
        let (ledger_ref, audit_ref) = (keys.ledger_ref, keys.audit_ref);

        let mut w = self.begin_write().await?;
        self.ensure_not_erased(&mut w, &key_id).await?;
        let removed = sqlx::query(
            "DELETE FROM consents WHERE tenant_id = $1 AND subject = $2 AND purpose = $3 RETURNING notice_version, kinds",
        )
        .bind(tenant.get())
        .bind(ledger_ref.as_bytes().to_vec())
        .bind(purpose.as_str())
        .fetch_optional(w.conn())
        .await?;
        let Some(removed) = removed else {
            // Nothing to withdraw: nothing written (the transaction rolls back).
            return Ok(ConsentChange {
                purpose,
                granted: false,
                changed: false,
                records_deleted: 0,
                points_kept: 0,
                audit_seq: None,
            });
        };
        let notice_version = u32::try_from(removed.try_get::<i64, _>(0)?).unwrap_or(0);
        let kinds: String = removed.try_get(1)?;
        history(&mut w, tenant, &ledger_ref, purpose, "withdraw", notice_version, &kinds).await?;
        w.append(
            Some(tenant),
            Action::ConsentChanged {
                subject: audit_ref,
                purpose,
                granted: false,
                notice_version,
                kinds,
            },
        );
        // Nothing of any kind is covered any more.
        let kept = Kinds::Only(BTreeSet::new());
        self.finish_change(w, tenant, &ledger_ref, audit_ref, purpose, &kept, false)
            .await
    }

    /// Ends a grant or withdrawal: under `accounting`, deletes the records
    /// of kinds no longer covered (points earned stay the person's; the
    /// other purposes hold no data of their own yet), then commits.
    #[allow(clippy::too_many_arguments)]
    async fn finish_change(
        &self,
        mut w: WriteTx<'_>,
        tenant: TenantId,
        ledger_ref: &SubjectRef,
        audit_ref: AuditRef,
        purpose: Purpose,
        covered: &Kinds,
        granted: bool,
    ) -> Result<ConsentChange, StoreError> {
        let (records_deleted, points_kept) = match purpose {
            Purpose::Accounting => {
                self.purge_uncovered(&mut w, tenant, ledger_ref, audit_ref, covered)
                    .await?
            }
            _ => (0, 0),
        };
        let seq = w.appender_seq();
        w.commit().await?;
        if records_deleted > 0 {
            self.flush_deleted_pages(&[&self.ledger, &self.keys]).await;
        }
        Ok(ConsentChange {
            purpose,
            granted,
            changed: true,
            records_deleted,
            points_kept,
            audit_seq: Some(seq),
        })
    }

    /// Deletes the subject's records of kinds `kinds` does not cover, and
    /// their ledger entries, keeping the points those entries carried in one
    /// entry that holds no behaviour data. Returns (records, points kept).
    async fn purge_uncovered(
        &self,
        w: &mut WriteTx<'_>,
        tenant: TenantId,
        subject: &SubjectRef,
        audit_ref: AuditRef,
        kinds: &Kinds,
    ) -> Result<(u64, i64), StoreError> {
        let Kinds::Only(kept) = kinds else { return Ok((0, 0)) };
        let mut p = Params::new(self.engine);
        let (t, s) = (p.one(), p.one());
        let filter = if kept.is_empty() {
            String::new()
        } else {
            format!(" AND kind NOT IN ({})", p.list(kept.len()))
        };
        let lines =
            format!("FROM ledger_entries WHERE tenant_id = {t} AND subject = {s} AND record_id IS NOT NULL{filter}");
        let sum_sql = format!("SELECT COUNT(*), CAST(COALESCE(SUM(points), 0) AS BIGINT) {lines}");
        let sums = bound(&sum_sql, tenant, subject, kept).fetch_one(w.conn()).await?;
        let (ledger_entries, points): (i64, i64) = (sums.try_get(0)?, sums.try_get(1)?);
        let delete_lines = format!("DELETE {lines}");
        bound(&delete_lines, tenant, subject, kept).execute(w.conn()).await?;
        // The retry keys of those records go with them: they carry each
        // event's figures.
        let delete_keys = format!(
            "DELETE FROM idempotency_keys WHERE record_id IN \
             (SELECT record_id FROM records WHERE tenant_id = {t} AND subject = {s}{filter})"
        );
        bound(&delete_keys, tenant, subject, kept).execute(w.conn()).await?;
        let delete_records = format!("DELETE FROM records WHERE tenant_id = {t} AND subject = {s}{filter}");
        let records = bound(&delete_records, tenant, subject, kept)
            .execute(w.conn())
            .await?
            .rows_affected();
        if points != 0 {
            let today = Day::from_date(self.clock.now().to_offset(self.policies.methodology.offset()).date());
            sqlx::query(
                "INSERT INTO ledger_entries (tenant_id, subject, record_id, kind, variant, day, month, reduction_mg, points, \
                 methodology_version, capped, created_at) VALUES ($1, $2, NULL, '', '', $3, $4, 0, $5, '', 0, $6)",
            )
            .bind(tenant.get())
            .bind(subject.as_bytes().to_vec())
            .bind(i64::from(today.days()))
            .bind(i64::from(today.month()))
            .bind(points)
            .bind(w.at)
            .execute(w.conn())
            .await?;
        }
        if records > 0 || ledger_entries > 0 {
            w.append(
                Some(tenant),
                Action::WithdrawnDataDeleted {
                    subject: audit_ref,
                    purpose: Purpose::Accounting,
                    records: u32::try_from(records).unwrap_or(u32::MAX),
                    ledger_entries: u32::try_from(ledger_entries).unwrap_or(u32::MAX),
                },
            );
        }
        Ok((records, points))
    }

    /// The subject's consents in force (an audited read).
    pub async fn consents(&self, access: &Access, subject: &SubjectId) -> Result<Vec<ConsentView>, StoreError> {
        let tenant = self.authorize(access, Permission::ReadConsents)?;
        let (keys, key_id) = self.known_subject(tenant, subject).await?;
        let mut w = self.begin_write().await?;
        self.ensure_not_erased(&mut w, &key_id).await?;
        let views = self.consent_views(w.conn(), tenant, &keys.ledger_ref).await?;
        let items = u32::try_from(views.len()).unwrap_or(u32::MAX);
        w.append(
            Some(tenant),
            Action::SubjectRead {
                subject: keys.audit_ref,
                scope: ReadScope::Consents,
                items,
            },
        );
        w.commit().await?;
        Ok(views)
    }

    /// The subject's consents in force, within the caller's transaction.
    pub(super) async fn consent_views(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &SubjectRef,
    ) -> Result<Vec<ConsentView>, StoreError> {
        let rows = sqlx::query(
            "SELECT purpose, notice_version, kinds, granted_at FROM consents WHERE tenant_id = $1 AND subject = $2 ORDER BY purpose",
        )
        .bind(tenant.get())
        .bind(subject.as_bytes().to_vec())
        .fetch_all(conn)
        .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            let purpose = Purpose::parse(&row.try_get::<String, _>(0)?)
                .ok_or_else(|| StoreError::Corrupt("a stored consent names an unknown purpose".into()))?;
            let notice_version = u32::try_from(row.try_get::<i64, _>(1)?)
                .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?;
            let kinds = Kinds::decode(&row.try_get::<String, _>(2)?);
            views.push(ConsentView {
                purpose,
                notice_version,
                current: notice_version == self.policies.consent.get(purpose).notice_version,
                all_kinds: kinds == Kinds::All,
                kinds: kinds.list(&self.policies.methodology),
                granted_at: rfc3339(row.try_get(3)?),
            });
        }
        Ok(views)
    }
}

/// A purge statement with its parameters: tenant, subject, then the kinds
/// kept.
fn bound<'q>(
    sql: &'q str,
    tenant: TenantId,
    subject: &SubjectRef,
    kept: &BTreeSet<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql)
        .persistent(false)
        .bind(tenant.get())
        .bind(subject.as_bytes().to_vec());
    for k in kept {
        q = q.bind(k.clone());
    }
    q
}

async fn history(
    w: &mut WriteTx<'_>,
    tenant: TenantId,
    subject: &SubjectRef,
    purpose: Purpose,
    action: &str,
    notice_version: u32,
    kinds: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_history (tenant_id, subject, purpose, action, notice_version, kinds, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.get())
    .bind(subject.as_bytes().to_vec())
    .bind(purpose.as_str())
    .bind(action)
    .bind(i64::from(notice_version))
    .bind(kinds)
    .bind(w.at)
    .execute(w.conn())
    .await?;
    Ok(())
}
