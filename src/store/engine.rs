//! The two storage engines. Queries are shared (runtime SQL through sqlx's
//! `Any` driver; fixed statements use `$n`, which both engines accept, and
//! batch statements number their parameters per engine, see `sql::Params`);
//! what differs per engine lives here: how to connect, the migrations, where
//! the key store is, and how a write transaction begins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use super::{failover, StoreError};

static SQLITE_LEDGER: Migrator = sqlx::migrate!("migrations/sqlite/ledger");
static SQLITE_KEYS: Migrator = sqlx::migrate!("migrations/sqlite/keys");
static POSTGRES_LEDGER: Migrator = sqlx::migrate!("migrations/postgres/ledger");
static POSTGRES_KEYS: Migrator = sqlx::migrate!("migrations/postgres/keys");

/// The PostgreSQL schema holding the key store.
const KEYSTORE_SCHEMA: &str = "keystore";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default: `ledger.db` and `keys.db` in the data directory.
    Sqlite,
    /// Production: ledger tables in the default schema; keys in schema
    /// `keystore`, of the same database unless a key store URL names another.
    Postgres,
}

impl Engine {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::Config(
                "the database URL must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    /// SQLite takes its write lock at the start of a write transaction, so
    /// two writers never deadlock upgrading read locks.
    pub(super) fn begin_write(self) -> Option<&'static str> {
        match self {
            Engine::Sqlite => Some("BEGIN IMMEDIATE"),
            Engine::Postgres => None,
        }
    }

