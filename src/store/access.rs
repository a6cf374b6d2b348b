//! The one door to a subject's data. Every operation on one person —
//! reads, consent changes, exports — goes through `Store::with_subject`,
//! or, for an operation that only reads, `Store::read_subject`, which do,
//! in this order and nowhere else:
//!
//! 1. authorization: the caller's role may do the action, for the purpose
//!    the action serves (`policies/access.toml`);
//! 2. pseudonymization of the platform's id, and the key lookup (a person
//!    with no key holds no data: `SubjectNotFound`, unless the operation
//!    may enrol them);
//! 3. the transaction, and the erasure check inside it: `with_subject`
//!    begins the write transaction, under the process's write lock
//!    (race-free against an erasure, whose tombstone commits before its
//!    key goes); `read_subject` begins a read snapshot on a pooled
//!    connection, without the write lock, so a read waits for no writer;
//! 4. the operation itself, which gets the subject's keys and connection;
//! 5. the audit entries the operation hands back, and the commit:
//!    `with_subject` appends them in the same transaction; `read_subject`
//!    ends its snapshot, then appends them in a short write transaction of
//!    their own, which first checks the erasure tombstone again (an
//!    erasure that committed since the snapshot wins: `SubjectNotFound`,
//!    nothing appended, nothing read returned).
//!
//! The operation's result type carries its audit actions (`Audited`), so
//! an operation that forgets its audit entry does not compile, and its
//! data never leaves unless the entry committed. An operation in a read
//! snapshot (`SubjectRead`) has no `next_audit_seq`: one that needs its own
//! entry's sequence number, or writes, takes the write path (`SubjectTx`).
//! A read's entry records what its snapshot held: it may follow, in the
//! log, a change that committed while the read ran (never the person's
//! erasure). The read path logs entries about its subject alone, since
//! its second tombstone check covers that one person (refused otherwise):
//! the consolidated view of linked accounts, which logs entries for the
//! other sides too, keeps the write path. Consent and
//! retention checks are the operations' own (they differ per operation)
//! but can only run inside this door. Erasure (`erasure.rs`, which must see
//! its own tombstone), batch ingest (`ingest/`, many subjects at once) and
//! the re-seal after a root key rotation (`rotation.rs`, which returns no
//! personal data and logs each batch) look keys up and check tombstones the
//! same way themselves; nothing else in the store derives a subject's keys,
//! except that redeeming a link code (`links.rs`, inside the redeeming
//! account's door) derives the issuing account's audit reference, for that
//! account's own audit entry.

use sqlx::{AnyConnection, Transaction};

use super::today::Today;
use super::{Access, Store, StoreError, SubjectHandle, WriteTx};
use crate::audit::Action;
use crate::crypto::{AuditRef, SubjectKeys, SubjectRef};
use crate::domain::TenantId;
use crate::policy::Permission;

/// Whether an operation may give a person their first key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Enrol {
    /// The person must be known: `SubjectNotFound` otherwise.
    KnownOnly,
    /// A consent establishes the person: a key is created if missing.
    IfMissing,
}

/// The transaction an access runs in: the write transaction (`SubjectTx`),
/// or a read snapshot without the write lock (`SubjectRead`).
pub(super) trait AccessTx {
    fn conn(&mut self) -> &mut AnyConnection;
    fn today(&self) -> Today;
    fn engine(&self) -> super::Engine;
}

impl AccessTx for WriteTx<'_> {
    fn conn(&mut self) -> &mut AnyConnection {
        WriteTx::conn(self)
    }

    fn today(&self) -> Today {
        self.today
    }

    fn engine(&self) -> super::Engine {
        self.engine
    }
}

/// A read-only transaction on a pooled connection, outside the write lock:
/// every statement in it sees one snapshot of the ledger (SQLite: a
/// deferred `BEGIN` on a WAL connection, from its first read; PostgreSQL:
/// `REPEATABLE READ READ ONLY`). It cannot append to the audit log.
pub(super) struct ReadTx {
    tx: Transaction<'static, sqlx::Any>,
    engine: super::Engine,
    today: Today,
}

impl AccessTx for ReadTx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    fn today(&self) -> Today {
        self.today
    }

    fn engine(&self) -> super::Engine {
        self.engine
    }
}

/// An open access to one subject's data, in the transaction `Tx`.
pub(super) struct Subject<Tx> {
    w: Tx,
    tenant: TenantId,
    keys: SubjectKeys,
}

/// An access in the write transaction (`Store::with_subject`): for
/// operations that write, or that need their own entry's sequence number.
pub(super) type SubjectTx<'a> = Subject<WriteTx<'a>>;

