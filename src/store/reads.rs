//! Reads of personal data. Each appends its audit entry in the same
//! transaction, before the data is returned.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::access::{Audited, Enrol, SubjectTx};
use super::ingest::RecordId;
use super::{Access, Store, StoreError};
use crate::audit::{Action, ReadScope};
use crate::crypto::{open, RecordAad, SubjectKeys};
use crate::domain::{month_label, CoarseRecord, Day, Milligrams, SubjectId, TenantId};
use crate::policy::Permission;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Total {
    /// The kind, or the month as `YYYY-MM`.
    pub key: String,
    pub events: i64,
    pub reduction_g: Milligrams,
    pub points: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Account {
    pub events: i64,
    pub reduction_g: Milligrams,
    pub points_balance: i64,
    pub by_kind: Vec<Total>,
    pub by_month: Vec<Total>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RecordView {
    pub record_id: String,
    pub day: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub reduction_g: Milligrams,
    pub points: i64,
    pub methodology_version: String,
    pub capped: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Position after the last record of a page: `(day, record id)`.
pub fn parse_cursor(cursor: &str) -> Option<(Day, RecordId)> {
    let (day, id) = cursor.split_once('.')?;
    Some((Day::from_days(day.parse().ok()?)?, RecordId::parse(id)?))
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
        "SELECT {group}, CAST(COALESCE(SUM(CASE WHEN record_id IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(reduction_mg), 0) AS BIGINT), CAST(COALESCE(SUM(points), 0) AS BIGINT) \
         FROM ledger_entries WHERE tenant_id = $1 AND subject = $2 AND day >= $3{only} GROUP BY {group} ORDER BY {group}"
    )
}

impl Store {
    pub async fn account(&self, access: &Access, subject: &SubjectId) -> Result<Account, StoreError> {
        let cutoff = self.cutoffs().ledger_day;
        let read = async |tx: &mut SubjectTx<'_>| {
            let (tenant, s) = (tx.tenant().get(), tx.ledger_ref().as_bytes().to_vec());
            let by_kind = sqlx::query(&totals_sql("kind", true))
                .bind(tenant)
                .bind(s.clone())
                .bind(cutoff)
                .fetch_all(tx.conn())
                .await?;
            let by_month = sqlx::query(&totals_sql("month", false))
                .bind(tenant)
                .bind(s)
                .bind(cutoff)
                .fetch_all(tx.conn())
                .await?;
            let to_total = |row: &sqlx::any::AnyRow, key: String| -> Result<Total, StoreError> {
                Ok(Total {
                    key,
                    events: row.try_get(1)?,
                    reduction_g: Milligrams(row.try_get(2)?),
                    points: row.try_get(3)?,
                })
            };
            let by_kind = by_kind
                .iter()
                .map(|r| to_total(r, r.try_get(0)?))
                .collect::<Result<Vec<_>, _>>()?;
            let by_month = by_month
                .iter()
                .map(|r| to_total(r, month_label(r.try_get(0)?)))
                .collect::<Result<Vec<_>, _>>()?;
            let account = Account {
                events: by_kind.iter().map(|t| t.events).sum(),
                reduction_g: Milligrams(by_kind.iter().map(|t| t.reduction_g.0).sum()),
                points_balance: by_month.iter().map(|t| t.points).sum(),
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
        let done = self
            .with_subject(access, Permission::ReadSubjects, subject, Enrol::KnownOnly, read)
            .await?;
        Ok(done.value)
    }

    /// The subject's coarse records, decrypted, newest day first.
    pub async fn records(
        &self,
        access: &Access,
        subject: &SubjectId,
        limit: u32,
        cursor: Option<(Day, RecordId)>,
    ) -> Result<RecordPage, StoreError> {
        let read = async |tx: &mut SubjectTx<'_>| {
            let tenant = tx.tenant();
            let (conn, keys) = tx.conn_and_keys();
            let (records, next) = self
                .record_page(conn, tenant, keys, limit.clamp(1, 1000), cursor)
                .await?;
            let items = u32::try_from(records.len()).unwrap_or(u32::MAX);
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Records,
                items,
            };
            Ok(Audited::new((records, next), read))
        };
        let done = self
            .with_subject(access, Permission::ReadSubjects, subject, Enrol::KnownOnly, read)
            .await?;
        let (records, next) = done.value;
        let next_cursor = next.map(|(day, id)| format!("{}.{id}", day.days()));
        Ok(RecordPage { records, next_cursor })
    }

    /// One page of the subject's records within retention, opened, newest
    /// day first, and where the next page starts (if there is one).
    pub(super) async fn record_page(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        keys: &SubjectKeys,
        limit: u32,
        cursor: Option<(Day, RecordId)>,
    ) -> Result<(Vec<RecordView>, Option<(Day, RecordId)>), StoreError> {
        let ledger_ref = keys.ledger_ref;
        let (before_day, before_id) = cursor.map_or((i64::MAX, vec![0xff; 16]), |(d, id)| {
            (i64::from(d.days()), id.0.to_vec())
        });
        let rows = sqlx::query(
            "SELECT r.record_id, r.key_version, r.sealed, l.reduction_mg, l.points, l.methodology_version, l.capped, \
             r.kind, r.day \
             FROM records r JOIN ledger_entries l ON l.record_id = r.record_id \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND (r.day, r.record_id) < ($3, $4) \
             AND r.day >= $5 ORDER BY r.day DESC, r.record_id DESC LIMIT $6",
        )
        .bind(tenant.get())
        .bind(ledger_ref.as_bytes().to_vec())
        .bind(before_day)
        .bind(before_id)
        .bind(self.cutoffs().records_day)
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
        let more = rows.len() > limit as usize;
        let mut records = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let record_id = RecordId::from_stored(&row.try_get::<Vec<u8>, _>(0)?)?;
            let key_version = u32::try_from(row.try_get::<i64, _>(1)?).map_err(|_| StoreError::Integrity)?;
            let sealed: Vec<u8> = row.try_get(2)?;
            if key_version != keys.key_version {
                return Err(StoreError::Integrity);
            }
            // The clear kind and day are bound into the associated data:
            // editing them makes the record fail to open.
            let kind: String = row.try_get(7)?;
            let day = i32::try_from(row.try_get::<i64, _>(8)?).map_err(|_| StoreError::Integrity)?;
            let aad = RecordAad {
                record_id: &record_id.0,
                subject: &ledger_ref,
                key_version,
                kind: &kind,
                day,
            };
            let plain = open(keys, &aad, &sealed).map_err(|_| StoreError::Integrity)?;
            let record = CoarseRecord::decode(&plain).ok_or(StoreError::Integrity)?;
            if record.kind() != kind || record.day().days() != day {
                return Err(StoreError::Integrity);
            }
            last = Some((record.day(), record_id));
            records.push(RecordView {
                record_id: record_id.to_string(),
                day: record.day().to_string(),
                kind: record.kind().to_owned(),
                variant: record.variant().map(str::to_owned),
                quantity: record.quantity(),
                region: record.region().map(str::to_owned),
                reduction_g: Milligrams(row.try_get(3)?),
                points: row.try_get(4)?,
                methodology_version: row.try_get(5)?,
                capped: row.try_get::<i64, _>(6)? != 0,
            });
        }
        Ok((records, if more { last } else { None }))
    }
}