    /// A read snapshot: every statement of the transaction sees the
    /// database as of its first read. SQLite's deferred `BEGIN` on a WAL
    /// connection gives one; PostgreSQL's default isolation would not.
    pub(super) fn begin_read(self) -> Option<&'static str> {
        match self {
            Engine::Sqlite => None,
            Engine::Postgres => Some("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        }
    }

    /// Connections of the ledger pool.
    pub(super) fn ledger_pool_size(self) -> u32 {
        match self {
            Engine::Sqlite => SQLITE_POOL_SIZE,
            Engine::Postgres => POSTGRES_LEDGER_POOL_SIZE,
        }
    }
}

pub(super) struct Pools {
    pub engine: Engine,
    pub ledger: AnyPool,
    pub keys: AnyPool,
}

/// Connects to the ledger database and the key store, and migrates both.
/// The key store defaults to `keys.db` beside a SQLite ledger, or schema
/// `keystore` of a PostgreSQL ledger's database; `key_store_url` puts it
/// elsewhere (same engine), e.g. a database with its own credentials and
/// backups.
pub(super) async fn connect(url: &str, key_store_url: Option<&str>) -> Result<Pools, StoreError> {
    sqlx::any::install_default_drivers();
    let engine = Engine::of_url(url)?;
    if let Some(keys) = key_store_url {
        if Engine::of_url(keys)? != engine {
            return Err(StoreError::Config(
                "the key store must use the same engine as the ledger database".into(),
            ));
        }
    }
    let pools = match engine {
        Engine::Sqlite => {
            let ledger_path = sqlite_path(url)?;
            let keys_path = match key_store_url {
                Some(keys) => sqlite_path(keys)?,
                None => key_store_path(&ledger_path),
            };
            Pools {
                engine,
                ledger: sqlite_pool(&ledger_path, Checkpoints::InBackground).await?,
                keys: sqlite_pool(&keys_path, Checkpoints::OnCommit).await?,
            }
        }
        Engine::Postgres => {
            let ledger = postgres_pool(url, POSTGRES_LEDGER_POOL_SIZE, None).await?;
            let keys = postgres_pool(key_store_url.unwrap_or(url), 8, Some(KEYSTORE_SCHEMA)).await?;
            Pools { engine, ledger, keys }
        }
    };
    let (ledger_migrations, key_migrations) = match engine {
        Engine::Sqlite => (&SQLITE_LEDGER, &SQLITE_KEYS),
        Engine::Postgres => (&POSTGRES_LEDGER, &POSTGRES_KEYS),
    };
    ledger_migrations.run(&pools.ledger).await?;
    key_migrations.run(&pools.keys).await?;
    Ok(pools)
}

async fn postgres_pool(url: &str, size: u32, schema: Option<&'static str>) -> Result<AnyPool, StoreError> {
    let hosts = failover::parse_hosts(url)?;
    let chosen = if hosts.needs_watching() {
        let found = failover::find_host(&hosts).await.ok_or_else(|| {
            StoreError::Config(format!(
                "none of the {} database hosts accepts {}",
                hosts.urls.len(),
                match hosts.attrs {
                    failover::SessionAttrs::ReadWrite => "writes",
                    failover::SessionAttrs::Any => "connections",
                }
            ))
        })?;
        Some(found)
    } else {
        None
    };
    let url = &hosts.urls[chosen.as_ref().map_or(0, |(i, _)| *i)];
    let options: AnyConnectOptions = url.parse()?;
    if let Some(schema) = schema {
        let setup = AnyPool::connect_with(options.clone()).await?;
        let created = setup
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await;
        // Two servers starting at once can race on the catalog; the loser
        // finds the schema there.
        if let Err(e) = created {
            let exists = sqlx::query("SELECT 1 FROM information_schema.schemata WHERE schema_name = $1")
                .bind(schema)
                .fetch_optional(&setup)
                .await?;
            if exists.is_none() {
                return Err(e.into());
            }
        }
        setup.close().await;
    }
    let require_write = hosts.attrs == failover::SessionAttrs::ReadWrite;
    let stale = Arc::new(failover::Staleness::default());
    let pool = never_inside_a_transaction(AnyPoolOptions::new(), chosen.is_some().then(|| stale.clone()))
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // A connection that reached a host which no longer takes
                // writes is refused: the pool's connect loop tries again,
                // by then with the host the watcher found.
                if require_write && !failover::is_writable(conn).await? {
                    return Err(sqlx::Error::Protocol("the database host is read-only".into()));
                }
                if let Some(schema) = schema {
                    conn.execute(format!("SET search_path TO {schema}").as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    // Fail early, with the server's own message, on a wrong URL or role.
    let _: i64 = sqlx::query("SELECT CAST(1 AS BIGINT)")
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    if let Some(current) = chosen {
        failover::watch(pool.clone(), hosts, stale, current);
    }
    Ok(pool)
}

/// How long a SQLite statement waits for a lock before failing as busy.
pub(super) const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Connections of a SQLite pool. Readers share the database with one writer
/// at a time (WAL); see `EXPORT_SLOTS` and `read_slots` for the exports'
/// and the audited reads' shares.
pub(super) const SQLITE_POOL_SIZE: u32 = 4;

/// Connections of a PostgreSQL ledger pool (the key store's has 8).
pub(super) const POSTGRES_LEDGER_POOL_SIZE: u32 = 16;

/// Defence in depth for invariant 9: a connection that comes back to the
/// pool inside a transaction (a future dropped between `BEGIN` and the
/// `Transaction` guard, sqlx issues 3932 and 4385) is closed, never handed
/// to the next request with the transaction — and its locks — still open.
/// Closing rolls the transaction back on both engines; a bare `ROLLBACK`
/// would leave sqlx's depth counter wrong.
///
/// With `stale` (a watched multi-host pool), connections opened before the
/// watcher last saw the host fail are closed too: they reach a dead or
/// read-only server.
fn never_inside_a_transaction(options: AnyPoolOptions, stale: Option<Arc<failover::Staleness>>) -> AnyPoolOptions {
    /// A dropped `Transaction` queues its `ROLLBACK` (on SQLite, to the
    /// connection's worker thread), so the depth may lag: a ping waits for
    /// whatever is queued before the depth is believed.
    async fn idle(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
        if conn.is_in_transaction() {
            conn.ping().await?;
        }
        let clean = !conn.is_in_transaction();
        if !clean {
            tracing::error!("closing a pooled connection returned inside a transaction");
        }
        Ok(clean)
    }
    options
        .after_release(|conn, _| Box::pin(idle(conn)))
        .before_acquire(move |conn, meta| {
            let stale = stale.as_ref().is_some_and(|s| s.is_stale(meta.age));
            Box::pin(async move { Ok(!stale && idle(conn).await?) })
        })
}

fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return Err(StoreError::Config(
            "the SQLite URL must name a file, e.g. sqlite://data/ledger.db".into(),
        ));
    }
    Ok(PathBuf::from(path))
}

/// `keys.db` beside `ledger.db` (or `<name>-keys.db` beside `<name>.db`).
pub fn key_store_path(ledger: &Path) -> PathBuf {
    let stem = ledger.file_stem().and_then(|s| s.to_str()).unwrap_or("ledger");
    let name = if stem == "ledger" {
        "keys.db".to_owned()
    } else {
        format!("{stem}-keys.db")
    };
    ledger.with_file_name(name)
}

/// Page cache per SQLite connection, in KiB: twice the default, 16 MiB for
/// the pool's four connections. Under the load generator's batches the
/// server peaked at 84 MB with it, 99 MB with 8 MiB and 106 MB with 16 MiB,
/// for the same throughput within noise: the 100 MB bound decides.
const SQLITE_CACHE_KIB: u32 = 4 * 1024;

/// Who checkpoints a SQLite database's log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Checkpoints {
    /// SQLite, in the committing connection (its default).
    OnCommit,
    /// The store's background task (see `wal`): the ledger's batches.
    InBackground,
}

