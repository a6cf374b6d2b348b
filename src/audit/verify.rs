//! The one verifier of a stored audit log. It does no I/O: whoever reads the
//! log — the database pager or the export reader — feeds it the stored rows
//! in order, so every source is held to the same rules and a failure names
//! the same entry with the same words.
//!
//! Per row it checks the sequence, the leaf hash, the strict decoding and
//! the position the entry claims, that emptied entries form a prefix, that
//! nothing concerns an audit reference after its erasure, the chain hash,
//! and the tree root at every signed checkpoint size; at the end, that no
//! checkpoint is larger than the log. It also adds up the reductions and
//! points the log records.

use std::collections::{BTreeMap, HashSet};

use super::chain::{chain_hash, GENESIS};
use super::checkpoint::Checkpoint;
use super::merkle::{leaf_hash, Frontier, Hash};
use super::{Action, AuditEntry};

/// The first entry that does not verify, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("audit entry {seq}: {reason}")]
pub struct VerifyError {
    pub seq: u64,
    pub reason: String,
}

/// One row of the log as stored.
#[derive(Clone, Copy, Debug)]
pub struct StoredRow<'a> {
    pub seq: u64,
    /// `None` once retention emptied the entry.
    pub entry: Option<&'a [u8]>,
    pub leaf_hash: &'a [u8],
    pub chain_hash: &'a [u8],
}

/// Reductions and points per tenant, kind and month, from the log alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: i64,
    pub reduction_mg: i64,
    pub points: i64,
}

/// What a log that verified holds.
#[derive(Debug)]
pub struct VerifiedLog {
    pub entries: u64,
    /// The oldest entries, emptied by retention: the totals do not cover them.
    pub emptied: u64,
    /// How many signed checkpoints the log was checked against.
    pub checkpoints: usize,
    /// Whether a signed checkpoint covers every entry: an export must end at
    /// one, a live log may have grown past its last.
    pub covered_by_checkpoint: bool,
    /// The chain value after the last entry.
    pub head: Hash,
    /// Keyed by (tenant, kind, month as `YYYYMM`).
    pub totals: BTreeMap<(i64, String, i64), Totals>,
}

impl VerifiedLog {
    /// Checks that the log ends where a stored head says it does: a head
    /// beyond the last entry means entries were removed from the tail.
    pub fn check_head(&self, head_seq: i64, head_hash: &[u8]) -> Result<(), VerifyError> {
        let last = self.entries;
        if head_seq != last as i64 || head_hash != self.head.as_slice() {
            return Err(VerifyError {
                seq: last + 1,
                reason: format!("the log ends after entry {last} but its head records entry {head_seq}: entries were removed from the tail or the head was altered"),
            });
        }
        Ok(())
    }
}

/// Checks stored rows one by one, in sequence order, without holding the
/// log in memory.
pub struct LogVerifier {
    /// (size, root) of every signed checkpoint, smallest first.
    checkpoints: Vec<(u64, Hash)>,
    next_checkpoint: usize,
    tree: Frontier,
    chain: Hash,
    emptied: u64,
    erased: HashSet<[u8; 16]>,
    /// By (tenant, month), then kind: looked up by `&str`, so entries of a
    /// kind already seen allocate nothing. B-trees, as the keys are few and
    /// short: a lookup takes a few comparisons, fewer instructions than
    /// hashing the key.
    totals: BTreeMap<(i64, i64), BTreeMap<String, Totals>>,
}

impl LogVerifier {
    /// A verifier against these signed (already signature-checked)
    /// checkpoints, in any order. Checkpoints of the empty log are checked
    /// here, before the first entry.
    pub fn new(checkpoints: &[Checkpoint]) -> Result<Self, VerifyError> {
        let mut sorted: Vec<(u64, Hash)> = checkpoints.iter().map(|cp| (cp.size, cp.root)).collect();
        sorted.sort_by_key(|&(size, _)| size);
        let mut verifier = Self {
            checkpoints: sorted,
            next_checkpoint: 0,
            tree: Frontier::default(),
            chain: GENESIS,
            emptied: 0,
            erased: HashSet::new(),
            totals: BTreeMap::new(),
        };
        verifier.check_checkpoints_at_size()?;
        Ok(verifier)
    }

