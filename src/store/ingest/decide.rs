//! What becomes of one event of a batch, decided without I/O from what the
//! batch's transaction loaded: refused for want of consent, a retry of an
//! event already recorded, an id reused for other content, or a record
//! with its figures under the methodology's daily caps.

use std::collections::HashMap;

use super::{IngestOutcome, Receipt};
use crate::crypto::{EventKey, SubjectRef};
use crate::domain::{Assessment, CoarseRecord, DailyUsage, Day, Methodology};
use crate::policy::Purpose;
use crate::store::consent::ConsentState;
use crate::store::links::LinkedClaims;
use crate::store::StoreError;

type DayKey = (SubjectRef, Day, String);

/// Credited events and milligrams per subject, day, kind (and variant):
/// what the daily caps count, loaded for the batch's subjects and days and
/// grown as the batch is decided.
#[derive(Default)]
pub(in crate::store) struct Usage {
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

    pub(in crate::store) fn add(&mut self, key: DayKey, variant: String, events: i64, mg: i64) {
        let k = self.kinds.entry(key.clone()).or_default();
        k.0 += events;
        k.1 += mg;
        let v = self.variants.entry((key, variant)).or_default();
        v.0 += events;
        v.1 += mg;
    }
}

/// The fate of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing is written; the outcome says why.
    NotRecorded(IngestOutcome),
    /// Recorded with these figures, less the part counted elsewhere.
    Record {
        assessment: Assessment,
        points: i64,
        elsewhere: Option<Elsewhere>,
    },
}

/// The part of an assessment a linked account had claimed already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Elsewhere {
    pub reduction_mg: i64,
    pub points: i64,
    /// The link whose account claimed it.
    pub link_id: [u8; 16],
}

/// Counting once across linked accounts (docs/linking.md): of a
/// behaviour's `assessed` milligrams, the part the linked accounts had
/// claimed already on the same day, kind and variant beyond what this
/// account had (`own_before`), up to the whole. The person's total for the
/// day is then the largest of the platforms' reports, never their sum:
/// each report adds only what exceeds what was counted.
pub(super) fn overlap_mg(assessed: i64, own_before: i64, linked_claim: i64) -> i64 {
    (linked_claim - own_before).clamp(0, assessed.max(0))
}

impl Decision {
    pub(super) fn into_outcome(self) -> IngestOutcome {
        match self {
            Decision::NotRecorded(outcome) => outcome,
            Decision::Record { .. } => unreachable!("a record's outcome is its receipt, made when it is written"),
        }
    }
}

