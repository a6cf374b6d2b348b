//! What clients see: the JSON (and CSV) shapes of the access layer's
//! results. The store returns domain values; days, months, ids and grams
//! are rendered here and nowhere else.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::ErasureCounts;
use crate::domain::{month_label, Day, Methodology, Milligrams};
use crate::policy::{DataClass, Language, PolicySet, Purpose};
use crate::store::{
    Account, Consent, ConsentChange, ConsentEvent, ErasureReceipt, ExportHeader, Kinds, LedgerLine, PointsSummary,
    RecordId, RecordPage, ReductionReport, StoredEntry, StoredRecord, Totals,
};

pub const EXPORT_FORMAT: &str = "carbon-ledger-export/1";

#[derive(Serialize, ToSchema)]
pub struct TotalView {
    /// The kind, or the month as `YYYY-MM`.
    key: String,
    events: i64,
    /// Grams CO2e (to the milligram).
    #[schema(value_type = f64)]
    reduction_g: Milligrams,
    points: i64,
}

impl TotalView {
    fn new(key: String, t: &Totals) -> Self {
        Self {
            key,
            events: t.events,
            reduction_g: t.reduction,
            points: t.points,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    events: i64,
    /// Grams CO2e (to the milligram).
    #[schema(value_type = f64)]
    reduction_g: Milligrams,
    points_balance: i64,
    points: PointsView,
    by_kind: Vec<TotalView>,
    by_month: Vec<TotalView>,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            events: a.events,
            reduction_g: a.reduction,
            points_balance: a.points_balance,
            points: PointsView::from(&a.points),
            by_kind: a.by_kind.iter().map(|(k, t)| TotalView::new(k.clone(), t)).collect(),
            by_month: a
                .by_month
                .iter()
                .map(|(m, t)| TotalView::new(month_label(*m), t))
                .collect(),
        }
    }
}

/// The points part of the account.
#[derive(Serialize, ToSchema)]
pub struct PointsView {
    balance: i64,
    earned: i64,
    spent: i64,
    expired: i64,
    /// Moved in from, and out to, the person's linked accounts.
    transferred_in: i64,
    transferred_out: i64,
    /// What expires on which day (the first day it is no longer
    /// spendable), within the notice period.
    expiring: Vec<ExpiringView>,
}

#[derive(Serialize, ToSchema)]
struct ExpiringView {
    date: String,
    points: i64,
}

