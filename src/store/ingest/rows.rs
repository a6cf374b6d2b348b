//! The rows a batch writes, one type per table with its columns next to
//! its values, inserted in a few multi-row statements.

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;

use super::Receipt;
use crate::crypto::{EventKey, SubjectRef};
use crate::domain::{CoarseRecord, Day, TenantId};
use crate::store::sql::{insert_rows, select_in, Arg};
use crate::store::{Engine, StoreError};
use time::{Date, Month};

/// A sealed record: only its kind and day are in clear. Keyed by the
/// sequence number of the audit entry that records it, so that records
/// append at the end of their table whatever their random ids (records
/// from before migration 15 have negative numbers instead).
struct RecordRow {
    seq: u64,
    record_id: [u8; 16],
    tenant: i64,
    subject: SubjectRef,
    kind: String,
    day: i32,
    key_version: u32,
    sealed: Vec<u8>,
    created_at: i64,
}

impl RecordRow {
    const TABLE: &str = "records";
    const COLUMNS: [&str; 9] = [
        "seq",
        "record_id",
        "tenant_id",
        "subject",
        "kind",
        "day",
        "key_version",
        "sealed",
        "created_at",
    ];

    fn values(self) -> Vec<Arg> {
        vec![
            Arg::Int(self.seq as i64),
            Arg::Blob(self.record_id.to_vec()),
            Arg::Int(self.tenant),
            Arg::Blob(self.subject.as_bytes().to_vec()),
            Arg::Text(self.kind),
            Arg::Int(self.day.into()),
            Arg::Int(self.key_version.into()),
            Arg::Blob(self.sealed),
            Arg::Int(self.created_at),
        ]
    }
}

/// The accounting line a record earns.
struct LedgerRow {
    tenant: i64,
    subject: SubjectRef,
    record_id: [u8; 16],
    kind: String,
    variant: String,
    day: i32,
    month: i32,
    receipt: Receipt,
    created_at: i64,
}

impl LedgerRow {
    const TABLE: &str = "ledger_entries";
    const COLUMNS: [&str; 15] = [
        "tenant_id",
        "subject",
        "record_id",
        "record_seq",
        "kind",
        "variant",
        "day",
        "month",
        "reduction_mg",
        "points",
        "methodology_version",
        "capped",
        "created_at",
        "counted_elsewhere_mg",
        "counted_elsewhere_points",
    ];

    fn values(self) -> Vec<Arg> {
        let elsewhere = elsewhere(&self.receipt);
        vec![
            Arg::Int(self.tenant),
            Arg::Blob(self.subject.as_bytes().to_vec()),
            Arg::Blob(self.record_id.to_vec()),
            // The record's key (`RecordRow::seq`).
            Arg::Int(self.receipt.audit_seq as i64),
            Arg::Text(self.kind),
            Arg::Text(self.variant),
            Arg::Int(self.day.into()),
            Arg::Int(self.month.into()),
            Arg::Int(self.receipt.reduction.0),
            Arg::Int(self.receipt.points),
            Arg::Text(self.receipt.methodology_version),
            Arg::Int(self.receipt.capped.into()),
            Arg::Int(self.created_at),
            Arg::Int(elsewhere.0),
            Arg::Int(elsewhere.1),
        ]
    }
}

/// Milligrams and points of the receipt counted elsewhere (0 and 0 if none).
fn elsewhere(receipt: &Receipt) -> (i64, i64) {
    receipt.counted_elsewhere.map_or((0, 0), |e| (e.reduction.0, e.points))
}

/// The retry key of an event: its keyed id, its content's fingerprint and
/// the receipt a retry gets back.
struct IdempotencyRow {
    tenant: i64,
    event_key: [u8; 32],
    fingerprint: [u8; 32],
    subject: SubjectRef,
    receipt: Receipt,
    created_at: i64,
}

impl IdempotencyRow {
    const TABLE: &str = "idempotency_keys";
    const COLUMNS: [&str; 13] = [
        "tenant_id",
        "event_key",
        "content_hash",
        "subject",
        "record_id",
        "reduction_mg",
        "points",
        "methodology_version",
        "capped",
        "audit_seq",
        "created_at",
        "counted_elsewhere_mg",
        "counted_elsewhere_points",
    ];

    fn values(self) -> Vec<Arg> {
        let elsewhere = elsewhere(&self.receipt);
        vec![
            Arg::Int(self.tenant),
            Arg::Blob(self.event_key.to_vec()),
            Arg::Blob(self.fingerprint.to_vec()),
            Arg::Blob(self.subject.as_bytes().to_vec()),
            Arg::Blob(self.receipt.record_id.0.to_vec()),
            Arg::Int(self.receipt.reduction.0),
            Arg::Int(self.receipt.points),
            Arg::Text(self.receipt.methodology_version),
            Arg::Int(self.receipt.capped.into()),
            Arg::Int(self.receipt.audit_seq as i64),
            Arg::Int(self.created_at),
            Arg::Int(elsewhere.0),
            Arg::Int(elsewhere.1),
        ]
    }
}

