//! The points economy: an append-only points ledger per person and
//! platform (`points_entries`), with the balance after each line.
//!
//! Lines are credits (`earn`, written with each record that earns points;
//! `refund`, reversing a redemption; `transfer_in`, from a linked account)
//! and debits (`redeem`; `transfer_out`; `expire`, written by the sweeper). Nothing is ever edited or deleted except by erasure. A
//! credit carries the day its points expire (or none), fixed when it is
//! written from `policies/points.toml`.
//!
//! Expiry is first in, first out: replayed in the order they were written,
//! each debit consumes the soonest-expiring points held at that moment, so
//! the points due to expire by day `d` are what is left of the credits
//! expiring by `d`. Every write that debits a balance first settles what is due,
//! in the same transaction, so a balance is never spent twice.

mod expiry;
mod redeem;
mod transfer;

use sqlx::AnyConnection;

pub use expiry::ExpiryCounts;
pub(super) use redeem::{redemption_page, SEALED_KIND};
pub use redeem::{Redemption, RedemptionRequest, RedemptionStatus, MAX_REDEMPTIONS_LISTED};
pub(super) use transfer::transfer_page;
pub use transfer::{Transfer, TransferLine, TransferRequest};

use super::sql::{insert_rows, select_in, Arg};
use super::{Engine, StoreError};
use crate::crypto::SubjectRef;
use crate::domain::{Day, TenantId};
use crate::policy::ExpiryPolicy;

/// Points about to expire on one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// The first day the points are no longer spendable.
    pub on: Day,
    pub points: i64,
}

/// A person's points on one platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PointsSummary {
    pub balance: i64,
    /// Every point credited for behaviours.
    pub earned: i64,
    /// Redeemed, net of refunds.
    pub spent: i64,
    pub expired: i64,
    /// Moved in from, and out to, the person's linked accounts on other
    /// platforms (pooling).
    pub transferred_in: i64,
    pub transferred_out: i64,
    /// What expires within the notice period, soonest first.
    pub expiring: Vec<Expiring>,
}

/// The kinds of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineKind {
    Earn,
    Redeem,
    Refund,
    Expire,
    /// Points sent to, or received from, a linked account (`transfer.rs`).
    TransferOut,
    TransferIn,
}

impl LineKind {
    fn as_str(self) -> &'static str {
        match self {
            LineKind::Earn => "earn",
            LineKind::Redeem => "redeem",
            LineKind::Refund => "refund",
            LineKind::Expire => "expire",
            LineKind::TransferOut => "transfer_out",
            LineKind::TransferIn => "transfer_in",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "earn" => LineKind::Earn,
            "redeem" => LineKind::Redeem,
            "refund" => LineKind::Refund,
            "expire" => LineKind::Expire,
            "transfer_out" => LineKind::TransferOut,
            "transfer_in" => LineKind::TransferIn,
            _ => return Err(StoreError::Corrupt("unknown points line kind".into())),
        })
    }
}

/// A line to append; its balance is computed when it is written.
pub(super) struct NewLine {
    pub kind: LineKind,
    /// Signed: credits positive, debits negative.
    pub points: i64,
    pub day: Day,
    pub expires_on: Option<Day>,
    pub record_id: Option<[u8; 16]>,
    pub redemption_id: Option<[u8; 16]>,
    pub audit_seq: Option<u64>,
}

const COLUMNS: [&str; 11] = [
    "tenant_id",
    "subject",
    "entry",
    "points",
    "balance",
    "day",
    "expires_on",
    "record_id",
    "redemption_id",
    "audit_seq",
    "created_at",
];