impl From<&PointsSummary> for PointsView {
    fn from(p: &PointsSummary) -> Self {
        Self {
            balance: p.balance,
            earned: p.earned,
            spent: p.spent,
            expired: p.expired,
            transferred_in: p.transferred_in,
            transferred_out: p.transferred_out,
            expiring: p
                .expiring
                .iter()
                .map(|e| ExpiringView {
                    date: e.on.to_string(),
                    points: e.points,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
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
    /// Grams CO2e (to the milligram).
    #[schema(value_type = f64)]
    pub reduction_g: Milligrams,
    pub points: i64,
    pub methodology_version: String,
    pub capped: bool,
}

impl From<&StoredRecord> for RecordView {
    fn from(r: &StoredRecord) -> Self {
        Self {
            record_id: r.record_id.to_string(),
            day: r.record.day().to_string(),
            kind: r.record.kind().to_owned(),
            variant: r.record.variant().map(str::to_owned),
            quantity: r.record.quantity(),
            region: r.record.region().map(str::to_owned),
            reduction_g: r.reduction,
            points: r.points,
            methodology_version: r.methodology_version.clone(),
            capped: r.capped,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RecordPageView {
    records: Vec<RecordView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl From<&RecordPage> for RecordPageView {
    fn from(p: &RecordPage) -> Self {
        Self {
            records: p.records.iter().map(RecordView::from).collect(),
            next_cursor: p.next.map(|(day, id)| format!("{}.{id}", day.days())),
        }
    }
}

/// Position after the last record of a page: `(day, record id)`, as
/// `RecordPageView` writes it.
pub fn parse_cursor(cursor: &str) -> Option<(Day, RecordId)> {
    let (day, id) = cursor.split_once('.')?;
    Some((Day::from_days(day.parse().ok()?)?, RecordId::parse(id)?))
}

fn rfc3339(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Serialize)]
pub struct ConsentView {
    purpose: Purpose,
    notice_version: u32,
    /// False when the notice changed since: the consent no longer counts.
    current: bool,
    /// Whether it covers every kind, including kinds added later.
    all_kinds: bool,
    kinds: Vec<String>,
    granted_at: String,
    /// The language the notice was shown in, when the platform said.
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<Language>,
}

impl ConsentView {
    pub fn new(c: &Consent, methodology: &Methodology) -> Self {
        Self {
            purpose: c.purpose,
            notice_version: c.notice_version,
            current: c.current,
            all_kinds: c.kinds == Kinds::All,
            kinds: c.kinds.list(methodology),
            granted_at: rfc3339(c.granted_at),
            language: c.language,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConsentChangeView {
    #[schema(value_type = String)]
    purpose: Purpose,
    granted: bool,
    /// False for a withdrawal of a consent that was not given.
    changed: bool,
    /// Records deleted because they were held only for the withdrawn purpose
    /// (or for kinds the consent no longer covers).
    records_deleted: u64,
    /// Points of the deleted records' ledger entries, kept for the person.
    points_kept: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_seq: Option<u64>,
}

impl From<&ConsentChange> for ConsentChangeView {
    fn from(c: &ConsentChange) -> Self {
        Self {
            purpose: c.purpose,
            granted: c.granted,
            changed: c.changed,
            records_deleted: c.records_deleted,
            points_kept: c.points_kept,
            audit_seq: c.audit_seq,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErasureReceiptView {
    erased_on: String,
    #[schema(value_type = Object)]
    counts: ErasureCounts,
    /// The audit entry recording the erasure.
    audit_seq: u64,
}

impl From<&ErasureReceipt> for ErasureReceiptView {
    fn from(r: &ErasureReceipt) -> Self {
        Self {
            erased_on: r.erased_on.to_string(),
            counts: r.counts,
            audit_seq: r.audit_seq,
        }
    }
}

/// An audit log entry as auditors page through it.
#[derive(Serialize)]
pub struct EntryView {
    pub seq: u64,
    /// Hex of the entry's leaf hash.
    leaf_hash: String,
    /// Hex of the canonical encoding; absent once retention emptied it.
    entry: Option<String>,
    decoded: Option<Value>,
}

impl From<&StoredEntry> for EntryView {
    fn from(e: &StoredEntry) -> Self {
        Self {
            seq: e.seq,
            leaf_hash: hex::encode(e.leaf_hash),
            entry: e.entry.as_ref().map(|(bytes, _)| hex::encode(bytes)),
            decoded: e.entry.as_ref().map(|(_, entry)| entry.to_json()),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ReportCellView {
    tenant: i64,
    kind: String,
    month: String,
    events: i64,
    /// Grams CO2e (to the milligram).
    #[schema(value_type = f64)]
    reduction_g: Milligrams,
    points: i64,
}

#[derive(Serialize, ToSchema)]
struct SuppressedView {
    tenant: i64,
    cells: i64,
    events: i64,
    /// Grams CO2e (to the milligram).
    #[schema(value_type = f64)]
    reduction_g: Milligrams,
    points: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ReportView {
    min_cell_people: i64,
    cells: Vec<ReportCellView>,
    suppressed: Vec<SuppressedView>,
}

impl From<&ReductionReport> for ReportView {
    fn from(r: &ReductionReport) -> Self {
        Self {
            min_cell_people: r.min_cell_people,
            cells: r
                .cells
                .iter()
                .map(|c| ReportCellView {
                    tenant: c.tenant,
                    kind: c.kind.clone(),
                    month: month_label(c.month),
                    events: c.totals.events,
                    reduction_g: c.totals.reduction,
                    points: c.totals.points,
                })
                .collect(),
            suppressed: r
                .suppressed
                .iter()
                .map(|s| SuppressedView {
                    tenant: s.tenant,
                    cells: s.cells,
                    events: s.totals.events,
                    reduction_g: s.totals.reduction,
                    points: s.totals.points,
                })
                .collect(),
        }
    }
}

/// The export document's parts, in `docs/export.schema.json`'s terms.
pub mod export {
    use super::*;

    #[derive(Serialize)]
    pub struct Controller<'a> {
        tenant: i64,
        name: &'a str,
    }

    impl<'a> Controller<'a> {
        pub fn new(h: &'a ExportHeader) -> Self {
            Self {
                tenant: h.controller.tenant.get(),
                name: &h.controller.name,
            }
        }
    }

    #[derive(Serialize)]
    pub struct ConsentEventView {
        purpose: Purpose,
        action: &'static str,
        notice_version: u32,
        all_kinds: bool,
        kinds: Vec<String>,
        on: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        language: Option<Language>,
    }

    impl ConsentEventView {
        pub fn new(e: &ConsentEvent, methodology: &Methodology) -> Self {
            Self {
                purpose: e.purpose,
                action: if e.granted { "grant" } else { "withdraw" },
                notice_version: e.notice_version,
                all_kinds: e.kinds == Kinds::All,
                kinds: e.kinds.list(methodology),
                on: e.on.to_string(),
                language: e.language,
            }
        }
    }

    /// The factor that produced a record's figures.
    #[derive(Serialize)]
    pub struct Factor {
        /// What one unit is ("event" for check-ins).
        unit: String,
        g_per_unit: f64,
        points_per_unit: u32,
        source: String,
        points_source: String,
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

    /// Factors by (methodology version, kind, variant), looked up once: a
    /// long export repeats a few of them many times.
    #[derive(Default)]
    pub struct Factors(HashMap<(String, String, Option<String>), Option<Arc<Factor>>>);

    impl Factors {
        pub fn of(&mut self, header: &ExportHeader, r: &StoredRecord) -> Option<Arc<Factor>> {
            let key = (
                r.methodology_version.clone(),
                r.record.kind().to_owned(),
                r.record.variant().map(str::to_owned),
            );
            self.0
                .entry(key)
                .or_insert_with(|| {
                    header
                        .methodologies
                        .get(&r.methodology_version)
                        .and_then(|m| factor_of(m, r.record.kind(), r.record.variant()))
                        .map(Arc::new)
                })
                .clone()
        }
    }

    /// A record with the factor that produced its figures.
    #[derive(Serialize)]
    pub struct RecordWithFactor {
        #[serde(flatten)]
        pub record: RecordView,
        pub factor: Option<Arc<Factor>>,
    }

    #[derive(Serialize)]
    pub struct LedgerLineView {
        day: String,
        /// Absent for points kept after a withdrawal.
        record_id: Option<String>,
        kind: Option<String>,
        variant: Option<String>,
        reduction_g: Milligrams,
        points: i64,
        methodology_version: Option<String>,
        capped: bool,
        /// What the line did not earn: a linked account had claimed it.
        #[serde(skip_serializing_if = "Option::is_none")]
        counted_elsewhere: Option<Value>,
    }

    impl From<&LedgerLine> for LedgerLineView {
        fn from(l: &LedgerLine) -> Self {
            Self {
                day: l.day.to_string(),
                record_id: l.record_id.map(|id| id.to_string()),
                kind: l.kind.clone(),
                variant: l.variant.clone(),
                reduction_g: l.reduction,
                points: l.points,
                methodology_version: l.methodology_version.clone(),
                capped: l.capped,
                counted_elsewhere: l
                    .counted_elsewhere
                    .map(|e| serde_json::json!({"reduction_g": e.reduction, "points": e.points})),
            }
        }
    }

    /// Why and how long data is processed, and who receives it (GDPR Art.
    /// 15(1)).
    #[derive(Serialize)]
    pub struct Processing {
        purposes: Vec<Value>,
        retention: Vec<Value>,
        recipients: Vec<String>,
        methodologies: Vec<Value>,
    }

    impl Processing {
        pub fn new(policies: &PolicySet, h: &ExportHeader) -> Self {
            let name = &h.controller.name;
            Self {
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
                    "the operator of this carbon-ledger service, which stores and computes on the platform's behalf \
                     (processor)"
                        .to_owned(),
                    "auditors: audit entries only, under the audit reference, never the records".to_owned(),
                ]
                .into_iter()
                .chain(h.links.iter().map(|l| {
                    format!(
                        "{}: a platform this account is linked with (interconnection consent), which sees its totals only",
                        l.platform
                    )
                }))
                .collect(),
                methodologies: h
                    .methodologies
                    .iter()
                    .map(|(v, m)| serde_json::json!({ "version": v, "title": m.title, "description": m.description }))
                    .collect(),
            }
        }
    }
}