/// Report totals per tenant, kind and month, added to what is stored.
struct TotalsRow {
    tenant: i64,
    kind: String,
    month: i32,
    events: i64,
    reduction_mg: i64,
    points: i64,
    /// People with their first behaviour of the cell in this batch.
    people: i64,
}

impl TotalsRow {
    const TABLE: &str = "reduction_totals";
    const COLUMNS: [&str; 7] = [
        "tenant_id",
        "kind",
        "month",
        "events",
        "reduction_mg",
        "points",
        "people",
    ];
    const ADD_TO_STORED: &str = "ON CONFLICT (tenant_id, kind, month) DO UPDATE SET \
         events = reduction_totals.events + excluded.events, \
         reduction_mg = reduction_totals.reduction_mg + excluded.reduction_mg, \
         points = reduction_totals.points + excluded.points, \
         people = reduction_totals.people + excluded.people";

    fn values(self) -> Vec<Arg> {
        vec![
            Arg::Int(self.tenant),
            Arg::Text(self.kind),
            Arg::Int(self.month.into()),
            Arg::Int(self.events),
            Arg::Int(self.reduction_mg),
            Arg::Int(self.points),
            Arg::Int(self.people),
        ]
    }
}

/// What one account reported on one day, kind and variant, added to what
/// is stored (see migration 0014).
struct UsageRow {
    tenant: i64,
    key: UsageKey,
    credited: i64,
    reduction_mg: i64,
}

impl UsageRow {
    const TABLE: &str = "daily_usage";
    const COLUMNS: [&str; 7] = [
        "tenant_id",
        "subject",
        "day",
        "kind",
        "variant",
        "credited",
        "reduction_mg",
    ];
    const ADD_TO_STORED: &str = "ON CONFLICT (tenant_id, subject, day, kind, variant) DO UPDATE SET \
         credited = daily_usage.credited + excluded.credited, \
         reduction_mg = daily_usage.reduction_mg + excluded.reduction_mg";

    fn values(self) -> Vec<Arg> {
        let (subject, day, kind, variant) = self.key;
        vec![
            Arg::Int(self.tenant),
            Arg::Blob(subject.as_bytes().to_vec()),
            Arg::Int(day.into()),
            Arg::Text(kind),
            Arg::Text(variant),
            Arg::Int(self.credited),
            Arg::Int(self.reduction_mg),
        ]
    }
}

/// A `daily_usage` key: subject, day, kind, variant.
type UsageKey = (SubjectRef, i32, String, String);

/// Everything a batch writes besides its audit entries.
#[derive(Default)]
pub(super) struct BatchRows {
    records: Vec<Vec<Arg>>,
    ledger: Vec<Vec<Arg>>,
    keys: Vec<Vec<Arg>>,
    /// Credited lines and milligrams (as reported: earned plus counted
    /// elsewhere) per key, one row per key: PostgreSQL refuses to update a
    /// row twice in one `INSERT … ON CONFLICT`.
    usage: HashMap<UsageKey, (i64, i64)>,
    /// Events, milligrams and points per (kind, month).
    totals: HashMap<(String, i32), (i64, i64, i64)>,
    /// The people each (kind, month) cell of the batch has.
    people: HashSet<(SubjectRef, String, i32)>,
}

