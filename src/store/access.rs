//! The one door to a subject's data. Every operation on one person —
//! reads, consent changes, exports — goes through `Store::with_subject`,
//! which does, in this order and nowhere else:
//!
//! 1. authorization: the caller's role may do the action, for the purpose
//!    the action serves (`policies/access.toml`);
//! 2. pseudonymization of the platform's id, and the key lookup (a person
//!    with no key holds no data: `SubjectNotFound`, unless the operation
//!    may enrol them);
//! 3. the write transaction, and the erasure check inside it (race-free
//!    against an erasure, whose tombstone commits before its key goes);
//! 4. the operation itself, which gets the subject's keys and connection;
//! 5. the audit entries the operation hands back, appended in the same
//!    transaction, and the commit.
//!
//! The operation's result type carries its audit actions (`Audited`), so
//! an operation that forgets its audit entry does not compile, and its
//! data never leaves unless the entry committed with it. Consent and
//! retention checks are the operations' own (they differ per operation)
//! but can only run inside this door. Erasure (`erasure.rs`, which must see
//! its own tombstone), batch ingest (`ingest/`, many subjects at once) and
//! the re-seal after a root key rotation (`rotation.rs`, which returns no
//! personal data and logs each batch) look keys up and check tombstones the
//! same way themselves; nothing else in the store derives a subject's keys,
//! except that redeeming a link code (`links.rs`, inside the redeeming
//! account's door) derives the issuing account's audit reference, for that
//! account's own audit entry.

use sqlx::AnyConnection;

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

/// An open access to one subject's data.
pub(super) struct SubjectTx<'a> {
    w: WriteTx<'a>,
    tenant: TenantId,
    keys: SubjectKeys,
}

impl SubjectTx<'_> {
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
        self.w.today
    }

    /// The sequence number the first audit entry the operation hands back
    /// will get (entries are appended in the order handed back).
    pub(super) fn next_audit_seq(&self) -> u64 {
        self.w.appender_seq() + 1
    }

    /// The database engine, for statements that differ.
    pub(super) fn engine(&self) -> super::Engine {
        self.w.engine
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
        let mut tx = SubjectTx { w, tenant, keys };
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
        let SubjectTx { mut w, keys, .. } = tx;
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
}
