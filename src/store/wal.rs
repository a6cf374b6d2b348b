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
//!   with SQLite's own checkpoints;
//! - a deletion empties the log file at once (`flush_or_owe`, which the
//!   store calls after it commits), so that no old copy of a deleted row's
//!   page stays in it; when a reader holds the log, the flush is owed and
//!   retried every `INTERVAL` until it succeeds. Deleted rows leave the log
//!   file within an interval of the first moment no reader holds it,
//!   whatever the file's size.
//!
//! Durability is unchanged: a commit still syncs the log (`synchronous =
//! FULL`) before it is acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Executor};

use super::engine::SQLITE_BUSY_TIMEOUT_MS;

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
/// above what the log reaches between two restarts, so the file is reused
/// instead of cut and grown again. Cutting a file of some 200 MiB back to
/// 32 MiB took the next commit tens of milliseconds (single events' worst
/// service time about 100 ms, against under 60 without the cut:
/// docs/performance.md, sixth round). The file's size no longer bounds
/// what it keeps of deleted rows: owed flushes do (`OwedFlushes`).
pub(super) const FILE_LIMIT_BYTES: u64 = 2 * RESTART_BYTES;

/// A database whose log a deletion flushes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Log {
    Ledger,
    Keys,
}

/// The logs whose flush after a deletion is owed: a reader held them, so
/// their files may still hold old copies of deleted rows' pages. The
/// checkpointer retries each tick until the flush succeeds.
#[derive(Default)]
pub(super) struct OwedFlushes {
    ledger: AtomicBool,
    keys: AtomicBool,
}

impl OwedFlushes {
    /// Both owed: a crash between a deletion's commit and its flush leaves
    /// the old pages in the log, so a starting store flushes once.
    pub(super) fn after_start() -> Self {
        Self {
            ledger: AtomicBool::new(true),
            keys: AtomicBool::new(true),
        }
    }

    fn flag(&self, log: Log) -> &AtomicBool {
        match log {
            Log::Ledger => &self.ledger,
            Log::Keys => &self.keys,
        }
    }

    pub(super) fn is_owed(&self, log: Log) -> bool {
        self.flag(log).load(Ordering::SeqCst)
    }
}

/// Empties `log`'s file after a deletion committed: copies the log into
/// the database (whose freed pages `secure_delete` zeroes) and truncates
/// it. A truncating checkpoint waits for readers and holds off writers
/// while it waits, so it waits only briefly: with a long reader (a
/// streaming export) it gives up and the flush is owed to the
/// checkpointer. The caller holds the checkpointing lock (SQLite runs one
/// checkpoint at a time and fails another at once). A failure is logged:
/// the deletion has committed.
pub(super) async fn flush_or_owe(pool: &AnyPool, log: Log, owed: &OwedFlushes) {
    match truncate(pool, CHECKPOINT_WAIT_MS).await {
        Ok(true) => owed.flag(log).store(false, Ordering::SeqCst),
        Ok(false) => {
            owed.flag(log).store(true, Ordering::SeqCst);
            tracing::info!(
                ?log,
                "a reader held the WAL; deleted pages leave it once the reader ends"
            );
        }
        Err(e) => {
            owed.flag(log).store(true, Ordering::SeqCst);
            tracing::warn!(error = %e, ?log, "could not checkpoint the WAL after a deletion; retrying");
        }
    }
}

/// A truncating checkpoint that waits at most `wait_ms` for readers; true
/// if it emptied the log.
async fn truncate(pool: &AnyPool, wait_ms: u32) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let lowered = conn.execute(format!("PRAGMA busy_timeout = {wait_ms}").as_str()).await;
    let flushed = match lowered {
        Ok(_) => {
            sqlx::query_scalar::<_, i64>("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await
        }
        Err(e) => Err(e),
    };
    let restored = conn
        .execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
        .await;
    if restored.is_err() {
        // Never pool a connection whose writers would give up early.
        let _ = conn.close().await;
    }
    // The first column is 1 when readers or writers kept it from finishing.
    Ok(flushed? == 0)
}

/// How long a deletion's truncating checkpoint waits for readers.
const CHECKPOINT_WAIT_MS: u32 = 200;

/// How long an owed flush's retry waits for them.
const RETRY_WAIT_MS: u32 = 10;

