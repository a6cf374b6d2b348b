//! The export of everything held on a person (PIPL Art. 45, GDPR Art. 15
//! and 20), in one audited read from one snapshot, handed out page by page.
//! The API renders it (`docs/export.schema.json`).

use std::collections::BTreeMap;

use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::access::{Audited, Enrol, SubjectTx};
use super::consent::{Consent, Kinds};
use super::ingest::RecordId;
use super::points::{PointsSummary, Redemption};
use super::reads::StoredRecord;
use super::retention::Cutoffs;
use super::today::Today;
use super::{Access, Store, StoreError, SubjectHandle};
use crate::audit::{Action, AuditEntry, ReadScope};
use crate::crypto::SubjectKeys;
use crate::domain::{Day, Methodology, Milligrams, TenantId};
use crate::policy::{Permission, Purpose};

/// What an export holds besides its long lists, which `ExportSession`
/// hands out page by page: records, ledger lines and audit entries.
#[derive(Clone, Debug)]
pub struct ExportHeader {
    pub generated_on: Day,
    /// The platform that reported the data and holds this account.
    pub controller: Controller,
    pub consents: Vec<Consent>,
    pub consent_history: Vec<ConsentEvent>,
    /// The person's links with accounts on other platforms.
    pub links: Vec<super::LinkView>,
    /// Totals of the ledger lines: the behaviours' reduction, and every
    /// line's points.
    pub reduction: Milligrams,
    pub points_balance: i64,
    /// How many records the export holds (what the audit entry counts).
    pub records: u32,
    /// The points ledger's figures (`docs/points.md`).
    pub points: PointsSummary,
    /// The methodologies the records were computed under, by version, as
    /// stored when first used.
    pub methodologies: BTreeMap<String, Methodology>,
}

#[derive(Clone, Debug)]
pub struct Controller {
    pub tenant: TenantId,
    pub name: String,
}

/// A grant or withdrawal, from the consent history.
#[derive(Clone, Debug)]
pub struct ConsentEvent {
    pub purpose: Purpose,
    pub granted: bool,
    pub notice_version: u32,
    pub kinds: Kinds,
    pub on: Day,
    /// The language the notice was shown in, when the platform said.
    pub language: Option<crate::policy::Language>,
}

/// An accounting line.
#[derive(Clone, Debug)]
pub struct LedgerLine {
    pub day: Day,
    /// Absent for points kept after a withdrawal.
    pub record_id: Option<RecordId>,
    pub kind: Option<String>,
    pub variant: Option<String>,
    pub reduction: Milligrams,
    pub points: i64,
    pub methodology_version: Option<String>,
    pub capped: bool,
    /// What the line did not earn because a linked account had claimed it.
    pub counted_elsewhere: Option<super::CountedElsewhere>,
}

#[derive(sqlx::FromRow)]
struct LedgerRow {
    day: i64,
    record_id: Option<Vec<u8>>,
    kind: String,
    variant: String,
    reduction_mg: i64,
    points: i64,
    methodology_version: String,
    capped: i64,
    id: i64,
    counted_elsewhere_mg: i64,
    counted_elsewhere_points: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    purpose: String,
    action: String,
    notice_version: i64,
    kinds: String,
    at: i64,
    language: Option<String>,
}

fn day_of(days: i64) -> Result<Day, StoreError> {
    Day::from_days(days).ok_or_else(|| StoreError::Corrupt("a stored day is out of range".into()))
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
    /// Where each list goes on; `None` once it is exhausted.
    records_after: Option<Option<(Day, super::RecordId)>>,
    ledger_after: Option<(i64, i64)>,
    audit_after: Option<i64>,
    /// Redemptions, by their line's id.
    redemptions_after: Option<i64>,
    transfers_after: Option<i64>,
    pub header: ExportHeader,
}

impl ExportSession {
    /// The next page of records, newest day first. Empty when there are no
    /// more.
    pub async fn next_records(&mut self, store: &Store) -> Result<Vec<StoredRecord>, StoreError> {
        let Some(cursor) = self.records_after else {
            return Ok(Vec::new());
        };
        let page = store
            .record_page(
                &mut self.snapshot,
                self.tenant,
                &self.keys,
                &self.cutoffs,
                EXPORT_PAGE,
                cursor,
            )
            .await?;
        self.records_after = page.next.map(Some);
        Ok(page.records)
    }

