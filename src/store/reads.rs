//! Reads of personal data: a person's account totals and their coarse
//! records, each through the one door (`access.rs`), read in a snapshot
//! and logged before anything is returned.

use sqlx::AnyConnection;

use super::access::{Audited, SubjectRead};
use super::ingest::RecordId;
use super::points::PointsSummary;
use super::retention::Cutoffs;
use super::{Access, Store, StoreError, SubjectHandle};
use crate::audit::{Action, ReadScope};
use crate::crypto::{RecordAad, SubjectKeys};
use crate::domain::{CoarseRecord, Day, Milligrams, TenantId};
use crate::policy::Permission;

/// Events, reduction and points of a group of ledger entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: i64,
    pub reduction: Milligrams,
    pub points: i64,
}

/// A person's account within retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Behaviours recorded (ledger entries backed by a record).
    pub events: i64,
    pub reduction: Milligrams,
    /// The points balance (the points ledger's, net of anything past its
    /// expiry).
    pub points_balance: i64,
    /// Earned, spent, expired, and what expires within the notice period.
    pub points: PointsSummary,
    pub by_kind: Vec<(String, Totals)>,
    /// By month, as `YYYYMM`.
    pub by_month: Vec<(i64, Totals)>,
}

/// A record as stored: the coarse record, opened, with the figures its
/// ledger entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub record_id: RecordId,
    pub record: CoarseRecord,
    pub reduction: Milligrams,
    pub points: i64,
    pub methodology_version: String,
    pub capped: bool,
}

/// One page of a person's records, newest day first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPage {
    pub records: Vec<StoredRecord>,
    /// Where the next (older) page starts; `None` on the last.
    pub next: Option<(Day, RecordId)>,
}

/// A row of `totals_sql`.
#[derive(sqlx::FromRow)]
struct TotalsRow<K> {
    grp: K,
    events: i64,
    reduction_mg: i64,
    points: i64,
}

impl<K> TotalsRow<K> {
    fn split(self) -> (K, Totals) {
        let totals = Totals {
            events: self.events,
            reduction: Milligrams(self.reduction_mg),
            points: self.points,
        };
        (self.grp, totals)
    }
}

/// Totals of the subject's ledger entries within retention, grouped. Events
/// and grams count behaviours (entries backed by a record); points count
/// every entry, including points kept after a withdrawal.
fn totals_sql(group: &str, behaviours_only: bool) -> String {
    let only = if behaviours_only {
        " AND record_id IS NOT NULL"
    } else {
        ""
    };
    format!(
        "SELECT {group} AS grp, CAST(COALESCE(SUM(CASE WHEN record_id IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS events, \
         CAST(COALESCE(SUM(reduction_mg), 0) AS BIGINT) AS reduction_mg, CAST(COALESCE(SUM(points), 0) AS BIGINT) AS points \
         FROM ledger_entries WHERE tenant_id = $1 AND subject = $2 AND day >= $3{only} GROUP BY {group} ORDER BY {group}"
    )
}

/// A row of a record page: the sealed record and its ledger figures.
#[derive(sqlx::FromRow)]
struct SealedRow {
    record_id: Vec<u8>,
    /// The record id its ledger line names: the join is by sequence
    /// number, which the associated data does not bind, so a line paired
    /// with another record by an edit is caught here.
    line_record_id: Option<Vec<u8>>,
    key_version: i64,
    sealed: Vec<u8>,
    kind: String,
    day: i64,
    reduction_mg: i64,
    points: i64,
    methodology_version: String,
    capped: i64,
}

impl Store {
    pub async fn account(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<Account, StoreError> {
        let read = async |tx: &mut SubjectRead| {
            let cutoff = self.cutoffs(&tx.today()).ledger_day;
            let (tenant, s) = (tx.tenant().get(), tx.ledger_ref().as_bytes().to_vec());
            let by_kind: Vec<(String, Totals)> = sqlx::query_as::<_, TotalsRow<String>>(&totals_sql("kind", true))
                .bind(tenant)
                .bind(s.clone())
                .bind(cutoff)
                .fetch_all(tx.conn())
                .await?
                .into_iter()
                .map(TotalsRow::split)
                .collect();
            let by_month: Vec<(i64, Totals)> = sqlx::query_as::<_, TotalsRow<i64>>(&totals_sql("month", false))
                .bind(tenant)
                .bind(s)
                .bind(cutoff)
                .fetch_all(tx.conn())
                .await?
                .into_iter()
                .map(TotalsRow::split)
                .collect();
            let today = tx.today().day;
            let (tenant, subject) = (tx.tenant(), tx.ledger_ref());
            let notice = self.policies.points.notice_days;
            let points = super::points::position(tx.conn(), tenant, &subject, today, notice)
                .await?
                .summary;
            let account = Account {
                events: by_kind.iter().map(|(_, t)| t.events).sum(),
                reduction: Milligrams(by_kind.iter().map(|(_, t)| t.reduction.0).sum()),
                points_balance: points.balance,
                points,
                by_kind,
                by_month,
            };
            let items = u32::try_from(account.events).unwrap_or(u32::MAX);
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Account,
                items,
            };
            Ok(Audited::new(account, read))
        };
        self.read_subject(access, Permission::ReadSubjects, subject, read).await
    }

