//! Redemptions and their refunds, each through the one door
//! (`access.rs`): idempotent by the platform's reference, never spending
//! more than the balance (writes are serialized by the audit head lock, and
//! the balance is read inside the write transaction), audited in the same
//! transaction.

use sqlx::{AnyConnection, Row};

use super::super::access::{Audited, Enrol, SubjectRead, SubjectTx};
use super::super::{Access, Store, StoreError};
use super::{append, balance, position, LineKind, NewLine};
use crate::audit::Action;
use crate::crypto::{open, random_bytes, seal, RecordAad, SubjectKeys};
use crate::domain::{Day, SubjectId, TenantId};
use crate::policy::{ExpiryPolicy, Permission, Purpose};

/// The most redemptions one listing returns.
pub const MAX_REDEMPTIONS_LISTED: u32 = 1000;
/// The longest reference and description accepted, in bytes.
const MAX_REFERENCE_BYTES: usize = 128;
const MAX_DESCRIPTION_BYTES: usize = 200;
/// The most points one redemption may spend.
const MAX_REDEMPTION_POINTS: i64 = 1_000_000_000;

/// What a platform asks to redeem.
#[derive(Clone, Debug)]
pub struct RedemptionRequest {
    pub points: i64,
    /// The platform's own id of the redemption: the key of retries.
    pub reference: String,
    pub description: Option<String>,
}

impl RedemptionRequest {
    /// Refuses what cannot be stored; messages never echo the values.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !(1..=MAX_REDEMPTION_POINTS).contains(&self.points) {
            return Err(StoreError::Invalid(format!(
                "points must be a whole number from 1 to {MAX_REDEMPTION_POINTS}"
            )));
        }
        valid_reference(&self.reference)?;
        if let Some(d) = &self.description {
            if d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(char::is_control) {
                return Err(StoreError::Invalid(format!(
                    "description must be at most {MAX_DESCRIPTION_BYTES} bytes without control characters"
                )));
            }
        }
        Ok(())
    }
}

fn valid_reference(reference: &str) -> Result<(), StoreError> {
    if reference.is_empty() || reference.len() > MAX_REFERENCE_BYTES || reference.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "reference must be 1 to {MAX_REFERENCE_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedemptionStatus {
    Redeemed,
    /// Reversed by a refund line on `on`, recorded by audit entry
    /// `audit_seq`, leaving `balance`.
    Refunded {
        on: Day,
        audit_seq: u64,
        balance: i64,
    },
}

/// A redemption as stored, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redemption {
    pub redemption_id: [u8; 16],
    pub reference: String,
    pub description: Option<String>,
    pub points: i64,
    pub day: Day,
    /// The balance the redemption left.
    pub balance: i64,
    /// The audit entry that records it.
    pub audit_seq: u64,
    pub status: RedemptionStatus,
}

/// The sealed part of a redemption: the platform's free text.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedText {
    r: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

/// The kind sealed redemption text is bound to (and re-sealed under after
/// a root key rotation, beside the records).
pub(in crate::store) const SEALED_KIND: &str = "redemption";

/// What sealed text is bound to: the redemption, the subject, the root key
/// version it is sealed under, the day.
fn aad<'a>(redemption_id: &'a [u8; 16], keys: &'a SubjectKeys, key_version: u32, day: Day) -> RecordAad<'a> {
    RecordAad {
        record_id: redemption_id,
        subject: &keys.ledger_ref,
        key_version,
        kind: SEALED_KIND,
        day: day.days(),
    }
}

#[derive(sqlx::FromRow)]
struct RedemptionRow {
    line_id: i64,
    redemption_id: Vec<u8>,
    content_hash: Vec<u8>,
    points: i64,
    day: i64,
    key_version: i64,
    sealed: Vec<u8>,
    audit_seq: i64,
    balance: i64,
}

const SELECT_REDEMPTION: &str =
    "SELECT p.id AS line_id, r.redemption_id, r.content_hash, r.points, r.day, r.key_version, r.sealed, \
     r.audit_seq, p.balance FROM redemptions r JOIN points_entries p \
     ON p.redemption_id = r.redemption_id AND p.entry = 'redeem'";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.into())
}

