//! The key store: per-subject random salts, in a database of their own
//! (`keys.db` on SQLite, schema `keystore` on PostgreSQL). A subject gets a
//! salt when a consent first establishes them; nothing else creates one.

use std::collections::{BTreeSet, HashMap};

use sqlx::FromRow;

use super::sql::{select_in, Arg};
use super::{Store, StoreError};
use crate::crypto::{random_bytes, Pseudonym, SubjectSalt};

/// A subject's key: the random id tombstones name it by, and the salt.
pub(super) struct StoredKey {
    pub key_id: Vec<u8>,
    pub salt: SubjectSalt,
}

impl Store {
    /// The key of one subject, if they have one.
    pub(super) async fn key_of(&self, subject: &Pseudonym) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query_as::<_, KeyRow>("SELECT key_id, salt FROM subject_keys WHERE subject = $1")
            .bind(subject.as_bytes().to_vec())
            .fetch_optional(&self.keys)
            .await?;
        row.map(KeyRow::into_key).transpose()
    }

    /// The key whose ledger reference is `ledger_ref`, if it still exists:
    /// how a link code finds the issuing account's key (the code row holds
    /// only that reference).
    pub(super) async fn key_by_ledger_ref(&self, ledger_ref: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query_as::<_, KeyRow>("SELECT key_id, salt FROM subject_keys WHERE ledger_ref = $1")
            .bind(ledger_ref.to_vec())
            .fetch_optional(&self.keys)
            .await?;
        row.map(KeyRow::into_key).transpose()
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
        let ledger_ref = self.sealing_keys(&salt).ledger_ref;
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
            let row = KeyRow::from_row(&row)?;
            let subject = Pseudonym::from_stored(&row.subject)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            out.insert(subject, row.into_key()?);
        }
        Ok(out)
    }
}

/// A row of `subject_keys`. The salt is copied into a zeroizing type at
/// once; the row's own buffer is wiped when it is dropped.
#[derive(sqlx::FromRow)]
struct KeyRow {
    #[sqlx(default)]
    subject: Vec<u8>,
    key_id: Vec<u8>,
    #[sqlx(try_from = "Vec<u8>")]
    salt: zeroize::Zeroizing<Vec<u8>>,
}

impl KeyRow {
    fn into_key(self) -> Result<StoredKey, StoreError> {
        let salt = SubjectSalt::from_slice(&self.salt)
            .ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))?;
        Ok(StoredKey {
            key_id: self.key_id,
            salt,
        })
    }
}
