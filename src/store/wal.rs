//! SQLite's write-ahead log, checkpointed in the background.
//!
//! By default SQLite checkpoints in the connection that commits, once the
//! log passes 1,000 pages: with batches that dirty thousands of pages, every
//! commit then copied its pages into the database file and synced it while
//! holding the write lock, about a third of a batch's time. The ledger's
//! connections do not checkpoint themselves (`wal_autocheckpoint = 0`);
//! this task does, off the write path, on the other core:
//!
//! - every `INTERVAL` a passive checkpoint, which waits for nobody, copies
//!   what readers no longer need, and writes a page dirtied by many
//!   batches once instead of once per batch;
//! - a passive checkpoint cannot finish while writes keep coming, and SQLite
//!   restarts the log from its beginning only when one has: so once the log
//!   passes `RESTART_BYTES`, the checkpoint runs once more holding the
//!   store's write lock, so the next writer restarts the log and
//!   `journal_size_limit` cuts the file back to `FILE_LIMIT_BYTES` (the
//!   copying is mostly done by then, so writers wait for little). A reader holding an old snapshot
//!   (a long export) still keeps the log from restarting until it ends, as
//!   with SQLite's own checkpoints.
//!
//! Durability is unchanged: a commit still syncs the log (`synchronous =
//! FULL`) before it is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;

/// How often the log is checkpointed. A batch dirties its people's pages
/// in half a dozen per-person indexes, and the next batches mostly the same
/// pages again: two seconds of batches are copied into the database once,
/// where every quarter second copied each page about once per batch
/// (docs/performance.md, fifth round).
const INTERVAL: Duration = Duration::from_millis(2000);

/// The log size past which a checkpoint holds writers off to finish. Under
/// sustained batches the log grows by tens of MiB per interval, so it is
/// restarted every second interval or so, and the file may pass this
/// size by an interval's writes before it is.
pub(super) const RESTART_BYTES: u64 = 128 * 1024 * 1024;

/// What `journal_size_limit` cuts the log file back to once it restarts:
/// no more than before the interval grew, so the stale page copies a
/// restarted log may keep in its file (after a deletion whose truncating
/// flush gave up) are bounded as they were.
pub(super) const FILE_LIMIT_BYTES: u64 = 32 * 1024 * 1024;

/// Aborts the checkpointer when the store goes.
pub(super) struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts checkpointing the ledger database through `pool`.
/// `checkpointing` is held around each checkpoint: SQLite runs one at a
/// time and fails another at once, so the store's truncating flush after a
/// deletion takes it too instead of giving up.
pub(super) fn start(
    pool: AnyPool,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    checkpointing: Arc<tokio::sync::Mutex<()>>,
) -> Checkpointer {
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            ticks.tick().await;
            let result = async {
                let log_bytes = {
                    let _one = checkpointing.lock().await;
                    checkpoint(&pool).await?
                };
                if log_bytes > RESTART_BYTES {
                    let _held = write_lock.lock().await;
                    let _one = checkpointing.lock().await;
                    checkpoint(&pool).await?;
                }
                Ok::<_, sqlx::Error>(())
            }
            .await;
            if let Err(e) = result {
                // The next tick tries again; a closed pool ends the loop.
                if !pool.is_closed() {
                    tracing::warn!(error = %e, "a WAL checkpoint failed");
                }
            }
        }
    });
    Checkpointer(task.abort_handle())
}

/// A passive checkpoint; returns the log's size in bytes (its frames, of
/// the default 4 KiB page, not the file's size, which only a truncating
/// checkpoint or `journal_size_limit` shrinks).
async fn checkpoint(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    let frames: i64 = row.try_get(1)?;
    Ok(u64::try_from(frames).unwrap_or(0) * 4096)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Row};

    use super::super::engine::{sqlite_pool, Checkpoints};
    use super::*;

    /// Rows in the database file itself, the log ignored.
    async fn rows_in_main_file(path: &std::path::Path) -> i64 {
        let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}?immutable=1", path.display()))
            .unwrap()
            .read_only(true)
            .connect()
            .await
            .unwrap();
        match sqlx::query("SELECT COUNT(*) FROM t").fetch_one(&mut conn).await {
            Ok(row) => row.get(0),
            // The table itself is still only in the log.
            Err(_) => 0,
        }
    }

    /// Committed pages reach the database file without any commit
    /// checkpointing them: the connections do not, the task does.
    #[tokio::test]
    async fn the_log_is_checkpointed_in_the_background() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let pool = sqlite_pool(&path, Checkpoints::InBackground).await.unwrap();
        sqlx::query("CREATE TABLE t (v BLOB)").execute(&pool).await.unwrap();
        for _ in 0..20 {
            sqlx::query("INSERT INTO t VALUES (zeroblob(1000))")
                .execute(&pool)
                .await
                .unwrap();
        }
        assert_eq!(rows_in_main_file(&path).await, 0, "nothing checkpointed on commit");
        let _task = start(
            pool.clone(),
            Arc::new(tokio::sync::Mutex::new(())),
            Arc::new(tokio::sync::Mutex::new(())),
        );
        let mut seen = 0;
        for _ in 0..40 {
            tokio::time::sleep(INTERVAL).await;
            seen = rows_in_main_file(&path).await;
            if seen == 20 {
                break;
            }
        }
        assert_eq!(seen, 20, "the task checkpointed the log");
    }
}
