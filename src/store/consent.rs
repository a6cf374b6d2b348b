//! Consent: grants and withdrawals with their append-only history, the
//! consent state ingest checks, and the purge of data held only for a
//! withdrawn purpose.

use std::collections::{BTreeSet, HashMap};

use sqlx::{AnyConnection, Row};

use super::access::{Audited, Committed, Enrol, SubjectRead, SubjectTx};
use super::sql::{select_in, Arg, Params};
use super::wal::Log;
use super::{Access, Store, StoreError, SubjectHandle, WriteTx};
use crate::audit::{Action, ReadScope, UnlinkReason};
use crate::crypto::SubjectRef;
use crate::domain::TenantId;
use crate::policy::{Language, Permission, Purpose};

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

/// One consent in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub purpose: Purpose,
    pub notice_version: u32,
    /// False when the notice changed since: the consent no longer counts.
    pub current: bool,
    pub kinds: Kinds,
    /// Unix seconds, to the day.
    pub granted_at: i64,
    /// The language the notice was shown in, when the platform said.
    pub language: Option<Language>,
}

/// The outcome of a grant or withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub audit_seq: Option<u64>,
}

/// A row of `consents`.
#[derive(sqlx::FromRow)]
struct ConsentRow {
    purpose: String,
    notice_version: i64,
    kinds: String,
    granted_at: i64,
    language: Option<String>,
}

/// The consents of a batch's subjects, for ingest, with each purpose's
/// current notice version.
pub(super) struct ConsentState {
    consents: HashMap<(SubjectRef, Purpose), (u32, Kinds)>,
    current: HashMap<Purpose, u32>,
}

impl ConsentState {
    pub(super) fn new(policy: &crate::policy::ConsentPolicy) -> Self {
        Self {
            consents: HashMap::new(),
            current: policy
                .purposes
                .keys()
                .map(|p| (*p, policy.get(*p).notice_version))
                .collect(),
        }
    }

    /// Records a consent in force (as stored).
    pub(super) fn insert(&mut self, subject: SubjectRef, purpose: Purpose, notice_version: u32, kinds: Kinds) {
        self.consents.insert((subject, purpose), (notice_version, kinds));
    }

    /// Whether `subject` consents, under the current notice, to `purpose`
    /// for `kind`.
    pub(super) fn allows(&self, subject: &SubjectRef, purpose: Purpose, kind: &str) -> bool {
        let Some(current) = self.current.get(&purpose) else {
            return false;
        };
        self.consents
            .get(&(*subject, purpose))
            .is_some_and(|(version, kinds)| version == current && kinds.covers(kind))
    }
}