fn line_values(tenant: TenantId, subject: &SubjectRef, line: &NewLine, balance: i64, created_at: i64) -> Vec<Arg> {
    vec![
        Arg::Int(tenant.get()),
        Arg::Blob(subject.as_bytes().to_vec()),
        Arg::Text(line.kind.as_str().to_owned()),
        Arg::Int(line.points),
        Arg::Int(balance),
        Arg::Int(line.day.days().into()),
        line.expires_on.map_or(Arg::NullInt, |d| Arg::Int(d.days().into())),
        line.record_id.map_or(Arg::NullBlob, |id| Arg::Blob(id.to_vec())),
        line.redemption_id.map_or(Arg::NullBlob, |id| Arg::Blob(id.to_vec())),
        line.audit_seq.map_or(Arg::NullInt, |s| Arg::Int(s as i64)),
        Arg::Int(created_at),
    ]
}

/// The subject's balance: the last line's.
pub(super) async fn balance(
    conn: &mut AnyConnection,
    tenant: TenantId,
    subject: &SubjectRef,
) -> Result<i64, StoreError> {
    let balance: Option<i64> = sqlx::query_scalar(
        "SELECT balance FROM points_entries WHERE tenant_id = $1 AND subject = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(tenant.get())
    .bind(subject.as_bytes().to_vec())
    .fetch_optional(conn)
    .await?;
    Ok(balance.unwrap_or(0))
}

/// Appends `lines` in order for one subject whose balance is `balance`;
/// returns the balance after them. A line that would take the balance
/// below zero is a bug in the caller: refused, and the database refuses it
/// too (`CHECK (balance >= 0)`).
pub(super) async fn append(
    conn: &mut AnyConnection,
    engine: Engine,
    tenant: TenantId,
    subject: &SubjectRef,
    mut balance: i64,
    lines: &[NewLine],
    created_at: i64,
) -> Result<i64, StoreError> {
    let mut rows = Vec::with_capacity(lines.len());
    for line in lines {
        balance = balance
            .checked_add(line.points)
            .filter(|b| *b >= 0)
            .ok_or_else(|| StoreError::Corrupt("a points line would take the balance below zero".into()))?;
        rows.push(line_values(tenant, subject, line, balance, created_at));
    }
    insert_rows(conn, engine, "points_entries", &COLUMNS, rows, "").await?;
    Ok(balance)
}

/// Points a recorded behaviour earned.
pub(super) struct Credit {
    pub subject: SubjectRef,
    pub record_id: [u8; 16],
    pub points: i64,
    /// The `RecordWritten` entry.
    pub audit_seq: u64,
}

/// Credits the points each recorded behaviour earned, in the batch's
/// transaction: one `earn` line per record with points, each with the
/// expiry the platform's policy gives a credit made today (expiry counts
/// from the day points are credited, not the behaviour's day, which may be
/// up to the methodology's acceptance window earlier).
pub(super) async fn credit_earnings(
    conn: &mut AnyConnection,
    engine: Engine,
    tenant: TenantId,
    expiry: ExpiryPolicy,
    today: Day,
    credits: Vec<Credit>,
    created_at: i64,
) -> Result<(), StoreError> {
    if credits.is_empty() {
        return Ok(());
    }
    let mut subjects: Vec<SubjectRef> = credits.iter().map(|c| c.subject).collect();
    subjects.sort();
    subjects.dedup();
    let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
    let rows = select_in(conn, engine, &[Arg::Int(tenant.get())], &list, |p, n| {
        format!(
            "SELECT subject, balance FROM points_entries WHERE id IN (SELECT MAX(id) FROM points_entries \
             WHERE tenant_id = {} AND subject IN ({}) GROUP BY subject)",
            p.one(),
            p.list(n)
        )
    })
    .await?;
    let mut balances = std::collections::HashMap::new();
    for row in rows {
        use sqlx::Row;
        let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
            .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
        balances.insert(subject, row.try_get::<i64, _>(1)?);
    }
    let expires_on = expiry.expires_on(today);
    let mut values = Vec::with_capacity(credits.len());
    for c in credits {
        let balance = balances.entry(c.subject).or_insert(0);
        *balance += c.points;
        let line = NewLine {
            kind: LineKind::Earn,
            points: c.points,
            day: today,
            expires_on,
            record_id: Some(c.record_id),
            redemption_id: None,
            audit_seq: Some(c.audit_seq),
        };
        values.push(line_values(tenant, &c.subject, &line, *balance, created_at));
    }
    insert_rows(conn, engine, "points_entries", &COLUMNS, values, "").await?;
    Ok(())
}

/// One stored line, as the summary needs it.
#[derive(sqlx::FromRow)]
struct LineRow {
    entry: String,
    points: i64,
    expires_on: Option<i64>,
}

/// What a subject's lines add up to on `today`.
pub(super) struct Position {
    pub summary: PointsSummary,
    /// Points due to expire by `today` that no `expire` line holds yet.
    pub due: i64,
    /// The spendable points by expiry day, soonest first, never-expiring
    /// last (see `work_out`): what a transfer moves, keeping the days.
    pub lots: Vec<(Option<i64>, i64)>,
}

/// Reads the subject's lines and works out their position on `today`,
/// looking `notice_days` ahead. The balance and expired figures include
/// what is due but not yet written by the sweeper: points past their
/// expiry are never shown as spendable.
pub(super) async fn position(
    conn: &mut AnyConnection,
    tenant: TenantId,
    subject: &SubjectRef,
    today: Day,
    notice_days: u32,
) -> Result<Position, StoreError> {
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT entry, points, expires_on FROM points_entries WHERE tenant_id = $1 AND subject = $2 ORDER BY id",
    )
    .bind(tenant.get())
    .bind(subject.as_bytes().to_vec())
    .fetch_all(conn)
    .await?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        lines.push((LineKind::parse(&row.entry)?, row.points, row.expires_on));
    }
    Ok(work_out(&lines, i64::from(today.days()), notice_days))
}

