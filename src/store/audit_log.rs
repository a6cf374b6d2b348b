//! Appending to and reading the audit log tables: entries with their leaf
//! and chain hashes, the Merkle tree's complete subtrees, and checkpoints.

use std::collections::HashMap;

use sqlx::{AnyConnection, AnyPool, FromRow, Row};

use super::sql::{insert_rows, select_in, Arg, Params, IN_LIST_MAX};
use super::{Engine, StoreError};
use crate::audit::chain::{chain_hash, leaf_hash};
use crate::audit::checkpoint::{Checkpoint, NoteVerifier};
use crate::audit::merkle::{self, Hash, NodeId};
use crate::audit::{Action, AuditEntry, LogVerifier, StoredRow, VerifiedLog, VerifyError};
use crate::domain::TenantId;

/// A stored row of the log, as verification and the offline export read it.
#[derive(sqlx::FromRow)]
pub(super) struct LogRow {
    pub seq: i64,
    pub entry: Option<Vec<u8>>,
    pub leaf_hash: Vec<u8>,
    pub chain_hash: Vec<u8>,
}

/// Entries appended in the current write transaction, chained onto the head
/// that transaction locked, with the tree nodes they complete.
#[derive(Default)]
pub(super) struct Appender {
    seq: u64,
    prev: [u8; 32],
    rows: Vec<Vec<Arg>>,
    /// The tree's right edge at lock time plus every node added since.
    nodes: HashMap<NodeId, Hash>,
    new_nodes: Vec<Vec<Arg>>,
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
    /// it), reads where the chain stands, and loads the tree's right edge.
    pub(super) async fn lock_head(conn: &mut AnyConnection, engine: Engine) -> Result<Self, StoreError> {
        let (seq, prev): (i64, Vec<u8>) =
            sqlx::query_as("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, chain_hash")
                .fetch_one(&mut *conn)
                .await?;
        let prev = prev
            .try_into()
            .map_err(|_| StoreError::Corrupt("audit head hash is not 32 bytes".into()))?;
        let edge = merkle::root_nodes(seq as u64).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let nodes = fetch_nodes(conn, engine, &edge).await?;
        // Every append below builds on these; a missing one means the tree
        // tables were damaged, and nothing must be appended to it.
        if let Some(missing) = edge.iter().find(|id| !nodes.contains_key(id)) {
            return Err(StoreError::Corrupt(format!(
                "the audit tree lacks its node {missing:?}"
            )));
        }
        Ok(Self {
            seq: seq as u64,
            prev,
            rows: Vec::new(),
            nodes,
            new_nodes: Vec::new(),
        })
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// The tree root over every entry, appended ones included.
    pub(super) fn root(&self) -> Result<Hash, StoreError> {
        merkle::assemble_root(self.seq, &|id| self.nodes.get(&id).copied())
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub(super) fn append(&mut self, at: i64, actor: Option<TenantId>, action: Action) -> u64 {
        let index = self.seq;
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
        self.nodes.insert(NodeId::leaf(index), leaf);
        for id in merkle::nodes_completed_by_append(index) {
            let (left, right) = id.children().expect("completed nodes are above the leaves");
            // Both children are on the right edge loaded at lock time or were
            // added by this transaction.
            let hash = merkle::node_hash(&self.nodes[&left], &self.nodes[&right]);
            self.nodes.insert(id, hash);
            self.new_nodes.push(vec![
                Arg::Int(i64::from(id.level)),
                Arg::Int(id.index as i64),
                Arg::Blob(hash.to_vec()),
            ]);
        }
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
        insert_rows(
            conn,
            engine,
            "audit_nodes",
            &["level", "idx", "hash"],
            self.new_nodes,
            "",
        )
        .await?;
        sqlx::query("UPDATE audit_head SET seq = $1, chain_hash = $2 WHERE id = 1")
            .bind(self.seq as i64)
            .bind(self.prev.to_vec())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The hashes of the given tree nodes: leaves from the log, complete
/// subtrees above them from `audit_nodes`.
pub(super) async fn fetch_nodes(
    conn: &mut AnyConnection,
    engine: Engine,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    let (leaves, inner): (Vec<&NodeId>, Vec<&NodeId>) = ids.iter().partition(|id| id.level == 0);
    let hash = |bytes: Vec<u8>| -> Result<Hash, StoreError> {
        bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("tree hash is not 32 bytes".into()))
    };
    let seqs: Vec<Arg> = leaves.iter().map(|id| Arg::Int(id.index as i64 + 1)).collect();
    let rows = select_in(conn, engine, &[], &seqs, |p, n| {
        format!("SELECT seq, leaf_hash FROM audit_log WHERE seq IN ({})", p.list(n))
    })
    .await?;
    for row in rows {
        let (seq, leaf): (i64, Vec<u8>) = FromRow::from_row(&row)?;
        let index =
            u64::try_from(seq - 1).map_err(|_| StoreError::Corrupt("an audit entry's seq is not positive".into()))?;
        out.insert(NodeId::leaf(index), hash(leaf)?);
    }
    // Two parameters a node: half a list's worth of nodes per statement.
    for chunk in inner.chunks(IN_LIST_MAX / 2) {
        let mut p = Params::new(engine);
        let clauses: Vec<String> = chunk
            .iter()
            .map(|_| format!("(level = {} AND idx = {})", p.one(), p.one()))
            .collect();
        let sql = format!(
            "SELECT level, idx, hash FROM audit_nodes WHERE {}",
            clauses.join(" OR ")
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(i64::from(id.level)).bind(id.index as i64);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let (level, index, node): (i64, i64, Vec<u8>) = FromRow::from_row(&row)?;
            let corrupt = |_| StoreError::Corrupt("a tree node's position is out of range".into());
            let id = NodeId {
                level: u32::try_from(level).map_err(corrupt)?,
                index: u64::try_from(index).map_err(corrupt)?,
            };
            out.insert(id, hash(node)?);
        }
    }
    Ok(out)
}

/// Empties the entries appended before `cutoff` (Unix seconds), keeping
/// their hashes so the chain and the tree still verify. Returns how many.
pub(super) async fn prune_before(conn: &mut AnyConnection, cutoff: i64) -> Result<u64, StoreError> {
    // By sequence, up to the last expired entry: the emptied part stays a
    // prefix of the log even if the clock ever stepped back.
    let done = sqlx::query(
        "UPDATE audit_log SET entry = NULL, subject_ref = NULL \
         WHERE seq <= (SELECT MAX(seq) FROM audit_log WHERE at < $1) AND entry IS NOT NULL",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The outcome of recomputing the log.
pub type AuditCheck = Result<VerifiedLog, VerifyError>;

const PAGE: i64 = 10_000;

/// Feeds every stored row, read in one snapshot, to the [`LogVerifier`],
/// against every signed checkpoint: those stored, and `extra` ones an
/// auditor kept (which catch a truncated and re-signed log). What only the
/// database has is checked here: the head row, and rows stored beyond it.
pub(super) async fn verify(
    pool: &AnyPool,
    engine: Engine,
    verifier: &NoteVerifier,
    extra: &[String],
) -> Result<AuditCheck, StoreError> {
    verify_observing(pool, engine, verifier, extra, &mut |_| {}).await
}

/// [`verify`], handing `observe` each readable entry once it has verified
/// (in order). What it gathers counts only if the whole log verifies.
pub(super) async fn verify_observing(
    pool: &AnyPool,
    engine: Engine,
    verifier: &NoteVerifier,
    extra: &[String],
    observe: &mut (dyn FnMut(&AuditEntry) + Send),
) -> Result<AuditCheck, StoreError> {
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

    let mut notes: Vec<String> = sqlx::query("SELECT note FROM audit_checkpoints ORDER BY size")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    notes.extend(extra.iter().cloned());
    let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(notes.len());
    for note in &notes {
        match verifier.verify(note, verifier.name()) {
            Ok(cp) => checkpoints.push(cp),
            Err(e) => {
                return Ok(Err(VerifyError {
                    seq: 0,
                    reason: format!("a checkpoint does not verify: {e}"),
                }))
            }
        }
    }

    let mut log = match LogVerifier::new(&checkpoints) {
        Ok(log) => log,
        Err(e) => return Ok(Err(e)),
    };
    let mut after = 0i64;
    loop {
        let rows = sqlx::query_as::<_, LogRow>(
            "SELECT seq, entry, leaf_hash, chain_hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(head_seq)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let seq = row.seq;
            let stored = StoredRow {
                // Positive: the query reads only rows after entry 0.
                seq: seq as u64,
                entry: row.entry.as_deref(),
                leaf_hash: &row.leaf_hash,
                chain_hash: &row.chain_hash,
            };
            if let Err(e) = log.push(stored) {
                return Ok(Err(e));
            }
            // The verifier decoded it already; it cannot fail here.
            if let Some(entry) = row.entry.as_deref().and_then(|b| AuditEntry::decode(b).ok()) {
                observe(&entry);
            }
            after = seq;
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    let verified = match log.finish() {
        Ok(verified) => verified,
        Err(e) => return Ok(Err(e)),
    };
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
    Ok(verified.check_head(head_seq, &head_hash).map(|()| verified))
}