impl Store {
    /// Whether one account consents to `purpose` under the notice in force
    /// (for one account at a time; batches use `consent_state`).
    pub(super) async fn consents_now(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: TenantId,
        subject: &[u8],
        purpose: Purpose,
    ) -> Result<bool, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT notice_version FROM consents WHERE tenant_id = $1 AND subject = $2 AND purpose = $3",
        )
        .bind(tenant.get())
        .bind(subject.to_vec())
        .bind(purpose.as_str())
        .fetch_optional(conn)
        .await?;
        let current = self.policies.consent.get(purpose).notice_version;
        Ok(version == Some(i64::from(current)))
    }

    pub(super) async fn consent_state(
        &self,
        w: &mut WriteTx<'_>,
        tenant: TenantId,
        subjects: &[SubjectRef],
    ) -> Result<ConsentState, StoreError> {
        let mut state = ConsentState::new(&self.policies.consent);
        let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
        let rows = select_in(w.conn(), self.engine, &[Arg::Int(tenant.get())], &list, |p, n| {
            format!(
                "SELECT subject, purpose, notice_version, kinds FROM consents WHERE tenant_id = {} AND subject IN ({})",
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            let purpose = Purpose::parse(&row.try_get::<String, _>(1)?)
                .ok_or_else(|| StoreError::Corrupt("a stored consent names an unknown purpose".into()))?;
            let version = u32::try_from(row.try_get::<i64, _>(2)?)
                .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?;
            state.insert(subject, purpose, version, Kinds::decode(&row.try_get::<String, _>(3)?));
        }
        Ok(state)
    }

    /// Records the person's consent to the purpose of `access` under the notice version
    /// they were shown. Narrowing the kinds of `accounting` deletes the
    /// records of the kinds no longer covered.
    pub async fn grant_consent(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
        notice_version: u32,
        kinds: Kinds,
    ) -> Result<ConsentChange, StoreError> {
        self.grant_consent_in(access, subject, notice_version, kinds, None)
            .await
    }

    /// `grant_consent`, recording the language the notice was shown in
    /// (stored with the consent and its history, and audited).
    pub async fn grant_consent_in(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
        notice_version: u32,
        kinds: Kinds,
        language: Option<Language>,
    ) -> Result<ConsentChange, StoreError> {
        // The role first: a caller who may not manage consents learns
        // nothing about why its request would have been refused.
        self.authorize(access, Permission::ManageConsents)?;
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
        let encoded = kinds.encode();
        let language_tag = language.map(Language::as_str);
        let grant = async |tx: &mut SubjectTx<'_>| {
            sqlx::query(
                "INSERT INTO consents (tenant_id, subject, purpose, notice_version, kinds, granted_at, language) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, subject, purpose) DO UPDATE SET notice_version = $4, kinds = $5, granted_at = $6, language = $7",
            )
            .bind(tx.tenant().get())
            .bind(tx.ledger_ref().as_bytes().to_vec())
            .bind(purpose.as_str())
            .bind(i64::from(notice_version))
            .bind(&encoded)
            .bind(tx.today().start)
            .bind(language_tag)
            .execute(tx.conn())
            .await?;
            history(tx, purpose, "grant", notice_version, &encoded, language_tag).await?;
            let granted = Action::ConsentChanged {
                subject: tx.audit_ref(),
                purpose,
                granted: true,
                notice_version,
                kinds: encoded.clone(),
            };
            // A separate entry, so consents from clients that do not say
            // keep the encoding they always had.
            let shown_in = language.map(|l| Action::NoticeLanguage {
                subject: tx.audit_ref(),
                purpose,
                notice_version,
                language: l.as_str().to_owned(),
            });
            let (deleted, purged) = self.purge_uncovered_if_accounting(tx, purpose, &kinds).await?;
            Ok(Audited::new(deleted, granted).and(shown_in).and(purged))
        };
        let done = self
            .with_subject(access, Permission::ManageConsents, subject, Enrol::IfMissing, grant)
            .await?;
        Ok(self.consent_change(purpose, true, done).await)
    }

    /// Withdraws consent to the purpose of `access`, at once: nothing new is processed
    /// under it, and data held only for it is deleted (for `accounting`,
    /// every record; the points they earned stay the person's).
    pub async fn withdraw_consent(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<ConsentChange, StoreError> {
        let purpose = access.purpose;
        let withdraw = async |tx: &mut SubjectTx<'_>| {
            let removed: Option<(i64, String, Option<String>)> = sqlx::query_as(
                "DELETE FROM consents WHERE tenant_id = $1 AND subject = $2 AND purpose = $3 RETURNING notice_version, kinds, language",
            )
            .bind(tx.tenant().get())
            .bind(tx.ledger_ref().as_bytes().to_vec())
            .bind(purpose.as_str())
            .fetch_optional(tx.conn())
            .await?;
            let Some((notice_version, kinds, language)) = removed else {
                // Nothing to withdraw: nothing written (the transaction rolls back).
                return Ok(Audited::nothing_done());
            };
            let notice_version = u32::try_from(notice_version)
                .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?;
            history(tx, purpose, "withdraw", notice_version, &kinds, language.as_deref()).await?;
            let withdrawn = Action::ConsentChanged {
                subject: tx.audit_ref(),
                purpose,
                granted: false,
                notice_version,
                kinds,
            };
            // Nothing of any kind is covered any more.
            let none = Kinds::Only(BTreeSet::new());
            let (deleted, purged) = self.purge_uncovered_if_accounting(tx, purpose, &none).await?;
            // Without interconnection there is no link: both sides go now.
            let unlinked = match purpose {
                Purpose::Interconnection => {
                    let (tenant, subject) = (tx.tenant(), tx.ledger_ref());
                    Self::unlink_all(tx.conn(), tenant, &subject, UnlinkReason::ConsentWithdrawn).await?
                }
                _ => Vec::new(),
            };
            Ok(Audited::new(deleted, withdrawn).and(purged).and_for(unlinked))
        };
        let done = self
            .with_subject(access, Permission::ManageConsents, subject, Enrol::KnownOnly, withdraw)
            .await?;
        Ok(self.consent_change(purpose, false, done).await)
    }

    /// The outcome of a committed grant or withdrawal; purged rows leave the
    /// files now.
    async fn consent_change(&self, purpose: Purpose, granted: bool, done: Committed<(u64, i64)>) -> ConsentChange {
        let (records_deleted, points_kept) = done.value;
        if records_deleted > 0 {
            self.flush_deleted_pages(&[Log::Ledger]).await;
        }
        ConsentChange {
            purpose,
            granted,
            changed: done.audit_seq.is_some(),
            records_deleted,
            points_kept,
            audit_seq: done.audit_seq,
        }
    }

    /// Under `accounting`, deletes the records of kinds no longer covered
    /// (points earned stay the person's; the other purposes hold no data
    /// of their own yet). Returns (records deleted, points kept) and the
    /// audit entry for the deletion, if there was one.
    async fn purge_uncovered_if_accounting(
        &self,
        tx: &mut SubjectTx<'_>,
        purpose: Purpose,
        covered: &Kinds,
    ) -> Result<((u64, i64), Option<Action>), StoreError> {
        match purpose {
            Purpose::Accounting => self.purge_uncovered(tx, covered).await,
            _ => Ok(((0, 0), None)),
        }
    }

    /// Deletes the subject's records of kinds `kinds` does not cover, and
    /// their ledger entries, keeping the points those entries carried in one
    /// entry that holds no behaviour data.
    async fn purge_uncovered(
        &self,
        tx: &mut SubjectTx<'_>,
        kinds: &Kinds,
    ) -> Result<((u64, i64), Option<Action>), StoreError> {
        let Kinds::Only(kept) = kinds else {
            return Ok(((0, 0), None));
        };
        let (tenant, subject) = (tx.tenant(), tx.ledger_ref());
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
        let sums = bound(&sum_sql, tenant, &subject, kept).fetch_one(tx.conn()).await?;
        let (ledger_entries, points): (i64, i64) = (sums.try_get(0)?, sums.try_get(1)?);
        let delete_lines = format!("DELETE {lines}");
        bound(&delete_lines, tenant, &subject, kept).execute(tx.conn()).await?;
        // What those lines summed for the daily caps goes with them.
        let delete_usage = format!("DELETE FROM daily_usage WHERE tenant_id = {t} AND subject = {s}{filter}");
        bound(&delete_usage, tenant, &subject, kept).execute(tx.conn()).await?;
        // The retry keys of those records go with them: they carry each
        // event's figures. Found through the person's own keys (their
        // index), matched against the person's records read once (an
        // uncorrelated subquery: record ids have no index of their own).
        // SQLite's placeholders are positional: the person's two columns
        // are bound twice, the kinds after them.
        let mut p = Params::new(self.engine);
        let (keys_t, keys_s, records_t, records_s) = (p.one(), p.one(), p.one(), p.one());
        let records_filter = if kept.is_empty() {
            String::new()
        } else {
            format!(" AND kind NOT IN ({})", p.list(kept.len()))
        };
        let delete_keys = format!(
            "DELETE FROM idempotency_keys WHERE tenant_id = {keys_t} AND subject = {keys_s} AND record_id IN \
             (SELECT record_id FROM records WHERE tenant_id = {records_t} AND subject = {records_s}{records_filter})"
        );
        let mut delete = sqlx::query(&delete_keys)
            .persistent(false)
            .bind(tenant.get())
            .bind(subject.as_bytes().to_vec());
        delete = bound_person(delete, tenant, &subject, kept);
        delete.execute(tx.conn()).await?;
        let delete_records = format!("DELETE FROM records WHERE tenant_id = {t} AND subject = {s}{filter}");
        let records = bound(&delete_records, tenant, &subject, kept)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if points != 0 {
            let today = tx.today().day;
            sqlx::query(
                "INSERT INTO ledger_entries (tenant_id, subject, record_id, kind, variant, day, month, reduction_mg, points, \
                 methodology_version, capped, created_at) VALUES ($1, $2, NULL, '', '', $3, $4, 0, $5, '', 0, $6)",
            )
            .bind(tenant.get())
            .bind(subject.as_bytes().to_vec())
            .bind(i64::from(today.days()))
            .bind(i64::from(today.month()))
            .bind(points)
            .bind(tx.today().start)
            .execute(tx.conn())
            .await?;
        }
        let deleted = (records > 0 || ledger_entries > 0).then(|| Action::WithdrawnDataDeleted {
            subject: tx.audit_ref(),
            purpose: Purpose::Accounting,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            ledger_entries: u32::try_from(ledger_entries).unwrap_or(u32::MAX),
        });
        Ok(((records, points), deleted))
    }

    /// The subject's consents in force (an audited read).
    pub async fn consents(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<Vec<Consent>, StoreError> {
        let read = async |tx: &mut SubjectRead| {
            let (tenant, subject) = (tx.tenant(), tx.ledger_ref());
            let views = self.consent_views(tx.conn(), tenant, &subject).await?;
            let items = u32::try_from(views.len()).unwrap_or(u32::MAX);
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Consents,
                items,
            };
            Ok(Audited::new(views, read))
        };
        self.read_subject(access, Permission::ReadConsents, subject, read).await
    }

    /// The subject's consents in force, within the caller's transaction.
    pub(super) async fn consent_views(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &SubjectRef,
    ) -> Result<Vec<Consent>, StoreError> {
        let rows = sqlx::query_as::<_, ConsentRow>(
            "SELECT purpose, notice_version, kinds, granted_at, language FROM consents WHERE tenant_id = $1 AND subject = $2 ORDER BY purpose",
        )
        .bind(tenant.get())
        .bind(subject.as_bytes().to_vec())
        .fetch_all(conn)
        .await?;
        let mut consents = Vec::with_capacity(rows.len());
        for row in rows {
            let purpose = Purpose::parse(&row.purpose)
                .ok_or_else(|| StoreError::Corrupt("a stored consent names an unknown purpose".into()))?;
            let notice_version = u32::try_from(row.notice_version)
                .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?;
            consents.push(Consent {
                purpose,
                notice_version,
                current: notice_version == self.policies.consent.get(purpose).notice_version,
                kinds: Kinds::decode(&row.kinds),
                granted_at: row.granted_at,
                // A tag this version does not know reads as unsaid.
                language: row.language.as_deref().and_then(Language::parse),
            });
        }
        Ok(consents)
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
    bound_person(sqlx::query(sql).persistent(false), tenant, subject, kept)
}

/// `q` with the person's tenant and subject bound next, then the kinds kept.
fn bound_person<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    tenant: TenantId,
    subject: &SubjectRef,
    kept: &BTreeSet<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q = q.bind(tenant.get()).bind(subject.as_bytes().to_vec());
    for k in kept {
        q = q.bind(k.clone());
    }
    q
}

async fn history(
    tx: &mut SubjectTx<'_>,
    purpose: Purpose,
    action: &str,
    notice_version: u32,
    kinds: &str,
    language: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_history (tenant_id, subject, purpose, action, notice_version, kinds, at, language) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tx.tenant().get())
    .bind(tx.ledger_ref().as_bytes().to_vec())
    .bind(purpose.as_str())
    .bind(action)
    .bind(i64::from(notice_version))
    .bind(kinds)
    .bind(tx.today().start)
    .bind(language)
    .execute(tx.conn())
    .await?;
    Ok(())
}
