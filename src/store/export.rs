//! The export of everything held on a person (PIPL Art. 45, GDPR Art. 15
//! and 20), as one document, in one audited read. Its layout is
//! `docs/export.schema.json`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use sqlx::{Any, AnyConnection, Row, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::access::{Audited, Enrol, SubjectTx};
use super::consent::Kinds;
use super::reads::RecordView;
use super::retention::Cutoffs;
use super::{Access, Store, StoreError};
use crate::audit::{Action, AuditEntry, ReadScope};
use crate::crypto::SubjectKeys;
use crate::domain::{Day, Methodology, Milligrams, SubjectId, TenantId};
use crate::policy::{DataClass, Permission};

pub const EXPORT_FORMAT: &str = "carbon-ledger-export/1";

/// What an export holds besides its long lists, which `ExportSession`
/// hands out page by page: records, ledger lines and audit entries.
#[derive(Clone, Debug, Serialize)]
pub struct ExportHeader {
    pub format: &'static str,
    pub generated_on: String,
    /// The platform that reported the data and holds this account.
    pub controller: Controller,
    pub consents: Vec<super::ConsentView>,
    pub consent_history: Vec<ConsentEvent>,
    /// Totals of the ledger lines: grams of the behaviours, and every
    /// line's points.
    pub reduction_g: Milligrams,
    pub points_balance: i64,
    /// How many records the export holds (what the audit entry counts).
    pub records: u32,
    pub processing: Processing,
}

