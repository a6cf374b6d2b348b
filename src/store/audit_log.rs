//! Appending to and reading the audit log tables.

use sqlx::{AnyConnection, AnyPool, Row};

use super::sql::{insert_rows, Arg};
use super::{Engine, StoreError};
use crate::audit::chain::{chain_hash, leaf_hash, Checked};
use crate::audit::{Action, AuditEntry, ChainVerifier, VerifyError};
use crate::domain::TenantId;

/// Entries appended in the current write transaction, chained onto the head
/// that transaction locked.
#[derive(Default)]
pub(super) struct Appender {
    seq: u64,
    prev: [u8; 32],
    rows: Vec<Vec<Arg>>,
}

const COLUMNS: [&str; 7] = [
    "seq",
    "entry",
    "leaf_hash",
    "chain_hash",
    "at",
    "tenant_id",
    "subject_ref",
];

impl Appender {
    /// Locks the head row (an UPDATE, so both engines take a write lock on
    /// it) and reads where the chain stands.
    pub(super) async fn lock_head(conn: &mut AnyConnection) -> Result<Self, StoreError> {
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, chain_hash")
            .fetch_one(&mut *conn)
            .await?;
        let seq: i64 = row.try_get(0)?;
        let prev: Vec<u8> = row.try_get(1)?;
        let prev = prev
            .try_into()
            .map_err(|_| StoreError::Corrupt("audit head hash is not 32 bytes".into()))?;
        Ok(Self {
            seq: seq as u64,
            prev,
            rows: Vec::new(),
        })
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn append(&mut self, at: i64, actor: Option<TenantId>, action: Action) -> u64 {
        self.seq += 1;
        let subject_ref = action.subject().map(|r| r.as_bytes().to_vec());
        let entry = AuditEntry {
            seq: self.seq,
            at,
            actor,
            action,
        };
        let bytes = entry.encode();
        let leaf = leaf_hash(&bytes);
        self.prev = chain_hash(&self.prev, &leaf);
        self.rows.push(vec![
            Arg::Int(self.seq as i64),
            Arg::Blob(bytes),
            Arg::Blob(leaf.to_vec()),
            Arg::Blob(self.prev.to_vec()),
            Arg::Int(at),
            actor.map_or(Arg::NullInt, |t| Arg::Int(t.get())),
            subject_ref.map_or(Arg::NullBlob, Arg::Blob),
        ]);
        self.seq
    }

    pub(super) async fn flush(self, conn: &mut AnyConnection, engine: Engine) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        insert_rows(conn, engine, "audit_log", &COLUMNS, self.rows, "").await?;
        sqlx::query("UPDATE audit_head SET seq = $1, chain_hash = $2 WHERE id = 1")
            .bind(self.seq as i64)
            .bind(self.prev.to_vec())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Empties the entries appended before `cutoff` (Unix seconds), keeping
/// their hashes so the chain still verifies. Returns how many were emptied.
pub(super) async fn prune_before(conn: &mut AnyConnection, cutoff: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE audit_log SET entry = NULL, subject_ref = NULL WHERE at < $1 AND entry IS NOT NULL")
        .bind(cutoff)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// The outcome of recomputing the chain.
pub type AuditCheck = Result<Checked, VerifyError>;

const PAGE: i64 = 10_000;

pub(super) async fn verify(pool: &AnyPool, engine: Engine) -> Result<AuditCheck, StoreError> {
    // One snapshot for the whole check, so appends committed meanwhile are
    // neither half-seen nor mistaken for entries stored beyond the head.
    let mut tx = match engine {
        Engine::Postgres => {
            pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?
        }
        // A deferred transaction: its first read fixes the WAL snapshot.
        Engine::Sqlite => pool.begin().await?,
    };
    let head = sqlx::query("SELECT seq, chain_hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let head_seq: i64 = head.try_get(0)?;
    let head_hash: Vec<u8> = head.try_get(1)?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT seq, entry, leaf_hash, chain_hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(head_seq)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let seq: i64 = row.try_get(0)?;
            let entry: Option<Vec<u8>> = row.try_get(1)?;
            let leaf: Vec<u8> = row.try_get(2)?;
            let chain: Vec<u8> = row.try_get(3)?;
            if let Err(e) = verifier.push(seq, entry.as_deref(), &leaf, &chain) {
                return Ok(Err(e));
            }
            after = seq;
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    // Entries past the head were appended without moving it: a forgery.
    let beyond: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log WHERE seq > $1")
        .bind(head_seq)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if beyond > 0 {
        return Ok(Err(VerifyError {
            seq: head_seq as u64 + 1,
            reason: "stored beyond the log's head".into(),
        }));
    }
    Ok(verifier.finish(head_seq, &head_hash))
}

/// Entries still readable (not pruned) after `after_seq`.
pub(super) async fn entries(pool: &AnyPool, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query("SELECT entry FROM audit_log WHERE seq > $1 AND entry IS NOT NULL ORDER BY seq LIMIT $2")
        .bind(after_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let bytes: Vec<u8> = row.try_get(0)?;
            AuditEntry::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
}
