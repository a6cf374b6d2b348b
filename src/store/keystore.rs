//! The key store: per-subject random salts, in a database of their own
//! (`keys.db` on SQLite, schema `keystore` on PostgreSQL). A subject gets a
//! salt when a consent first establishes them; nothing else creates one.

use std::collections::{BTreeSet, HashMap};

use sqlx::Row;

use super::sql::{select_in, Arg};
use super::{Store, StoreError};
use crate::crypto::{random_bytes, Pseudonym, SubjectSalt, CURRENT_KEY_VERSION};

/// A subject's key: the random id tombstones name it by, and the salt.
pub(super) struct StoredKey {
    pub key_id: Vec<u8>,
    pub salt: SubjectSalt,
}

impl Store {
    /// The key of one subject, if they have one.
    pub(super) async fn key_of(&self, subject: &Pseudonym) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query("SELECT key_id, salt FROM subject_keys WHERE subject = $1")
            .bind(subject.as_bytes().to_vec())
            .fetch_optional(&self.keys)
            .await?;
        row.map(|row| stored_key(&row)).transpose()
    }

    /// The subject's key, created if missing. Committed in the key store
    /// before anything is written under it, so a crash in between leaves an
    /// unused salt, never data without its key.
    pub(super) async fn key_or_create(&self, subject: &Pseudonym, now: i64) -> Result<StoredKey, StoreError> {
        if let Some(key) = self.key_of(subject).await? {
            return Ok(key);
        }
        // A concurrent request may create it first: keep theirs.
        let salt = SubjectSalt::generate();
        let ledger_ref = self.root.subject_keys(&salt, CURRENT_KEY_VERSION).ledger_ref;
        sqlx::query(
            "INSERT INTO subject_keys (subject, key_id, salt, ledger_ref, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(subject.as_bytes().to_vec())
        .bind(random_bytes::<16>().to_vec())
        .bind(salt.as_bytes().to_vec())
        .bind(ledger_ref.as_bytes().to_vec())
        .bind(now)
        .execute(&self.keys)
        .await?;
        self.key_of(subject)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a subject key vanished while being created".into()))
    }

    /// The keys of those of `subjects` that have one.
    pub(super) async fn existing_keys(
        &self,
        subjects: &BTreeSet<Pseudonym>,
    ) -> Result<HashMap<Pseudonym, StoredKey>, StoreError> {
        let mut out = HashMap::with_capacity(subjects.len());
        let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
        let rows = select_in(&mut *self.keys.acquire().await?, self.engine, &[], &list, |p, n| {
            format!(
                "SELECT subject, key_id, salt FROM subject_keys WHERE subject IN ({})",
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let subject: Vec<u8> = row.try_get(0)?;
            let subject = Pseudonym::from_stored(&subject)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            let key_id: Vec<u8> = row.try_get(1)?;
            let salt = SubjectSalt::from_slice(&row.try_get::<Vec<u8>, _>(2)?)
                .ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))?;
            out.insert(subject, StoredKey { key_id, salt });
        }
        Ok(out)
    }
}

fn stored_key(row: &sqlx::any::AnyRow) -> Result<StoredKey, StoreError> {
    let salt = SubjectSalt::from_slice(&row.try_get::<Vec<u8>, _>(1)?)
        .ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))?;
    Ok(StoredKey {
        key_id: row.try_get(0)?,
        salt,
    })
}
