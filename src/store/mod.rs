//! The data access layer: the only code that touches the databases, and so
//! the only door to personal data. Every operation on personal data states
//! who is acting and for what purpose; the layer checks the role against
//! `policies/access.toml`, consent against `policies/consent.toml` and hides
//! data past its retention period (`policies/retention.toml`). Every
//! change appends its audit entry in the same transaction as the change it
//! records; a read of one person runs in a read snapshot and returns
//! nothing until its entry committed (see `access.rs`).
//!
//! Subject ids enter here as `SubjectId` and leave as pseudonyms: the layer
//! pseudonymizes on the way in, so nothing outside it handles the mapping.

mod access;
mod audit_log;
mod consent;
mod console;
mod engine;
mod erasure;
mod export;
mod failover;
mod incident;
mod ingest;
mod keystore;
mod links;
mod points;
mod reads;
mod retention;
mod rotation;
#[cfg(test)]
mod scratch;
mod sealing;
mod sql;
mod tenants;
mod today;
mod transparency;
mod wal;

use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, Row, Transaction};

use crate::audit::checkpoint::NoteSigner;
use crate::audit::Action;
use crate::clock::Clock;
use crate::crypto::{PseudonymKey, RootKey};
use crate::domain::{Role, TenantId};
use crate::policy::{Permission, PolicySet};
use today::Today;

pub use crate::policy::Purpose;
pub use audit_log::AuditCheck;
pub use consent::{Consent, ConsentChange, Kinds};
pub use console::{
    ConsoleLink, ConsoleSession, SubjectAccess, CONSOLE_ACCESSES_LISTED, CONSOLE_IDLE_MINUTES, CONSOLE_LINK_MINUTES,
    CONSOLE_MAX_MINUTES,
};
pub use engine::{key_store_path, Engine};
pub use erasure::ErasureReceipt;
pub use export::{ConsentEvent, Controller, ExportHeader, ExportSession, LedgerLine, EXPORT_PAGE};
pub use incident::{kind_of as audit_kind_of, AccessReport, SubjectAccesses};
pub use ingest::{CountedElsewhere, IngestItem, IngestOutcome, Receipt, RecordId};
pub use links::{LinkCode, LinkView, LinkedAccount, LINK_CODE_MINUTES};
pub use points::{
    Expiring, ExpiryCounts, PointsSummary, Redemption, RedemptionRequest, RedemptionStatus, Transfer, TransferLine,
    TransferRequest, MAX_REDEMPTIONS_LISTED,
};
pub use reads::{Account, RecordPage, StoredRecord, Totals};
pub use rotation::{KeyVersion, ResealOptions, ResealReport, RESEAL_BATCH};
pub use sealing::RecordSealing;
pub use tenants::ApiKey;
pub use transparency::{parse_month, ReductionReport, ReportCell, StoredCheckpoint, StoredEntry, SuppressedCells};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The root key versions changed since this process last looked (see
    /// `rotation`): a record was about to be sealed under a retired
    /// version, or one to be read is sealed under a version not loaded
    /// yet. Nothing was written or returned; the process has caught up.
    #[error("the root key was rotated; this process was catching up")]
    KeyRotated,
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the root key (fingerprint {found}) is not the key this database was created with (fingerprint {expected}); \
         point --root-key-file (CARBON_LEDGER_ROOT_KEY_FILE) at the original key file"
    )]
    WrongRootKey { found: String, expected: String },
    #[error(
        "methodology version {version} was loaded before with different content; \
         a changed methodology needs a new version so past records keep their rules"
    )]
    MethodologyChanged { version: String },
    #[error("this role may not {0}")]
    Forbidden(&'static str),
    #[error("no data is held on this subject")]
    SubjectNotFound,
    /// A consent given under a notice version that is not the current one.
    #[error("notice version {given} of purpose {purpose} is not the current one ({current}); show the current notice and ask again")]
    StaleNotice { purpose: Purpose, given: u32, current: u32 },
    #[error("{0}")]
    Conflict(String),
    /// A redemption asked for more points than the balance holds.
    #[error("the balance is {balance} points; {requested} were asked for")]
    InsufficientPoints { balance: i64, requested: i64 },
    /// A redemption reference already used with other content.
    #[error("this reference was used for another redemption")]
    ReferenceReused,
    #[error("no redemption with this reference is held on this subject")]
    RedemptionNotFound,
    #[error("{0}")]
    Invalid(String),
    /// A bounded resource stayed taken: worth a retry.
    #[error("too many {0} are in progress")]
    Busy(&'static str),
    /// A write was interrupted where it may or may not have committed (a
    /// failed commit, or the work dropped while waiting for it). Retrying is
    /// safe: writes are idempotent by the client's id.
    #[error("the write's outcome is unknown")]
    OutcomeUnknown,
    /// The database could not be reached, or does not accept writes (a
    /// failover under way); nothing was committed. Worth a retry.
    #[error("the database is unavailable")]
    Unavailable,
    /// A stored record failed authentication: tampering, a row copied between
    /// subjects, or key loss. Never detailed to clients.
    #[error("a stored record failed its integrity check")]
    Integrity,
    #[error("inconsistent stored data: {0}")]
    Corrupt(String),
    /// The person (or, with `other_side`, the account on the other
    /// platform) has not consented to `purpose` under the current notice.
    #[error("consent to {purpose} is required")]
    ConsentRequired { purpose: Purpose, other_side: bool },
    /// A link code that is unknown, used or expired: told apart to nobody.
    #[error("the link code is not valid")]
    LinkCodeInvalid,
    /// No link by that id on this account.
    #[error("no such link")]
    LinkNotFound,
    /// A console link that is unknown, used or expired: told apart to nobody.
    #[error("the console link is not valid")]
    ConsoleLinkInvalid,
    /// No open console session by that id (never, ended, idle or too old).
    #[error("the console session is not open")]
    ConsoleSessionInvalid,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if rotation::is_retired_version_error(&e) {
            return StoreError::KeyRotated;
        }
        // A write refused as read-only: the connection that got it (and
        // every other opened so far) is closed on its next acquire.
        failover::note_error(&e);
        StoreError::Database(e)
    }
}