/// The arithmetic of `position`, on (kind, signed points, expires_on)
/// lines in the order they were written.
///
/// The lines are replayed as lots of points by expiry day: a credit adds a
/// lot, a debit (redemption, transfer out, written expiry) takes from the
/// soonest-expiring lots that exist *at that moment*. So a credit that
/// arrives later (a transfer in with an early expiry, a refund) is never
/// counted as spent by a debit made before it, and moving points never
/// lengthens their life. Lots past their day are due to expire.
fn work_out(lines: &[(LineKind, i64, Option<i64>)], today: i64, notice_days: u32) -> Position {
    use std::collections::BTreeMap;
    let mut s = PointsSummary::default();
    let (mut redeemed, mut refunded) = (0i64, 0i64);
    // Points held, by expiry day (never-expiring under i64::MAX).
    let mut lots: BTreeMap<i64, i64> = BTreeMap::new();
    for &(kind, points, expires_on) in lines {
        s.balance += points;
        match kind {
            LineKind::Earn => s.earned += points,
            LineKind::Redeem => redeemed -= points,
            LineKind::Refund => refunded += points,
            LineKind::Expire => s.expired -= points,
            LineKind::TransferOut => s.transferred_out -= points,
            LineKind::TransferIn => s.transferred_in += points,
        }
        if points > 0 {
            *lots.entry(expires_on.unwrap_or(i64::MAX)).or_default() += points;
        } else {
            let mut owed = -points;
            while owed > 0 {
                let Some(mut soonest) = lots.first_entry() else {
                    break;
                };
                let take = owed.min(*soonest.get());
                *soonest.get_mut() -= take;
                owed -= take;
                if *soonest.get() == 0 {
                    soonest.remove();
                }
            }
        }
    }
    s.spent = redeemed - refunded;
    let horizon = today.saturating_add(i64::from(notice_days));
    let mut due = 0;
    let mut spendable = Vec::new();
    for (&on, &points) in &lots {
        if on <= today {
            due += points;
            continue;
        }
        if on <= horizon {
            if let Some(day) = Day::from_days(on) {
                s.expiring.push(Expiring { on: day, points });
            }
        }
        spendable.push(((on != i64::MAX).then_some(on), points));
    }
    s.balance -= due;
    s.expired += due;
    Position {
        summary: s,
        due,
        lots: spendable,
    }
}

