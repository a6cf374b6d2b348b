//! Erasure by crypto-shredding: the subject's key goes first (every copy of
//! their ciphertext, backups included, becomes unreadable), then their
//! rows. A tombstone naming the key's random id is written before anything
//! else, so an interrupted erasure is finished by the start-up check, and a
//! key store restored from an older backup can be re-shredded.

use std::collections::{BTreeSet, HashSet};

use sqlx::Row;

use super::access::AccessTx;
use super::sql::{execute_in, select_in, Arg};
use super::wal::Log;
use super::{Access, Store, StoreError, SubjectHandle, WriteTx};
use crate::audit::{Action, AuditEntry, ErasureCounts, UnlinkReason};
use crate::crypto::SubjectRef;
use crate::domain::Day;
use crate::policy::Permission;

/// The type of a column that tells a subject's rows apart.
#[derive(Clone, Copy)]
enum KeyType {
    Blob,
    Int,
    Text,
}

/// The tables holding rows about a subject (by their `subject` column),
/// each with the column that tells one subject's rows apart, for purging in
/// bounded chunks.
const SUBJECT_TABLE_KEYS: [(&str, &str, KeyType); 8] = [
    ("records", "seq", KeyType::Int),
    ("ledger_entries", "id", KeyType::Int),
    ("idempotency_keys", "event_key", KeyType::Blob),
    ("consents", "purpose", KeyType::Text),
    ("consent_history", "id", KeyType::Int),
    // The points ledger, redemptions and transfers sent: counted with the ledger entries
    // in the erasure's audit entry (see `POINTS_TABLES`).
    ("points_entries", "id", KeyType::Int),
    ("redemptions", "redemption_id", KeyType::Blob),
    ("points_transfers", "transfer_id", KeyType::Blob),
];

/// Tables of figures derived from a subject's rows, bounded by the
/// retention period whatever the account's activity: deleted in the
/// erasure's own transaction, not counted in its audit entry.
const SUBJECT_DERIVED_TABLES: [&str; 1] = ["daily_usage"];

/// How many of `SUBJECT_TABLE_KEYS`, from the end, the erasure counts as
/// ledger entries: the audit entry's counts predate the points ledger.
const POINTS_TABLES: usize = 3;

/// Rows deleted per purge transaction: small enough that other writers
/// wait milliseconds, not the length of the purge.
const PURGE_CHUNK_ROWS: u64 = 2_000;

/// Deletes the subject's rows of `SUBJECT_DERIVED_TABLES`.
async fn delete_derived(w: &mut WriteTx<'_>, tenant: i64, subject: &[u8]) -> Result<(), StoreError> {
    for table in SUBJECT_DERIVED_TABLES {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND subject = $2"))
            .bind(tenant)
            .bind(subject.to_vec())
            .execute(w.conn())
            .await?;
    }
    Ok(())
}

fn receipt(erased_at: i64, counts: ErasureCounts, audit_seq: u64) -> Result<ErasureReceipt, StoreError> {
    Ok(ErasureReceipt {
        erased_on: Day::from_days(erased_at.div_euclid(86_400))
            .ok_or_else(|| StoreError::Corrupt("an erasure's day is out of range".into()))?,
        counts,
        audit_seq,
    })
}

/// What an erasure did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureReceipt {
    pub erased_on: Day,
    pub counts: ErasureCounts,
    /// The audit entry recording the erasure.
    pub audit_seq: u64,
}

