//! The hash chain over audit entries.
//!
//! ```text
//! leaf(e)      = BLAKE3(0x00 || encode(e))
//! chain(0)     = 32 zero bytes
//! chain(n)     = BLAKE3-keyed(K, chain(n-1) || leaf(e_n)),
//!                K = BLAKE3-derive-key("carbon-ledger 2026 audit chain v1", "")
//! ```
//!
//! Leaves use the RFC 6962 leaf prefix so the same leaf hashes can feed a
//! Merkle tree; the chain uses its own derived-key context so a chain value
//! can never be confused with a leaf or a tree node.

use super::entry::AuditEntry;

pub const GENESIS: [u8; 32] = [0; 32];

pub use super::merkle::leaf_hash;

pub fn chain_hash(prev: &[u8; 32], leaf: &[u8; 32]) -> [u8; 32] {
    // A key of its own, derived once: no chain value can be mistaken for a
    // leaf or a tree node, which are unkeyed.
    static CHAIN_KEY: std::sync::LazyLock<[u8; 32]> =
        std::sync::LazyLock::new(|| blake3::derive_key("carbon-ledger 2026 audit chain v1", b""));
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(prev);
    input[32..].copy_from_slice(leaf);
    *blake3::keyed_hash(&CHAIN_KEY, &input).as_bytes()
}

/// The first entry that does not verify, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("audit entry {seq}: {reason}")]
pub struct VerifyError {
    pub seq: u64,
    pub reason: String,
}

/// Checks stored entries one by one, in sequence order, without holding the
/// log in memory.
pub struct ChainVerifier {
    next_seq: u64,
    prev: [u8; 32],
    /// Whether a readable entry was seen: retention empties only a prefix.
    seen_readable: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS,
            seen_readable: false,
        }
    }
}

impl ChainVerifier {
    /// Checks the next stored row: its position, its encoding, its leaf hash
    /// and its chain hash. A row whose entry the retention sweeper emptied
    /// contributes its stored leaf hash: it can no longer be read, but
    /// changing it still breaks the chain at the next entry. Returns the
    /// decoded entry, if it is still there.
    pub fn push(
        &mut self,
        stored_seq: i64,
        entry_bytes: Option<&[u8]>,
        stored_leaf: &[u8],
        stored_chain: &[u8],
    ) -> Result<Option<AuditEntry>, VerifyError> {
        let expected = self.next_seq;
        let fail = |reason: String| VerifyError { seq: expected, reason };
        if stored_seq != expected as i64 {
            return Err(fail(if stored_seq > expected as i64 {
                format!("missing (the log continues at entry {stored_seq})")
            } else {
                format!("out of order (found entry {stored_seq})")
            }));
        }
        let (leaf, entry) = match entry_bytes {
            Some(bytes) => {
                let entry = AuditEntry::decode(bytes).map_err(|e| fail(e.to_string()))?;
                if entry.seq != expected {
                    return Err(fail(format!("its contents claim position {}", entry.seq)));
                }
                let leaf = leaf_hash(bytes);
                if leaf.as_slice() != stored_leaf {
                    return Err(fail("contents do not match their leaf hash (altered)".into()));
                }
                self.seen_readable = true;
                (leaf, Some(entry))
            }
            None if self.seen_readable => {
                return Err(fail(
                    "emptied out of turn: retention empties only the oldest entries".into(),
                ));
            }
            None => {
                let leaf: [u8; 32] = stored_leaf
                    .try_into()
                    .map_err(|_| fail("pruned entry has no 32-byte leaf hash".into()))?;
                (leaf, None)
            }
        };
        let chain = chain_hash(&self.prev, &leaf);
        if chain.as_slice() != stored_chain {
            return Err(fail(
                "does not match the hash chain (it, or an entry before it, was altered, removed or inserted)".into(),
            ));
        }
        self.prev = chain;
        self.next_seq += 1;
        Ok(entry)
    }

