//! Retention: every read hides data past its period (`Cutoffs`), and the
//! sweeper purges it.

use time::Duration;

use super::today::Today;
use super::wal::{self, Log};
use super::{audit_log, Engine, Store, StoreError};
use crate::audit::{Action, SweepCounts};
use crate::policy::DataClass;

/// The oldest data still within its retention period, per class.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cutoffs {
    /// Records of an earlier day are expired.
    pub records_day: i64,
    /// Ledger entries of an earlier day are expired.
    pub ledger_day: i64,
    /// Unix seconds: idempotency keys created earlier are expired.
    pub idempotency_at: i64,
    pub consent_history_at: i64,
    pub audit_at: i64,
}

impl Store {
    pub(super) fn cutoffs(&self, today: &Today) -> Cutoffs {
        let now = today.now;
        let retention = &self.policies.retention;
        let days = |class| i64::from(retention.days(class));
        let today = i64::from(today.day.days());
        let before = |class| (now - Duration::days(days(class))).unix_timestamp();
        Cutoffs {
            records_day: today - days(DataClass::Records),
            ledger_day: today - days(DataClass::LedgerEntries),
            idempotency_at: before(DataClass::IdempotencyKeys),
            consent_history_at: before(DataClass::ConsentHistory),
            audit_at: before(DataClass::AuditEntries),
        }
    }

    /// Purges everything past its retention period, in one transaction with
    /// the audit entry that counts it. Returns the counts and that entry's
    /// sequence number.
    pub async fn sweep_retention(&self) -> Result<(SweepCounts, u64), StoreError> {
        let today = self.today();
        let c = self.cutoffs(&today);
        let mut w = self.begin_write(today).await?;
        let mut delete = async |sql: &str, cutoff: i64| -> Result<u64, StoreError> {
            Ok(sqlx::query(sql).bind(cutoff).execute(w.conn()).await?.rows_affected())
        };
        let counts = SweepCounts {
            records: delete("DELETE FROM records WHERE day < $1", c.records_day).await?,
            ledger_entries: delete("DELETE FROM ledger_entries WHERE day < $1", c.ledger_day).await?,
            idempotency_keys: delete("DELETE FROM idempotency_keys WHERE created_at < $1", c.idempotency_at).await?,
            // The latest grant of each consent is the proof of the consent in
            // force: it stays whatever its age.
            consent_history: delete(
                "DELETE FROM consent_history WHERE at < $1 AND NOT (action = 'grant' AND id IN \
                 (SELECT MAX(id) FROM consent_history GROUP BY tenant_id, subject, purpose))",
                c.consent_history_at,
            )
            .await?,
            audit_entries: 0,
        };
        let counts = SweepCounts {
            audit_entries: audit_log::prune_before(w.conn(), c.audit_at).await?,
            ..counts
        };
        // Expired link codes: worthless already (redemption checks the
        // time), gone now. Not counted: the entry's counts are fixed.
        sqlx::query("DELETE FROM link_codes WHERE expires_at < $1")
            .bind(today.now.unix_timestamp())
            .execute(w.conn())
            .await?;
        // What the deleted lines summed for the daily caps goes with them.
        // Not counted either: a figure derived from the lines, not a line.
        sqlx::query("DELETE FROM daily_usage WHERE day < $1")
            .bind(c.ledger_day)
            .execute(w.conn())
            .await?;
        let seq = w.append(None, Action::RetentionSwept(counts));
        w.commit().await?;
        self.flush_deleted_pages(&[Log::Ledger, Log::Keys]).await;
        // Rows whose key is gone are unreadable: those of erasures whose
        // purge has not finished, and any a crash or a restore left behind.
        self.purge_erased().await?;
        self.purge_orphans().await?;
        // Points past their expiry: audited debit lines, never deletions.
        let expired = self.expire_points().await?;
        if expired.accounts > 0 {
            tracing::info!(accounts = expired.accounts, points = expired.points, "points expired");
        }
        Ok((counts, seq))
    }

    /// On SQLite, empties the logs of `logs` into their databases (whose
    /// freed pages `secure_delete` zeroes), so purged rows leave the files
    /// at once, or, if a reader holds a log, once it ends (`wal::flush_or_owe`).
    /// Runs after the deletion committed, so a failure is logged, not returned.
    pub(super) async fn flush_deleted_pages(&self, logs: &[Log]) {
        if self.engine != Engine::Sqlite {
            return;
        }
        // One checkpoint at a time: the background one would make this
        // one fail at once.
        let _one = self.checkpointing.lock().await;
        for &log in logs {
            let pool = match log {
                Log::Ledger => &self.ledger,
                Log::Keys => &self.keys,
            };
            wal::flush_or_owe(pool, log, &self.owed_flushes).await;
        }
    }
}