impl BatchRows {
    /// The rows of one recorded event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        tenant: TenantId,
        subject: SubjectRef,
        event_key: &EventKey,
        fingerprint: [u8; 32],
        record: &CoarseRecord,
        // The key version and the record sealed under it.
        (key_version, sealed): (u32, Vec<u8>),
        receipt: &Receipt,
        created_at: i64,
    ) {
        let (tenant, kind, day) = (tenant.get(), record.kind().to_owned(), record.day());
        let reported_mg = receipt.reduction.0 + elsewhere(receipt).0;
        let used = self
            .usage
            .entry((
                subject,
                day.days(),
                kind.clone(),
                record.variant().unwrap_or("").to_owned(),
            ))
            .or_default();
        *used = (used.0 + i64::from(reported_mg > 0), used.1 + reported_mg);
        self.records.push(
            RecordRow {
                seq: receipt.audit_seq,
                record_id: receipt.record_id.0,
                tenant,
                subject,
                kind: kind.clone(),
                day: day.days(),
                key_version,
                sealed,
                created_at,
            }
            .values(),
        );
        self.ledger.push(
            LedgerRow {
                tenant,
                subject,
                record_id: receipt.record_id.0,
                kind: kind.clone(),
                variant: record.variant().unwrap_or("").to_owned(),
                day: day.days(),
                month: day.month(),
                receipt: receipt.clone(),
                created_at,
            }
            .values(),
        );
        self.keys.push(
            IdempotencyRow {
                tenant,
                event_key: *event_key.as_bytes(),
                fingerprint,
                subject,
                receipt: receipt.clone(),
                created_at,
            }
            .values(),
        );
        self.people.insert((subject, kind.clone(), day.month()));
        let cell = self.totals.entry((kind, day.month())).or_default();
        *cell = (cell.0 + 1, cell.1 + receipt.reduction.0, cell.2 + receipt.points);
    }

    pub(super) async fn write(
        self,
        conn: &mut AnyConnection,
        engine: Engine,
        tenant: TenantId,
    ) -> Result<(), StoreError> {
        // People new to a cell: those without a ledger line of it before
        // this batch (read before the batch's own lines are written).
        let mut people: HashMap<(String, i32), i64> = HashMap::new();
        let known = known_in_cells(conn, engine, tenant, &self.people).await?;
        for (subject, kind, month) in self.people {
            if !known.contains(&(subject, kind.clone(), month)) {
                *people.entry((kind, month)).or_default() += 1;
            }
        }
        insert_rows(conn, engine, RecordRow::TABLE, &RecordRow::COLUMNS, self.records, "").await?;
        insert_rows(conn, engine, LedgerRow::TABLE, &LedgerRow::COLUMNS, self.ledger, "").await?;
        insert_rows(
            conn,
            engine,
            IdempotencyRow::TABLE,
            &IdempotencyRow::COLUMNS,
            self.keys,
            "",
        )
        .await?;
        let usage = self
            .usage
            .into_iter()
            .map(|(key, (credited, reduction_mg))| {
                UsageRow {
                    tenant: tenant.get(),
                    key,
                    credited,
                    reduction_mg,
                }
                .values()
            })
            .collect();
        insert_rows(
            conn,
            engine,
            UsageRow::TABLE,
            &UsageRow::COLUMNS,
            usage,
            UsageRow::ADD_TO_STORED,
        )
        .await?;
        // One row per cell in the statement: PostgreSQL refuses to update a
        // row twice in one INSERT ... ON CONFLICT.
        let totals = self
            .totals
            .into_iter()
            .map(|((kind, month), (events, reduction_mg, points))| {
                TotalsRow {
                    tenant: tenant.get(),
                    people: people.get(&(kind.clone(), month)).copied().unwrap_or(0),
                    kind,
                    month,
                    events,
                    reduction_mg,
                    points,
                }
                .values()
            })
            .collect();
        insert_rows(
            conn,
            engine,
            TotalsRow::TABLE,
            &TotalsRow::COLUMNS,
            totals,
            TotalsRow::ADD_TO_STORED,
        )
        .await?;
        Ok(())
    }
}

/// Which of `cells` (subject, kind, month) already have a ledger line: a
/// `daily_usage` row on a day of that month (read before the batch's own
/// rows are written).
async fn known_in_cells(
    conn: &mut AnyConnection,
    engine: Engine,
    tenant: TenantId,
    cells: &HashSet<(SubjectRef, String, i32)>,
) -> Result<HashSet<(SubjectRef, String, i32)>, StoreError> {
    let Some(first) = cells.iter().map(|c| c.2).min() else {
        return Ok(HashSet::new());
    };
    let last = cells.iter().map(|c| c.2).max().unwrap_or(first);
    let (from, to) = month_days(first, last)?;
    let subjects: HashSet<SubjectRef> = cells.iter().map(|c| c.0).collect();
    let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
    let leading = [Arg::Int(tenant.get()), Arg::Int(from.into()), Arg::Int(to.into())];
    let rows = select_in(conn, engine, &leading, &list, |p, n| {
        format!(
            "SELECT DISTINCT subject, kind, day FROM daily_usage WHERE tenant_id = {} AND day >= {} \
             AND day <= {} AND subject IN ({})",
            p.one(),
            p.one(),
            p.one(),
            p.list(n)
        )
    })
    .await?;
    let mut known = HashSet::with_capacity(rows.len());
    for row in rows {
        use sqlx::Row;
        let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
            .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
        let day =
            Day::from_days(row.try_get::<i64, _>(2)?).ok_or_else(|| StoreError::Corrupt("day out of range".into()))?;
        known.insert((subject, row.try_get::<String, _>(1)?, day.month()));
    }
    Ok(known)
}

/// The first day of month `first` and the last of month `last` (`YYYYMM`).
fn month_days(first: i32, last: i32) -> Result<(i32, i32), StoreError> {
    let out_of_range = || StoreError::Corrupt("month out of range".into());
    let start = |month: i32| -> Result<Date, StoreError> {
        let m = Month::try_from(u8::try_from(month % 100).map_err(|_| out_of_range())?).map_err(|_| out_of_range())?;
        Date::from_calendar_date(month / 100, m, 1).map_err(|_| out_of_range())
    };
    let last = start(last)?;
    let end = last
        .replace_day(last.month().length(last.year()))
        .map_err(|_| out_of_range())?;
    Ok((Day::from_date(start(first)?).days(), Day::from_date(end).days()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_spans_its_days() {
        let day = |y, m, d| Day::from_date(Date::from_calendar_date(y, m, d).unwrap()).days();
        assert_eq!(
            month_days(202602, 202602).unwrap(),
            (day(2026, Month::February, 1), day(2026, Month::February, 28))
        );
        assert_eq!(
            month_days(202412, 202501).unwrap(),
            (day(2024, Month::December, 1), day(2025, Month::January, 31))
        );
        assert!(month_days(202613, 202613).is_err());
    }
}