    /// The next page of ledger lines, by day. Empty when there are no more.
    pub async fn next_ledger_lines(&mut self) -> Result<Vec<LedgerLine>, StoreError> {
        let Some((after_day, after_id)) = self.ledger_after else {
            return Ok(Vec::new());
        };
        // Two key ranges, merged: the rest of the cursor's day, then later
        // days. (SQLite does not use a row-value range on an integer
        // primary key, which made each page rescan the cursor's day.)
        const COLUMNS: &str = "day, record_id, kind, variant, reduction_mg, points, methodology_version, capped, id, \
                               counted_elsewhere_mg, counted_elsewhere_points";
        let rows = sqlx::query_as::<_, LedgerRow>(&format!(
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
        let full = rows.len() == EXPORT_PAGE as usize;
        let mut lines = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows {
            let text = |v: String| Some(v).filter(|v| !v.is_empty());
            last = Some((row.day, row.id));
            lines.push(LedgerLine {
                day: day_of(row.day)?,
                record_id: row.record_id.as_deref().map(RecordId::from_stored).transpose()?,
                kind: text(row.kind),
                variant: text(row.variant),
                reduction: Milligrams(row.reduction_mg),
                points: row.points,
                methodology_version: text(row.methodology_version),
                capped: row.capped != 0,
                counted_elsewhere: (row.counted_elsewhere_mg != 0 || row.counted_elsewhere_points != 0).then_some(
                    super::CountedElsewhere {
                        reduction: Milligrams(row.counted_elsewhere_mg),
                        points: row.counted_elsewhere_points,
                    },
                ),
            });
        }
        self.ledger_after = last.filter(|_| full);
        Ok(lines)
    }

    /// The next page of the audit entries that concern the person (by
    /// their audit reference). Empty when there are no more.
    pub async fn next_audit_entries(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(after) = self.audit_after else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
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
        for (_, bytes) in &rows {
            entries.push(AuditEntry::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        self.audit_after = match rows.last() {
            Some((seq, _)) if rows.len() == EXPORT_PAGE as usize => Some(*seq),
            _ => None,
        };
        Ok(entries)
    }

    /// The next page of the person's redemptions, oldest first, opened.
    /// Empty when there are no more.
    pub async fn next_redemptions(&mut self) -> Result<Vec<Redemption>, StoreError> {
        let Some(after) = self.redemptions_after else {
            return Ok(Vec::new());
        };
        let (page, last) =
            super::points::redemption_page(&mut self.snapshot, self.tenant, &self.keys, after, EXPORT_PAGE).await?;
        self.redemptions_after = last.filter(|_| page.len() == EXPORT_PAGE as usize);
        Ok(page)
    }

    /// The next page of the person's transfers to and from linked
    /// accounts, in order. Empty when there are no more.
    pub async fn next_transfers(&mut self) -> Result<Vec<super::TransferLine>, StoreError> {
        let Some(after) = self.transfers_after else {
            return Ok(Vec::new());
        };
        let subject = self.keys.ledger_ref;
        let (page, last) =
            super::points::transfer_page(&mut self.snapshot, self.tenant, &subject, after, EXPORT_PAGE).await?;
        self.transfers_after = last.filter(|_| page.len() == EXPORT_PAGE as usize);
        Ok(page)
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
    pub async fn open_export(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<ExportSession, StoreError> {
        // Refused callers do not wait for a slot.
        self.authorize(access, Permission::ExportSubjects)?;
        // Waiting touches nothing shared: giving up is safe.
        let slot = tokio::time::timeout(super::EXPORT_SLOT_WAIT, self.export_slots.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::Busy("exports"))?
            .map_err(|_| StoreError::Config("the store is closing".into()))?;
        // The snapshot starts inside the door's write transaction, so it
        // sees exactly the state the audit entry is appended to; and no
        // snapshot is ever held while waiting for the write lock (a
        // checkpoint waiting for readers would wait for it in turn).
        let open = async |tx: &mut SubjectTx<'_>| {
            let cutoffs = self.cutoffs(&tx.today());
            let mut snapshot = self.ledger.begin().await?;
            if self.engine == super::Engine::Postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *snapshot)
                    .await?;
            }
            let header = self
                .export_header(&mut snapshot, tx.tenant(), tx.keys(), tx.today(), cutoffs)
                .await?;
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Export,
                items: header.records,
            };
            Ok(Audited::new((snapshot, header, tx.tenant(), cutoffs), read))
        };
        let done = self
            .with_subject(access, Permission::ExportSubjects, subject, Enrol::KnownOnly, open)
            .await?;
        let (snapshot, header, tenant, cutoffs) = done.value;
        Ok(ExportSession {
            snapshot,
            _slot: slot,
            tenant,
            keys: done.keys,
            cutoffs,
            records_after: Some(None),
            // Just before the retention cut-off: the key range alone bounds
            // the scan (a separate `day >= cutoff` would make each page
            // start from the cut-off).
            ledger_after: Some((cutoffs.ledger_day - 1, i64::MAX)),
            audit_after: Some(0),
            redemptions_after: Some(0),
            transfers_after: Some(0),
            header,
        })
    }

    /// Everything but the long lists, read in the export's snapshot.
    async fn export_header(
        &self,
        snapshot: &mut AnyConnection,
        tenant: TenantId,
        keys: &SubjectKeys,
        today: Today,
        cutoffs: Cutoffs,
    ) -> Result<ExportHeader, StoreError> {
        let (t, s) = (tenant.get(), keys.ledger_ref.as_bytes().to_vec());
        let name: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
            .bind(t)
            .fetch_one(&mut *snapshot)
            .await?;
        let consents = self.consent_views(snapshot, tenant, &keys.ledger_ref).await?;
        let consent_history = sqlx::query_as::<_, HistoryRow>(
            "SELECT purpose, action, notice_version, kinds, at, language FROM consent_history \
             WHERE tenant_id = $1 AND subject = $2 AND (at >= $3 OR (action = 'grant' AND id IN \
             (SELECT MAX(id) FROM consent_history GROUP BY tenant_id, subject, purpose))) ORDER BY id",
        )
        .bind(t)
        .bind(s.clone())
        .bind(cutoffs.consent_history_at)
        .fetch_all(&mut *snapshot)
        .await?
        .into_iter()
        .map(|row| {
            Ok(ConsentEvent {
                purpose: Purpose::parse(&row.purpose)
                    .ok_or_else(|| StoreError::Corrupt("a consent history entry names an unknown purpose".into()))?,
                granted: match row.action.as_str() {
                    "grant" => true,
                    "withdraw" => false,
                    _ => {
                        return Err(StoreError::Corrupt(
                            "a consent history entry has an unknown action".into(),
                        ))
                    }
                },
                notice_version: u32::try_from(row.notice_version)
                    .map_err(|_| StoreError::Corrupt("a stored notice version is out of range".into()))?,
                kinds: Kinds::decode(&row.kinds),
                on: day_of(row.at.div_euclid(86_400))?,
                language: row.language.as_deref().and_then(crate::policy::Language::parse),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let links = self.links_of(&mut *snapshot, tenant, &s).await?;
        let (reduction_mg, points_balance): (i64, i64) = sqlx::query_as(
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
        let records: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM records r JOIN ledger_entries l ON l.record_seq = r.seq \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND r.day >= $3",
        )
        .bind(t)
        .bind(s.clone())
        .bind(cutoffs.records_day)
        .fetch_one(&mut *snapshot)
        .await?;

        // The rules each figure was computed under, as stored when first used.
        let versions: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT l.methodology_version FROM records r JOIN ledger_entries l ON l.record_seq = r.seq \
             WHERE r.tenant_id = $1 AND r.subject = $2 AND r.day >= $3",
        )
        .bind(t)
        .bind(s)
        .bind(cutoffs.records_day)
        .fetch_all(&mut *snapshot)
        .await?;
        let mut methodologies = BTreeMap::new();
        for version in versions {
            let body: Option<String> = sqlx::query_scalar("SELECT body FROM methodologies WHERE version = $1")
                .bind(&version)
                .fetch_optional(&mut *snapshot)
                .await?;
            if let Some(m) = body.and_then(|b| Methodology::from_toml(&b).ok()) {
                methodologies.insert(version, m);
            }
        }
        let points = super::points::position(
            snapshot,
            tenant,
            &keys.ledger_ref,
            today.day,
            self.policies.points.notice_days,
        )
        .await?
        .summary;
        Ok(ExportHeader {
            points,
            generated_on: today.utc_day(),
            controller: Controller { tenant, name },
            consents,
            consent_history,
            links,
            reduction: Milligrams(reduction_mg),
            points_balance,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            methodologies,
        })
    }
}
