//! What auditors verify with: signed checkpoints of the audit log's Merkle
//! tree, inclusion and consistency proofs, the entries themselves, an
//! offline export, and reduction reports that reconcile with the log.

use std::io::Write;
use std::path::Path;

use sqlx::Row;

use super::audit_log::{fetch_nodes, LogRow};
use super::reads::Totals;
use super::{Access, Store, StoreError};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::{self, Hash};
use crate::audit::AuditEntry;
use crate::domain::{Milligrams, TenantId};
use crate::policy::Permission;

/// An entry of the log as stored: its leaf hash, and its canonical
/// encoding with the decoded entry unless retention emptied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub leaf_hash: Hash,
    pub entry: Option<(Vec<u8>, AuditEntry)>,
}

/// A signed checkpoint as stored: the note is what was signed and is
/// checked by whoever reads it, never trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
    /// Unix seconds of the day it was signed.
    pub issued_on: i64,
}

/// One tenant's reductions of one kind in one month (`YYYYMM`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportCell {
    pub tenant: i64,
    pub kind: String,
    pub month: i64,
    pub totals: Totals,
}

/// A tenant's cells too small to show alone, summed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuppressedCells {
    pub tenant: i64,
    pub cells: i64,
    pub totals: Totals,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReductionReport {
    /// Cells with fewer distinct people are not shown alone
    /// (`report_min_people` of `policies/points.toml`); their sums go into
    /// the tenant's `suppressed` line so totals still reconcile.
    pub min_cell_people: i64,
    pub cells: Vec<ReportCell>,
    pub suppressed: Vec<SuppressedCells>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    entry: Option<Vec<u8>>,
    leaf_hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    tenant_id: i64,
    kind: String,
    month: i64,
    events: i64,
    reduction_mg: i64,
    points: i64,
    people: i64,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Parses `YYYY-MM` into the `YYYYMM` month key.
pub fn parse_month(s: &str) -> Option<i64> {
    let (y, m) = s.split_once('-')?;
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    let (digits_y, digits_m) = s.split_once('-')?;
    (digits_y.len() == 4 && digits_m.len() == 2 && (1..=12).contains(&m) && y >= 0).then_some(y * 100 + m)
}

/// A proof request refused, said without echoing the numbers asked for.
fn refused(e: merkle::ProofError) -> StoreError {
    StoreError::Invalid(
        match e {
            merkle::ProofError::IndexOutOfRange { .. } => "the index must be below the size",
            merkle::ProofError::OldSizeTooLarge { .. } => "the older size must not exceed the newer",
            _ => "the sizes asked for describe no proof",
        }
        .into(),
    )
}

impl Store {
    /// The latest `limit` signed checkpoints as stored, newest first: a
    /// read only, so the public console never signs (or writes) anything.
    pub async fn stored_checkpoints(&self, limit: u32) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query("SELECT size, note, issued_on FROM audit_checkpoints ORDER BY size DESC LIMIT $1")
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.ledger)
            .await?;
        rows.iter()
            .map(|row| {
                let (size, note, issued_on): (i64, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                Ok(StoredCheckpoint {
                    size: u64::try_from(size).map_err(corrupt)?,
                    note,
                    issued_on,
                })
            })
            .collect()
    }

    /// The checkpoint origin and verifier key name of this log.
    pub fn audit_origin(&self) -> &str {
        self.signer.name()
    }

    /// The checkpoint verifier key, in C2SP note `vkey` form.
    pub fn audit_public_key(&self) -> String {
        self.signer.vkey()
    }

    /// The audit log's size and the size the latest signed checkpoint
    /// covers, for metrics. Reads two single rows; touches no personal data.
    pub async fn audit_size(&self) -> Result<(u64, u64), StoreError> {
        let mut conn = self.ledger.acquire().await?;
        let size: i64 = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let signed: i64 = sqlx::query("SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        Ok((size.max(0) as u64, signed.max(0) as u64))
    }

    /// A signed checkpoint covering every entry committed so far: the latest
    /// one if the log has not grown since, else a new one — signed only after
    /// checking the tree is consistent with the previous checkpoint.
    pub async fn checkpoint(&self) -> Result<String, StoreError> {
        let mut w = self.begin_write(self.today()).await?;
        let size = w.appender.seq();
        let latest = sqlx::query("SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(w.conn())
            .await?;
        let root = w.appender.root()?;
        if let Some(latest) = &latest {
            let (old_size, old_root, note): (i64, Vec<u8>, String) =
                (latest.try_get(0)?, latest.try_get(1)?, latest.try_get(2)?);
            let old_root: Hash = old_root
                .try_into()
                .map_err(|_| corrupt("checkpoint root is not 32 bytes"))?;
            if old_size as u64 == size {
                if old_root != root {
                    return Err(corrupt(format!(
                        "the log no longer matches its checkpoint of size {size}"
                    )));
                }
                return Ok(note);
            }
            let proof = self.consistency_in(&mut w, old_size as u64, size).await?;
            merkle::verify_consistency(old_size as u64, size, &old_root, &root, &proof).map_err(|e| {
                corrupt(format!(
                    "refusing to sign: the log is not consistent with its checkpoint of size {old_size}: {e}"
                ))
            })?;
        }
        let note = self.signer.sign(&Checkpoint::new(self.audit_origin(), size, root));
        sqlx::query("INSERT INTO audit_checkpoints (size, root, note, issued_on) VALUES ($1, $2, $3, $4)")
            .bind(size as i64)
            .bind(root.to_vec())
            .bind(&note)
            .bind(w.today.start)
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(note)
    }

    async fn consistency_in(&self, w: &mut super::WriteTx<'_>, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let ids = merkle::consistency_nodes(old, new).map_err(corrupt)?;
        let nodes = fetch_nodes(w.conn(), self.engine, &ids).await?;
        merkle::assemble_consistency(old, new, &|id| nodes.get(&id).copied()).map_err(corrupt)
    }

    /// Whether the caller may read the audit log (its own entries at least):
    /// checkpoints and proofs carry only hashes.
    pub fn may_read_audit(&self, access: &Access) -> Result<(), StoreError> {
        self.may_audit(access).map(|_| ())
    }

    fn may_audit(&self, access: &Access) -> Result<TenantId, StoreError> {
        self.authorize(access, Permission::ReadOwnAudit)
            .or_else(|_| self.authorize(access, Permission::ReadAudit))
    }

    /// The tree root at `size` (no larger than the log).
    pub async fn tree_root(&self, access: &Access, size: u64) -> Result<Hash, StoreError> {
        self.may_audit(access)?;
        let mut conn = self.ledger.acquire().await?;
        self.check_size(&mut conn, size).await?;
        let ids = merkle::root_nodes(size).map_err(refused)?;
        let nodes = fetch_nodes(&mut conn, self.engine, &ids).await?;
        merkle::assemble_root(size, &|id| nodes.get(&id).copied()).map_err(corrupt)
    }

    /// The inclusion proof of leaf `index` (entry `index + 1`) in the tree of
    /// `size` entries.
    pub async fn inclusion_proof(
        &self,
        access: &Access,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), StoreError> {
        self.may_audit(access)?;
        self.inclusion_in_log(index, size).await
    }

    /// The inclusion proof, for the public auditor console: a proof is
    /// made of hashes only, so it needs no role.
    pub async fn public_inclusion_proof(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), StoreError> {
        self.inclusion_in_log(index, size).await
    }

    async fn inclusion_in_log(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), StoreError> {
        let mut conn = self.ledger.acquire().await?;
        self.check_size(&mut conn, size).await?;
        let mut ids = merkle::inclusion_nodes(index, size).map_err(refused)?;
        ids.push(merkle::NodeId::leaf(index));
        let nodes = fetch_nodes(&mut conn, self.engine, &ids).await?;
        let proof = merkle::assemble_inclusion(index, size, &|id| nodes.get(&id).copied()).map_err(corrupt)?;
        let leaf = nodes
            .get(&merkle::NodeId::leaf(index))
            .copied()
            .ok_or_else(|| corrupt("leaf missing"))?;
        Ok((leaf, proof))
    }

    /// The consistency proof between the trees of `old` and `new` entries.
    pub async fn consistency_proof(&self, access: &Access, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        self.may_audit(access)?;
        self.public_consistency_proof(old, new).await
    }

    /// The consistency proof, for the public auditor console: hashes only.
    pub async fn public_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let mut conn = self.ledger.acquire().await?;
        self.check_size(&mut conn, new).await?;
        let ids = merkle::consistency_nodes(old, new).map_err(refused)?;
        let nodes = fetch_nodes(&mut conn, self.engine, &ids).await?;
        merkle::assemble_consistency(old, new, &|id| nodes.get(&id).copied()).map_err(corrupt)
    }

    async fn check_size(&self, conn: &mut sqlx::AnyConnection, size: u64) -> Result<(), StoreError> {
        let head: i64 = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        if size > head as u64 {
            // The size asked for is not echoed: no refused value is.
            return Err(StoreError::Invalid(format!(
                "the size asked for is beyond the log, which holds {head} entries"
            )));
        }
        Ok(())
    }

    /// Entries from `from` (a sequence number) on. Auditors see all; a
    /// platform sees the entries it made.
    pub async fn audit_page(&self, access: &Access, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let own = match self.authorize(access, Permission::ReadAudit) {
            Ok(_) => None,
            Err(_) => Some(self.authorize(access, Permission::ReadOwnAudit)?.get()),
        };
        self.entries_of(own, from, limit).await
    }

    /// One entry, for the public auditor console: entries carry no personal
    /// data, only pseudonymous references (invariant 7).
    pub async fn public_audit_entry(&self, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.entries_of(None, seq, 1).await?.into_iter().find(|e| e.seq == seq))
    }

    async fn entries_of(&self, own: Option<i64>, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query_as::<_, EntryRow>(
            "SELECT seq, entry, leaf_hash FROM audit_log WHERE seq >= $1 AND ($2 = 0 OR tenant_id = $3) ORDER BY seq LIMIT $4",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(own.is_some()))
        .bind(own.unwrap_or(0))
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.ledger)
        .await?;
        rows.into_iter()
            .map(|row| {
                let entry = match row.entry {
                    Some(bytes) => {
                        let decoded = AuditEntry::decode(&bytes).map_err(corrupt)?;
                        Some((bytes, decoded))
                    }
                    None => None,
                };
                Ok(StoredEntry {
                    seq: u64::try_from(row.seq).map_err(corrupt)?,
                    leaf_hash: row
                        .leaf_hash
                        .try_into()
                        .map_err(|_| corrupt("a leaf hash is not 32 bytes"))?,
                    entry,
                })
            })
            .collect()
    }

    /// Reductions and points per tenant, kind and month (`YYYYMM` bounds,
    /// inclusive). Auditors see every tenant; a platform its own.
    pub async fn reductions(&self, access: &Access, from: i64, to: i64) -> Result<ReductionReport, StoreError> {
        let own = match self.authorize(access, Permission::ReadReports) {
            Ok(_) => None,
            Err(_) => Some(self.authorize(access, Permission::ReadOwnReports)?.get()),
        };
        self.reductions_of(own, from, to).await
    }

    /// Every tenant's report, for the public auditor console: aggregates
    /// with small cells suppressed exactly as auditors receive them.
    pub async fn public_reductions(&self, from: i64, to: i64) -> Result<ReductionReport, StoreError> {
        self.reductions_of(None, from, to).await
    }

    async fn reductions_of(&self, own: Option<i64>, from: i64, to: i64) -> Result<ReductionReport, StoreError> {
        let rows = sqlx::query_as::<_, TotalsRow>(
            "SELECT tenant_id, kind, month, events, reduction_mg, points, people FROM reduction_totals \
             WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR tenant_id = $4) ORDER BY tenant_id, kind, month",
        )
        .bind(from)
        .bind(to)
        .bind(i64::from(own.is_some()))
        .bind(own.unwrap_or(0))
        .fetch_all(&self.ledger)
        .await?;
        let min_people = i64::from(self.policies.points.report_min_people);
        let mut report = ReductionReport {
            min_cell_people: min_people,
            cells: Vec::new(),
            suppressed: Vec::new(),
        };
        for row in rows {
            let cell = ReportCell {
                tenant: row.tenant_id,
                kind: row.kind,
                month: row.month,
                totals: Totals {
                    events: row.events,
                    reduction: Milligrams(row.reduction_mg),
                    points: row.points,
                },
            };
            // By people, not events: many events of one person are still
            // one person's behaviour.
            if row.people >= min_people {
                report.cells.push(cell);
                continue;
            }
            if report.suppressed.last().is_none_or(|s| s.tenant != cell.tenant) {
                report.suppressed.push(SuppressedCells {
                    tenant: cell.tenant,
                    cells: 0,
                    totals: Totals::default(),
                });
            }
            let s = report.suppressed.last_mut().expect("pushed above");
            s.cells += 1;
            s.totals.events += cell.totals.events;
            s.totals.reduction.0 += cell.totals.reduction.0;
            s.totals.points += cell.totals.points;
        }
        Ok(report)
    }

    /// Writes what an auditor needs to verify the log offline into `dir`:
    /// `entries.bin` (see docs/audit-format.md), every signed checkpoint as
    /// `checkpoints/<size>.note` (a fresh one covering everything included),
    /// and `public-key.vkey`. Returns the number of entries written.
    pub async fn export_audit(&self, dir: &Path) -> Result<u64, StoreError> {
        let io = |e: std::io::Error| StoreError::Config(format!("cannot write the export to {}: {e}", dir.display()));
        // A log that contradicts its checkpoints is exported all the same,
        // as it is, so the verifier can name where it went wrong.
        // Entries up to the fresh checkpoint exactly: the export is then
        // complete under it even while the service keeps appending.
        let bound = match self.checkpoint().await {
            Ok(note) => self
                .signer
                .verifier()
                .verify(&note, self.audit_origin())
                .map_or(-1, |cp| cp.size as i64),
            Err(e) => {
                tracing::warn!(error = %e, "exporting without a fresh checkpoint");
                -1
            }
        };
        std::fs::create_dir_all(dir.join("checkpoints")).map_err(io)?;
        std::fs::write(dir.join("public-key.vkey"), format!("{}\n", self.audit_public_key())).map_err(io)?;
        for row in sqlx::query("SELECT size, note FROM audit_checkpoints ORDER BY size")
            .fetch_all(&self.ledger)
            .await?
        {
            let (size, note): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
            std::fs::write(dir.join("checkpoints").join(format!("{size}.note")), note).map_err(io)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("entries.bin")).map_err(io)?);
        let mut after = 0i64;
        let mut written = 0u64;
        loop {
            let rows = sqlx::query_as::<_, LogRow>(
                "SELECT seq, entry, leaf_hash, chain_hash FROM audit_log WHERE seq > $1 AND ($2 < 0 OR seq <= $2) \
                 ORDER BY seq LIMIT 10000",
            )
            .bind(after)
            .bind(bound)
            .fetch_all(&self.ledger)
            .await?;
            for row in &rows {
                let seq = u64::try_from(row.seq).map_err(corrupt)?;
                crate::audit::offline::write_record(
                    &mut out,
                    seq,
                    &row.leaf_hash,
                    &row.chain_hash,
                    row.entry.as_deref(),
                )
                .map_err(io)?;
                after = row.seq;
                written += 1;
            }
            if rows.len() < 10_000 {
                break;
            }
        }
        out.flush().map_err(io)?;
        Ok(written)
    }
}