/// An access in a read snapshot (`Store::read_subject`): for operations
/// that only read. It has no `next_audit_seq`: its entries are appended
/// in a later transaction.
pub(super) type SubjectRead = Subject<ReadTx>;

impl<Tx: AccessTx> Subject<Tx> {
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        self.w.conn()
    }

    pub(super) fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub(super) fn keys(&self) -> &SubjectKeys {
        &self.keys
    }

    /// The connection and the keys at once, for work that reads and opens.
    pub(super) fn conn_and_keys(&mut self) -> (&mut AnyConnection, &SubjectKeys) {
        (self.w.conn(), &self.keys)
    }

    /// The subject's reference in the ledger tables.
    pub(super) fn ledger_ref(&self) -> SubjectRef {
        self.keys.ledger_ref
    }

    /// The subject's reference in the audit log.
    pub(super) fn audit_ref(&self) -> AuditRef {
        self.keys.audit_ref
    }

    /// When the operation runs.
    pub(super) fn today(&self) -> Today {
        self.w.today()
    }

    /// The database engine, for statements that differ.
    pub(super) fn engine(&self) -> super::Engine {
        self.w.engine()
    }
}

impl SubjectTx<'_> {
    /// The sequence number the first audit entry the operation hands back
    /// will get (entries are appended in the order handed back).
    pub(super) fn next_audit_seq(&self) -> u64 {
        self.w.appender_seq() + 1
    }
}

/// An operation's result with the audit entries that record it, in order.
#[must_use]
pub(super) struct Audited<T> {
    value: T,
    /// Each entry with the tenant it is logged under: the acting one
    /// (`None`), or the platform whose account on the other side of a link
    /// the entry concerns, so that its own audit stream shows it.
    actions: Vec<(Option<TenantId>, Action)>,
}

impl<T> Audited<T> {
    /// `value`, recorded by `action`.
    pub(super) fn new(value: T, action: Action) -> Self {
        Self {
            value,
            actions: vec![(None, action)],
        }
    }

    /// One more entry, after the others.
    pub(super) fn and(mut self, action: Option<Action>) -> Self {
        self.actions.extend(action.map(|a| (None, a)));
        self
    }

    /// More entries, each logged under the tenant whose account it concerns.
    pub(super) fn and_for(mut self, actions: impl IntoIterator<Item = (TenantId, Action)>) -> Self {
        self.actions.extend(actions.into_iter().map(|(t, a)| (Some(t), a)));
        self
    }

    /// The operation found nothing to do: its transaction rolls back and
    /// nothing is logged. Its value is the type's default, so it cannot
    /// carry anything the operation read.
    pub(super) fn nothing_done() -> Self
    where
        T: Default,
    {
        Self {
            value: T::default(),
            actions: Vec::new(),
        }
    }
}

/// What `with_subject` returns: the operation's value, the sequence number
/// of the last audit entry it committed (none if nothing was done), and
/// the subject's keys, for work that goes on reading what the committed
/// entry already records (an export's snapshot).
pub(super) struct Committed<T> {
    pub value: T,
    pub audit_seq: Option<u64>,
    pub keys: SubjectKeys,
}