/// Aborts the checkpointer when the store goes.
pub(super) struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The databases the checkpointer looks after, and the locks it shares
/// with the store.
pub(super) struct Checkpointing {
    pub ledger: AnyPool,
    pub keys: AnyPool,
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held around each checkpoint: SQLite runs one at a time and fails
    /// another at once, so the store's truncating flush after a deletion
    /// takes it too instead of giving up.
    pub checkpointing: Arc<tokio::sync::Mutex<()>>,
    pub owed: Arc<OwedFlushes>,
}

/// Starts checkpointing the ledger database, and retrying owed flushes of
/// both databases.
pub(super) fn start(with: Checkpointing) -> Checkpointer {
    let Checkpointing {
        ledger: pool,
        keys,
        write_lock,
        checkpointing,
        owed,
    } = with;
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
            // After the passive checkpoint, so little is left to copy while
            // writers wait.
            for (log, log_pool) in [(Log::Ledger, &pool), (Log::Keys, &keys)] {
                if !owed.is_owed(log) || log_pool.is_closed() {
                    continue;
                }
                // Ledger writers wait here rather than in SQLite's busy
                // handler; the keys database's writers do not take this lock.
                let _held = match log {
                    Log::Ledger => Some(write_lock.lock().await),
                    Log::Keys => None,
                };
                let _one = checkpointing.lock().await;
                // Without waiting for readers: a retry while an export
                // holds the log would otherwise hold writers off each tick.
                match truncate(log_pool, RETRY_WAIT_MS).await {
                    Ok(true) => {
                        owed.flag(log).store(false, Ordering::SeqCst);
                        tracing::debug!(?log, "an owed WAL flush is done");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, ?log, "an owed WAL flush failed; retrying"),
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
        let _task = start(checkpointing(&pool, &pool, Arc::default()));
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

    fn checkpointing(ledger: &AnyPool, keys: &AnyPool, owed: Arc<OwedFlushes>) -> Checkpointing {
        Checkpointing {
            ledger: ledger.clone(),
            keys: keys.clone(),
            write_lock: Arc::default(),
            checkpointing: Arc::default(),
            owed,
        }
    }

    fn file_holds(path: &std::path::Path, needle: &[u8]) -> bool {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// A deletion's flush that a reader holds off is owed, and the
    /// checkpointer empties the log once the reader ends: the deleted row's
    /// bytes leave both files, however large the log file may grow.
    #[tokio::test]
    async fn a_flush_a_reader_held_off_is_retried_until_the_log_is_empty() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let (path, keys_path) = (dir.path().join("ledger.db"), dir.path().join("keys.db"));
        let wal_path = dir.path().join("ledger.db-wal");
        let pool = sqlite_pool(&path, Checkpoints::InBackground).await.unwrap();
        let keys = sqlite_pool(&keys_path, Checkpoints::OnCommit).await.unwrap();
        let marker = b"a row that is deleted and must leave the files";
        sqlx::query("CREATE TABLE t (v BLOB)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(marker.to_vec())
            .execute(&pool)
            .await
            .unwrap();

        // A reader's snapshot still shows the row while it is deleted.
        let mut reader = pool.acquire().await.unwrap();
        reader.execute("BEGIN").await.unwrap();
        let shown: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        assert_eq!(shown, 1);
        sqlx::query("DELETE FROM t").execute(&pool).await.unwrap();

        let owed = Arc::new(OwedFlushes::default());
        flush_or_owe(&pool, Log::Ledger, &owed).await;
        assert!(owed.is_owed(Log::Ledger), "the reader held the flush off");
        assert!(!owed.is_owed(Log::Keys));
        assert!(file_holds(&wal_path, marker), "the log still holds the row's old page");

        let _task = start(checkpointing(&pool, &keys, owed.clone()));
        // Still held: the checkpointer retries and leaves the flush owed.
        tokio::time::sleep(INTERVAL + INTERVAL / 2).await;
        assert!(owed.is_owed(Log::Ledger));
        reader.execute("COMMIT").await.unwrap();
        drop(reader);

        for _ in 0..20 {
            if !owed.is_owed(Log::Ledger) {
                break;
            }
            tokio::time::sleep(INTERVAL / 4).await;
        }
        assert!(!owed.is_owed(Log::Ledger), "the checkpointer flushed the log");
        assert_eq!(std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0), 0);
        assert!(!file_holds(&wal_path, marker));
        assert!(
            !file_holds(&path, marker),
            "secure_delete zeroed the row in the database file"
        );
    }
}