    /// Checks that the log ends where the head says it does.
    pub fn finish(self, head_seq: i64, head_hash: &[u8]) -> Result<Checked, VerifyError> {
        let last = self.next_seq - 1;
        if head_seq != last as i64 || head_hash != self.prev.as_slice() {
            return Err(VerifyError {
                seq: last + 1,
                reason: format!("the log ends after entry {last} but its head records entry {head_seq}: entries were removed from the tail or the head was altered"),
            });
        }
        Ok(Checked {
            entries: last,
            head: self.prev,
        })
    }

    /// The chain value after the entries pushed so far.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.next_seq - 1, self.prev)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub entries: u64,
    pub head: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::tests::samples;

    type Row = (i64, Vec<u8>, [u8; 32], [u8; 32]);

    fn stored() -> Vec<Row> {
        let mut prev = GENESIS;
        samples()
            .into_iter()
            .map(|e| {
                let bytes = e.encode();
                let leaf = leaf_hash(&bytes);
                prev = chain_hash(&prev, &leaf);
                (e.seq as i64, bytes, leaf, prev)
            })
            .collect()
    }

    fn verify(rows: &[Row], head: (i64, [u8; 32])) -> Result<Checked, VerifyError> {
        verify_pruned(rows, 0, head)
    }

    /// Verifies with the first `pruned` entries emptied, as retention does.
    fn verify_pruned(rows: &[Row], pruned: usize, head: (i64, [u8; 32])) -> Result<Checked, VerifyError> {
        let mut v = ChainVerifier::default();
        for (i, (seq, bytes, leaf, chain)) in rows.iter().enumerate() {
            v.push(*seq, (i >= pruned).then_some(bytes.as_slice()), leaf, chain)?;
        }
        v.finish(head.0, &head.1)
    }

    #[test]
    fn intact_log_verifies() {
        let rows = stored();
        let head = (rows.len() as i64, rows.last().unwrap().3);
        assert_eq!(verify(&rows, head).unwrap().entries, rows.len() as u64);
    }

    #[test]
    fn pruned_entries_still_chain_and_their_hashes_are_checked() {
        let rows = stored();
        let head = (rows.len() as i64, rows.last().unwrap().3);
        assert!(verify_pruned(&rows, 3, head).is_ok());
        // Only a prefix may be emptied.
        let mut v = ChainVerifier::default();
        v.push(rows[0].0, Some(&rows[0].1), &rows[0].2, &rows[0].3).unwrap();
        assert_eq!(v.push(rows[1].0, None, &rows[1].2, &rows[1].3).unwrap_err().seq, 2);
        let mut bad = rows.clone();
        bad[1].2[0] ^= 1; // a pruned entry's leaf hash
        assert_eq!(verify_pruned(&bad, 3, head).unwrap_err().seq, 2);
    }

    #[test]
    fn every_single_byte_change_is_caught_at_its_entry() {
        let rows = stored();
        let head = (rows.len() as i64, rows.last().unwrap().3);
        for i in 0..rows.len() {
            for byte in 0..rows[i].1.len() {
                let mut bad = rows.clone();
                bad[i].1[byte] ^= 0x01;
                assert_eq!(
                    verify(&bad, head).unwrap_err().seq,
                    i as u64 + 1,
                    "entry {i} byte {byte}"
                );
            }
        }
    }

    #[test]
    fn deletion_swap_and_truncation_are_caught() {
        let rows = stored();
        let head = (rows.len() as i64, rows.last().unwrap().3);
        let mut deleted = rows.clone();
        deleted.remove(2);
        assert_eq!(verify(&deleted, head).unwrap_err().seq, 3);
        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        assert_eq!(verify(&swapped, head).unwrap_err().seq, 2);
        let truncated = &rows[..3];
        assert_eq!(verify(truncated, head).unwrap_err().seq, 4);
    }
}
