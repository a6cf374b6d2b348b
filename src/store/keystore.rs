//! The key store: per-subject random salts, in a database of their own
//! (`keys.db` on SQLite, schema `keystore` on PostgreSQL).

use std::collections::{BTreeSet, HashMap};

use sqlx::{AnyPool, Row};

use super::sql::{insert_rows, Arg, Params};
use super::{Store, StoreError};
use crate::crypto::{random_bytes, Pseudonym, SubjectSalt};

impl Store {
    /// The salt of one subject, if they have one.
    pub(super) async fn salt_of(&self, subject: &Pseudonym) -> Result<Option<SubjectSalt>, StoreError> {
        let row = sqlx::query("SELECT salt FROM subject_keys WHERE subject = $1")
            .bind(subject.as_bytes().to_vec())
            .fetch_optional(&self.keys)
            .await?;
        row.map(|row| salt_from(&row.try_get::<Vec<u8>, _>(0)?)).transpose()
    }

    /// Salts for every subject given, creating the missing ones. Committed in
    /// the key store before any record is written under them, so a crash in
    /// between leaves an unused salt, never a record without its key.
    pub(super) async fn salts_for(
        &self,
        subjects: &BTreeSet<Pseudonym>,
        now: i64,
    ) -> Result<HashMap<Pseudonym, SubjectSalt>, StoreError> {
        let mut found = fetch_salts(&self.keys, self.engine, subjects).await?;
        let missing: Vec<Vec<Arg>> = subjects
            .iter()
            .filter(|s| !found.contains_key(*s))
            .map(|s| {
                vec![
                    Arg::Blob(s.as_bytes().to_vec()),
                    Arg::Blob(random_bytes::<16>().to_vec()),
                    Arg::Blob(SubjectSalt::generate().as_bytes().to_vec()),
                    Arg::Int(now),
                ]
            })
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let mut conn = self.keys.acquire().await?;
        // A concurrent request may have created some of them: keep theirs.
        let columns = ["subject", "key_id", "salt", "created_at"];
        insert_rows(
            &mut conn,
            self.engine,
            "subject_keys",
            &columns,
            missing,
            "ON CONFLICT (subject) DO NOTHING",
        )
        .await?;
        drop(conn);
        found.extend(fetch_salts(&self.keys, self.engine, subjects).await?);
        if found.len() != subjects.len() {
            return Err(StoreError::Corrupt(
                "a subject salt vanished while being created".into(),
            ));
        }
        Ok(found)
    }
}

async fn fetch_salts(
    pool: &AnyPool,
    engine: super::Engine,
    subjects: &BTreeSet<Pseudonym>,
) -> Result<HashMap<Pseudonym, SubjectSalt>, StoreError> {
    let mut out = HashMap::with_capacity(subjects.len());
    let list: Vec<&Pseudonym> = subjects.iter().collect();
    for chunk in list.chunks(1000) {
        let sql = format!(
            "SELECT subject, salt FROM subject_keys WHERE subject IN ({})",
            Params::new(engine).list(chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for s in chunk {
            q = q.bind(s.as_bytes().to_vec());
        }
        for row in q.fetch_all(pool).await? {
            let subject: Vec<u8> = row.try_get(0)?;
            let subject = Pseudonym::from_stored(&subject)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            out.insert(subject, salt_from(&row.try_get::<Vec<u8>, _>(1)?)?);
        }
    }
    Ok(out)
}

fn salt_from(bytes: &[u8]) -> Result<SubjectSalt, StoreError> {
    SubjectSalt::from_slice(bytes).ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))
}