/// Decides one event. `subject` is the person's ledger reference and the
/// event's content fingerprint, if the person has a key (only consent
/// creates one). A recorded event's credit is added to `usage`, so the
/// batch's later events count it against the caps.
#[allow(clippy::too_many_arguments)]
pub(super) fn decide(
    methodology: &Methodology,
    consents: &ConsentState,
    seen: &HashMap<EventKey, (Receipt, [u8; 32])>,
    usage: &mut Usage,
    linked: &LinkedClaims,
    subject: Option<(SubjectRef, [u8; 32])>,
    event_key: &EventKey,
    record: &CoarseRecord,
) -> Result<Decision, StoreError> {
    let refused = || {
        Decision::NotRecorded(IngestOutcome::ConsentRequired {
            purpose: Purpose::Accounting,
            kind: record.kind().to_owned(),
        })
    };
    let Some((subject, fingerprint)) = subject else {
        return Ok(refused());
    };
    // Consent first: a retry after a withdrawal is refused, not answered
    // with what was deleted.
    if !consents.allows(&subject, Purpose::Accounting, record.kind()) {
        return Ok(refused());
    }
    if let Some((receipt, earlier)) = seen.get(event_key) {
        return Ok(Decision::NotRecorded(if *earlier == fingerprint {
            IngestOutcome::Duplicate(receipt.clone())
        } else {
            IngestOutcome::EventIdReused
        }));
    }
    let day_key = (subject, record.day(), record.kind().to_owned());
    let variant = record.variant().unwrap_or("").to_owned();
    let assessment = methodology
        .assess(record, &usage.of(&day_key, &variant))
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "kind {} is not in methodology {}",
                record.kind(),
                methodology.version
            ))
        })?;
    let own_before = usage.of(&day_key, &variant).variant_mg;
    // Caps count credited events: one recorded at zero uses no allowance.
    let credited = i64::from(assessment.reduction.0 > 0);
    let points = if consents.allows(&subject, Purpose::Rewards, record.kind()) {
        assessment.points
    } else {
        0
    };
    // Linked accounts count only while this side consents too (the far
    // side's consent is checked where the claims are loaded).
    let elsewhere = linked
        .get(&subject, record.day(), record.kind(), &variant)
        .filter(|_| consents.allows(&subject, Purpose::Interconnection, record.kind()))
        .and_then(|(claim, link_id)| {
            let assessed = assessment.reduction.0;
            let overlap = overlap_mg(assessed, own_before, claim);
            // Points follow the grams, rounded so the earned part is
            // rounded down.
            let earned_points = (i128::from(points) * i128::from(assessed - overlap))
                .checked_div(i128::from(assessed))
                .unwrap_or(0) as i64;
            (overlap > 0).then_some(Elsewhere {
                reduction_mg: overlap,
                points: points - earned_points,
                link_id,
            })
        });
    usage.add(day_key, variant, credited, assessment.reduction.0);
    Ok(Decision::Record {
        assessment,
        points,
        elsewhere,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::crypto::{PseudonymKey, RootKey};
    use crate::domain::{minimize, parse_event, EventId, Milligrams, TenantId};
    use crate::policy::PolicySet;
    use crate::store::consent::Kinds;
    use crate::store::RecordId;

    struct Batch {
        policies: PolicySet,
        consents: ConsentState,
        seen: HashMap<EventKey, (Receipt, [u8; 32])>,
        usage: Usage,
        linked: LinkedClaims,
        pseudonyms: PseudonymKey,
    }

    fn alice() -> SubjectRef {
        SubjectRef::from_bytes([1; 32])
    }

    fn batch(purposes: &[Purpose]) -> Batch {
        let policies = PolicySet::load(None).unwrap();
        let mut consents = ConsentState::new(&policies.consent);
        for p in purposes {
            consents.insert(alice(), *p, policies.consent.get(*p).notice_version, Kinds::All);
        }
        Batch {
            policies,
            consents,
            seen: HashMap::new(),
            usage: Usage::default(),
            linked: LinkedClaims::default(),
            pseudonyms: RootKey::generate().pseudonym_key(),
        }
    }

    fn record(kind: &str, data: serde_json::Value) -> CoarseRecord {
        let raw = parse_event(json!({"event_id": "e", "subject": "s", "kind": kind,
            "occurred_at": "2024-07-25T08:00:00+08:00", "data": data}))
        .unwrap();
        minimize(
            &raw,
            &PolicySet::load(None).unwrap().methodology,
            datetime!(2024-07-25 12:00 +08:00),
        )
        .unwrap()
    }

    impl Batch {
        fn key(&self, id: &str) -> EventKey {
            self.pseudonyms
                .event_key(TenantId::new(1), &EventId::parse(id.to_owned()).unwrap())
        }

        fn decide(&mut self, id: &str, subject: Option<SubjectRef>, record: &CoarseRecord) -> Decision {
            let fingerprint = subject.map(|s| (s, self.pseudonyms.event_fingerprint(&s, &record.encode())));
            let key = self.key(id);
            decide(
                &self.policies.methodology,
                &self.consents,
                &self.seen,
                &mut self.usage,
                &self.linked,
                fingerprint,
                &key,
                record,
            )
            .unwrap()
        }
    }

    fn refused(kind: &str) -> Decision {
        Decision::NotRecorded(IngestOutcome::ConsentRequired {
            purpose: Purpose::Accounting,
            kind: kind.to_owned(),
        })
    }

    #[test]
    fn without_a_key_or_accounting_consent_nothing_is_recorded() {
        let plate = record("clean_plate", json!({}));
        assert_eq!(
            batch(&[Purpose::Accounting]).decide("e1", None, &plate),
            refused("clean_plate")
        );
        assert_eq!(
            batch(&[Purpose::Rewards]).decide("e1", Some(alice()), &plate),
            refused("clean_plate")
        );
    }

    #[test]
    fn points_need_rewards_consent() {
        let plate = record("clean_plate", json!({}));
        let Decision::Record { assessment, points, .. } =
            batch(&[Purpose::Accounting]).decide("e1", Some(alice()), &plate)
        else {
            panic!("recorded")
        };
        assert_eq!((assessment.reduction, points), (Milligrams(144_000), 0));
        let both = batch(&[Purpose::Accounting, Purpose::Rewards]).decide("e1", Some(alice()), &plate);
        assert!(matches!(both, Decision::Record { points: 5, .. }), "{both:?}");
    }

    #[test]
    fn a_retry_is_a_duplicate_and_other_content_under_its_id_is_refused() {
        let mut b = batch(&[Purpose::Accounting]);
        let plate = record("clean_plate", json!({}));
        let fingerprint = b.pseudonyms.event_fingerprint(&alice(), &plate.encode());
        let receipt = Receipt {
            record_id: RecordId([7; 16]),
            reduction: Milligrams(144_000),
            points: 0,
            methodology_version: "v".into(),
            capped: false,
            audit_seq: 9,
            counted_elsewhere: None,
        };
        let key = b.key("e1");
        b.seen.insert(key, (receipt.clone(), fingerprint));
        assert_eq!(
            b.decide("e1", Some(alice()), &plate),
            Decision::NotRecorded(IngestOutcome::Duplicate(receipt))
        );
        let bill = record("paperless_bill", json!({}));
        assert_eq!(
            b.decide("e1", Some(alice()), &bill),
            Decision::NotRecorded(IngestOutcome::EventIdReused)
        );
    }

    #[test]
    fn the_batch_counts_its_own_events_against_the_daily_cap() {
        let mut b = batch(&[Purpose::Accounting, Purpose::Rewards]);
        let plate = record("clean_plate", json!({}));
        let decided: Vec<Decision> = (0..6)
            .map(|i| b.decide(&format!("e{i}"), Some(alice()), &plate))
            .collect();
        assert_eq!(decided.len(), 6);
        let capped = decided
            .iter()
            .filter(|d| matches!(d, Decision::Record { assessment, .. } if assessment.capped))
            .count();
        assert!(capped > 0, "a cap applies within one batch: {decided:?}");
        let first_capped = decided
            .iter()
            .position(|d| matches!(d, Decision::Record { assessment, .. } if assessment.capped))
            .unwrap();
        assert!(
            decided[first_capped..]
                .iter()
                .all(|d| matches!(d, Decision::Record { assessment, .. } if assessment.capped)),
            "once capped, the rest of the day stays capped: {decided:?}"
        );
    }

    #[test]
    fn the_overlap_is_what_linked_accounts_claimed_beyond_this_one() {
        // Nothing claimed elsewhere, or less than this account has: no overlap.
        assert_eq!(overlap_mg(80_000, 0, 0), 0);
        assert_eq!(overlap_mg(80_000, 160_000, 80_000), 0);
        // The same ride reported on both: all of it.
        assert_eq!(overlap_mg(80_000, 0, 80_000), 80_000);
        // 3 km cycled elsewhere, 5 km here: the first 3 km overlap.
        assert_eq!(overlap_mg(466_500, 0, 279_900), 279_900);
        // Never more than the record's own credit.
        assert_eq!(overlap_mg(80_000, 0, 800_000), 80_000);
    }

    #[test]
    fn a_ride_a_linked_account_claimed_earns_nothing_here() {
        let mut b = batch(&[Purpose::Accounting, Purpose::Rewards, Purpose::Interconnection]);
        let ride = record("transit_ride", json!({"mode": "bus"}));
        b.linked
            .insert(alice(), ride.day(), "transit_ride", "bus", 80_000, [4; 16]);
        let first = b.decide("e1", Some(alice()), &ride);
        assert_eq!(
            first,
            Decision::Record {
                assessment: Assessment {
                    reduction: Milligrams(80_000),
                    points: 10,
                    capped: false
                },
                points: 10,
                elsewhere: Some(Elsewhere {
                    reduction_mg: 80_000,
                    points: 10,
                    link_id: [4; 16]
                }),
            }
        );
        // A second ride the same day is more than the other platform saw.
        let second = b.decide("e2", Some(alice()), &ride);
        assert!(matches!(second, Decision::Record { elsewhere: None, .. }), "{second:?}");
        // Another mode is another behaviour.
        let metro = record("transit_ride", json!({"mode": "metro"}));
        let third = b.decide("e3", Some(alice()), &metro);
        assert!(matches!(third, Decision::Record { elsewhere: None, .. }), "{third:?}");
    }

    #[test]
    fn without_interconnection_consent_on_this_side_nothing_is_counted_elsewhere() {
        let mut b = batch(&[Purpose::Accounting, Purpose::Rewards]);
        let ride = record("transit_ride", json!({"mode": "bus"}));
        b.linked
            .insert(alice(), ride.day(), "transit_ride", "bus", 80_000, [4; 16]);
        let decided = b.decide("e1", Some(alice()), &ride);
        assert!(
            matches!(
                decided,
                Decision::Record {
                    elsewhere: None,
                    points: 10,
                    ..
                }
            ),
            "{decided:?}"
        );
    }
}