    /// How many rows verified so far.
    pub fn entries(&self) -> u64 {
        self.tree.size()
    }

    /// Checks the next stored row. A row whose entry retention emptied
    /// contributes its stored leaf hash: it can no longer be read, but
    /// changing it still breaks the chain at the next entry.
    pub fn push(&mut self, row: StoredRow<'_>) -> Result<(), VerifyError> {
        let expected = self.tree.size() + 1;
        let fail = |reason: String| VerifyError { seq: expected, reason };
        if row.seq != expected {
            return Err(fail(if row.seq > expected {
                format!("missing (the log continues at entry {})", row.seq)
            } else {
                format!("out of order (found entry {})", row.seq)
            }));
        }
        let leaf = match row.entry {
            Some(bytes) => {
                let leaf = leaf_hash(bytes);
                if row.leaf_hash != leaf {
                    return Err(fail("contents do not match their leaf hash (altered)".into()));
                }
                let entry = AuditEntry::decode(bytes).map_err(|e| fail(e.to_string()))?;
                if entry.seq != expected {
                    return Err(fail(format!("its contents claim position {}", entry.seq)));
                }
                self.apply_rules(&entry).map_err(|reason| fail(reason.into()))?;
                leaf
            }
            None if self.emptied != self.tree.size() => {
                return Err(fail(
                    "emptied out of turn: retention empties only the oldest entries".into(),
                ));
            }
            None => {
                self.emptied += 1;
                row.leaf_hash
                    .try_into()
                    .map_err(|_| fail("pruned entry has no 32-byte leaf hash".into()))?
            }
        };
        let chain = chain_hash(&self.chain, &leaf);
        if row.chain_hash != chain {
            return Err(fail(
                "does not match the hash chain (it, or an entry before it, was altered, removed or inserted)".into(),
            ));
        }
        self.chain = chain;
        self.tree.push(leaf);
        self.check_checkpoints_at_size()
    }

    /// Checks that no signed checkpoint is larger than the log (a larger one
    /// means entries were cut from the tail), and reports what it holds.
    pub fn finish(self) -> Result<VerifiedLog, VerifyError> {
        let entries = self.tree.size();
        if let Some(&(size, _)) = self.checkpoints.get(self.next_checkpoint) {
            return Err(VerifyError {
                seq: entries + 1,
                reason: format!("missing: a signed checkpoint covers {size} entries, the log holds {entries}"),
            });
        }
        Ok(VerifiedLog {
            entries,
            emptied: self.emptied,
            checkpoints: self.checkpoints.len(),
            covered_by_checkpoint: self.checkpoints.last().is_some_and(|&(size, _)| size == entries),
            head: self.chain,
            totals: self
                .totals
                .into_iter()
                .flat_map(|((tenant, month), kinds)| kinds.into_iter().map(move |(kind, t)| ((tenant, kind, month), t)))
                .collect(),
        })
    }

    /// Checks the tree root against every signed checkpoint of the current
    /// size, naming the last entry (or the first, for the empty log).
    fn check_checkpoints_at_size(&mut self) -> Result<(), VerifyError> {
        let size = self.tree.size();
        while let Some(&(_, root)) = self
            .checkpoints
            .get(self.next_checkpoint)
            .filter(|&&(cp_size, _)| cp_size == size)
        {
            if root != self.tree.root() {
                return Err(checkpoint_mismatch(size));
            }
            self.next_checkpoint += 1;
        }
        Ok(())
    }