/// The whole export in one value, for tests and tools (memory grows with
/// the person's data).
#[derive(Clone, Debug)]
pub struct Export {
    pub header: ExportHeader,
    pub records: Vec<ExportRecord>,
    pub ledger_lines: Vec<LedgerLine>,
    pub audit_entries: Vec<AuditEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Controller {
    pub tenant: i64,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConsentEvent {
    pub purpose: String,
    pub action: String,
    pub notice_version: u32,
    pub all_kinds: bool,
    pub kinds: Vec<String>,
    pub on: String,
}

/// A record with the factor that produced its figures.
#[derive(Clone, Debug, Serialize)]
pub struct ExportRecord {
    #[serde(flatten)]
    pub record: RecordView,
    pub factor: Option<Arc<Factor>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Factor {
    /// What one unit is ("event" for check-ins).
    pub unit: String,
    pub g_per_unit: f64,
    pub points_per_unit: u32,
    pub source: String,
    pub points_source: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerLine {
    pub day: String,
    /// Absent for points kept after a withdrawal.
    pub record_id: Option<String>,
    pub kind: Option<String>,
    pub variant: Option<String>,
    pub reduction_g: Milligrams,
    pub points: i64,
    pub methodology_version: Option<String>,
    pub capped: bool,
}

/// Why and how long data is processed, and who receives it (GDPR Art. 15(1)).
#[derive(Clone, Debug, Serialize)]
pub struct Processing {
    pub purposes: Vec<Value>,
    pub retention: Vec<Value>,
    pub recipients: Vec<String>,
    pub methodologies: Vec<Value>,
}

fn day_label(days: i64) -> String {
    Day::from_days(days).map(|d| d.to_string()).unwrap_or_default()
}

fn factor_of(m: &Methodology, kind: &str, variant: Option<&str>) -> Option<Factor> {
    let rule = m.kinds.get(kind)?;
    let credit = match (&rule.credit, &rule.variants, variant) {
        (Some(c), _, None) => c,
        (_, Some(v), Some(name)) => v.values.get(name)?,
        _ => return None,
    };
    Some(Factor {
        unit: rule
            .quantity
            .as_ref()
            .map_or_else(|| "event".to_owned(), |q| q.unit.clone()),
        g_per_unit: credit.g_per_unit,
        points_per_unit: credit.points_per_unit,
        source: credit.source.clone(),
        points_source: credit.points_source.clone(),
    })
}

/// Rows read per page: bounds the memory an export takes, whatever its size.
pub const EXPORT_PAGE: u32 = 500;

/// An export being read, from a read-only snapshot of the ledger whose
/// access is already in the audit log: everything it hands out is what the
/// logged read saw. Holds one of the store's export slots and one
/// connection until dropped or closed.
pub struct ExportSession {
    snapshot: Transaction<'static, Any>,
    _slot: OwnedSemaphorePermit,
    tenant: TenantId,
    keys: SubjectKeys,
    cutoffs: Cutoffs,
    methodologies: HashMap<String, Methodology>,
    /// Factors already looked up, by (methodology version, kind, variant):
    /// a long export repeats a few of them many times.
    factors: HashMap<(String, String, Option<String>), Option<Arc<Factor>>>,
    /// Where each list goes on; `None` once it is exhausted.
    records_after: Option<Option<(Day, super::RecordId)>>,
    ledger_after: Option<(i64, i64)>,
    audit_after: Option<i64>,
    pub header: ExportHeader,
}

impl ExportSession {
    /// The next page of records (with the factor that produced each
    /// figure), oldest-first order not guaranteed: newest day first. Empty
    /// when there are no more.
    pub async fn next_records(&mut self, store: &Store) -> Result<Vec<ExportRecord>, StoreError> {
        let Some(cursor) = self.records_after else {
            return Ok(Vec::new());
        };
        let (page, next) = store
            .record_page(&mut self.snapshot, self.tenant, &self.keys, EXPORT_PAGE, cursor)
            .await?;
        self.records_after = next.map(Some);
        Ok(page
            .into_iter()
            .map(|record| {
                let key = (
                    record.methodology_version.clone(),
                    record.kind.clone(),
                    record.variant.clone(),
                );
                let methodologies = &self.methodologies;
                let factor = self
                    .factors
                    .entry(key)
                    .or_insert_with(|| {
                        methodologies
                            .get(&record.methodology_version)
                            .and_then(|m| factor_of(m, &record.kind, record.variant.as_deref()))
                            .map(Arc::new)
                    })
                    .clone();
                ExportRecord { record, factor }
            })
            .collect())
    }

    /// The next page of ledger lines, by day. Empty when there are no more.
    pub async fn next_ledger_lines(&mut self) -> Result<Vec<LedgerLine>, StoreError> {
        let Some((after_day, after_id)) = self.ledger_after else {
            return Ok(Vec::new());
        };
        // Two key ranges, merged: the rest of the cursor's day, then later
        // days. (SQLite does not use a row-value range on an integer
        // primary key, which made each page rescan the cursor's day.)
        const COLUMNS: &str = "day, record_id, kind, variant, reduction_mg, points, methodology_version, capped, id";
        let rows = sqlx::query(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM ledger_entries WHERE tenant_id = $1 AND subject = $2 \
             AND day = $3 AND id > $4 UNION ALL SELECT {COLUMNS} FROM ledger_entries \
             WHERE tenant_id = $1 AND subject = $2 AND day > $3) AS page ORDER BY day, id LIMIT $5"
        ))
        .bind(self.tenant.get())
        .bind(self.keys.ledger_ref.as_bytes().to_vec())
        .bind(after_day)
        .bind(after_id)
        .bind(i64::from(EXPORT_PAGE))
        .fetch_all(&mut *self.snapshot)
        .await?;
        let mut lines = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let record_id: Option<Vec<u8>> = row.try_get(1)?;
            let text = |i: usize| -> Result<Option<String>, StoreError> {
                Ok(Some(row.try_get::<String, _>(i)?).filter(|v| !v.is_empty()))
            };
            let day: i64 = row.try_get(0)?;
            last = Some((day, row.try_get::<i64, _>(8)?));
            lines.push(LedgerLine {
                day: day_label(day),
                record_id: record_id.map(hex::encode),
                kind: text(2)?,
                variant: text(3)?,
                reduction_g: Milligrams(row.try_get(4)?),
                points: row.try_get(5)?,
                methodology_version: text(6)?,
                capped: row.try_get::<i64, _>(7)? != 0,
            });
        }
        self.ledger_after = last.filter(|_| rows.len() == EXPORT_PAGE as usize);
        Ok(lines)
    }

    /// The next page of the audit entries that concern the person (by
    /// their audit reference). Empty when there are no more.
    pub async fn next_audit_entries(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(after) = self.audit_after else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT seq, entry FROM audit_log WHERE subject_ref = $1 AND entry IS NOT NULL AND at >= $2 \
             AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(self.keys.audit_ref.as_bytes().to_vec())
        .bind(self.cutoffs.audit_at)
        .bind(after)
        .bind(i64::from(EXPORT_PAGE))
        .fetch_all(&mut *self.snapshot)
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let bytes: Vec<u8> = row.try_get(1)?;
            entries.push(AuditEntry::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        self.audit_after = match rows.last() {
            Some(row) if rows.len() == EXPORT_PAGE as usize => Some(row.try_get(0)?),
            _ => None,
        };
        Ok(entries)
    }

    /// Ends the read snapshot (it changed nothing) and frees the slot.
    pub async fn close(self) -> Result<(), StoreError> {
        self.snapshot.rollback().await?;
        Ok(())
    }
}

impl Store {
    /// Opens an export of everything held on the person: a read snapshot
    /// whose counts go into the audit entry, committed (after re-checking
    /// the erasure tombstones, so an export never follows an erasure in
    /// the log) before anything is handed out. Memory stays bounded whatever the
    /// person's size: the lists come out page by page.
    pub async fn open_export(&self, access: &Access, subject: &SubjectId) -> Result<ExportSession, StoreError> {
        // Refused callers do not wait for a slot.
        self.authorize(access, Permission::ExportSubjects)?;
        let slot = self
            .export_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Config("the store is closing".into()))?;
        let cutoffs = self.cutoffs();
        // The snapshot starts inside the door's write transaction, so it
        // sees exactly the state the audit entry is appended to; and no
        // snapshot is ever held while waiting for the write lock (a
        // checkpoint waiting for readers would wait for it in turn).
        let open = async |tx: &mut SubjectTx<'_>| {
            let mut snapshot = self.ledger.begin().await?;
            if self.engine == super::Engine::Postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *snapshot)
                    .await?;
            }
            let (header, methodologies) = self
                .export_header(&mut snapshot, tx.tenant(), tx.keys(), cutoffs)
                .await?;
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Export,
                items: header.records,
            };
            Ok(Audited::new((snapshot, header, methodologies, tx.tenant()), read))
        };
        let done = self
            .with_subject(access, Permission::ExportSubjects, subject, Enrol::KnownOnly, open)
            .await?;
        let (snapshot, header, methodologies, tenant) = done.value;
        Ok(ExportSession {
            snapshot,
            _slot: slot,
            tenant,
            keys: done.keys,
            cutoffs,
            methodologies,
            factors: HashMap::new(),
            records_after: Some(None),
            // Just before the retention cut-off: the key range alone bounds
            // the scan (a separate `day >= cutoff` would make each page
            // start from the cut-off).
            ledger_after: Some((cutoffs.ledger_day - 1, i64::MAX)),
            audit_after: Some(0),
            header,
        })
    }

    /// The whole export at once (memory grows with the person's data: the
    /// HTTP API streams from `open_export` instead).
    pub async fn export(&self, access: &Access, subject: &SubjectId) -> Result<Export, StoreError> {
        let mut session = self.open_export(access, subject).await?;
        let mut export = Export {
            header: session.header.clone(),
            records: Vec::new(),
            ledger_lines: Vec::new(),
            audit_entries: Vec::new(),
        };
        loop {
            let page = session.next_records(self).await?;
            if page.is_empty() {
                break;
            }
            export.records.extend(page);
        }
        loop {
            let page = session.next_ledger_lines().await?;
            if page.is_empty() {
                break;
            }
            export.ledger_lines.extend(page);
        }
        loop {
            let page = session.next_audit_entries().await?;
            if page.is_empty() {
                break;
            }
            export.audit_entries.extend(page);
        }
        session.close().await?;
        Ok(export)
    }

    /// Everything but the long lists, read in the export's snapshot, with
    /// the methodologies its records were computed under.
    async fn export_header(
        &self,
        snapshot: &mut AnyConnection,
        tenant: TenantId,
        keys: &SubjectKeys,
        cutoffs: Cutoffs,
    ) -> Result<(ExportHeader, HashMap<String, Methodology>), StoreError> {
        let (t, s) = (tenant.get(), keys.ledger_ref.as_bytes().to_vec());
        let name: String = sqlx::query("SELECT name FROM tenants WHERE id = $1")
            .bind(t)
            .fetch_one(&mut *snapshot)
            .await?
            .try_get(0)?;
        let consents = self.consent_views(snapshot, tenant, &keys.ledger_ref).await?;
        let consent_history = sqlx::query(
            "SELECT purpose, action, notice_version, kinds, at FROM consent_history \
             WHERE tenant_id = $1 AND subject = $2 AND (at >= $3 OR (action = 'grant' AND id IN \
             (SELECT MAX(id) FROM consent_history GROUP BY tenant_id, subject, purpose))) ORDER BY id",
        )
        .bind(t)
        .bind(s.clone())
        .bind(cutoffs.consent_history_at)
        .fetch_all(&mut *snapshot)
        .await?
        .iter()
        .map(|row| {
            let kinds = Kinds::decode(&row.try_get::<String, _>(3)?);
            Ok(ConsentEvent {
                purpose: row.try_get(0)?,
                action: row.try_get(1)?,
                notice_version: u32::try_from(row.try_get::<i64, _>(2)?)
                    .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?,
                all_kinds: kinds == Kinds::All,
                kinds: kinds.list(&self.policies.methodology),
                on: day_label(row.try_get::<i64, _>(4)?.div_euclid(86_400)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let totals = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN record_id IS NULL THEN 0 ELSE reduction_mg END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(points), 0) AS BIGINT) \
             FROM ledger_entries WHERE tenant_id = $1 AND subject = $2 AND day >= $3",
        )
        .bind(t)
        .bind(s.clone())
        .bind(cutoffs.ledger_day)
        .fetch_one(&mut *snapshot)
        .await?;
        // What `record_page` will hand out, counted the same way.
        let records: i64 = sqlx::query(
            "SELECT COUNT(*) FROM records r JOIN ledger_entries l ON l.record_id = r.record_id \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND r.day >= $3",
        )
        .bind(t)
        .bind(s.clone())
        .bind(cutoffs.records_day)
        .fetch_one(&mut *snapshot)
        .await?
        .try_get(0)?;

        // The rules each figure was computed under, as stored when first used.
        let versions: Vec<String> = sqlx::query(
            "SELECT DISTINCT l.methodology_version FROM records r JOIN ledger_entries l ON l.record_id = r.record_id \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND r.day >= $3",
        )
        .bind(t)
        .bind(s)
        .bind(cutoffs.records_day)
        .fetch_all(&mut *snapshot)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
        let mut methodologies = HashMap::new();
        for version in versions {
            let body: Option<String> = sqlx::query("SELECT body FROM methodologies WHERE version = $1")
                .bind(&version)
                .fetch_optional(&mut *snapshot)
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            if let Some(m) = body.and_then(|b| Methodology::from_toml(&b).ok()) {
                methodologies.insert(version, m);
            }
        }
        let mut listed: Vec<(&String, &Methodology)> = methodologies.iter().collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));

        let policies = &self.policies;
        let processing = Processing {
            purposes: policies
                .consent
                .purposes
                .iter()
                .map(|(purpose, p)| {
                    serde_json::json!({
                        "purpose": purpose, "title": p.title, "notice": p.notice,
                        "notice_version": p.notice_version, "necessary": p.necessary, "retention": p.retention,
                    })
                })
                .collect(),
            retention: DataClass::ALL
                .iter()
                .map(|c| {
                    let p = &policies.retention.classes[c];
                    serde_json::json!({ "class": c.as_str(), "days": p.days, "reason": p.reason })
                })
                .collect(),
            recipients: vec![
                format!("{name}: the platform that reported the behaviours and holds this account (controller)"),
                "the operator of this carbon-ledger service, which stores and computes on the platform's behalf (processor)"
                    .to_owned(),
                "auditors: audit entries only, under the audit reference, never the records".to_owned(),
            ],
            methodologies: listed
                .iter()
                .map(|(v, m)| serde_json::json!({ "version": v, "title": m.title, "description": m.description }))
                .collect(),
        };
        let header = ExportHeader {
            format: EXPORT_FORMAT,
            generated_on: day_label(self.today_start().div_euclid(86_400)),
            controller: Controller { tenant: t, name },
            consents,
            consent_history,
            reduction_g: Milligrams(totals.try_get(0)?),
            points_balance: totals.try_get(1)?,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            processing,
        };
        Ok((header, methodologies))
    }
}