impl StoreError {
    /// The database could not be reached in time: worth a retry.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::PoolTimedOut))
    }

    /// The database was unreachable or would not take writes: a lost or
    /// refused connection, a server shutting down, a read-only session
    /// (a demoted primary, SQLSTATE 25006). Worth a retry once the pool
    /// has found the primary.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return matches!(self, StoreError::Unavailable);
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Class 08: connection exception; 57P01-57P03: the server
                // is shutting down or starting; 25006: read-only session.
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "25006")
            }),
            _ => false,
        }
    }
}

/// What names the person an operation is about: the platform's own id
/// (pseudonymized here, on arrival), or a console session, which holds only
/// the pseudonym it was opened for.
pub trait SubjectHandle: Sync {
    /// The person's pseudonym under `tenant`; refused if the handle belongs
    /// to another tenant.
    fn pseudonym_for(&self, key: &PseudonymKey, tenant: TenantId) -> Result<crate::crypto::Pseudonym, StoreError>;
}

impl SubjectHandle for crate::domain::SubjectId {
    fn pseudonym_for(&self, key: &PseudonymKey, tenant: TenantId) -> Result<crate::crypto::Pseudonym, StoreError> {
        Ok(key.pseudonymize(tenant, self))
    }
}

/// Who is acting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub tenant: TenantId,
    pub role: Role,
}

/// The acting tenant and the purpose of one access.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub actor: Actor,
    pub purpose: Purpose,
}

impl Access {
    pub fn new(actor: Actor, purpose: Purpose) -> Self {
        Self { actor, purpose }
    }
}

