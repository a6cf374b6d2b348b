//! Recording a batch of minimized events: one transaction for the whole
//! batch, a handful of statements whatever its size (the round trips, not
//! the crypto, decide throughput). In three steps: load what the batch's
//! subjects already have (keys, consents, receipts, daily usage, and what
//! their linked accounts on other platforms claimed those days), decide
//! each event (`decide`, pure), write the rows (`rows`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use sqlx::FromRow;

mod decide;
mod group;
mod rows;

use decide::{decide, Decision, Usage};
pub(super) use group::IngestQueue;
use rows::BatchRows;

use super::keystore::StoredKey;
use super::points::{credit_earnings, Credit};
use super::sql::{select_in, Arg};
use super::{Access, Store, StoreError, WriteTx};
use crate::audit::Action;
use crate::crypto::{random_bytes, EventKey, Pseudonym, RecordAad, SubjectKeys, SubjectRef};
use crate::domain::{CoarseRecord, Day, EventId, Milligrams, SubjectId, TenantId};
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
    /// The part of the behaviour's credit a linked account had claimed
    /// already, which this record did not earn (see docs/linking.md).
    pub counted_elsewhere: Option<CountedElsewhere>,
}

/// What a record did not earn because a linked account on another
/// platform had reported the same behaviour first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountedElsewhere {
    pub reduction: Milligrams,
    pub points: i64,
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

/// A batch ready for the write transaction: external ids already replaced
/// by pseudonyms and event keys, and the subjects' stored keys read.
pub(super) struct Prepared {
    tenant: TenantId,
    items: Vec<(Pseudonym, EventKey, CoarseRecord)>,
    stored: HashMap<Pseudonym, StoredKey>,
}

/// A row of `idempotency_keys`: what a retry gets back.
#[derive(sqlx::FromRow)]
struct ReceiptRow {
    event_key: Vec<u8>,
    record_id: Vec<u8>,
    reduction_mg: i64,
    points: i64,
    methodology_version: String,
    capped: i64,
    audit_seq: i64,
    content_hash: Vec<u8>,
    counted_elsewhere_mg: i64,
    counted_elsewhere_points: i64,
}

/// Reported events and milligrams of one subject, day, kind and variant
/// (credited here or counted elsewhere).
#[derive(sqlx::FromRow)]
struct UsageRow {
    subject: Vec<u8>,
    day: i64,
    kind: String,
    variant: String,
    credited: i64,
    reduction_mg: i64,
}

impl Store {
    /// Records a batch under the methodology in force. Every item is
    /// recorded, recognized as a duplicate, or refused for want of consent;
    /// all of it commits or none of it does. Points are awarded only under
    /// consent to `rewards`.
    pub async fn ingest(&self, access: &Access, items: Vec<IngestItem>) -> Result<Vec<IngestOutcome>, StoreError> {
        let tenant = self.authorize(access, Permission::RecordEvents)?;
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
        // consented to nothing. Read before the write lock is taken.
        let stored = self.existing_keys(&lookups).await?;
        self.ingest_grouped(Prepared { tenant, items, stored }).await
    }

    /// Decides and writes batches of one tenant in the write transaction
    /// `w`, in order, as one: each event is decided against the state the
    /// events before it left, so the outcomes are those of writing the
    /// batches one by one, for one pass of statements instead of one per
    /// batch. Each batch's outcomes are true once `w` commits.
    async fn write_batches(
        &self,
        w: &mut WriteTx<'_>,
        batches: &[&Prepared],
    ) -> Result<Vec<Vec<IngestOutcome>>, StoreError> {
        let tenant = batches.first().expect("a run is not empty").tenant;
        debug_assert!(batches.iter().all(|b| b.tenant == tenant));
        let items: Vec<&(Pseudonym, EventKey, CoarseRecord)> = batches.iter().flat_map(|b| &b.items).collect();
        let stored: HashMap<&Pseudonym, &StoredKey> = batches.iter().flat_map(|b| &b.stored).collect();
        let outcomes = self.write_items(w, tenant, &items, &stored).await?;
        let mut outcomes = outcomes.into_iter();
        Ok(batches
            .iter()
            .map(|b| outcomes.by_ref().take(b.items.len()).collect())
            .collect())
    }