#[cfg(test)]
mod tests {
    use super::LineKind::*;
    use super::*;

    #[test]
    fn spending_consumes_the_oldest_credits_first() {
        // 10 expiring on day 10, 10 on day 20; 5 spent.
        let lines = [(Earn, 10, Some(10)), (Earn, 10, Some(20)), (Redeem, -5, None)];
        let p = work_out(&lines, 5, 30);
        assert_eq!((p.summary.balance, p.due), (15, 0));
        let ahead: Vec<(i32, i64)> = p.summary.expiring.iter().map(|e| (e.on.days(), e.points)).collect();
        assert_eq!(ahead, [(10, 5), (20, 10)]);
        // On day 12 the first credit's unspent 5 are due.
        let p = work_out(&lines, 12, 30);
        assert_eq!((p.summary.balance, p.summary.expired, p.due), (10, 5, 5));
    }

    #[test]
    fn written_expiry_is_not_expired_twice_and_refunds_are_new_credits() {
        let lines = [
            (Earn, 10, Some(10)),
            (Expire, -10, None),
            (Earn, 10, Some(30)),
            (Redeem, -10, None),
            (Refund, 10, Some(40)),
        ];
        let p = work_out(&lines, 31, 30);
        assert_eq!(p.due, 0, "the second credit was spent before it expired");
        assert_eq!(
            (p.summary.balance, p.summary.earned, p.summary.spent, p.summary.expired),
            (10, 20, 0, 10)
        );
        assert_eq!(p.summary.expiring.len(), 1);
        let p = work_out(&lines, 40, 30);
        assert_eq!((p.summary.balance, p.due), (0, 10));
    }

    #[test]
    fn transfers_out_spend_the_oldest_credits_and_lots_keep_their_expiry() {
        let lines = [
            (Earn, 10, Some(10)),
            (Earn, 10, None),
            (Earn, 10, Some(20)),
            (TransferOut, -12, None),
            (TransferIn, 4, Some(15)),
        ];
        let p = work_out(&lines, 5, 30);
        assert_eq!((p.summary.balance, p.summary.spent), (22, 0));
        assert_eq!((p.summary.transferred_out, p.summary.transferred_in), (12, 4));
        assert_eq!(
            p.lots,
            vec![(Some(15), 4), (Some(20), 8), (None, 10)],
            "the 12 sent took day 10's credit and 2 of day 20's: day 15's arrived after"
        );
        let total: i64 = p.lots.iter().map(|l| l.1).sum();
        assert_eq!(total, p.summary.balance);
    }

    #[test]
    fn a_credit_that_arrives_later_is_not_spent_by_an_earlier_debit() {
        // 10 expiring on day 100, spent on day 1; then 10 expiring on day 5
        // arrive. On day 6 those 10 are due: moving points never lengthens
        // their life.
        let lines = [(Earn, 10, Some(100)), (Redeem, -10, None), (TransferIn, 10, Some(5))];
        let p = work_out(&lines, 6, 30);
        assert_eq!((p.due, p.summary.balance, p.summary.expired), (10, 0, 10));
        assert!(p.lots.is_empty());
        let p = work_out(&lines, 2, 30);
        assert_eq!((p.due, p.summary.balance), (0, 10));
        assert_eq!(p.lots, vec![(Some(5), 10)]);
    }

    #[test]
    fn points_without_expiry_never_expire() {
        let lines = [(Earn, 10, None), (Redeem, -3, None)];
        let p = work_out(&lines, 100_000, 30);
        assert_eq!((p.summary.balance, p.due, p.summary.expiring.len()), (7, 0, 0));
    }
}
