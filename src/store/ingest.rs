//! Recording a batch of minimized events: one transaction for the whole
//! batch, a handful of statements whatever its size (the round trips, not
//! the crypto, decide throughput).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use sqlx::Row;

use super::sql::{insert_rows, select_in, Arg};
use super::{Access, Store, StoreError};
use crate::audit::Action;
use crate::crypto::{random_bytes, seal, EventKey, Pseudonym, RecordAad, SubjectKeys, SubjectRef, CURRENT_KEY_VERSION};
use crate::domain::{CoarseRecord, DailyUsage, Day, EventId, Milligrams, SubjectId};
use crate::policy::{Permission, Purpose};

/// One valid event, minimized, ready to be recorded.
#[derive(Debug)]
pub struct IngestItem {
    pub event_id: EventId,
    pub subject: SubjectId,
    pub record: CoarseRecord,
}

/// A record's id: 128 random bits. Deliberately no timestamp: an id that
/// sorted by creation time would store the ingest time, and with it the
/// behaviour's time for platforms that report in real time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn parse(hex_id: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(hex_id, &mut id).ok()?;
        Some(Self(id))
    }

    pub(super) fn from_stored(bytes: &[u8]) -> Result<Self, StoreError> {
        Ok(Self(bytes.try_into().map_err(|_| {
            StoreError::Corrupt("record id is not 16 bytes".into())
        })?))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// What recording an event produced; a retry returns the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub record_id: RecordId,
    pub reduction: Milligrams,
    pub points: i64,
    pub methodology_version: String,
    pub capped: bool,
    /// The audit entry that records it.
    pub audit_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    Recorded(Receipt),
    /// The platform sent this event id before; the original receipt.
    Duplicate(Receipt),
    /// The person has not consented to `purpose` for this kind: nothing
    /// about the event was stored.
    ConsentRequired {
        purpose: Purpose,
        kind: String,
    },
    /// The platform used this event id before for an event with other
    /// content; nothing was stored.
    EventIdReused,
}

type DayKey = (SubjectRef, Day, String);

/// Credited events and milligrams per subject, day, kind (and variant).
#[derive(Default)]
struct Usage {
    kinds: HashMap<DayKey, (i64, i64)>,
    variants: HashMap<(DayKey, String), (i64, i64)>,
}

impl Usage {
    fn of(&self, key: &DayKey, variant: &str) -> DailyUsage {
        let (kind_events, kind_mg) = self.kinds.get(key).copied().unwrap_or_default();
        let (variant_events, variant_mg) = self
            .variants
            .get(&(key.clone(), variant.to_owned()))
            .copied()
            .unwrap_or_default();
        DailyUsage {
            kind_events,
            kind_mg,
            variant_events,
            variant_mg,
        }
    }

    fn add(&mut self, key: DayKey, variant: String, events: i64, mg: i64) {
        let k = self.kinds.entry(key.clone()).or_default();
        k.0 += events;
        k.1 += mg;
        let v = self.variants.entry((key, variant)).or_default();
        v.0 += events;
        v.1 += mg;
    }
}