    async fn write_items(
        &self,
        w: &mut WriteTx<'_>,
        tenant: TenantId,
        items: &[&(Pseudonym, EventKey, CoarseRecord)],
        stored: &HashMap<&Pseudonym, &StoredKey>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let methodology = &self.policies.methodology;
        let first = items.iter().map(|(_, _, r)| r.day()).min().expect("batch is not empty");
        let last = items.iter().map(|(_, _, r)| r.day()).max().expect("batch is not empty");
        // A subject erased since their key was read is refused like one who
        // never consented (see `erased_among`). Keys are derived once per
        // subject and batch.
        let key_ids: Vec<&[u8]> = stored.values().map(|k| k.key_id.as_slice()).collect();
        let erased = self.erased_among(w, &key_ids).await?;
        let subjects: HashMap<Pseudonym, SubjectKeys> = stored
            .iter()
            .filter(|(_, k)| !erased.contains(&k.key_id))
            .map(|(p, k)| (**p, self.sealing_keys(&k.salt)))
            .collect();
        let refs: Vec<SubjectRef> = subjects.values().map(|k| k.ledger_ref).collect();
        let consents = self.consent_state(w, tenant, &refs).await?;
        let mut seen = self.known_receipts(w, tenant.get(), items).await?;
        let mut usage = self.usage(w, tenant.get(), &refs, first, last).await?;
        let linked = self.linked_claims(w, tenant, &refs, first, last).await?;

        let mut outcomes = Vec::with_capacity(items.len());
        let mut rows = BatchRows::default();
        let mut credits = Vec::new();
        for &(lookup, event_key, record) in items {
            let subject = subjects.get(lookup);
            let fingerprint = subject.map(|k| self.pseudonyms.event_fingerprint(&k.ledger_ref, &record.encode()));
            let decided = decide(
                methodology,
                &consents,
                &seen,
                &mut usage,
                &linked,
                subject.map(|k| k.ledger_ref).zip(fingerprint),
                event_key,
                record,
            )?;
            let (
                Decision::Record {
                    assessment,
                    points,
                    elsewhere,
                },
                Some(keys),
                Some(fingerprint),
            ) = (decided.clone(), subject, fingerprint)
            else {
                outcomes.push(decided.into_outcome());
                continue;
            };
            let record_id = RecordId::generate();
            let aad = RecordAad {
                record_id: &record_id.0,
                subject: &keys.ledger_ref,
                key_version: keys.key_version,
                kind: record.kind(),
                day: record.day().days(),
            };
            let sealed = self.sealing.seal(keys, &aad, &record.encode());
            // What the record earns: its assessment less what a linked
            // account claimed already. The record's entry holds the earned
            // figures, so the log's totals stay each account's totals.
            let (elsewhere_mg, elsewhere_points) = elsewhere.map_or((0, 0), |e| (e.reduction_mg, e.points));
            let (reduction, points) = (
                Milligrams(assessment.reduction.0 - elsewhere_mg),
                points - elsewhere_points,
            );
            let audit_seq = w.append(
                Some(tenant),
                Action::RecordWritten {
                    subject: keys.audit_ref,
                    record_id: record_id.0,
                    kind: record.kind().to_owned(),
                    variant: record.variant().map(str::to_owned),
                    day: record.day(),
                    reduction_mg: reduction.0,
                    points,
                    methodology_version: methodology.version.clone(),
                    capped: assessment.capped,
                },
            );
            if let Some(e) = elsewhere {
                w.append(
                    Some(tenant),
                    Action::CountedElsewhere {
                        subject: keys.audit_ref,
                        record_id: record_id.0,
                        link_id: e.link_id,
                        reduction_mg: e.reduction_mg,
                        points: e.points,
                    },
                );
            }
            let receipt = Receipt {
                record_id,
                reduction,
                points,
                methodology_version: methodology.version.clone(),
                capped: assessment.capped,
                audit_seq,
                counted_elsewhere: elsewhere.map(|e| CountedElsewhere {
                    reduction: Milligrams(e.reduction_mg),
                    points: e.points,
                }),
            };
            rows.add(
                tenant,
                keys.ledger_ref,
                event_key,
                fingerprint,
                record,
                (keys.key_version, sealed),
                &receipt,
                w.today.start,
            );
            if points > 0 {
                credits.push(Credit {
                    subject: keys.ledger_ref,
                    record_id: record_id.0,
                    points,
                    audit_seq,
                });
            }
            seen.insert(*event_key, (receipt.clone(), fingerprint));
            outcomes.push(IngestOutcome::Recorded(receipt));
        }
        rows.write(w.conn(), self.engine, tenant).await?;
        if !credits.is_empty() {
            let expiry = self.expiry_policy(w.conn(), tenant).await?;
            let (day, start) = (w.today.day, w.today.start);
            credit_earnings(w.conn(), self.engine, tenant, expiry, day, credits, start).await?;
        }
        Ok(outcomes)
    }