impl Store {
    /// The ones of `key_ids` the tombstone list names. Checked inside a
    /// write transaction, this is race-free against an erasure: its
    /// tombstone is committed before its key goes, and its purge waits for
    /// the write lock, so whatever a transaction writes either sees the
    /// tombstone or is purged after it. Checked in a read snapshot, it
    /// tells whether the person was erased when the snapshot was taken
    /// (`read_subject` checks again when it appends).
    pub(super) async fn erased_among(
        &self,
        w: &mut impl AccessTx,
        key_ids: &[&[u8]],
    ) -> Result<HashSet<Vec<u8>>, StoreError> {
        let ids: Vec<Arg> = key_ids.iter().map(|id| Arg::Blob(id.to_vec())).collect();
        let rows = select_in(w.conn(), self.engine, &[], &ids, |p, n| {
            format!("SELECT key_id FROM erasures WHERE key_id IN ({})", p.list(n))
        })
        .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Erases everything held on the subject, in near-constant time: one
    /// transaction writes the tombstone and the audit entry (with the
    /// counts of what is being erased, read from indexes), then the key is
    /// shredded, and from that moment every copy of the person's ciphertext
    /// is unreadable. The unreadable rows are purged afterwards by
    /// `purge_erased`, resumably. Their audit entries stay, and still
    /// verify; without the salt their audit reference ties them to nobody.
    /// The same id coming back later is a new person.
    ///
    /// Cut anywhere, a retry completes it: before the commit nothing
    /// happened; after it, the tombstone is found and the key shredded (the
    /// start-up check does the same after a crash), with the same receipt.
    pub async fn erase_subject(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<ErasureReceipt, StoreError> {
        let tenant = self.authorize(access, Permission::EraseSubjects)?;
        let lookup = subject.pseudonym_for(&self.pseudonyms, tenant)?;
        let key = self.key_of(&lookup).await?.ok_or(StoreError::SubjectNotFound)?;
        let key_id: [u8; 16] = key
            .key_id
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("key id is not 16 bytes".into()))?;
        let keys = self.sealing_keys(&key.salt);
        drop(key);

        // 1. Tombstone and audit entry, in one transaction.
        let mut w = self.begin_write(self.today()).await?;
        let earlier: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT erased_on, audit_seq FROM erasures WHERE key_id = $1")
                .bind(key_id.to_vec())
                .fetch_optional(w.conn())
                .await?;
        let receipt = match earlier {
            // A retry of an erasure whose key was not shredded yet.
            Some((erased_on, Some(seq))) => {
                let counts = self.erasure_counts_logged_at(&mut w, seq).await?;
                w.rollback().await?;
                receipt(erased_on, counts, seq as u64)?
            }
            earlier => {
                let mut counted = [0u32; SUBJECT_TABLE_KEYS.len()];
                for (n, (table, _, _)) in counted.iter_mut().zip(SUBJECT_TABLE_KEYS) {
                    let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1 AND subject = $2");
                    let count: i64 = sqlx::query(&sql)
                        .bind(tenant.get())
                        .bind(keys.ledger_ref.as_bytes().to_vec())
                        .fetch_one(w.conn())
                        .await?
                        .try_get(0)?;
                    *n = u32::try_from(count).unwrap_or(u32::MAX);
                }
                let points_lines = counted[SUBJECT_TABLE_KEYS.len() - POINTS_TABLES..]
                    .iter()
                    .fold(0u32, |a, n| a.saturating_add(*n));
                let [records, ledger_entries, idempotency_keys, consents, consent_history, ..] = counted;
                let ledger_entries = ledger_entries.saturating_add(points_lines);
                let counts = ErasureCounts {
                    records,
                    ledger_entries,
                    idempotency_keys,
                    consents,
                    consent_history,
                };
                // Erasure on either side unlinks, in the same transaction
                // (no moment where a link points at an erased account), and
                // logged before the erasure: nothing may name an audit
                // reference after its erasure entry.
                for (side, action) in Self::unlink_all(w.conn(), tenant, &keys.ledger_ref, UnlinkReason::Erased).await?
                {
                    w.append(Some(side), action);
                }
                let audit_seq = w.append(
                    Some(tenant),
                    Action::SubjectErased {
                        subject: keys.audit_ref,
                        key_id,
                        counts,
                    },
                );
                // A tombstone without an audit entry is one the start-up
                // check wrote for an erasure of the old, three-step kind.
                let sql = if earlier.is_some() {
                    "UPDATE erasures SET erased_on = $2, tenant_id = $3, pending_ref = $4, audit_seq = $5 \
                     WHERE key_id = $1"
                } else {
                    "INSERT INTO erasures (key_id, erased_on, tenant_id, pending_ref, audit_seq) \
                     VALUES ($1, $2, $3, $4, $5)"
                };
                sqlx::query(sql)
                    .bind(key_id.to_vec())
                    .bind(w.today.start)
                    .bind(tenant.get())
                    .bind(keys.ledger_ref.as_bytes().to_vec())
                    .bind(audit_seq as i64)
                    .execute(w.conn())
                    .await?;
                delete_derived(&mut w, tenant.get(), keys.ledger_ref.as_bytes()).await?;
                // The person's privacy center sessions and unopened links
                // end with them, whoever asked for the erasure.
                for table in ["console_sessions", "console_tokens"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND pseudonym = $2"))
                        .bind(tenant.get())
                        .bind(lookup.as_bytes().to_vec())
                        .execute(w.conn())
                        .await?;
                }
                let at = w.today.start;
                w.commit().await?;
                receipt(at, counts, audit_seq)?
            }
        };
        // 2. Shred: from here on the subject's ciphertext is unreadable.
        self.shred(&key_id).await?;
        // The salt leaves the key store's files now, not at the next
        // automatic checkpoint.
        self.flush_deleted_pages(&[Log::Keys]).await;
        self.purge_wanted.notify_one();
        Ok(receipt)
    }

    /// The counts the `SubjectErased` entry at `seq` recorded.
    async fn erasure_counts_logged_at(&self, w: &mut WriteTx<'_>, seq: i64) -> Result<ErasureCounts, StoreError> {
        let entry: Option<Vec<u8>> = sqlx::query("SELECT entry FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(w.conn())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .flatten();
        let entry = entry.ok_or_else(|| StoreError::Corrupt(format!("erasure entry {seq} is missing")))?;
        match AuditEntry::decode(&entry)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .action
        {
            Action::SubjectErased { counts, .. } => Ok(counts),
            _ => Err(StoreError::Corrupt(format!("entry {seq} is not an erasure"))),
        }
    }

    /// Purges the rows of erasures whose key is shredded, a bounded chunk
    /// per transaction so that a large account never holds the write lock
    /// for long; each chunk is logged (`OrphansPurged`) with its deletion.
    /// Resumable: a crash leaves the tombstone pending, and the next run
    /// (at start-up, after each erasure, with each sweep) goes on. Returns
    /// the rows purged.
    pub async fn purge_erased(&self) -> Result<u64, StoreError> {
        /// Counts the run until it ends, however it ends.
        struct Running<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.purges_running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _running = Running(&self.purges_running);
        self.purge_erased_now().await
    }

    async fn purge_erased_now(&self) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let pending: Vec<(Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT key_id, tenant_id, pending_ref FROM erasures WHERE pending_ref IS NOT NULL LIMIT 100",
            )
            .fetch_all(&self.ledger)
            .await?;
            for (key_id, tenant, subject) in &pending {
                // A committed tombstone whose shred did not happen (it
                // failed, or the process stopped): shredding is always
                // right once the erasure is logged, so do it here.
                if self.shred(key_id).await? > 0 {
                    self.flush_deleted_pages(&[Log::Keys]).await;
                }
                loop {
                    let (rows, done) = self.purge_chunk(key_id, *tenant, subject).await?;
                    purged += rows;
                    if done {
                        break;
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        if purged > 0 {
            self.flush_deleted_pages(&[Log::Ledger]).await;
        }
        Ok(purged)
    }

    /// Erasures whose rows are not purged yet, plus purges under way (a
    /// purge's last step, flushing the deleted pages out of SQLite's WAL,
    /// comes after its tombstone is marked done). Zero means every erased
    /// person's rows have left the files.
    pub async fn erasures_pending(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM erasures WHERE pending_ref IS NOT NULL")
            .fetch_one(&self.ledger)
            .await?
            .try_get(0)?;
        // Read after the count: a purge that cleared a tombstone counted
        // here as done is still running until its flush is.
        let running = self.purges_running.load(std::sync::atomic::Ordering::SeqCst) as u64;
        Ok(n as u64 + running)
    }

    /// Deletes a key from the key store; returns how many (0 or 1).
    async fn shred(&self, key_id: &[u8]) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM subject_keys WHERE key_id = $1")
            .bind(key_id.to_vec())
            .execute(&self.keys)
            .await?
            .rows_affected())
    }

    /// Deletes up to `PURGE_CHUNK_ROWS` of one erased subject's rows with
    /// the audit entry counting them; when none are left, marks the
    /// tombstone purged (forgetting the rows' reference). Returns (rows
    /// deleted, done).
    async fn purge_chunk(&self, key_id: &[u8], tenant: i64, subject: &[u8]) -> Result<(u64, bool), StoreError> {
        let mut w = self.begin_write(self.today()).await?;
        let mut rows = 0;
        for (table, key, key_type) in SUBJECT_TABLE_KEYS {
            let budget = PURGE_CHUNK_ROWS - rows;
            if budget == 0 {
                break;
            }
            // The keys first, then a delete by primary key: one plan on both
            // engines whatever the planner's statistics say (PostgreSQL
            // turned a `key IN (subquery LIMIT n)` on fresh tables into a
            // nested loop, quadratic in the chunk).
            let keys: Vec<Arg> = sqlx::query(&format!(
                "SELECT {key} FROM {table} WHERE tenant_id = $1 AND subject = $2 LIMIT $3"
            ))
            .bind(tenant)
            .bind(subject.to_vec())
            .bind(budget as i64)
            .fetch_all(w.conn())
            .await?
            .iter()
            .map(|row| {
                Ok(match key_type {
                    KeyType::Blob => Arg::Blob(row.try_get(0)?),
                    KeyType::Int => Arg::Int(row.try_get(0)?),
                    KeyType::Text => Arg::Text(row.try_get(0)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
            let leading = [Arg::Int(tenant), Arg::Blob(subject.to_vec())];
            rows += execute_in(w.conn(), self.engine, &leading, &keys, |p, n| {
                format!(
                    "DELETE FROM {table} WHERE tenant_id = {} AND subject = {} AND {key} IN ({})",
                    p.one(),
                    p.one(),
                    p.list(n)
                )
            })
            .await?;
        }
        let done = rows < PURGE_CHUNK_ROWS;
        if done {
            // Gone in the erasure's transaction, unless it was written
            // before these tables were (a tombstone pending across the
            // upgrade).
            delete_derived(&mut w, tenant, subject).await?;
            sqlx::query("UPDATE erasures SET tenant_id = NULL, pending_ref = NULL WHERE key_id = $1")
                .bind(key_id.to_vec())
                .execute(w.conn())
                .await?;
        }
        if rows > 0 {
            w.append(None, Action::OrphansPurged { rows });
        }
        w.commit().await?;
        Ok((rows, done))
    }

    /// Re-applies every recorded erasure: deletes each key the tombstone list
    /// names (found again after a key store is restored from an older backup,
    /// or left by an interrupted erasure), then purges rows whose key is
    /// gone. Returns (keys deleted, rows purged). Run at start-up and by
    /// `carbon-ledger keys reshred`.
    pub async fn reshred(&self) -> Result<(u64, u64), StoreError> {
        let tombstones: Vec<Arg> = sqlx::query("SELECT key_id FROM erasures")
            .fetch_all(&self.ledger)
            .await?
            .iter()
            .map(|row| Ok(Arg::Blob(row.try_get(0)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let shredded = execute_in(
            &mut *self.keys.acquire().await?,
            self.engine,
            &[],
            &tombstones,
            |p, n| format!("DELETE FROM subject_keys WHERE key_id IN ({})", p.list(n)),
        )
        .await?;
        if shredded > 0 {
            let mut w = self.begin_write(self.today()).await?;
            w.append(
                None,
                Action::KeysReshredded {
                    keys: u32::try_from(shredded).unwrap_or(u32::MAX),
                },
            );
            w.commit().await?;
        }
        let purged = self.purge_erased().await? + self.purge_orphans().await?;
        Ok((shredded, purged))
    }

    /// Purges rows whose subject has no key in the key store: unreadable
    /// already, and now gone.
    pub(super) async fn purge_orphans(&self) -> Result<u64, StoreError> {
        // Subjects whose erasure is pending are `purge_erased`'s, in
        // bounded chunks; this catches only what a crash or a restore left.
        let union = SUBJECT_TABLE_KEYS
            .map(|(t, _, _)| t)
            .iter()
            .chain(&SUBJECT_DERIVED_TABLES)
            .map(|t| format!("SELECT subject FROM {t}"))
            .collect::<Vec<_>>()
            .join(" UNION ");
        let union = format!(
            "SELECT subject FROM ({union}) AS held WHERE subject NOT IN \
             (SELECT pending_ref FROM erasures WHERE pending_ref IS NOT NULL)"
        );
        let held: Vec<SubjectRef> = sqlx::query(&union)
            .fetch_all(&self.ledger)
            .await?
            .iter()
            .map(|row| {
                SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                    .ok_or_else(|| StoreError::Corrupt("subject reference is not 32 bytes".into()))
            })
            .collect::<Result<_, _>>()?;
        let mut orphans: BTreeSet<SubjectRef> = held.iter().copied().collect();
        let held: Vec<Arg> = held.iter().map(|r| Arg::Blob(r.as_bytes().to_vec())).collect();
        let known = select_in(&mut *self.keys.acquire().await?, self.engine, &[], &held, |p, n| {
            format!(
                "SELECT ledger_ref FROM subject_keys WHERE ledger_ref IN ({})",
                p.list(n)
            )
        })
        .await?;
        for row in known {
            let known = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                .ok_or_else(|| StoreError::Corrupt("a key store ledger reference is not 32 bytes".into()))?;
            orphans.remove(&known);
        }
        if orphans.is_empty() {
            return Ok(0);
        }
        let orphans: Vec<Arg> = orphans.iter().map(|r| Arg::Blob(r.as_bytes().to_vec())).collect();
        let mut w = self.begin_write(self.today()).await?;
        let mut rows = 0;
        for (table, _, _) in SUBJECT_TABLE_KEYS {
            rows += execute_in(w.conn(), self.engine, &[], &orphans, |p, n| {
                format!("DELETE FROM {table} WHERE subject IN ({})", p.list(n))
            })
            .await?;
        }
        for table in SUBJECT_DERIVED_TABLES {
            execute_in(w.conn(), self.engine, &[], &orphans, |p, n| {
                format!("DELETE FROM {table} WHERE subject IN ({})", p.list(n))
            })
            .await?;
        }
        // Links and codes of an account whose key is gone (a key store
        // restored from before an erasure, then re-shredded): both sides.
        execute_in(w.conn(), self.engine, &[], &orphans, |p, n| {
            format!(
                "DELETE FROM subject_links WHERE link_id IN (SELECT link_id FROM subject_links WHERE subject IN ({}))",
                p.list(n)
            )
        })
        .await?;
        execute_in(w.conn(), self.engine, &[], &orphans, |p, n| {
            format!("DELETE FROM link_codes WHERE subject IN ({})", p.list(n))
        })
        .await?;
        w.append(None, Action::OrphansPurged { rows });
        w.commit().await?;
        self.flush_deleted_pages(&[Log::Ledger, Log::Keys]).await;
        Ok(rows)
    }
}