impl Store {
    /// Records a batch under the methodology in force. Every item is
    /// recorded, recognized as a duplicate, or refused for want of consent;
    /// all of it commits or none of it does. Points are awarded only under
    /// consent to `rewards`.
    pub async fn ingest(&self, access: &Access, items: Vec<IngestItem>) -> Result<Vec<IngestOutcome>, StoreError> {
        let tenant = self.authorize(access, Permission::RecordEvents)?;
        let methodology = &self.policies.methodology;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // External ids end here: from now on only pseudonyms (which only
        // find salts in the key store) and event keys.
        let items: Vec<(Pseudonym, EventKey, CoarseRecord)> = items
            .into_iter()
            .map(|item| {
                let pseudonym = self.pseudonyms.pseudonymize(tenant, &item.subject);
                (
                    pseudonym,
                    self.pseudonyms.event_key(tenant, &item.event_id),
                    item.record,
                )
            })
            .collect();
        let lookups: BTreeSet<Pseudonym> = items.iter().map(|(p, _, _)| *p).collect();
        // Only consent creates a subject's salt: a subject without one has
        // consented to nothing. Keys are derived once per subject and batch.
        let stored = self.existing_keys(&lookups).await?;
        let first = items.iter().map(|(_, _, r)| r.day()).min().expect("batch is not empty");
        let last = items.iter().map(|(_, _, r)| r.day()).max().expect("batch is not empty");

        let mut w = self.begin_write().await?;
        // A subject erased since their key was read is refused like one who
        // never consented (see `erased_among`).
        let key_ids: Vec<&[u8]> = stored.values().map(|k| k.key_id.as_slice()).collect();
        let erased = self.erased_among(&mut w, &key_ids).await?;
        let subjects: HashMap<Pseudonym, SubjectKeys> = stored
            .iter()
            .filter(|(_, k)| !erased.contains(&k.key_id))
            .map(|(p, k)| (*p, self.root.subject_keys(&k.salt, CURRENT_KEY_VERSION)))
            .collect();
        let refs: Vec<SubjectRef> = subjects.values().map(|k| k.ledger_ref).collect();
        let consents = self.consent_state(&mut w, tenant, &refs).await?;
        let mut seen = self.known_receipts(&mut w, tenant.get(), &items).await?;
        let mut usage = self.usage(&mut w, tenant.get(), &refs, first, last).await?;

        let mut outcomes = Vec::with_capacity(items.len());
        let (mut records, mut ledger, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        // Report totals per (kind, month): events, milligrams, points.
        let mut totals: HashMap<(String, i32), (i64, i64, i64)> = HashMap::new();
        for (lookup, event_key, record) in items {
            let refused = || IngestOutcome::ConsentRequired {
                purpose: Purpose::Accounting,
                kind: record.kind().to_owned(),
            };
            let Some(keys_of_subject) = subjects.get(&lookup) else {
                outcomes.push(refused());
                continue;
            };
            let subject = keys_of_subject.ledger_ref;
            // Consent first: a retry after a withdrawal is refused, not
            // answered with what was deleted.
            if !consents.allows(self, &subject, Purpose::Accounting, record.kind()) {
                outcomes.push(refused());
                continue;
            }
            let fingerprint = self.pseudonyms.event_fingerprint(&subject, &record.encode());
            if let Some((receipt, earlier)) = seen.get(&event_key) {
                outcomes.push(if *earlier == fingerprint {
                    IngestOutcome::Duplicate(receipt.clone())
                } else {
                    IngestOutcome::EventIdReused
                });
                continue;
            }
            let day_key = (subject, record.day(), record.kind().to_owned());
            let variant = record.variant().unwrap_or("").to_owned();
            let assessment = methodology
                .assess(&record, &usage.of(&day_key, &variant))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "kind {} is not in methodology {}",
                        record.kind(),
                        methodology.version
                    ))
                })?;
            // Caps count credited events: one recorded at zero uses no allowance.
            let credited = i64::from(assessment.reduction.0 > 0);
            usage.add(day_key, variant.clone(), credited, assessment.reduction.0);
            let points = if consents.allows(self, &subject, Purpose::Rewards, record.kind()) {
                assessment.points
            } else {
                0
            };
            let record_id = RecordId::generate();
            let aad = RecordAad {
                record_id: &record_id.0,
                subject: &subject,
                key_version: CURRENT_KEY_VERSION,
                kind: record.kind(),
                day: record.day().days(),
            };
            let sealed = seal(keys_of_subject, &aad, &record.encode());
            let audit_seq = w.append(
                Some(tenant),
                Action::RecordWritten {
                    subject: keys_of_subject.audit_ref,
                    record_id: record_id.0,
                    kind: record.kind().to_owned(),
                    variant: record.variant().map(str::to_owned),
                    day: record.day(),
                    reduction_mg: assessment.reduction.0,
                    points,
                    methodology_version: methodology.version.clone(),
                    capped: assessment.capped,
                },
            );
            let receipt = Receipt {
                record_id,
                reduction: assessment.reduction,
                points,
                methodology_version: methodology.version.clone(),
                capped: assessment.capped,
                audit_seq,
            };
            let (t, s, r, at) = (tenant.get(), subject.as_bytes().to_vec(), record_id.0.to_vec(), w.at);
            records.push(vec![
                Arg::Blob(r.clone()),
                Arg::Int(t),
                Arg::Blob(s.clone()),
                Arg::Text(record.kind().to_owned()),
                Arg::Int(record.day().days().into()),
                Arg::Int(CURRENT_KEY_VERSION.into()),
                Arg::Blob(sealed),
                Arg::Int(at),
            ]);
            ledger.push(vec![
                Arg::Int(t),
                Arg::Blob(s.clone()),
                Arg::Blob(r.clone()),
                Arg::Text(record.kind().to_owned()),
                Arg::Text(variant),
                Arg::Int(record.day().days().into()),
                Arg::Int(record.day().month().into()),
                Arg::Int(receipt.reduction.0),
                Arg::Int(receipt.points),
                Arg::Text(receipt.methodology_version.clone()),
                Arg::Int(receipt.capped.into()),
                Arg::Int(at),
            ]);
            keys.push(vec![
                Arg::Int(t),
                Arg::Blob(event_key.as_bytes().to_vec()),
                Arg::Blob(fingerprint.to_vec()),
                Arg::Blob(s),
                Arg::Blob(r),
                Arg::Int(receipt.reduction.0),
                Arg::Int(receipt.points),
                Arg::Text(receipt.methodology_version.clone()),
                Arg::Int(receipt.capped.into()),
                Arg::Int(audit_seq as i64),
                Arg::Int(at),
            ]);
            let cell = totals
                .entry((record.kind().to_owned(), record.day().month()))
                .or_default();
            *cell = (cell.0 + 1, cell.1 + receipt.reduction.0, cell.2 + receipt.points);
            seen.insert(event_key, (receipt.clone(), fingerprint));
            outcomes.push(IngestOutcome::Recorded(receipt));
        }

        let conn = w.conn();
        insert_rows(
            conn,
            self.engine,
            "records",
            &[
                "record_id",
                "tenant_id",
                "subject",
                "kind",
                "day",
                "key_version",
                "sealed",
                "created_at",
            ],
            records,
            "",
        )
        .await?;
        insert_rows(
            conn,
            self.engine,
            "ledger_entries",
            &[
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
            ],
            ledger,
            "",
        )
        .await?;
        insert_rows(
            conn,
            self.engine,
            "idempotency_keys",
            &[
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
            ],
            keys,
            "",
        )
        .await?;
        // One row per cell in the statement: PostgreSQL refuses to update a
        // row twice in one INSERT ... ON CONFLICT.
        let totals: Vec<Vec<Arg>> = totals
            .into_iter()
            .map(|((kind, month), (events, mg, points))| {
                vec![
                    Arg::Int(tenant.get()),
                    Arg::Text(kind),
                    Arg::Int(month.into()),
                    Arg::Int(events),
                    Arg::Int(mg),
                    Arg::Int(points),
                ]
            })
            .collect();
        insert_rows(
            w.conn(),
            self.engine,
            "reduction_totals",
            &["tenant_id", "kind", "month", "events", "reduction_mg", "points"],
            totals,
            "ON CONFLICT (tenant_id, kind, month) DO UPDATE SET events = reduction_totals.events + excluded.events, \
             reduction_mg = reduction_totals.reduction_mg + excluded.reduction_mg, \
             points = reduction_totals.points + excluded.points",
        )
        .await?;
        w.commit().await?;
        Ok(outcomes)
    }

    /// Receipts (and content fingerprints) of event ids this tenant already
    /// used.
    async fn known_receipts(
        &self,
        w: &mut super::WriteTx<'_>,
        tenant: i64,
        items: &[(Pseudonym, EventKey, CoarseRecord)],
    ) -> Result<HashMap<EventKey, (Receipt, [u8; 32])>, StoreError> {
        let keys: BTreeSet<[u8; 32]> = items.iter().map(|(_, k, _)| *k.as_bytes()).collect();
        let keys: Vec<[u8; 32]> = keys.into_iter().collect();
        let mut out = HashMap::new();
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Blob(k.to_vec())).collect();
        let leading = [Arg::Int(tenant), Arg::Int(self.cutoffs().idempotency_at)];
        let rows = select_in(w.conn(), self.engine, &leading, &keys, |p, n| {
            format!(
                "SELECT event_key, record_id, reduction_mg, points, methodology_version, capped, audit_seq, content_hash \
                 FROM idempotency_keys WHERE tenant_id = {} AND created_at >= {} AND event_key IN ({})",
                p.one(),
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let key: Vec<u8> = row.try_get(0)?;
            let key =
                EventKey::from_stored(&key).ok_or_else(|| StoreError::Corrupt("event key is not 32 bytes".into()))?;
            let receipt = Receipt {
                record_id: RecordId::from_stored(&row.try_get::<Vec<u8>, _>(1)?)?,
                reduction: Milligrams(row.try_get(2)?),
                points: row.try_get(3)?,
                methodology_version: row.try_get(4)?,
                capped: row.try_get::<i64, _>(5)? != 0,
                audit_seq: u64::try_from(row.try_get::<i64, _>(6)?)
                    .map_err(|_| StoreError::Corrupt("a stored audit sequence number is negative".into()))?,
            };
            let fingerprint: Vec<u8> = row.try_get(7)?;
            let fingerprint = fingerprint
                .try_into()
                .map_err(|_| StoreError::Corrupt("content hash is not 32 bytes".into()))?;
            out.insert(key, (receipt, fingerprint));
        }
        Ok(out)
    }

    /// What each subject in the batch already has credited on the batch's
    /// days, for the methodology's daily caps.
    async fn usage(
        &self,
        w: &mut super::WriteTx<'_>,
        tenant: i64,
        subjects: &[SubjectRef],
        first: Day,
        last: Day,
    ) -> Result<Usage, StoreError> {
        let mut usage = Usage::default();
        let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
        let leading = [
            Arg::Int(tenant),
            Arg::Int(i64::from(first.days())),
            Arg::Int(i64::from(last.days())),
        ];
        let rows = select_in(w.conn(), self.engine, &leading, &list, |p, n| {
            format!(
                "SELECT subject, day, kind, variant, CAST(SUM(CASE WHEN reduction_mg > 0 THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(COALESCE(SUM(reduction_mg), 0) AS BIGINT) \
                 FROM ledger_entries WHERE tenant_id = {} AND day >= {} AND day <= {} AND record_id IS NOT NULL \
                 AND subject IN ({}) GROUP BY subject, day, kind, variant",
                p.one(),
                p.one(),
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            let day = Day::from_days(row.try_get(1)?).ok_or_else(|| StoreError::Corrupt("day out of range".into()))?;
            usage.add(
                (subject, day, row.try_get(2)?),
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
            );
        }
        Ok(usage)
    }
}