    /// Receipts (and content fingerprints) of event ids this tenant already
    /// used.
    async fn known_receipts(
        &self,
        w: &mut WriteTx<'_>,
        tenant: i64,
        items: &[&(Pseudonym, EventKey, CoarseRecord)],
    ) -> Result<HashMap<EventKey, (Receipt, [u8; 32])>, StoreError> {
        let keys: BTreeSet<[u8; 32]> = items.iter().map(|(_, k, _)| *k.as_bytes()).collect();
        let keys: Vec<[u8; 32]> = keys.into_iter().collect();
        let mut out = HashMap::new();
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Blob(k.to_vec())).collect();
        let leading = [Arg::Int(tenant), Arg::Int(self.cutoffs(&w.today).idempotency_at)];
        let rows = select_in(w.conn(), self.engine, &leading, &keys, |p, n| {
            format!(
                "SELECT event_key, record_id, reduction_mg, points, methodology_version, capped, audit_seq, content_hash, \
                 counted_elsewhere_mg, counted_elsewhere_points \
                 FROM idempotency_keys WHERE tenant_id = {} AND created_at >= {} AND event_key IN ({})",
                p.one(),
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let row = ReceiptRow::from_row(&row)?;
            let key = EventKey::from_stored(&row.event_key)
                .ok_or_else(|| StoreError::Corrupt("event key is not 32 bytes".into()))?;
            let receipt = Receipt {
                record_id: RecordId::from_stored(&row.record_id)?,
                reduction: Milligrams(row.reduction_mg),
                points: row.points,
                methodology_version: row.methodology_version,
                capped: row.capped != 0,
                audit_seq: u64::try_from(row.audit_seq)
                    .map_err(|_| StoreError::Corrupt("a stored audit sequence number is negative".into()))?,
                counted_elsewhere: (row.counted_elsewhere_mg != 0 || row.counted_elsewhere_points != 0).then_some(
                    CountedElsewhere {
                        reduction: Milligrams(row.counted_elsewhere_mg),
                        points: row.counted_elsewhere_points,
                    },
                ),
            };
            let fingerprint = row
                .content_hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("content hash is not 32 bytes".into()))?;
            out.insert(key, (receipt, fingerprint));
        }
        Ok(out)
    }

    /// What each subject in the batch already has on the batch's days, for
    /// the methodology's daily caps and for counting once what a linked
    /// account reported too: as the platform reported it, the part counted
    /// elsewhere included, so that the caps apply to this platform's
    /// reports whatever was linked.
    async fn usage(
        &self,
        w: &mut WriteTx<'_>,
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
                "SELECT subject, day, kind, variant, credited, reduction_mg FROM daily_usage \
                 WHERE tenant_id = {} AND day >= {} AND day <= {} AND subject IN ({})",
                p.one(),
                p.one(),
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let row = UsageRow::from_row(&row)?;
            let subject = SubjectRef::from_stored(&row.subject)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            let day = Day::from_days(row.day).ok_or_else(|| StoreError::Corrupt("day out of range".into()))?;
            usage.add((subject, day, row.kind), row.variant, row.credited, row.reduction_mg);
        }
        Ok(usage)
    }
}