impl RedemptionRow {
    fn open(self, keys: &SubjectKeys, status: RedemptionStatus) -> Result<Redemption, StoreError> {
        let redemption_id: [u8; 16] = self
            .redemption_id
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("redemption id is not 16 bytes"))?;
        let day = Day::from_days(self.day).ok_or_else(|| corrupt("redemption day out of range"))?;
        // Sealed under the current root key version or an older one still
        // in use (a re-seal after a rotation moves it on).
        let key_version = u32::try_from(self.key_version).map_err(|_| StoreError::Integrity)?;
        if !keys.opens(key_version) {
            // Sealed by another server under a version this one has not
            // loaded yet: the client retries once this process caught up.
            return Err(StoreError::KeyRotated);
        }
        let plain = open(keys, &aad(&redemption_id, keys, key_version, day), &self.sealed)
            .map_err(|_| StoreError::Integrity)?;
        let text: SealedText = serde_json::from_slice(&plain).map_err(|_| StoreError::Integrity)?;
        Ok(Redemption {
            redemption_id,
            reference: text.r,
            description: text.d,
            points: self.points,
            day,
            balance: self.balance,
            audit_seq: u64::try_from(self.audit_seq).map_err(|_| corrupt("negative audit sequence number"))?,
            status,
        })
    }
}

/// The refund of a redemption, if there is one.
async fn refund_of(conn: &mut AnyConnection, redemption_id: &[u8]) -> Result<RedemptionStatus, StoreError> {
    let row =
        sqlx::query("SELECT day, audit_seq, balance FROM points_entries WHERE redemption_id = $1 AND entry = 'refund'")
            .bind(redemption_id.to_vec())
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else {
        return Ok(RedemptionStatus::Redeemed);
    };
    let (day, seq, balance): (i64, Option<i64>, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(RedemptionStatus::Refunded {
        on: Day::from_days(day).ok_or_else(|| corrupt("refund day out of range"))?,
        audit_seq: seq
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| corrupt("a refund line has no audit entry"))?,
        balance,
    })
}

/// Up to `limit` of the subject's redemptions after the one whose line is
/// `after`, oldest first, opened; and the last one's line, where the next
/// page starts.
pub(in crate::store) async fn redemption_page(
    conn: &mut AnyConnection,
    tenant: TenantId,
    keys: &SubjectKeys,
    after: i64,
    limit: u32,
) -> Result<(Vec<Redemption>, Option<i64>), StoreError> {
    let rows = sqlx::query_as::<_, RedemptionRow>(&format!(
        "{SELECT_REDEMPTION} WHERE r.tenant_id = $1 AND r.subject = $2 AND p.id > $3 ORDER BY p.id LIMIT $4"
    ))
    .bind(tenant.get())
    .bind(keys.ledger_ref.as_bytes().to_vec())
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let last = rows.last().map(|r| r.line_id);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let status = refund_of(conn, &row.redemption_id).await?;
        out.push(row.open(keys, status)?);
    }
    Ok((out, last))
}

impl Store {
    /// The expiry period of the points `tenant` credits (see
    /// `policies/points.toml`).
    pub(in crate::store) async fn expiry_policy(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
    ) -> Result<ExpiryPolicy, StoreError> {
        let points = &self.policies.points;
        if points.platforms.is_empty() {
            return Ok(points.default);
        }
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
            .bind(tenant.get())
            .fetch_optional(conn)
            .await?;
        Ok(name.map_or(points.default, |n| points.expiry_for(&n)))
    }

    async fn redemption_by_reference(
        &self,
        tx: &mut SubjectTx<'_>,
        reference: &str,
    ) -> Result<Option<RedemptionRow>, StoreError> {
        let key = self.pseudonyms.redemption_key(&tx.ledger_ref(), reference);
        let tenant = tx.tenant().get();
        Ok(sqlx::query_as::<_, RedemptionRow>(&format!(
            "{SELECT_REDEMPTION} WHERE r.tenant_id = $1 AND r.reference_key = $2"
        ))
        .bind(tenant)
        .bind(key.to_vec())
        .fetch_optional(tx.conn())
        .await?)
    }