impl Store {
    /// Runs `operation` on the subject's data through the one door (see the
    /// module's documentation).
    pub(super) async fn with_subject<T>(
        &self,
        access: &Access,
        permission: Permission,
        subject: &(impl SubjectHandle + ?Sized),
        enrol: Enrol,
        operation: impl AsyncFnOnce(&mut SubjectTx<'_>) -> Result<Audited<T>, StoreError>,
    ) -> Result<Committed<T>, StoreError> {
        let tenant = self.authorize(access, permission)?;
        let today = self.today();
        let pseudonym = subject.pseudonym_for(&self.pseudonyms, tenant)?;
        let key = match enrol {
            Enrol::KnownOnly => self.key_of(&pseudonym).await?.ok_or(StoreError::SubjectNotFound)?,
            Enrol::IfMissing => self.key_or_create(&pseudonym, today.start).await?,
        };
        let keys = self.subject_keys(&key.salt);
        let mut w = self.begin_write(today).await?;
        if !self.erased_among(&mut w, &[&key.key_id]).await?.is_empty() {
            return Err(match enrol {
                Enrol::KnownOnly => StoreError::SubjectNotFound,
                Enrol::IfMissing => {
                    StoreError::Conflict("this person was erased a moment ago; ask again to open a new account".into())
                }
            });
        }
        drop(key);
        let mut tx = Subject { w, tenant, keys };
        let Audited { value, actions } = match operation(&mut tx).await {
            Ok(done) => done,
            // Sealed, or about to be, under a root key version this process
            // has not loaded: roll back, catch up now, and let the client's
            // retry find the keys (as the batch path does).
            Err(StoreError::KeyRotated) => {
                drop(tx);
                if let Err(e) = self.refresh_keyring().await {
                    tracing::error!(error = %e, "checking the root key versions failed");
                }
                return Err(StoreError::KeyRotated);
            }
            Err(e) => return Err(e),
        };
        let Subject { mut w, keys, .. } = tx;
        if actions.is_empty() {
            w.rollback().await?;
            return Ok(Committed {
                value,
                audit_seq: None,
                keys,
            });
        }
        for (logged_under, action) in actions {
            w.append(Some(logged_under.unwrap_or(tenant)), action);
        }
        let audit_seq = w.appender_seq();
        w.commit().await?;
        Ok(Committed {
            value,
            audit_seq: Some(audit_seq),
            keys,
        })
    }

    /// Runs `operation`, which only reads, on the subject's data through
    /// the one door, in a read snapshot outside the write lock; the entries
    /// it hands back are appended afterwards, in a write transaction of
    /// their own that checks the erasure tombstone again, and its value is
    /// returned only once they committed (see the module's documentation).
    pub(super) async fn read_subject<T>(
        &self,
        access: &Access,
        permission: Permission,
        subject: &(impl SubjectHandle + ?Sized),
        operation: impl AsyncFnOnce(&mut SubjectRead) -> Result<Audited<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let tenant = self.authorize(access, permission)?;
        let today = self.today();
        let pseudonym = subject.pseudonym_for(&self.pseudonyms, tenant)?;
        let key = self.key_of(&pseudonym).await?.ok_or(StoreError::SubjectNotFound)?;
        let keys = self.subject_keys(&key.salt);
        let key_id = key.key_id.clone();
        drop(key);

        // The read, in its snapshot: it waits for no writer.
        let slot = tokio::time::timeout(super::READ_SLOT_WAIT, self.read_slots.acquire())
            .await
            .map_err(|_| StoreError::Busy("reads"))?
            .map_err(|_| StoreError::Config("the store is closing".into()))?;
        let mut r = self.begin_read(today).await?;
        if !self.erased_among(&mut r, &[&key_id]).await?.is_empty() {
            r.tx.rollback().await?;
            return Err(StoreError::SubjectNotFound);
        }
        let snapshot_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&mut *r.tx)
            .await?;
        let mut read = Subject { w: r, tenant, keys };
        let outcome = operation(&mut read).await;
        // The snapshot ends, and its connection goes back, before the
        // write lock is waited for: no snapshot is held while waiting.
        let ended = read.w.tx.rollback().await;
        drop(slot);
        let audit_ref = read.keys.audit_ref;
        let Audited { value, actions } = match outcome {
            Ok(done) => done,
            Err(StoreError::KeyRotated) => {
                if let Err(e) = self.refresh_keyring().await {
                    tracing::error!(error = %e, "checking the root key versions failed");
                }
                return Err(StoreError::KeyRotated);
            }
            Err(e) => return Err(e),
        };
        ended?;
        if actions.is_empty() {
            return Ok(value);
        }
        // The tombstone checked below is this person's alone: an entry
        // about anyone else (the other side of a link) takes the write path.
        if actions
            .iter()
            .any(|(under, action)| under.is_some() || action.subject() != Some(&audit_ref))
        {
            return Err(StoreError::Corrupt(
                "a read in a snapshot logs an entry about another person".into(),
            ));
        }

        // The entries, in a write transaction of their own. An erasure
        // that committed since the snapshot was taken wins: nothing is
        // appended after its entry, and nothing read is returned.
        let mut w = self.begin_write(today).await?;
        if !self.erased_among(&mut w, &[&key_id]).await?.is_empty() {
            w.rollback().await?;
            return Err(StoreError::SubjectNotFound);
        }
        // A change to the person committed since the snapshot (a
        // withdrawal, say, whose deletions the snapshot does not show):
        // the read's entry would follow it in the log and record an access
        // to data the log says was gone. Nothing is returned; the client
        // retries (503 with Retry-After) and reads the new state. Entries
        // of the same kinds as this read's (other reads) change nothing.
        let read_kinds: Vec<_> = actions.iter().map(|(_, a)| std::mem::discriminant(a)).collect();
        let later: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT entry FROM audit_log WHERE subject_ref = $1 AND seq > $2")
                .bind(audit_ref.as_bytes().to_vec())
                .bind(snapshot_seq)
                .fetch_all(w.conn())
                .await?;
        for entry in later.into_iter().flatten() {
            let entry = crate::audit::AuditEntry::decode(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !read_kinds.contains(&std::mem::discriminant(&entry.action)) {
                w.rollback().await?;
                return Err(StoreError::Busy("changes to this person"));
            }
        }
        for (_, action) in actions {
            w.append(Some(tenant), action);
        }
        w.commit().await?;
        Ok(value)
    }

    /// Begins a read snapshot of the ledger on `today`, outside the write
    /// lock.
    async fn begin_read(&self, today: Today) -> Result<ReadTx, StoreError> {
        let tx = match self.engine.begin_read() {
            Some(statement) => self.ledger.begin_with(statement).await?,
            None => self.ledger.begin().await?,
        };
        Ok(ReadTx {
            tx,
            engine: self.engine,
            today,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The read door on both engines (PostgreSQL when
    //! `CARBON_LEDGER_TEST_POSTGRES_URL` names a server, as for the
    //! integration tests): its read waits for no writer, and an erasure
    //! that commits between its read and its entry wins.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditEntry, ReadScope};
    use crate::clock::ManualClock;
    use crate::crypto::RootKey;
    use crate::domain::{Role, SubjectId};
    use crate::policy::PolicySet;
    use crate::store::scratch::ScratchDatabase;
    use crate::store::{Actor, Kinds, Purpose};

    /// A guard against a test that would otherwise hang: never reached
    /// when the door works, so no timing is asserted.
    const HANG: Duration = Duration::from_secs(60);

    /// A store on a fresh database, with one tenant and one person in it.
    struct Fixture {
        store: Store,
        access: Access,
        person: SubjectId,
        database: ScratchDatabase,
    }

    impl Fixture {
        async fn new(postgres: bool) -> Option<Self> {
            let database = ScratchDatabase::new(postgres).await?;
            let url = database.url.clone();
            let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
            let policies = Arc::new(PolicySet::load(None).unwrap());
            let store = Store::open(&url, RootKey::generate(), clock, policies).await.unwrap();
            store.record_policy_load().await.unwrap();
            let (tenant, _) = store.add_tenant("luzhou", Role::Platform).await.unwrap();
            let access = Access::new(
                Actor {
                    tenant,
                    role: Role::Platform,
                },
                Purpose::Accounting,
            );
            let person = SubjectId::parse("u-reader".into()).unwrap();
            let notice = store.policies.consent.get(Purpose::Accounting).notice_version;
            store.grant_consent(&access, &person, notice, Kinds::All).await.unwrap();
            Some(Self {
                store,
                access,
                person,
                database,
            })
        }

        /// Every entry of the audit log, in order.
        async fn entries(&self) -> Vec<AuditEntry> {
            let rows: Vec<(Vec<u8>,)> =
                sqlx::query_as("SELECT entry FROM audit_log WHERE entry IS NOT NULL ORDER BY seq")
                    .fetch_all(&self.store.ledger)
                    .await
                    .unwrap();
            rows.iter().map(|(e,)| AuditEntry::decode(e).unwrap()).collect()
        }

        async fn close(self) {
            self.store.close().await;
            self.database.remove().await;
        }
    }

    /// The consents read: a count of the person's consents, logged.
    async fn count_consents(tx: &mut SubjectRead) -> Result<Audited<i64>, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM consents WHERE tenant_id = $1 AND subject = $2")
                .bind(tx.tenant().get())
                .bind(tx.ledger_ref().as_bytes().to_vec())
                .fetch_one(tx.conn())
                .await?;
        let read = Action::SubjectRead {
            subject: tx.audit_ref(),
            scope: ReadScope::Consents,
            items: u32::try_from(n).unwrap_or(u32::MAX),
        };
        Ok(Audited::new(n, read))
    }

    /// A writer holds the write lock, in an open write transaction, all
    /// through the read: the read runs to its end (the operation returns)
    /// without it, and only its entry waits. Once the writer is done, the
    /// entry commits and the value is handed out.
    async fn a_read_waits_for_no_writer(postgres: bool) {
        let Some(f) = Fixture::new(postgres).await else {
            return;
        };
        let before = f.entries().await.len();
        let writer = f.store.begin_write(f.store.today()).await.unwrap();
        let n = {
            let (read_ran, mut ran) = tokio::sync::oneshot::channel();
            let operation = async |tx: &mut SubjectRead| {
                let done = count_consents(tx).await;
                let _ = read_ran.send(());
                done
            };
            let read = f
                .store
                .read_subject(&f.access, Permission::ReadSubjects, &f.person, operation);
            tokio::pin!(read);
            tokio::time::timeout(HANG, async {
            tokio::select! {
                done = &mut read => panic!("the read finished while a writer held the lock: {:?}", done.map(|_| ())),
                ran = &mut ran => ran.unwrap(),
            }
        })
        .await
        .expect("the read waited for the writer before it read");
            // Nothing is logged yet: the entry waits for the lock.
            assert!(f.store.write_lock.try_lock().is_err());
            writer.rollback().await.unwrap();
            tokio::time::timeout(HANG, read).await.unwrap().unwrap()
        };
        assert_eq!(n, 1, "the person's accounting consent");
        let entries = f.entries().await;
        assert_eq!(entries.len(), before + 1, "exactly one entry for the read");
        assert!(matches!(
            entries.last().unwrap().action,
            Action::SubjectRead {
                scope: ReadScope::Consents,
                items: 1,
                ..
            }
        ));
        f.close().await;
    }

    /// The person is erased after the read took its snapshot and before
    /// its entry is appended: the read returns nothing but
    /// `SubjectNotFound`, and nothing naming the person follows the
    /// erasure entry in the log.
    async fn an_erasure_between_the_read_and_its_entry_wins(postgres: bool) {
        let Some(f) = Fixture::new(postgres).await else {
            return;
        };
        let (store, access, person) = (&f.store, &f.access, &f.person);
        let mut erased_at = None;
        let operation = async |tx: &mut SubjectRead| {
            let done = count_consents(tx).await?;
            // Committed while the snapshot is open: the snapshot does not
            // see it, the entry's transaction does.
            erased_at = Some(store.erase_subject(access, person).await.unwrap().audit_seq);
            Ok(done)
        };
        let read = tokio::time::timeout(
            HANG,
            store.read_subject(access, Permission::ReadSubjects, person, operation),
        )
        .await
        .expect("the read and the erasure do not wait for each other");
        assert!(
            matches!(read, Err(StoreError::SubjectNotFound)),
            "{:?}",
            read.map(|_| ())
        );
        let erased_at = erased_at.expect("the erasure ran inside the read");
        let entries = f.entries().await;
        assert_eq!(entries.last().unwrap().seq, erased_at, "nothing follows the erasure");
        assert!(!entries.iter().any(|e| matches!(e.action, Action::SubjectRead { .. })));
        // And a read after the erasure finds nobody, logging nothing.
        let again = store
            .read_subject(access, Permission::ReadSubjects, person, count_consents)
            .await;
        assert!(matches!(again, Err(StoreError::SubjectNotFound)));
        assert_eq!(f.entries().await.len(), entries.len());
        f.close().await;
    }

    /// An operation that hands back no entry (it found nothing to do)
    /// logs nothing, as on the write path.
    async fn a_read_that_did_nothing_logs_nothing(postgres: bool) {
        let Some(f) = Fixture::new(postgres).await else {
            return;
        };
        let before = f.entries().await.len();
        let operation = async |_: &mut SubjectRead| Ok(Audited::<Vec<u8>>::nothing_done());
        let value = f
            .store
            .read_subject(&f.access, Permission::ReadSubjects, &f.person, operation)
            .await
            .unwrap();
        assert!(value.is_empty());
        assert_eq!(f.entries().await.len(), before);
        f.close().await;
    }

    /// An entry about anyone but the door's subject is refused on the read
    /// path (its tombstone check covers that one person): nothing is
    /// logged, nothing returned.
    async fn a_read_logs_only_its_own_subject(postgres: bool) {
        let Some(f) = Fixture::new(postgres).await else {
            return;
        };
        let before = f.entries().await.len();
        let operation = async |tx: &mut SubjectRead| {
            let other = Action::SubjectRead {
                subject: AuditRef::from_bytes([7; 16]),
                scope: ReadScope::LinkedAccount,
                items: 1,
            };
            Ok(count_consents(tx).await?.and_for([(tx.tenant(), other)]))
        };
        let read = f
            .store
            .read_subject(&f.access, Permission::ReadSubjects, &f.person, operation)
            .await;
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "{:?}", read.map(|_| ()));
        assert_eq!(f.entries().await.len(), before);
        f.close().await;
    }

    macro_rules! on_both_engines {
        ($($name:ident),* $(,)?) => { $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(false).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(true).await
                }
            }
        )* };
    }

    on_both_engines!(
        a_read_waits_for_no_writer,
        an_erasure_between_the_read_and_its_entry_wins,
        a_read_that_did_nothing_logs_nothing,
        a_read_logs_only_its_own_subject,
    );
}