pub(super) async fn sqlite_pool(path: &Path, checkpoints: Checkpoints) -> Result<AnyPool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = never_inside_a_transaction(AnyPoolOptions::new(), None)
        .max_connections(SQLITE_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL for concurrent readers; FULL sync so a 2xx survives power
                // loss; secure_delete so purged rows do not linger in free pages.
                // A batch dirties a page per random index entry: with the
                // default 2 MiB cache they spill to the WAL and are read
                // back before the commit; the cache grows only as pages are
                // used, so memory follows the working set up to this bound.
                conn.execute(
                    format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                         PRAGMA secure_delete = ON; PRAGMA cache_size = -{SQLITE_CACHE_KIB};"
                    )
                    .as_str(),
                )
                .await?;
                conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
                    .await?;
                if checkpoints == Checkpoints::InBackground {
                    let limit = super::wal::FILE_LIMIT_BYTES;
                    conn.execute(
                        format!("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {limit}").as_str(),
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    restrict_to_owner(path)?;
    Ok(pool)
}

/// Database files are the owner's alone. SQLite creates the WAL and shared
/// memory files with the database file's mode, so setting it here covers
/// them too.
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Config(format!("cannot restrict {}: {e}", file.display())))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_store_sits_beside_the_ledger() {
        assert_eq!(
            key_store_path(Path::new("data/ledger.db")),
            PathBuf::from("data/keys.db")
        );
        assert_eq!(
            key_store_path(Path::new("/x/other.db")),
            PathBuf::from("/x/other-keys.db")
        );
        assert_eq!(
            sqlite_path("sqlite://data/ledger.db?mode=rwc").unwrap(),
            PathBuf::from("data/ledger.db")
        );
        assert!(sqlite_path("sqlite::memory:").is_err());
        assert!(Engine::of_url("mysql://x").is_err());
    }

    /// Migration 15 keys records by a sequence number instead of their
    /// random id. On a ledger written before it, every record keeps its id
    /// and ciphertext, every ledger line finds its own record by the new
    /// key, a line without a record keeps none, the random-keyed index is
    /// gone, and the guard against retired key versions is back on the
    /// rebuilt table.
    async fn records_keep_their_lines_across_the_sequence_migration(postgres: bool) {
        use crate::store::scratch::ScratchDatabase;

        let Some(database) = ScratchDatabase::new(postgres).await else {
            return;
        };
        let (url, all) = match postgres {
            true => (database.url.clone(), &POSTGRES_LEDGER),
            false => (format!("{}?mode=rwc", database.url), &SQLITE_LEDGER),
        };
        let pool = AnyPool::connect(&url).await.unwrap();
        let before = Migrator {
            migrations: std::borrow::Cow::Owned(all.migrations.iter().filter(|m| m.version < 15).cloned().collect()),
            ..Migrator::DEFAULT
        };
        before.run(&pool).await.unwrap();

        sqlx::query("INSERT INTO tenants (name, role, key_hash, created_at) VALUES ('t', 'platform', $1, 0)")
            .bind(vec![1u8; 32])
            .execute(&pool)
            .await
            .unwrap();
        // Ids not in the order written, so the new key cannot be the id's.
        let ids: [[u8; 16]; 3] = [[9; 16], [1; 16], [5; 16]];
        for (i, id) in ids.iter().enumerate() {
            let i = i64::try_from(i).unwrap();
            sqlx::query(
                "INSERT INTO records (record_id, tenant_id, subject, kind, day, key_version, sealed, created_at) \
                 VALUES ($1, 1, $2, 'walking', 100, 1, $3, $4)",
            )
            .bind(id.to_vec())
            .bind(vec![7u8; 32])
            .bind(vec![u8::try_from(i).unwrap(); 40])
            .bind(10 * i)
            .execute(&pool)
            .await
            .unwrap();
        }
        for id in [
            Some(ids[2].to_vec()),
            None,
            Some(ids[0].to_vec()),
            Some(ids[1].to_vec()),
        ] {
            sqlx::query(
                "INSERT INTO ledger_entries (tenant_id, subject, record_id, kind, variant, day, month, reduction_mg, \
                 points, methodology_version, capped, created_at) VALUES (1, $1, $2, 'walking', '', 100, 1, 5, 1, 'v', 0, 0)",
            )
            .bind(vec![7u8; 32])
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }

        all.run(&pool).await.unwrap();

        let joined = sqlx::query(
            "SELECT l.record_id, r.record_id, r.sealed, r.seq FROM ledger_entries l \
             LEFT JOIN records r ON r.seq = l.record_seq ORDER BY l.id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut seqs = Vec::new();
        for (row, expected) in joined.iter().zip([Some(2usize), None, Some(0), Some(1)]) {
            let line: Option<Vec<u8>> = row.get(0);
            let record: Option<Vec<u8>> = row.get(1);
            let sealed: Option<Vec<u8>> = row.get(2);
            assert_eq!(line, expected.map(|i| ids[i].to_vec()));
            assert_eq!(record, line, "a line finds its own record, and a line without one none");
            assert_eq!(sealed, expected.map(|i| vec![u8::try_from(i).unwrap(); 40]));
            seqs.extend(row.get::<Option<i64>, _>(3));
        }
        assert_eq!(joined.len(), 4);
        seqs.sort_unstable();
        assert_eq!(seqs, [-3, -2, -1], "numbered apart from every audit sequence number");

        let index_named = match postgres {
            true => "SELECT COUNT(*) FROM pg_indexes WHERE indexname = $1",
            false => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = $1",
        };
        for (index, present) in [
            ("ledger_by_record", 0),
            ("ledger_by_record_seq", 1),
            ("records_by_subject", 1),
            ("records_by_day", 1),
        ] {
            let n: i64 = sqlx::query_scalar(index_named)
                .bind(index)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(n, present, "{index}");
        }

        let insert = |key_version: i64| {
            sqlx::query(
                "INSERT INTO records (seq, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at) \
                 VALUES (10, $1, 1, $2, 'walking', 100, $3, $4, 0)",
            )
            .bind(vec![3u8; 16])
            .bind(vec![7u8; 32])
            .bind(key_version)
            .bind(vec![3u8; 40])
        };
        let refused = insert(2).execute(&pool).await.unwrap_err();
        assert!(
            refused.to_string().contains("retired or unknown root key version"),
            "{refused}"
        );
        insert(1).execute(&pool).await.unwrap();
        let taken = insert(1).execute(&pool).await;
        assert!(taken.is_err(), "a sequence number is a record's key");
        let resealed = sqlx::query("UPDATE records SET key_version = 2 WHERE seq = 10")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(
            resealed.to_string().contains("retired or unknown root key version"),
            "{resealed}"
        );
        // One person's record ids are unique: the listing's cursor is one.
        let twin = sqlx::query(
            "INSERT INTO records (seq, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at) \
             SELECT 11, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at FROM records \
             WHERE seq = 10",
        )
        .execute(&pool)
        .await;
        assert!(twin.is_err(), "a record id twice for one person and day");

        pool.close().await;
        database.remove().await;
    }

    mod records_keep_their_lines_across_the_sequence_migration {
        #[tokio::test]
        async fn sqlite() {
            super::records_keep_their_lines_across_the_sequence_migration(false).await
        }
        #[tokio::test]
        async fn postgres() {
            super::records_keep_their_lines_across_the_sequence_migration(true).await
        }
    }
}
