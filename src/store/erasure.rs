//! Erasure by crypto-shredding: the subject's key goes first (every copy of
//! their ciphertext, backups included, becomes unreadable), then their
//! rows. A tombstone naming the key's random id is written before anything
//! else, so an interrupted erasure is finished by the start-up check, and a
//! key store restored from an older backup can be re-shredded.

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::sql::Params;
use super::{Access, Store, StoreError, WriteTx};
use crate::audit::{Action, ErasureCounts};
use crate::crypto::{SubjectRef, SubjectSalt, CURRENT_KEY_VERSION};
use crate::domain::{Day, SubjectId};
use crate::policy::Permission;

/// The tables holding rows about a subject, by their `subject` column.
const SUBJECT_TABLES: [&str; 5] = [
    "records",
    "ledger_entries",
    "idempotency_keys",
    "consents",
    "consent_history",
];

/// What an erasure did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ErasureReceipt {
    pub erased_on: String,
    pub counts: ErasureCounts,
    /// The audit entry recording the erasure.
    pub audit_seq: u64,
}

impl Store {
    /// The ones of `key_ids` the tombstone list names. Checked inside a
    /// write transaction, this is race-free against an erasure: its
    /// tombstone is committed before its key goes, and its purge waits for
    /// the write lock, so whatever a transaction writes either sees the
    /// tombstone or is purged after it.
    pub(super) async fn erased_among(
        &self,
        w: &mut WriteTx<'_>,
        key_ids: &[&[u8]],
    ) -> Result<HashSet<Vec<u8>>, StoreError> {
        let mut out = HashSet::new();
        for chunk in key_ids.chunks(1000) {
            let sql = format!(
                "SELECT key_id FROM erasures WHERE key_id IN ({})",
                Params::new(self.engine).list(chunk.len())
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for id in chunk {
                q = q.bind(id.to_vec());
            }
            for row in q.fetch_all(w.conn()).await? {
                out.insert(row.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// `SubjectNotFound` if the subject's key was erased meanwhile.
    pub(super) async fn ensure_not_erased(&self, w: &mut WriteTx<'_>, key_id: &[u8]) -> Result<(), StoreError> {
        if self.erased_among(w, &[key_id]).await?.is_empty() {
            Ok(())
        } else {
            Err(StoreError::SubjectNotFound)
        }
    }

    /// Erases everything held on the subject. Their audit entries stay, and
    /// still verify; without the salt their audit reference ties them to
    /// nobody. The same id coming back later is a new person.
    pub async fn erase_subject(&self, access: &Access, subject: &SubjectId) -> Result<ErasureReceipt, StoreError> {
        let tenant = self.authorize(access, Permission::EraseSubjects)?;
        let lookup = self.pseudonyms.pseudonymize(tenant, subject);
        let row = sqlx::query("SELECT key_id, salt FROM subject_keys WHERE subject = $1")
            .bind(lookup.as_bytes().to_vec())
            .fetch_optional(&self.keys)
            .await?
            .ok_or(StoreError::SubjectNotFound)?;
        let key_id: Vec<u8> = row.try_get(0)?;
        let key_id_array: [u8; 16] = key_id
            .clone()
            .try_into()
            .map_err(|_| StoreError::Corrupt("key id is not 16 bytes".into()))?;
        let salt = SubjectSalt::from_slice(&row.try_get::<Vec<u8>, _>(1)?)
            .ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))?;
        let keys = self.root.subject_keys(&salt, CURRENT_KEY_VERSION);
        drop(salt);
        let today = self.today_start();

        // 1. The tombstone, durable before the key goes.
        sqlx::query("INSERT INTO erasures (key_id, erased_on) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING")
            .bind(key_id.clone())
            .bind(today)
            .execute(&self.ledger)
            .await?;
        // 2. Shred: from here on the subject's ciphertext is unreadable.
        sqlx::query("DELETE FROM subject_keys WHERE key_id = $1")
            .bind(key_id)
            .execute(&self.keys)
            .await?;
        // 3. Purge the rows, in bulk, with the audit entry.
        let mut w = self.begin_write().await?;
        let mut deleted = [0u32; 5];
        for (n, table) in deleted.iter_mut().zip(SUBJECT_TABLES) {
            let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND subject = $2");
            let done = sqlx::query(&sql)
                .bind(tenant.get())
                .bind(keys.ledger_ref.as_bytes().to_vec())
                .execute(w.conn())
                .await?;
            *n = u32::try_from(done.rows_affected()).unwrap_or(u32::MAX);
        }
        let [records, ledger_entries, idempotency_keys, consents, consent_history] = deleted;
        let counts = ErasureCounts {
            records,
            ledger_entries,
            idempotency_keys,
            consents,
            consent_history,
        };
        let audit_seq = w.append(
            Some(tenant),
            Action::SubjectErased {
                subject: keys.audit_ref,
                key_id: key_id_array,
                counts,
            },
        );
        w.commit().await?;
        self.flush_deleted_pages().await;
        let erased_on = Day::from_days(today.div_euclid(86_400))
            .map(|d| d.to_string())
            .unwrap_or_default();
        Ok(ErasureReceipt {
            erased_on,
            counts,
            audit_seq,
        })
    }

    /// Re-applies every recorded erasure: deletes each key the tombstone list
    /// names (found again after a key store is restored from an older backup,
    /// or left by an interrupted erasure), then purges rows whose key is
    /// gone. Returns (keys deleted, rows purged). Run at start-up and by
    /// `carbon-ledger keys reshred`.
    pub async fn reshred(&self) -> Result<(u64, u64), StoreError> {
        let tombstones: Vec<Vec<u8>> = sqlx::query("SELECT key_id FROM erasures")
            .fetch_all(&self.ledger)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut shredded = 0;
        for chunk in tombstones.chunks(1000) {
            let sql = format!(
                "DELETE FROM subject_keys WHERE key_id IN ({})",
                Params::new(self.engine).list(chunk.len())
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for key_id in chunk {
                q = q.bind(key_id.clone());
            }
            shredded += q.execute(&self.keys).await?.rows_affected();
        }
        if shredded > 0 {
            let mut w = self.begin_write().await?;
            w.append(
                None,
                Action::KeysReshredded {
                    keys: u32::try_from(shredded).unwrap_or(u32::MAX),
                },
            );
            w.commit().await?;
        }
        let purged = self.purge_orphans().await?;
        Ok((shredded, purged))
    }

    /// Purges rows whose subject has no key in the key store: unreadable
    /// already, and now gone.
    pub(super) async fn purge_orphans(&self) -> Result<u64, StoreError> {
        let union = SUBJECT_TABLES
            .map(|t| format!("SELECT subject FROM {t}"))
            .join(" UNION ");
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
        for chunk in held.chunks(1000) {
            let sql = format!(
                "SELECT ledger_ref FROM subject_keys WHERE ledger_ref IN ({})",
                Params::new(self.engine).list(chunk.len())
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for r in chunk {
                q = q.bind(r.as_bytes().to_vec());
            }
            for row in q.fetch_all(&self.keys).await? {
                if let Some(known) = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?) {
                    orphans.remove(&known);
                }
            }
        }
        if orphans.is_empty() {
            return Ok(0);
        }
        let orphans: Vec<SubjectRef> = orphans.into_iter().collect();
        let mut w = self.begin_write().await?;
        let mut rows = 0;
        for chunk in orphans.chunks(1000) {
            for table in SUBJECT_TABLES {
                let sql = format!(
                    "DELETE FROM {table} WHERE subject IN ({})",
                    Params::new(self.engine).list(chunk.len())
                );
                let mut q = sqlx::query(&sql).persistent(false);
                for r in chunk {
                    q = q.bind(r.as_bytes().to_vec());
                }
                rows += q.execute(w.conn()).await?.rows_affected();
            }
        }
        w.append(None, Action::OrphansPurged { rows });
        w.commit().await?;
        self.flush_deleted_pages().await;
        Ok(rows)
    }
}
