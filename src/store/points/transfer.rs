//! Pooling: a person moves points from their account on this platform to
//! their linked account on another, so points earned on one are spent on
//! the other. One transfer is one write transaction through the sending
//! account's door (`access.rs`): a `transfer_out` line here, `transfer_in`
//! lines there, and a `PointsTransferred` audit entry on each side, logged
//! under that side's platform and pairing the two by the link id, as
//! linking does. Idempotent by the sending platform's reference.
//!
//! Points keep their expiry: the soonest-expiring points go first (as
//! spending does), and arrive with the days they would have expired on,
//! so moving points never lengthens their life.

use sqlx::{AnyConnection, Row};

use super::super::access::{Audited, Enrol, SubjectTx};
use super::super::{Access, Store, StoreError};
use super::{append, balance, position, LineKind, NewLine};
use crate::audit::Action;
use crate::crypto::{random_bytes, AuditRef, SubjectRef};
use crate::domain::{Day, SubjectId, TenantId};
use crate::policy::{Permission, Purpose};

/// The most points one transfer may move.
const MAX_TRANSFER_POINTS: i64 = 1_000_000_000;
const MAX_REFERENCE_BYTES: usize = 128;

/// What a platform asks to move to the person's linked account.
#[derive(Clone, Debug)]
pub struct TransferRequest {
    pub points: i64,
    /// The platform's own id of the transfer: the key of retries.
    pub reference: String,
}

impl TransferRequest {
    /// Refuses what cannot be stored; messages never echo the values.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !(1..=MAX_TRANSFER_POINTS).contains(&self.points) {
            return Err(StoreError::Invalid(format!(
                "points must be a whole number from 1 to {MAX_TRANSFER_POINTS}"
            )));
        }
        let r = &self.reference;
        if r.is_empty() || r.len() > MAX_REFERENCE_BYTES || r.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "reference must be 1 to {MAX_REFERENCE_BYTES} bytes without control characters"
            )));
        }
        Ok(())
    }
}

/// A transfer's receipt, as the sending platform sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub transfer_id: [u8; 16],
    pub link_id: [u8; 16],
    pub points: i64,
    pub day: Day,
    /// The sending account's balance after it.
    pub balance: i64,
    /// The sending side's audit entry.
    pub audit_seq: u64,
}

