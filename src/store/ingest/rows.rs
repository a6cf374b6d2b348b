//! The rows a batch writes, one type per table with its columns next to
//! its values, inserted in a few multi-row statements.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::Receipt;
use crate::crypto::{EventKey, SubjectRef, CURRENT_KEY_VERSION};
use crate::domain::{CoarseRecord, TenantId};
use crate::store::sql::{insert_rows, Arg};
use crate::store::{Engine, StoreError};

/// A sealed record: only its kind and day are in clear.
struct RecordRow {
    record_id: [u8; 16],
    tenant: i64,
    subject: SubjectRef,
    kind: String,
    day: i32,
    sealed: Vec<u8>,
    created_at: i64,
}

impl RecordRow {
    const TABLE: &str = "records";
    const COLUMNS: [&str; 8] = [
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
            Arg::Blob(self.record_id.to_vec()),
            Arg::Int(self.tenant),
            Arg::Blob(self.subject.as_bytes().to_vec()),
            Arg::Text(self.kind),
            Arg::Int(self.day.into()),
            Arg::Int(CURRENT_KEY_VERSION.into()),
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
    const COLUMNS: [&str; 14] = [
        "tenant_id",
        "subject",
        "record_id",
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
}

impl TotalsRow {
    const TABLE: &str = "reduction_totals";
    const COLUMNS: [&str; 6] = ["tenant_id", "kind", "month", "events", "reduction_mg", "points"];
    const ADD_TO_STORED: &str = "ON CONFLICT (tenant_id, kind, month) DO UPDATE SET \
         events = reduction_totals.events + excluded.events, \
         reduction_mg = reduction_totals.reduction_mg + excluded.reduction_mg, \
         points = reduction_totals.points + excluded.points";

    fn values(self) -> Vec<Arg> {
        vec![
            Arg::Int(self.tenant),
            Arg::Text(self.kind),
            Arg::Int(self.month.into()),
            Arg::Int(self.events),
            Arg::Int(self.reduction_mg),
            Arg::Int(self.points),
        ]
    }
}

/// Everything a batch writes besides its audit entries.
#[derive(Default)]
pub(super) struct BatchRows {
    records: Vec<Vec<Arg>>,
    ledger: Vec<Vec<Arg>>,
    keys: Vec<Vec<Arg>>,
    /// Events, milligrams and points per (kind, month).
    totals: HashMap<(String, i32), (i64, i64, i64)>,
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
        sealed: Vec<u8>,
        receipt: &Receipt,
        created_at: i64,
    ) {
        let (tenant, kind, day) = (tenant.get(), record.kind().to_owned(), record.day());
        self.records.push(
            RecordRow {
                record_id: receipt.record_id.0,
                tenant,
                subject,
                kind: kind.clone(),
                day: day.days(),
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
        let cell = self.totals.entry((kind, day.month())).or_default();
        *cell = (cell.0 + 1, cell.1 + receipt.reduction.0, cell.2 + receipt.points);
    }

    pub(super) async fn write(
        self,
        conn: &mut AnyConnection,
        engine: Engine,
        tenant: TenantId,
    ) -> Result<(), StoreError> {
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
        // One row per cell in the statement: PostgreSQL refuses to update a
        // row twice in one INSERT ... ON CONFLICT.
        let totals = self
            .totals
            .into_iter()
            .map(|((kind, month), (events, reduction_mg, points))| {
                TotalsRow {
                    tenant: tenant.get(),
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