pub struct Store {
    ledger: AnyPool,
    keys: AnyPool,
    engine: Engine,
    root: RootKey,
    pseudonyms: PseudonymKey,
    clock: Arc<dyn Clock>,
    policies: Arc<PolicySet>,
    /// Signs audit checkpoints (Ed25519, seeded from the root key).
    signer: NoteSigner,
    /// Serializes this process's write transactions; the audit head row lock
    /// serializes them across processes.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: checkpoints the ledger's log off the write path.
    _wal: Option<wal::Checkpointer>,
    /// Held around each checkpoint of either database's log (see `wal::start`).
    checkpointing: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: logs a deletion's flush could not empty yet (see `wal`).
    owed_flushes: Arc<wal::OwedFlushes>,
    /// Woken after each erasure: its rows wait for `purge_erased`.
    purge_wanted: tokio::sync::Notify,
    /// `purge_erased` runs under way.
    purges_running: std::sync::atomic::AtomicUsize,
    /// Exports stream from a read snapshot that holds a connection for as
    /// long as the client reads; this bounds how many do at once.
    export_slots: Arc<tokio::sync::Semaphore>,
    /// Audited reads holding a snapshot outside the write lock (see
    /// `read_slots`).
    read_slots: tokio::sync::Semaphore,
    /// Batches waiting to be written in a group transaction.
    ingest_queue: ingest::IngestQueue,
    /// The root key versions in use, and their keys (see `rotation`).
    ring: std::sync::RwLock<Arc<rotation::Ring>>,
    /// The keyring file holding root key versions 2 and up, if any.
    keyring_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Sealed, except in a ledger made for the load generator (`sealing`):
    /// record contents go through its `seal` and `open`.
    sealing: RecordSealing,
}

/// Exports streaming at once: with the SQLite pool's four connections, two
/// stay for the writer and other reads.
const EXPORT_SLOTS: usize = 2;

/// Audited reads in their snapshots at once: what the ledger pool holds
/// beyond the exports' slots and one connection for the writer, so that
/// neither starves the writer (SQLite: one; PostgreSQL: thirteen). The
/// pool's other users (API key and console session look-ups, reports) take
/// a connection for one statement at a time.
fn read_slots(engine: Engine) -> usize {
    (engine.ledger_pool_size() as usize)
        .saturating_sub(EXPORT_SLOTS + 1)
        .max(1)
}

/// How long an audited read waits for a slot before it is refused as busy
/// (as long as the pool's own wait for a connection).
const READ_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an export waits for a slot before it is refused as busy.
const EXPORT_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// A write transaction that holds the audit head: appends go through it.
pub(crate) struct WriteTx<'a> {
    tx: Transaction<'static, sqlx::Any>,
    engine: Engine,
    appender: audit_log::Appender,
    /// When the transaction runs: its writes carry `today.start`.
    today: Today,
    /// The process's write lock, unless the caller holds it (group commit).
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl WriteTx<'_> {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    fn append(&mut self, actor: Option<TenantId>, action: Action) -> u64 {
        self.appender.append(self.today.start, actor, action)
    }

    /// The sequence number of the last entry appended so far.
    fn appender_seq(&self) -> u64 {
        self.appender.seq()
    }

    /// Ends the transaction without a change. Explicit rather than a drop,
    /// so the connection goes back to the pool outside a transaction.
    async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let appender = std::mem::take(&mut self.appender);
        appender.flush(&mut self.tx, self.engine).await?;
        // A commit that fails may still have committed (the connection was
        // lost after the server received it): nobody may be told it did
        // not. A retry is safe, every write being idempotent by its id.
        self.tx.commit().await.map_err(|e| {
            tracing::error!(error = %e, "a commit failed; its outcome is unknown");
            StoreError::OutcomeUnknown
        })
    }
}

impl Store {
    /// Connects, applies migrations, and checks the root key against the
    /// fingerprint stored on first use.
    pub async fn open(
        database_url: &str,
        root: RootKey,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicySet>,
    ) -> Result<Self, StoreError> {
        Self::open_with_key_store(database_url, None, root, clock, policies).await
    }