    /// Spends `request.points` of the subject's balance. A retry with the
    /// same reference and content returns the original receipt (and
    /// `true`); the same reference with other content is refused.
    pub async fn redeem(
        &self,
        access: &Access,
        subject: &SubjectId,
        request: &RedemptionRequest,
    ) -> Result<(Redemption, bool), StoreError> {
        request.validate()?;
        let description = request.description.as_deref().unwrap_or("");
        let op = async |tx: &mut SubjectTx<'_>| {
            let (tenant, subject_ref, audit_ref, today) = (tx.tenant(), tx.ledger_ref(), tx.audit_ref(), tx.today());
            let fingerprint = self
                .pseudonyms
                .redemption_fingerprint(&subject_ref, request.points, description);
            if let Some(found) = self.redemption_by_reference(tx, &request.reference).await? {
                if found.content_hash.as_slice() != fingerprint.as_slice() {
                    return Err(StoreError::ReferenceReused);
                }
                let status = refund_of(tx.conn(), &found.redemption_id).await?;
                let receipt = found.open(tx.keys(), status)?;
                let read = Action::RedemptionsRead {
                    subject: audit_ref,
                    items: 1,
                };
                return Ok(Audited::new((receipt, true), read));
            }
            if !self
                .consents_now(tx.conn(), tenant, subject_ref.as_bytes(), Purpose::Rewards)
                .await?
            {
                return Err(StoreError::ConsentRequired {
                    purpose: Purpose::Rewards,
                    other_side: false,
                });
            }
            let notice = self.policies.points.notice_days;
            let held = balance(tx.conn(), tenant, &subject_ref).await?;
            let due = position(tx.conn(), tenant, &subject_ref, today.day, notice).await?.due;
            let available = held - due;
            if request.points > available {
                return Err(StoreError::InsufficientPoints {
                    balance: available,
                    requested: request.points,
                });
            }
            let mut seq = tx.next_audit_seq();
            let mut lines = Vec::new();
            let mut actions = Vec::new();
            if due > 0 {
                // What expired is written before anything is spent.
                lines.push(NewLine {
                    kind: LineKind::Expire,
                    points: -due,
                    day: today.day,
                    expires_on: None,
                    record_id: None,
                    redemption_id: None,
                    audit_seq: Some(seq),
                });
                actions.push(Action::PointsExpired {
                    tenant,
                    accounts: 1,
                    points: due,
                });
                seq += 1;
            }
            let redemption_id: [u8; 16] = random_bytes();
            lines.push(NewLine {
                kind: LineKind::Redeem,
                points: -request.points,
                day: today.day,
                expires_on: None,
                record_id: None,
                redemption_id: Some(redemption_id),
                audit_seq: Some(seq),
            });
            let engine = tx.engine();
            let left = append(tx.conn(), engine, tenant, &subject_ref, held, &lines, today.start).await?;
            let text = SealedText {
                r: request.reference.clone(),
                d: request.description.clone(),
            };
            let plain = zeroize::Zeroizing::new(serde_json::to_vec(&text).map_err(|e| corrupt(&e.to_string()))?);
            let sealed = seal(
                tx.keys(),
                &aad(&redemption_id, tx.keys(), tx.keys().key_version, today.day),
                &plain,
            );
            let key = self.pseudonyms.redemption_key(&subject_ref, &request.reference);
            sqlx::query(
                "INSERT INTO redemptions (redemption_id, tenant_id, subject, reference_key, content_hash, points, day, \
                 key_version, sealed, audit_seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(redemption_id.to_vec())
            .bind(tenant.get())
            .bind(subject_ref.as_bytes().to_vec())
            .bind(key.to_vec())
            .bind(fingerprint.to_vec())
            .bind(request.points)
            .bind(i64::from(today.day.days()))
            .bind(i64::from(tx.keys().key_version))
            .bind(sealed)
            .bind(seq as i64)
            .bind(today.start)
            .execute(tx.conn())
            .await?;
            actions.push(Action::PointsRedeemed {
                subject: audit_ref,
                redemption_id,
                points: request.points,
                balance: left,
            });
            let receipt = Redemption {
                redemption_id,
                reference: request.reference.clone(),
                description: request.description.clone(),
                points: request.points,
                day: today.day,
                balance: left,
                audit_seq: seq,
                status: RedemptionStatus::Redeemed,
            };
            let mut actions = actions.into_iter();
            let first = actions.next().expect("a redemption is audited");
            Ok(actions.fold(Audited::new((receipt, false), first), |a, next| a.and(Some(next))))
        };
        let done = self
            .with_subject(access, Permission::RedeemPoints, subject, Enrol::KnownOnly, op)
            .await?;
        Ok(done.value)
    }