impl Store {
    /// Moves `request.points` from the subject's account to its account on
    /// the platform at the other end of `link_id`. Both accounts must
    /// consent to `interconnection` and `rewards`; the points must be there
    /// (after what is due to expire). A retry with the same reference and
    /// content returns the original receipt (and `true`).
    pub async fn transfer_points(
        &self,
        access: &Access,
        subject: &SubjectId,
        link_id: [u8; 16],
        request: &TransferRequest,
    ) -> Result<(Transfer, bool), StoreError> {
        request.validate()?;
        let op = async |tx: &mut SubjectTx<'_>| {
            let (tenant, own, audit_ref, today) = (tx.tenant(), tx.ledger_ref(), tx.audit_ref(), tx.today());
            let key = self.pseudonyms.transfer_key(&own, &request.reference);
            if let Some(found) = transfer_by_key(tx, &key).await? {
                if found.points != request.points || found.link_id != link_id {
                    return Err(StoreError::ReferenceReused);
                }
                let read = Action::RedemptionsRead {
                    subject: audit_ref,
                    items: 1,
                };
                return Ok(Audited::new((found, true), read));
            }
            let peer = self
                .peers(tx.conn(), tenant, own.as_bytes())
                .await?
                .into_iter()
                .find(|p| p.link_id == link_id)
                .ok_or(StoreError::LinkNotFound)?;
            let peer_ref = SubjectRef::from_stored(&peer.subject)
                .ok_or_else(|| StoreError::Corrupt("a linked account's reference is not 32 bytes".into()))?;
            for (other_side, purpose, t, s) in [
                (false, Purpose::Interconnection, tenant, own.as_bytes().as_slice()),
                (true, Purpose::Interconnection, peer.tenant, peer.subject.as_slice()),
                (false, Purpose::Rewards, tenant, own.as_bytes().as_slice()),
                (true, Purpose::Rewards, peer.tenant, peer.subject.as_slice()),
            ] {
                if !self.consents_now(tx.conn(), t, s, purpose).await? {
                    return Err(StoreError::ConsentRequired { purpose, other_side });
                }
            }

            let notice = self.policies.points.notice_days;
            let held = balance(tx.conn(), tenant, &own).await?;
            let here = position(tx.conn(), tenant, &own, today.day, notice).await?;
            let available = held - here.due;
            if request.points > available {
                return Err(StoreError::InsufficientPoints {
                    balance: available,
                    requested: request.points,
                });
            }
            let transfer_id: [u8; 16] = random_bytes();
            let mut seq = tx.next_audit_seq();
            let mut actions = Vec::new();
            let mut lines = Vec::new();
            if here.due > 0 {
                // What expired is written before anything moves.
                lines.push(line(LineKind::Expire, -here.due, today.day, None, transfer_id, seq));
                actions.push((
                    tenant,
                    Action::PointsExpired {
                        tenant,
                        accounts: 1,
                        points: here.due,
                    },
                ));
                seq += 1;
            }
            let sent_seq = seq;
            lines.push(line(
                LineKind::TransferOut,
                -request.points,
                today.day,
                None,
                transfer_id,
                seq,
            ));
            let engine = tx.engine();
            let left = append(tx.conn(), engine, tenant, &own, held, &lines, today.start).await?;
            actions.push((
                tenant,
                Action::PointsTransferred {
                    subject: audit_ref,
                    transfer_id,
                    link_id,
                    points: -request.points,
                    balance: left,
                },
            ));
            seq += 1;

            // The receiving side: the lots taken, each with its expiry.
            let mut arriving = Vec::new();
            let mut wanted = request.points;
            for (on, points) in here.lots {
                if wanted == 0 {
                    break;
                }
                let take = points.min(wanted);
                wanted -= take;
                let expires_on = on.map(|d| Day::from_days(d).ok_or_else(|| corrupt("expiry day out of range")));
                arriving.push(line(
                    LineKind::TransferIn,
                    take,
                    today.day,
                    expires_on.transpose()?,
                    transfer_id,
                    seq,
                ));
            }
            if wanted != 0 {
                return Err(corrupt("the points ledger's lots do not add up to its balance"));
            }
            let theirs = balance(tx.conn(), peer.tenant, &peer_ref).await?;
            let their_left = append(
                tx.conn(),
                engine,
                peer.tenant,
                &peer_ref,
                theirs,
                &arriving,
                today.start,
            )
            .await?;
            actions.push((
                peer.tenant,
                Action::PointsTransferred {
                    subject: AuditRef::from_bytes(peer.audit_ref),
                    transfer_id,
                    link_id,
                    points: request.points,
                    balance: their_left,
                },
            ));
            sqlx::query(
                "INSERT INTO points_transfers (transfer_id, tenant_id, subject, reference_key, link_id, points, day, \
                 audit_seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(transfer_id.to_vec())
            .bind(tenant.get())
            .bind(own.as_bytes().to_vec())
            .bind(key.to_vec())
            .bind(link_id.to_vec())
            .bind(request.points)
            .bind(i64::from(today.day.days()))
            .bind(sent_seq as i64)
            .bind(today.start)
            .execute(tx.conn())
            .await?;
            let receipt = Transfer {
                transfer_id,
                link_id,
                points: request.points,
                day: today.day,
                balance: left,
                audit_seq: sent_seq,
            };
            let mut actions = actions.into_iter();
            let (_, first) = actions.next().expect("a transfer is audited");
            Ok(Audited::new((receipt, false), first).and_for(actions))
        };
        let done = self
            .with_subject(access, Permission::RedeemPoints, subject, Enrol::KnownOnly, op)
            .await?;
        Ok(done.value)
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn line(kind: LineKind, points: i64, day: Day, expires_on: Option<Day>, transfer_id: [u8; 16], seq: u64) -> NewLine {
    NewLine {
        kind,
        points,
        day,
        expires_on,
        record_id: None,
        redemption_id: Some(transfer_id),
        audit_seq: Some(seq),
    }
}

/// The transfer the sending account made under a reference's key.
async fn transfer_by_key(tx: &mut SubjectTx<'_>, key: &[u8; 32]) -> Result<Option<Transfer>, StoreError> {
    let tenant = tx.tenant().get();
    let row = sqlx::query(
        "SELECT t.transfer_id, t.link_id, t.points, t.day, t.audit_seq, p.balance FROM points_transfers t \
         JOIN points_entries p ON p.redemption_id = t.transfer_id AND p.entry = 'transfer_out' \
         WHERE t.tenant_id = $1 AND t.reference_key = $2",
    )
    .bind(tenant)
    .bind(key.to_vec())
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id = |v: Vec<u8>| <[u8; 16]>::try_from(v.as_slice()).map_err(|_| corrupt("a transfer id is not 16 bytes"));
    Ok(Some(Transfer {
        transfer_id: id(row.try_get(0)?)?,
        link_id: id(row.try_get(1)?)?,
        points: row.try_get(2)?,
        day: Day::from_days(row.try_get(3)?).ok_or_else(|| corrupt("a transfer's day is out of range"))?,
        audit_seq: u64::try_from(row.try_get::<i64, _>(4)?).map_err(|_| corrupt("negative audit sequence number"))?,
        balance: row.try_get(5)?,
    }))
}

/// One side of a transfer, as the person's export lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferLine {
    pub transfer_id: [u8; 16],
    /// Sent to (`false`) or received from (`true`) a linked account.
    pub received: bool,
    /// Positive: the points moved.
    pub points: i64,
    pub day: Day,
    /// Received points keep the day they expire on.
    pub expires_on: Option<Day>,
    pub balance: i64,
    /// The `PointsTransferred` entry on this side (it names the link).
    pub audit_seq: u64,
}

/// Up to `limit` of the subject's transfer lines after line `after`, in
/// order, and the last one's line id, where the next page starts.
pub(in crate::store) async fn transfer_page(
    conn: &mut AnyConnection,
    tenant: TenantId,
    subject: &SubjectRef,
    after: i64,
    limit: u32,
) -> Result<(Vec<TransferLine>, Option<i64>), StoreError> {
    let rows = sqlx::query(
        "SELECT id, entry, points, day, expires_on, balance, redemption_id, audit_seq FROM points_entries \
         WHERE tenant_id = $1 AND subject = $2 AND entry IN ('transfer_in', 'transfer_out') AND id > $3 \
         ORDER BY id LIMIT $4",
    )
    .bind(tenant.get())
    .bind(subject.as_bytes().to_vec())
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    let mut last = None;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        last = Some(row.try_get::<i64, _>(0)?);
        let day = |d: i64| Day::from_days(d).ok_or_else(|| corrupt("a transfer line's day is out of range"));
        let expires_on: Option<i64> = row.try_get(4)?;
        let id: Vec<u8> = row.try_get::<Option<Vec<u8>>, _>(6)?.unwrap_or_default();
        let seq: Option<i64> = row.try_get(7)?;
        out.push(TransferLine {
            transfer_id: <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| corrupt("a transfer line has no transfer id"))?,
            received: row.try_get::<String, _>(1)? == "transfer_in",
            points: row.try_get::<i64, _>(2)?.abs(),
            day: day(row.try_get(3)?)?,
            expires_on: expires_on.map(day).transpose()?,
            balance: row.try_get(5)?,
            audit_seq: seq
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| corrupt("a transfer line has no audit entry"))?,
        });
    }
    Ok((out, last))
}