    /// As `open`, with the key store at `key_store_url` instead of beside the
    /// ledger (see `engine::connect`).
    pub async fn open_with_key_store(
        database_url: &str,
        key_store_url: Option<&str>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicySet>,
    ) -> Result<Self, StoreError> {
        Self::open_with_keyring(database_url, key_store_url, root, None, clock, policies).await
    }

    /// As `open_with_key_store`, with root key versions 2 and up read from
    /// the keyring file `keyring` (see `crypto::keyring_path`).
    pub async fn open_with_keyring(
        database_url: &str,
        key_store_url: Option<&str>,
        root: RootKey,
        keyring: Option<std::path::PathBuf>,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicySet>,
    ) -> Result<Self, StoreError> {
        Self::open_with_sealing(
            database_url,
            key_store_url,
            root,
            keyring,
            clock,
            policies,
            RecordSealing::Sealed,
        )
        .await
    }

    /// As `open_with_keyring`, for a ledger of the given sealing mode: a
    /// ledger takes the mode of its first opening and refuses the other.
    pub async fn open_with_sealing(
        database_url: &str,
        key_store_url: Option<&str>,
        root: RootKey,
        keyring: Option<std::path::PathBuf>,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicySet>,
        sealing: RecordSealing,
    ) -> Result<Self, StoreError> {
        let pools = engine::connect(database_url, key_store_url).await?;
        // The log's name: one per root key, so two deployments' checkpoints
        // can never be confused.
        let origin = format!("carbon-ledger/{}/audit/blake3-v1", &root.fingerprint()[..16]);
        let signer = NoteSigner::from_seed(&origin, &root.audit_signing_seed());
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let checkpointing = Arc::new(tokio::sync::Mutex::new(()));
        let owed_flushes = Arc::new(match pools.engine {
            Engine::Sqlite => wal::OwedFlushes::after_start(),
            Engine::Postgres => wal::OwedFlushes::default(),
        });
        let wal = (pools.engine == Engine::Sqlite).then(|| {
            wal::start(wal::Checkpointing {
                ledger: pools.ledger.clone(),
                keys: pools.keys.clone(),
                write_lock: write_lock.clone(),
                checkpointing: checkpointing.clone(),
                owed: owed_flushes.clone(),
            })
        });
        let store = Store {
            signer,
            ledger: pools.ledger,
            keys: pools.keys,
            engine: pools.engine,
            pseudonyms: root.pseudonym_key(),
            root,
            clock,
            policies,
            write_lock,
            _wal: wal,
            checkpointing,
            owed_flushes,
            purge_wanted: tokio::sync::Notify::new(),
            purges_running: std::sync::atomic::AtomicUsize::new(0),
            export_slots: Arc::new(tokio::sync::Semaphore::new(EXPORT_SLOTS)),
            read_slots: tokio::sync::Semaphore::new(read_slots(pools.engine)),
            ingest_queue: ingest::IngestQueue::default(),
            ring: std::sync::RwLock::new(Arc::new(rotation::Ring::first())),
            keyring_path: std::sync::OnceLock::new(),
            sealing,
        };
        if let Some(path) = keyring {
            let _ = store.keyring_path.set(path);
        }
        // Erasures a crash left unpurged are taken up by the first run.
        store.purge_wanted.notify_one();
        store.check_root_key().await?;
        store.check_key_store_pair().await?;
        store.check_sealing().await?;
        store.load_ring().await?;
        Ok(store)
    }

    /// The clock's reading for one operation: everything the operation
    /// writes or cuts off is measured from it.
    fn today(&self) -> Today {
        Today::new(self.clock.now(), self.policies.methodology.offset())
    }