    /// The subject's coarse records, decrypted, newest day first.
    pub async fn records(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
        limit: u32,
        cursor: Option<(Day, RecordId)>,
    ) -> Result<RecordPage, StoreError> {
        let read = async |tx: &mut SubjectRead| {
            let (tenant, cutoffs) = (tx.tenant(), self.cutoffs(&tx.today()));
            let (conn, keys) = tx.conn_and_keys();
            let page = self
                .record_page(conn, tenant, keys, &cutoffs, limit.clamp(1, 1000), cursor)
                .await?;
            let items = u32::try_from(page.records.len()).unwrap_or(u32::MAX);
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Records,
                items,
            };
            Ok(Audited::new(page, read))
        };
        self.read_subject(access, Permission::ReadSubjects, subject, read).await
    }

    /// One page of the subject's records within retention, opened, newest
    /// day first, and where the next page starts (if there is one).
    pub(super) async fn record_page(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        keys: &SubjectKeys,
        cutoffs: &Cutoffs,
        limit: u32,
        cursor: Option<(Day, RecordId)>,
    ) -> Result<RecordPage, StoreError> {
        let ledger_ref = keys.ledger_ref;
        let (before_day, before_id) = cursor.map_or((i64::MAX, vec![0xff; 16]), |(d, id)| {
            (i64::from(d.days()), id.0.to_vec())
        });
        let rows = sqlx::query_as::<_, SealedRow>(
            "SELECT r.record_id, l.record_id AS line_record_id, r.key_version, r.sealed, r.kind, r.day, \
             l.reduction_mg, l.points, \
             l.methodology_version, l.capped \
             FROM records r JOIN ledger_entries l ON l.record_seq = r.seq \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND (r.day, r.record_id) < ($3, $4) \
             AND r.day >= $5 ORDER BY r.day DESC, r.record_id DESC LIMIT $6",
        )
        .bind(tenant.get())
        .bind(ledger_ref.as_bytes().to_vec())
        .bind(before_day)
        .bind(before_id)
        .bind(cutoffs.records_day)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
        let more = rows.len() > limit as usize;
        let mut records = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.into_iter().take(limit as usize) {
            let record_id = RecordId::from_stored(&row.record_id)?;
            if row.line_record_id.as_deref() != Some(row.record_id.as_slice()) {
                return Err(StoreError::Integrity);
            }
            let key_version = u32::try_from(row.key_version).map_err(|_| StoreError::Integrity)?;
            if !keys.opens(key_version) {
                // Sealed by another server under a version this one has
                // not loaded yet: the door catches up, the client retries.
                return Err(StoreError::KeyRotated);
            }
            // The clear kind and day are bound into the associated data:
            // editing them makes the record fail to open.
            let day = i32::try_from(row.day).map_err(|_| StoreError::Integrity)?;
            let aad = RecordAad {
                record_id: &record_id.0,
                subject: &ledger_ref,
                key_version,
                kind: &row.kind,
                day,
            };
            let plain = self
                .sealing
                .open(keys, &aad, &row.sealed)
                .map_err(|_| StoreError::Integrity)?;
            let record = CoarseRecord::decode(&plain).ok_or(StoreError::Integrity)?;
            if record.kind() != row.kind || record.day().days() != day {
                return Err(StoreError::Integrity);
            }
            records.push(StoredRecord {
                record_id,
                record,
                reduction: Milligrams(row.reduction_mg),
                points: row.points,
                methodology_version: row.methodology_version,
                capped: row.capped != 0,
            });
        }
        let next = more
            .then(|| records.last().map(|r| (r.record.day(), r.record_id)))
            .flatten();
        Ok(RecordPage { records, next })
    }
}
