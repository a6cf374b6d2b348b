//! Expiry by the sweeper: for every account with points past their expiry,
//! an `expire` line, and one audit entry per platform counting them, in
//! the same transaction. Never a deletion: the lines that earned the points
//! stay, and the account shows what expired.

use sqlx::Row;

use super::super::{Store, StoreError};
use super::{append, position, LineKind, NewLine};
use crate::audit::Action;
use crate::crypto::SubjectRef;
use crate::domain::TenantId;

/// Accounts expired per transaction: other writers wait milliseconds.
const EXPIRY_CHUNK: usize = 500;

/// What one expiry run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryCounts {
    pub accounts: u64,
    pub points: i64,
}

impl Store {
    /// Writes the expiry of every point past its day, oldest credits first.
    /// Accounts whose erasure is pending are left to the purge.
    pub async fn expire_points(&self) -> Result<ExpiryCounts, StoreError> {
        let mut counts = ExpiryCounts::default();
        if !self.policies.points.any_expiry() {
            // Credits may still carry an expiry from an earlier policy.
            let any: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM points_entries WHERE expires_on IS NOT NULL LIMIT 1")
                    .fetch_optional(&self.ledger)
                    .await?;
            if any.is_none() {
                return Ok(counts);
            }
        }
        let today = self.today();
        // Accounts with a positive balance and a credit past its expiry.
        let candidates: Vec<(i64, Vec<u8>)> = sqlx::query(
            "SELECT p.tenant_id, p.subject FROM points_entries p \
             WHERE p.id IN (SELECT MAX(id) FROM points_entries GROUP BY tenant_id, subject) AND p.balance > 0 \
             AND EXISTS (SELECT 1 FROM points_entries q WHERE q.tenant_id = p.tenant_id AND q.subject = p.subject \
                 AND q.expires_on IS NOT NULL AND q.expires_on <= $1) \
             AND p.subject NOT IN (SELECT pending_ref FROM erasures WHERE pending_ref IS NOT NULL) \
             ORDER BY p.tenant_id",
        )
        .bind(i64::from(today.day.days()))
        .fetch_all(&self.ledger)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let notice = self.policies.points.notice_days;
        for chunk in candidates.chunk_by(|a, b| a.0 == b.0) {
            for part in chunk.chunks(EXPIRY_CHUNK) {
                let tenant = TenantId::new(part[0].0);
                let mut w = self.begin_write(today).await?;
                let (mut accounts, mut points) = (0u32, 0i64);
                let seq = w.appender_seq() + 1;
                for (_, subject) in part {
                    let subject = SubjectRef::from_stored(subject)
                        .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
                    // Read again inside the transaction: a redemption may
                    // have settled it since.
                    let due = position(w.conn(), tenant, &subject, today.day, notice).await?.due;
                    if due == 0 {
                        continue;
                    }
                    let held = super::balance(w.conn(), tenant, &subject).await?;
                    let line = NewLine {
                        kind: LineKind::Expire,
                        points: -due,
                        day: today.day,
                        expires_on: None,
                        record_id: None,
                        redemption_id: None,
                        audit_seq: Some(seq),
                    };
                    append(w.conn(), self.engine, tenant, &subject, held, &[line], today.start).await?;
                    accounts += 1;
                    points += due;
                }
                if accounts == 0 {
                    w.rollback().await?;
                    continue;
                }
                w.append(
                    None,
                    Action::PointsExpired {
                        tenant,
                        accounts,
                        points,
                    },
                );
                w.commit().await?;
                counts.accounts += u64::from(accounts);
                counts.points += points;
            }
        }
        Ok(counts)
    }
}