    /// The current time by the store's clock (injectable in tests).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.policies
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Completes when an erasure left rows for `purge_erased` (or at once,
    /// the first time, for those a previous run left).
    pub async fn purge_wanted(&self) {
        self.purge_wanted.notified().await;
    }

    pub async fn close(&self) {
        self.ledger.close().await;
        self.keys.close().await;
    }

    /// Whether the caller's role may do `permission`: for handlers that
    /// should refuse before looking at a request's content.
    pub fn may(&self, access: &Access, permission: Permission) -> Result<(), StoreError> {
        self.authorize(access, permission).map(|_| ())
    }

    /// The acting tenant, if its role may do `permission` and the purpose it
    /// states is the one the action serves: recording behaviours and reading
    /// accounts are processing for `accounting`; consent changes are for the
    /// purpose consented to.
    fn authorize(&self, access: &Access, permission: Permission) -> Result<TenantId, StoreError> {
        if !self.policies.access.allows(access.actor.role, permission) {
            return Err(StoreError::Forbidden(permission.describe()));
        }
        let serves = match permission {
            Permission::RecordEvents | Permission::ReadSubjects => Some(Purpose::Accounting),
            Permission::RedeemPoints => Some(Purpose::Rewards),
            Permission::LinkSubjects => Some(Purpose::Interconnection),
            _ => None,
        };
        match serves {
            Some(purpose) if purpose != access.purpose => Err(StoreError::Invalid(format!(
                "{} is processing for {purpose}, not {}",
                permission.describe(),
                access.purpose
            ))),
            _ => Ok(access.actor.tenant),
        }
    }

    async fn check_root_key(&self) -> Result<(), StoreError> {
        let found = self.root.fingerprint();
        sqlx::query("INSERT INTO meta (name, value) VALUES ('root_key_fingerprint', $1) ON CONFLICT (name) DO NOTHING")
            .bind(&found)
            .execute(&self.ledger)
            .await?;
        let expected: String = sqlx::query("SELECT value FROM meta WHERE name = 'root_key_fingerprint'")
            .fetch_one(&self.ledger)
            .await?
            .try_get(0)?;
        if expected != found {
            return Err(StoreError::WrongRootKey { found, expected });
        }
        Ok(())
    }

    /// The ledger and the key store name each other by a random id, written
    /// to both on first use. Opening a ledger with another key store — or an
    /// empty one, say a forgotten `--key-store` — is refused: the orphan
    /// purge would otherwise read every subject as erased.
    /// Whether the ledger holds nothing about anyone yet.
    async fn ledger_is_empty(&self) -> Result<bool, StoreError> {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM records UNION ALL SELECT 1 FROM consents UNION ALL SELECT 1 FROM erasures LIMIT 1",
        )
        .fetch_optional(&self.ledger)
        .await?;
        Ok(held.is_none())
    }