    /// Refunds the redemption with `reference` by a reversing line (never
    /// an edit). A retry returns the same refund. Refunds need no consent:
    /// they give back what the person had.
    pub async fn refund(
        &self,
        access: &Access,
        subject: &SubjectId,
        reference: &str,
    ) -> Result<Redemption, StoreError> {
        valid_reference(reference)?;
        let op = async |tx: &mut SubjectTx<'_>| {
            let (tenant, subject_ref, audit_ref, today) = (tx.tenant(), tx.ledger_ref(), tx.audit_ref(), tx.today());
            let found = self
                .redemption_by_reference(tx, reference)
                .await?
                .ok_or(StoreError::RedemptionNotFound)?;
            if let status @ RedemptionStatus::Refunded { .. } = refund_of(tx.conn(), &found.redemption_id).await? {
                let receipt = found.open(tx.keys(), status)?;
                let read = Action::RedemptionsRead {
                    subject: audit_ref,
                    items: 1,
                };
                return Ok(Audited::new(receipt, read));
            }
            let seq = tx.next_audit_seq();
            let expiry = self.expiry_policy(tx.conn(), tenant).await?;
            let points = found.points;
            let line = NewLine {
                kind: LineKind::Refund,
                points,
                day: today.day,
                // Refunded points are a new credit, with the expiry of a
                // credit made today.
                expires_on: expiry.expires_on(today.day),
                record_id: None,
                redemption_id: found.redemption_id.as_slice().try_into().ok(),
                audit_seq: Some(seq),
            };
            let held = balance(tx.conn(), tenant, &subject_ref).await?;
            let engine = tx.engine();
            let left = append(tx.conn(), engine, tenant, &subject_ref, held, &[line], today.start).await?;
            let status = RedemptionStatus::Refunded {
                on: today.day,
                audit_seq: seq,
                balance: left,
            };
            let receipt = found.open(tx.keys(), status)?;
            let refunded = Action::PointsRefunded {
                subject: audit_ref,
                redemption_id: receipt.redemption_id,
                points,
                balance: left,
            };
            Ok(Audited::new(receipt, refunded))
        };
        let done = self
            .with_subject(access, Permission::RedeemPoints, subject, Enrol::KnownOnly, op)
            .await?;
        Ok(done.value)
    }

    /// The subject's redemptions, newest first, at most `limit`.
    pub async fn redemptions(
        &self,
        access: &Access,
        subject: &SubjectId,
        limit: u32,
    ) -> Result<Vec<Redemption>, StoreError> {
        let op = async |tx: &mut SubjectRead| {
            let (tenant, subject_ref) = (tx.tenant(), tx.ledger_ref());
            let rows = sqlx::query_as::<_, RedemptionRow>(&format!(
                "{SELECT_REDEMPTION} WHERE r.tenant_id = $1 AND r.subject = $2 ORDER BY p.id DESC LIMIT $3"
            ))
            .bind(tenant.get())
            .bind(subject_ref.as_bytes().to_vec())
            .bind(i64::from(limit.clamp(1, MAX_REDEMPTIONS_LISTED)))
            .fetch_all(tx.conn())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let status = refund_of(tx.conn(), &row.redemption_id).await?;
                out.push(row.open(tx.keys(), status)?);
            }
            let read = Action::RedemptionsRead {
                subject: tx.audit_ref(),
                items: u32::try_from(out.len()).unwrap_or(u32::MAX),
            };
            Ok(Audited::new(out, read))
        };
        // Listing is a read of the person's account: processing for
        // accounting, like the account itself.
        self.read_subject(access, Permission::ReadSubjects, subject, op).await
    }
}