    /// The log's own rules, and the totals it implies.
    fn apply_rules(&mut self, entry: &AuditEntry) -> Result<(), &'static str> {
        if let Some(subject) = entry.action.subject() {
            if self.erased.contains(subject.as_bytes()) {
                return Err("an entry for an audit reference after its erasure entry");
            }
        }
        match &entry.action {
            Action::SubjectErased { subject, .. } => {
                self.erased.insert(*subject.as_bytes());
            }
            Action::RecordWritten {
                kind,
                day,
                reduction_mg,
                points,
                ..
            } => {
                let tenant = entry.actor.map_or(0, |t| t.get());
                let kinds = self.totals.entry((tenant, i64::from(day.month()))).or_default();
                let totals = match kinds.get_mut(kind.as_str()) {
                    Some(t) => t,
                    None => kinds.entry(kind.clone()).or_default(),
                };
                totals.events += 1;
                totals.reduction_mg += reduction_mg;
                totals.points += points;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cold]
fn checkpoint_mismatch(size: u64) -> VerifyError {
    if size == 0 {
        VerifyError {
            seq: 1,
            reason: "a signed checkpoint of the empty log has a wrong root".into(),
        }
    } else {
        VerifyError {
            seq: size,
            reason: format!("the log up to here does not match the signed checkpoint of size {size}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::tests::samples;
    use crate::audit::offline::{verify_entries, write_record, OfflineError};
    use crate::audit::{ErasureCounts, ReadScope};
    use crate::crypto::AuditRef;
    use crate::domain::Day;

    #[derive(Clone)]
    struct Row {
        seq: u64,
        entry: Option<Vec<u8>>,
        leaf: Hash,
        chain: Hash,
    }

    impl Row {
        fn stored(&self) -> StoredRow<'_> {
            StoredRow {
                seq: self.seq,
                entry: self.entry.as_deref(),
                leaf_hash: &self.leaf,
                chain_hash: &self.chain,
            }
        }
    }

    /// Rows as the service stores them, hashes and all: a forger who
    /// re-hashes leaves nothing for the chain or the tree to catch.
    fn stored(entries: &[AuditEntry]) -> Vec<Row> {
        let mut prev = GENESIS;
        entries
            .iter()
            .map(|e| {
                let bytes = e.encode();
                let leaf = leaf_hash(&bytes);
                prev = chain_hash(&prev, &leaf);
                Row {
                    seq: e.seq,
                    entry: Some(bytes),
                    leaf,
                    chain: prev,
                }
            })
            .collect()
    }

    /// The rows with the given entries emptied, as retention does.
    fn emptied(mut rows: Vec<Row>, seqs: &[u64]) -> Vec<Row> {
        for row in &mut rows {
            if seqs.contains(&row.seq) {
                row.entry = None;
            }
        }
        rows
    }

    /// A checkpoint over the rows' stored leaf hashes.
    fn checkpoint_over(rows: &[Row]) -> Checkpoint {
        let mut tree = Frontier::default();
        for row in rows {
            tree.push(row.leaf);
        }
        Checkpoint::new("test/audit", tree.size(), tree.root())
    }

    fn from_rows(rows: &[Row], checkpoints: &[Checkpoint]) -> Result<VerifiedLog, VerifyError> {
        let mut log = LogVerifier::new(checkpoints)?;
        for row in rows {
            log.push(row.stored())?;
        }
        log.finish()
    }

    fn from_export(rows: &[Row], checkpoints: &[Checkpoint]) -> Result<VerifiedLog, VerifyError> {
        let mut bytes = Vec::new();
        for row in rows {
            write_record(&mut bytes, row.seq, &row.leaf, &row.chain, row.entry.as_deref()).unwrap();
        }
        match verify_entries(&bytes, checkpoints, false) {
            Ok(verified) => Ok(verified),
            Err(OfflineError::Entry(e)) => Err(e),
            Err(OfflineError::Export(e)) => panic!("export refused as a whole: {e}"),
        }
    }

    /// Feeds the same rows as the database pager would and as an export,
    /// and checks that both come to the same verdict.
    fn both_ways(rows: &[Row], checkpoints: &[Checkpoint]) -> Result<VerifiedLog, VerifyError> {
        let online = from_rows(rows, checkpoints);
        let offline = from_export(rows, checkpoints);
        match (&online, &offline) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (a.entries, a.emptied, a.head, &a.totals),
                    (b.entries, b.emptied, b.head, &b.totals)
                );
            }
            (a, b) => assert_eq!(a.as_ref().err(), b.as_ref().err()),
        }
        online
    }

    fn verified_both_ways(rows: &[Row]) -> Result<VerifiedLog, VerifyError> {
        both_ways(rows, &[checkpoint_over(rows)])
    }

    /// The samples, then one more entry.
    fn samples_and(action: Action) -> Vec<AuditEntry> {
        let mut entries = samples();
        entries.push(AuditEntry {
            seq: entries.len() as u64 + 1,
            at: 1_721_900_000,
            actor: None,
            action,
        });
        entries
    }

    #[test]
    fn intact_log_verifies() {
        let rows = stored(&samples());
        let verified = verified_both_ways(&rows).unwrap();
        assert_eq!(verified.entries, rows.len() as u64);
        assert_eq!(verified.head, rows.last().unwrap().chain);
        assert!(verified.covered_by_checkpoint);
        verified.check_head(rows.len() as i64, &verified.head).unwrap();
    }

    #[test]
    fn nothing_may_concern_an_audit_reference_after_its_erasure() {
        // The samples erase the reference [5; 16] at entry 8.
        let erased = AuditRef::from_bytes([5; 16]);
        let after = Action::SubjectRead {
            subject: erased,
            scope: ReadScope::Account,
            items: 1,
        };
        let rows = stored(&samples_and(after));
        let e = verified_both_ways(&rows).unwrap_err();
        assert_eq!(e.seq, rows.len() as u64);
        assert_eq!(e.reason, "an entry for an audit reference after its erasure entry");

        // Erasing it again concerns it too.
        let again = Action::SubjectErased {
            subject: erased,
            key_id: [9; 16],
            counts: ErasureCounts::default(),
        };
        assert_eq!(
            verified_both_ways(&stored(&samples_and(again))).unwrap_err().seq,
            samples().len() as u64 + 1
        );

        // Another person's entries go on.
        let other = Action::SubjectRead {
            subject: AuditRef::from_bytes([6; 16]),
            scope: ReadScope::Account,
            items: 1,
        };
        assert!(verified_both_ways(&stored(&samples_and(other))).is_ok());
    }

    #[test]
    fn only_the_oldest_entries_may_be_emptied() {
        let rows = stored(&samples());
        let verified = verified_both_ways(&emptied(rows.clone(), &[1, 2, 3])).unwrap();
        assert_eq!(verified.emptied, 3);
        assert_eq!(verified.entries, rows.len() as u64);
        let all: Vec<u64> = (1..=rows.len() as u64).collect();
        assert_eq!(
            verified_both_ways(&emptied(rows.clone(), &all)).unwrap().emptied,
            all.len() as u64
        );

        for (gappy, named) in [(&[1, 3][..], 3), (&[2], 2), (&[1, 2, 4, 5], 4)] {
            let e = verified_both_ways(&emptied(rows.clone(), gappy)).unwrap_err();
            assert_eq!(e.seq, named, "{gappy:?}");
            assert_eq!(
                e.reason,
                "emptied out of turn: retention empties only the oldest entries"
            );
        }
    }

    #[test]
    fn an_emptied_entry_keeps_its_leaf_hash_guarded() {
        let mut rows = emptied(stored(&samples()), &[1, 2, 3]);
        rows[1].leaf[0] ^= 1;
        let checkpoints = [checkpoint_over(&stored(&samples()))];
        assert_eq!(both_ways(&rows, &checkpoints).unwrap_err().seq, 2);
        // A stored leaf hash of the wrong length is refused, not trusted.
        let mut log = LogVerifier::new(&[]).unwrap();
        let row = &rows[0];
        let short = StoredRow {
            leaf_hash: &row.leaf[..31],
            ..row.stored()
        };
        assert_eq!(
            log.push(short).unwrap_err().reason,
            "pruned entry has no 32-byte leaf hash"
        );
    }

    #[test]
    fn totals_cover_the_readable_records() {
        let month = i64::from(Day::from_days(19_929).unwrap().month());
        let rows = stored(&samples());
        let totals = verified_both_ways(&rows).unwrap().totals;
        assert_eq!(totals.len(), 2);
        assert_eq!(
            totals[&(1, "transit_ride".to_owned(), month)],
            Totals {
                events: 1,
                reduction_mg: 80_000,
                points: 10
            }
        );
        assert_eq!(totals[&(1, "clean_plate".to_owned(), month)].events, 1);
        // The emptied prefix is not counted.
        let totals = verified_both_ways(&emptied(rows, &[1, 2, 3])).unwrap().totals;
        assert_eq!(totals.keys().map(|k| k.1.as_str()).collect::<Vec<_>>(), ["clean_plate"]);
    }

    #[test]
    fn every_single_byte_change_is_caught_at_its_entry() {
        let rows = stored(&samples());
        let checkpoints = [checkpoint_over(&rows)];
        for i in 0..rows.len() {
            for byte in 0..rows[i].entry.as_ref().unwrap().len() {
                let mut bad = rows.clone();
                bad[i].entry.as_mut().unwrap()[byte] ^= 0x01;
                assert_eq!(
                    both_ways(&bad, &checkpoints).unwrap_err().seq,
                    i as u64 + 1,
                    "entry {i} byte {byte}"
                );
            }
        }
    }

    #[test]
    fn deletion_swap_repetition_and_insertion_are_caught() {
        let rows = stored(&samples());
        let checkpoints = [checkpoint_over(&rows)];
        let mut deleted = rows.clone();
        deleted.remove(2);
        let e = both_ways(&deleted, &checkpoints).unwrap_err();
        assert_eq!(
            (e.seq, e.reason.as_str()),
            (3, "missing (the log continues at entry 4)")
        );
        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        let e = both_ways(&swapped, &checkpoints).unwrap_err();
        assert_eq!(
            (e.seq, e.reason.as_str()),
            (2, "missing (the log continues at entry 3)")
        );
        let mut repeated = rows.clone();
        repeated.insert(2, rows[1].clone());
        let e = both_ways(&repeated, &checkpoints).unwrap_err();
        assert_eq!((e.seq, e.reason.as_str()), (3, "out of order (found entry 2)"));
        // A well-formed entry slipped in, later ones renumbered but not re-chained.
        let mut inserted = samples();
        inserted.insert(4, inserted[3].clone());
        for (i, e) in inserted.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        let mut forged = stored(&inserted);
        for (row, original) in forged[5..].iter_mut().zip(&rows[4..]) {
            row.chain = original.chain;
        }
        forged[4].chain = [0; 32];
        let e = both_ways(&forged, &checkpoints).unwrap_err();
        assert_eq!(e.seq, 5);
        assert!(e.reason.starts_with("does not match the hash chain"), "{}", e.reason);
    }

    #[test]
    fn the_tail_is_guarded_by_the_head_and_by_larger_checkpoints() {
        let rows = stored(&samples());
        let truncated = &rows[..3];
        let verified = from_rows(truncated, &[]).unwrap();
        assert!(!verified.covered_by_checkpoint);
        let head = rows.last().unwrap();
        let e = verified.check_head(head.seq as i64, &head.chain).unwrap_err();
        assert_eq!(e.seq, 4);
        // The right length, an altered hash.
        let e = verified.check_head(3, &head.chain).unwrap_err();
        assert_eq!(e.seq, 4);

        let e = both_ways(truncated, &[checkpoint_over(&rows)]).unwrap_err();
        assert_eq!(e.seq, 4);
        assert_eq!(
            e.reason,
            format!(
                "missing: a signed checkpoint covers {} entries, the log holds 3",
                rows.len()
            )
        );
    }

    #[test]
    fn the_tree_is_checked_at_every_checkpoint_size() {
        let rows = stored(&samples());
        let all = checkpoint_over(&rows);
        let empty = checkpoint_over(&[]);
        let mut wrong = checkpoint_over(&rows[..5]);
        wrong.root[0] ^= 1;
        let e = both_ways(&rows, &[all.clone(), wrong, empty.clone()]).unwrap_err();
        assert_eq!(e.seq, 5);
        assert_eq!(
            e.reason,
            "the log up to here does not match the signed checkpoint of size 5"
        );

        let mut wrong_empty = empty.clone();
        wrong_empty.root[0] ^= 1;
        let e = both_ways(&rows, &[all.clone(), wrong_empty]).unwrap_err();
        assert_eq!(e.seq, 1);
        assert_eq!(e.reason, "a signed checkpoint of the empty log has a wrong root");

        let checkpoints = [checkpoint_over(&rows[..5]), empty, all];
        assert_eq!(both_ways(&rows, &checkpoints).unwrap().checkpoints, 3);
    }
}
