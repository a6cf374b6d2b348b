//! The export of everything held on a person (PIPL Art. 45, GDPR Art. 15
//! and 20), as one document, in one audited read. Its layout is
//! `docs/export.schema.json`.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::consent::Kinds;
use super::reads::RecordView;
use super::{Access, Store, StoreError};
use crate::audit::{Action, AuditEntry, ReadScope};
use crate::domain::{Day, Methodology, Milligrams, SubjectId};
use crate::policy::{DataClass, Permission};

pub const EXPORT_FORMAT: &str = "carbon-ledger-export/1";

#[derive(Clone, Debug, Serialize)]
pub struct Export {
    pub format: &'static str,
    pub generated_on: String,
    /// The platform that reported the data and holds this account.
    pub controller: Controller,
    pub consents: Vec<super::ConsentView>,
    pub consent_history: Vec<ConsentEvent>,
    pub records: Vec<ExportRecord>,
    pub ledger: Ledger,
    /// The audit entries that concern the person (by their audit reference).
    pub audit_entries: Vec<Value>,
    pub processing: Processing,
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
    pub factor: Option<Factor>,
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
pub struct Ledger {
    pub reduction_g: Milligrams,
    pub points_balance: i64,
    pub entries: Vec<LedgerLine>,
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

impl Store {
    pub async fn export(&self, access: &Access, subject: &SubjectId) -> Result<Export, StoreError> {
        let tenant = self.authorize(access, Permission::ExportSubjects)?;
        let (keys, key_id) = self.known_subject(tenant, subject).await?;
        let (t, s) = (tenant.get(), keys.ledger_ref.as_bytes().to_vec());
        let mut w = self.begin_write().await?;
        self.ensure_not_erased(&mut w, &key_id).await?;

        let name: String = sqlx::query("SELECT name FROM tenants WHERE id = $1")
            .bind(t)
            .fetch_one(w.conn())
            .await?
            .try_get(0)?;
        let consents = self.consent_views(&mut w, tenant, &keys.ledger_ref).await?;
        let consent_history = sqlx::query(
            "SELECT purpose, action, notice_version, kinds, at FROM consent_history \
             WHERE tenant_id = $1 AND subject = $2 AND (at >= $3 OR (action = 'grant' AND id IN \
             (SELECT MAX(id) FROM consent_history GROUP BY tenant_id, subject, purpose))) ORDER BY id",
        )
        .bind(t)
        .bind(s.clone())
        .bind(self.cutoffs().consent_history_at)
        .fetch_all(w.conn())
        .await?
        .iter()
        .map(|row| {
            let kinds = Kinds::decode(&row.try_get::<String, _>(3)?);
            Ok(ConsentEvent {
                purpose: row.try_get(0)?,
                action: row.try_get(1)?,
                notice_version: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
                all_kinds: kinds == Kinds::All,
                kinds: kinds.list(&self.policies.methodology),
                on: day_label(row.try_get::<i64, _>(4)?.div_euclid(86_400)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let mut records = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.record_page(&mut w, tenant, &keys, 1000, cursor).await?;
            records.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }

        let lines = sqlx::query(
            "SELECT day, record_id, kind, variant, reduction_mg, points, methodology_version, capped FROM ledger_entries \
             WHERE tenant_id = $1 AND subject = $2 AND day >= $3 ORDER BY day, id",
        )
        .bind(t)
        .bind(s)
        .bind(self.cutoffs().ledger_day)
        .fetch_all(w.conn())
        .await?;
        let mut entries = Vec::with_capacity(lines.len());
        for row in &lines {
            let record_id: Option<Vec<u8>> = row.try_get(1)?;
            let text = |i: usize| -> Result<Option<String>, StoreError> {
                Ok(Some(row.try_get::<String, _>(i)?).filter(|v| !v.is_empty()))
            };
            entries.push(LedgerLine {
                day: day_label(row.try_get(0)?),
                record_id: record_id.map(hex::encode),
                kind: text(2)?,
                variant: text(3)?,
                reduction_g: Milligrams(row.try_get(4)?),
                points: row.try_get(5)?,
                methodology_version: text(6)?,
                capped: row.try_get::<i64, _>(7)? != 0,
            });
        }
        let ledger = Ledger {
            reduction_g: Milligrams(
                entries
                    .iter()
                    .filter(|e| e.record_id.is_some())
                    .map(|e| e.reduction_g.0)
                    .sum(),
            ),
            points_balance: entries.iter().map(|e| e.points).sum(),
            entries,
        };

        // The rules each figure was computed under, as stored when first used.
        let versions: BTreeSet<String> = records.iter().map(|r| r.methodology_version.clone()).collect();
        let mut methodologies = HashMap::new();
        for version in &versions {
            let body: Option<String> = sqlx::query("SELECT body FROM methodologies WHERE version = $1")
                .bind(version)
                .fetch_optional(w.conn())
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            if let Some(m) = body.and_then(|b| Methodology::from_toml(&b).ok()) {
                methodologies.insert(version.clone(), m);
            }
        }
        let records: Vec<ExportRecord> = records
            .into_iter()
            .map(|record| {
                let factor = methodologies
                    .get(&record.methodology_version)
                    .and_then(|m| factor_of(m, &record.kind, record.variant.as_deref()));
                ExportRecord { record, factor }
            })
            .collect();

        let audit_entries = sqlx::query(
            "SELECT entry FROM audit_log WHERE subject_ref = $1 AND entry IS NOT NULL AND at >= $2 ORDER BY seq",
        )
        .bind(keys.audit_ref.as_bytes().to_vec())
        .bind(self.cutoffs().audit_at)
        .fetch_all(w.conn())
        .await?
        .iter()
        .map(|row| {
            let bytes: Vec<u8> = row.try_get(0)?;
            Ok(AuditEntry::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .to_json())
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

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
            methodologies: methodologies
                .iter()
                .map(|(v, m)| serde_json::json!({ "version": v, "title": m.title, "description": m.description }))
                .collect(),
        };

        let items = u32::try_from(records.len()).unwrap_or(u32::MAX);
        w.append(
            Some(tenant),
            Action::SubjectRead {
                subject: keys.audit_ref,
                scope: ReadScope::Export,
                items,
            },
        );
        w.commit().await?;
        Ok(Export {
            format: EXPORT_FORMAT,
            generated_on: day_label(self.today_start().div_euclid(86_400)),
            controller: Controller { tenant: t, name },
            consents,
            consent_history,
            records,
            ledger,
            audit_entries,
            processing,
        })
    }
}