    async fn check_key_store_pair(&self) -> Result<(), StoreError> {
        let read = |pool: &AnyPool| {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT value FROM meta WHERE name = 'key_store_pair'")
                    .fetch_optional(&pool)
                    .await?
                    .map(|row| row.try_get::<String, _>(0))
                    .transpose()
            }
        };
        let (mut ledger, mut keys) = (read(&self.ledger).await?, read(&self.keys).await?);
        if ledger.is_none() && (keys.is_none() || self.ledger_is_empty().await?) {
            // First start, possibly of several servers at once, or one a
            // crash cut between the two writes: the key store's id wins
            // (first writer), and an empty ledger takes it.
            let id = hex::encode(crate::crypto::random_bytes::<16>());
            let write = "INSERT INTO meta (name, value) VALUES ('key_store_pair', $1) ON CONFLICT (name) DO NOTHING";
            sqlx::query(write).bind(&id).execute(&self.keys).await?;
            keys = read(&self.keys).await?;
            if let Some(id) = &keys {
                sqlx::query(write).bind(id).execute(&self.ledger).await?;
            }
            ledger = read(&self.ledger).await?;
        }
        match (ledger, keys) {
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(_), None) => Err(StoreError::Config(
                "the key store is new or empty but this ledger has one of its own: point --key-store \
                 (CARBON_LEDGER_KEY_STORE_URL) at it, or restore it, before starting"
                    .into(),
            )),
            _ => Err(StoreError::Config(
                "the key store belongs to another ledger database: point --key-store (CARBON_LEDGER_KEY_STORE_URL) \
                 at this ledger's key store"
                    .into(),
            )),
        }
    }

    /// Begins a write transaction on `today` and locks the audit head.
    async fn begin_write(&self, today: Today) -> Result<WriteTx<'_>, StoreError> {
        let guard = self.write_lock.lock().await;
        let mut w = self.begin_write_held(&guard, today).await?;
        w._guard = Some(guard);
        Ok(w)
    }

    /// As `begin_write`, for a caller that holds the write lock already.
    async fn begin_write_held<'a>(
        &'a self,
        _held: &tokio::sync::MutexGuard<'_, ()>,
        today: Today,
    ) -> Result<WriteTx<'a>, StoreError> {
        let mut tx = match self.engine.begin_write() {
            Some(statement) => self.ledger.begin_with(statement).await?,
            None => self.ledger.begin().await?,
        };
        let appender = audit_log::Appender::lock_head(&mut tx, self.engine).await?;
        Ok(WriteTx {
            tx,
            engine: self.engine,
            appender,
            today,
            _guard: None,
        })
    }

    /// Records the policy load in the audit log and registers the methodology
    /// version's text, refusing a changed text under a known version.
    pub async fn record_policy_load(&self) -> Result<u64, StoreError> {
        let policies = &self.policies;
        let m = &policies.methodology;
        let digest = blake3::hash(policies.methodology_text.as_bytes());
        let mut w = self.begin_write(self.today()).await?;
        let known: Option<Vec<u8>> = sqlx::query("SELECT digest FROM methodologies WHERE version = $1")
            .bind(&m.version)
            .fetch_optional(w.conn())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        match known {
            Some(stored) if stored.as_slice() != digest.as_bytes() => {
                return Err(StoreError::MethodologyChanged {
                    version: m.version.clone(),
                })
            }
            Some(_) => {}
            None => {
                sqlx::query(
                    "INSERT INTO methodologies (version, digest, body, first_loaded_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&m.version)
                .bind(digest.as_bytes().to_vec())
                .bind(&policies.methodology_text)
                .bind(w.today.start)
                .execute(w.conn())
                .await?;
            }
        }
        let seq = w.append(
            None,
            Action::PolicyLoaded {
                digest: policies.digest.0,
                methodology_version: m.version.clone(),
            },
        );
        w.commit().await?;
        Ok(seq)
    }

    /// Whether the ledger and the key store both accept writes now (on
    /// PostgreSQL: a session that is not read-only, i.e. on the primary).
    /// Bounded: a database that does not answer in time is not ready.
    pub async fn ready(&self) -> Result<(), StoreError> {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        for pool in [&self.ledger, &self.keys] {
            let check = async {
                let mut conn = pool.acquire().await?;
                match self.engine {
                    Engine::Postgres => failover::is_writable(&mut conn).await,
                    Engine::Sqlite => sqlx::query("SELECT 1").execute(&mut *conn).await.map(|_| true),
                }
            };
            match tokio::time::timeout(WAIT, check).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Err(StoreError::Unavailable),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    return Err(StoreError::Unavailable);
                }
                Err(_) => return Err(StoreError::Unavailable),
            }
        }
        Ok(())
    }

    /// Recomputes the audit log — leaves, chain and tree — and checks it
    /// against every stored checkpoint and the `extra` signed checkpoints an
    /// auditor kept.
    pub async fn verify_audit(&self, extra: &[String]) -> Result<AuditCheck, StoreError> {
        audit_log::verify(&self.ledger, self.engine, &self.signer.verifier(), extra).await
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    /// What a failover throws at a request is answered as unavailable (a
    /// 503 worth retrying), not as an internal error.
    #[test]
    fn lost_connections_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::Database(sqlx::Error::Io(io)).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_unavailable());
        assert!(StoreError::Unavailable.is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::OutcomeUnknown.is_unavailable());
        assert!(!StoreError::Integrity.is_unavailable());
    }
}
