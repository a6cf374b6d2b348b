//! RFC 6962 / RFC 9162 Merkle tree over the audit log, with H = BLAKE3-256.
//!
//! ```text
//! leaf_hash(e)      = BLAKE3(0x00 || e)
//! node_hash(l, r)   = BLAKE3(0x01 || l || r)
//! MTH({})           = BLAKE3("")
//! MTH({d0})         = leaf_hash(d0)
//! MTH(D[n]), n > 1  = node_hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//! ```
//!
//! Storage model: the caller keeps a table of *complete* subtrees only, keyed by [`NodeId`]
//! (level 0 = leaf hashes). [`nodes_completed_by_append`] says which rows to add after each
//! append. Every proof operation is split in two phases so that an async caller can fetch what
//! it needs in one query: `*_nodes` lists the [`NodeId`]s, `assemble_*` builds the answer from
//! them. A subtree that is not complete (the right edge of the tree) is recomputed from the
//! complete subtrees it decomposes into.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) follows RFC 9162 §2.1.3.2 and
//! §2.1.4.2 exactly and needs nothing but the proof. A tree size and a root hash are only
//! meaningful together: always take both from the same verified checkpoint.

use thiserror::Error;

/// A BLAKE3-256 digest.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// `BLAKE3(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    // One-shot hashing of a stack copy is markedly faster than the
    // incremental hasher for the short entries of an audit log.
    let mut buf = [0u8; 256];
    if entry.len() < buf.len() {
        buf[0] = LEAF_PREFIX;
        buf[1..=entry.len()].copy_from_slice(entry);
        return *blake3::hash(&buf[..=entry.len()]).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF_PREFIX]);
    hasher.update(entry);
    *hasher.finalize().as_bytes()
}

/// `BLAKE3(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    *blake3::hash(&buf).as_bytes()
}

/// The root of the empty tree, `BLAKE3("")` (RFC 9162: `MTH({}) = HASH()`).
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// A complete subtree: the hash of leaves `[index * 2^level, (index + 1) * 2^level)`.
/// Level 0 holds the leaf hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

impl NodeId {
    /// The leaf hash of leaf `index`.
    pub const fn leaf(index: u64) -> Self {
        NodeId { level: 0, index }
    }

    /// The two children `(level - 1, 2i)` and `(level - 1, 2i + 1)`; `None` for a leaf, or if
    /// the child index does not fit in a `u64`.
    pub fn children(&self) -> Option<(NodeId, NodeId)> {
        let level = self.level.checked_sub(1)?;
        let left = self.index.checked_mul(2)?;
        let right = left.checked_add(1)?;
        Some((NodeId { level, index: left }, NodeId { level, index: right }))
    }
}

/// Errors from building or verifying proofs.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldSizeTooLarge { old: u64, new: u64 },
    #[error("node (level {}, index {}) was not fetched", .0.level, .0.index)]
    MissingNode(NodeId),
    #[error("proof has too many elements")]
    ProofTooLong,
    #[error("proof has too few elements")]
    ProofTooShort,
    #[error("proof does not lead to the old root")]
    OldRootMismatch,
    #[error("proof does not lead to the root")]
    RootMismatch,
}

/// Leaves `[start, end)`, non-empty, forming a subtree of the RFC 6962 shape: `start` is a
/// multiple of a power of two that is at least `end - start`. Every range that occurs in
/// `MTH`, `PATH` and `PROOF` is of this form, which makes the decomposition below exact.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
}

impl Span {
    /// The complete subtrees whose fold is `MTH(D[start:end])`, largest (leftmost) first.
    fn push_nodes(self, out: &mut Vec<NodeId>) {
        let mut pos = self.start;
        let mut remaining = self.end - self.start;
        while remaining > 0 {
            let level = u64::BITS - 1 - remaining.leading_zeros();
            out.push(NodeId {
                level,
                index: pos >> level,
            });
            let width = 1u64 << level;
            // pos + width <= end, so no overflow.
            pos += width;
            remaining -= width;
        }
    }

    fn hash(self, fetched: &impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, ProofError> {
        let mut nodes = Vec::new();
        self.push_nodes(&mut nodes);
        fold_nodes(&nodes, fetched)
    }
}

/// `MTH` of consecutive complete subtrees listed in decreasing size: the fold from the right.
fn fold_nodes(nodes: &[NodeId], fetched: &impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, ProofError> {
    let mut acc: Option<Hash> = None;
    for &id in nodes.iter().rev() {
        let h = fetched(id).ok_or(ProofError::MissingNode(id))?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The largest power of two strictly less than `n`; `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

fn nodes_of(spans: &[Span]) -> Vec<NodeId> {
    let mut out = Vec::new();
    for span in spans {
        span.push_nodes(&mut out);
    }
    out
}

fn hashes_of(spans: &[Span], fetched: &impl Fn(NodeId) -> Option<Hash>) -> Result<Vec<Hash>, ProofError> {
    spans.iter().map(|span| span.hash(fetched)).collect()
}

/// The complete subtrees of level >= 1 that become complete when leaf `leaf_index` is
/// appended, in increasing level order. Compute each as
/// `node_hash(get(level - 1, 2i), get(level - 1, 2i + 1))` after storing the leaf itself
/// as `NodeId::leaf(leaf_index)`.
/// The right edge of a tree being built leaf by leaf (a compact range):
/// the roots of its complete subtrees, largest first. Gives the root at any
/// size in O(log n) memory, for verifiers that stream the log.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    /// (level, hash) of each complete subtree, levels strictly decreasing.
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.stack.iter().rev();
        let Some(&(_, mut hash)) = nodes.next() else {
            return empty_root();
        };
        for (_, left) in nodes {
            hash = node_hash(left, &hash);
        }
        hash
    }
}

pub fn nodes_completed_by_append(leaf_index: u64) -> Vec<NodeId> {
    let count = u128::from(leaf_index) + 1;
    (1..=count.trailing_zeros())
        .map(|level| NodeId {
            level,
            // count >> level >= 1, and (count >> level) - 1 < 2^64.
            index: ((count >> level) - 1) as u64,
        })
        .collect()
}

/// Nodes needed for the root of the tree of size `size` (none for the empty tree).
pub fn root_nodes(size: u64) -> Result<Vec<NodeId>, ProofError> {
    let mut out = Vec::new();
    if size > 0 {
        Span { start: 0, end: size }.push_nodes(&mut out);
    }
    Ok(out)
}

/// The root of the tree of size `size`.
pub fn assemble_root(size: u64, fetched: &impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, ProofError> {
    fold_nodes(&root_nodes(size)?, fetched)
}

/// `PATH(m, D[n])`, as the subtrees whose hashes form it, leaf end first.
fn inclusion_spans(index: u64, size: u64) -> Result<Vec<Span>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut start, mut end) = (0u64, size);
    let mut siblings = Vec::new();
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if index < mid {
            siblings.push(Span { start: mid, end });
            end = mid;
        } else {
            siblings.push(Span { start, end: mid });
            start = mid;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// `PROOF(m, D[n])`: the subtrees whose hashes form it, in proof order.
fn consistency_spans(old: u64, new: u64) -> Result<Vec<Span>, ProofError> {
    if old > new {
        return Err(ProofError::OldSizeTooLarge { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:end], whole) with 0 < m <= end - start.
    let (mut start, mut end, mut m, mut whole) = (0u64, new, old, true);
    let mut siblings = Vec::new();
    let base = loop {
        let n = end - start;
        if m == n {
            break (!whole).then_some(Span { start, end });
        }
        let k = split_point(n);
        if m <= k {
            siblings.push(Span { start: start + k, end });
            end = start + k;
        } else {
            siblings.push(Span { start, end: start + k });
            start += k;
            m -= k;
            whole = false;
        }
    };
    Ok(base.into_iter().chain(siblings.into_iter().rev()).collect())
}

/// Nodes needed for the inclusion proof of leaf `index` in the tree of size `size`.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(nodes_of(&inclusion_spans(index, size)?))
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[size])`.
pub fn assemble_inclusion(
    index: u64,
    size: u64,
    fetched: &impl Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    hashes_of(&inclusion_spans(index, size)?, fetched)
}

/// Nodes needed for the consistency proof from size `old` to size `new`.
pub fn consistency_nodes(old: u64, new: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(nodes_of(&consistency_spans(old, new)?))
}

/// RFC 9162 §2.1.4.1 `PROOF(old, D[new])`; empty when `old == 0` or `old == new`.
pub fn assemble_consistency(
    old: u64,
    new: u64,
    fetched: &impl Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    hashes_of(&consistency_spans(old, new)?, fetched)
}

/// Shift `fn` and `sn` right while `fn` is non-zero and even.
fn shift_while_even(fnum: &mut u64, snum: &mut u64) {
    while *fnum & 1 == 0 && *fnum != 0 {
        *fnum >>= 1;
        *snum >>= 1;
    }
}

/// RFC 9162 §2.1.3.2: checks that `leaf` (a [`leaf_hash`]) is leaf `index` of the tree of
/// size `size` whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnum, mut snum) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snum == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node_hash(p, &r);
            shift_while_even(&mut fnum, &mut snum);
        } else {
            r = node_hash(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    if snum != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of size `new_size` with root `new_root` extends the
/// tree of size `old_size` with root `old_root`.
///
/// `old_size == new_size` needs an empty proof and equal roots. `old_size == 0` needs an empty
/// proof and `old_root` equal to [`empty_root`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeTooLarge {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::ProofTooLong);
        }
        if old_size == 0 {
            if *old_root != empty_root() {
                return Err(ProofError::OldRootMismatch);
            }
        } else if old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // 1. An empty path fails.
    if proof.is_empty() {
        return Err(ProofError::ProofTooShort);
    }
    // 2. If the old size is a power of two, prepend the old root.
    let prefix = old_size.is_power_of_two().then_some(old_root);
    let mut path = prefix.into_iter().chain(proof.iter());
    // 3., 4.
    let (mut fnum, mut snum) = (old_size - 1, new_size - 1);
    while fnum & 1 == 1 {
        fnum >>= 1;
        snum >>= 1;
    }
    // 5. The path has at least one element here.
    let first = path.next().ok_or(ProofError::ProofTooShort)?;
    let (mut fr, mut sr) = (*first, *first);
    // 6.
    for c in path {
        if snum == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fnum & 1 == 1 || fnum == snum {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_while_even(&mut fnum, &mut snum);
        } else {
            sr = node_hash(&sr, c);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    // 7.
    if snum != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_frontier_gives_every_root() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.root(), ref_mth(&leaves[..=i]), "size {}", i + 1);
        }
    }

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    // ---- Naive reference implementation, RFC 6962 §2.1, over leaf hashes ----

    fn largest_pow2_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn ref_mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => *blake3::hash(b"").as_bytes(),
            1 => leaves[0],
            n => {
                let k = largest_pow2_below(n);
                node_hash(&ref_mth(&leaves[..k]), &ref_mth(&leaves[k..]))
            }
        }
    }

    fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = largest_pow2_below(n);
        if m < k {
            let mut p = ref_path(m, &leaves[..k]);
            p.push(ref_mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &leaves[k..]);
            p.push(ref_mth(&leaves[..k]));
            p
        }
    }

    fn ref_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![ref_mth(leaves)] };
        }
        let k = largest_pow2_below(n);
        if m <= k {
            let mut p = ref_subproof(m, &leaves[..k], whole);
            p.push(ref_mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &leaves[k..], false);
            p.push(ref_mth(&leaves[..k]));
            p
        }
    }

    fn ref_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        if m == 0 || m == leaves.len() {
            Vec::new()
        } else {
            ref_subproof(m, leaves, true)
        }
    }

    // ---- A store built the way the caller builds it ----

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("entry-{i}").as_bytes())).collect()
    }

    fn build_store(leaves: &[Hash]) -> BTreeMap<NodeId, Hash> {
        let mut store = BTreeMap::new();
        for (i, leaf) in leaves.iter().enumerate() {
            store.insert(NodeId::leaf(i as u64), *leaf);
            let completed = nodes_completed_by_append(i as u64);
            let mut last_level = 0;
            for id in completed {
                assert_eq!(id.level, last_level + 1, "increasing level order");
                last_level = id.level;
                let (l, r) = id.children().unwrap();
                let h = node_hash(&store[&l], &store[&r]);
                assert!(store.insert(id, h).is_none(), "{id:?} completed twice");
            }
        }
        store
    }

    /// Answers only for `ids` (the two-phase contract) and only for nodes complete at `size`.
    fn fetcher<'a>(
        store: &'a BTreeMap<NodeId, Hash>,
        ids: &[NodeId],
        size: u64,
    ) -> impl Fn(NodeId) -> Option<Hash> + 'a {
        for id in ids {
            let end = (u128::from(id.index) + 1) << id.level;
            assert!(end <= u128::from(size), "{id:?} is not complete at size {size}");
        }
        let allowed: BTreeSet<NodeId> = ids.iter().copied().collect();
        move |id| allowed.contains(&id).then(|| store[&id])
    }

    fn flip(h: &Hash, byte: usize) -> Hash {
        let mut h = *h;
        h[byte % 32] ^= 0x01;
        h
    }

    const MAX: usize = 64;

    #[test]
    fn hash_definitions() {
        let mut pre = vec![0u8];
        pre.extend_from_slice(b"abc");
        assert_eq!(leaf_hash(b"abc"), *blake3::hash(&pre).as_bytes());
        let (l, r) = ([1u8; 32], [2u8; 32]);
        let mut pre = vec![1u8];
        pre.extend_from_slice(&l);
        pre.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), *blake3::hash(&pre).as_bytes());
        assert_eq!(
            hex::encode(empty_root()),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn append_reproduces_exactly_the_complete_subtrees() {
        let all = leaves(MAX + 5);
        for n in 0..=all.len() {
            let store = build_store(&all[..n]);
            let mut expected = BTreeMap::new();
            for level in 0..8u32 {
                let width = 1usize << level;
                for index in 0..n / width {
                    let id = NodeId {
                        level,
                        index: index as u64,
                    };
                    expected.insert(id, ref_mth(&all[index * width..(index + 1) * width]));
                }
            }
            assert_eq!(store, expected, "size {n}");
        }
        let ids = |v: &[(u32, u64)]| {
            v.iter()
                .map(|&(level, index)| NodeId { level, index })
                .collect::<Vec<_>>()
        };
        assert_eq!(nodes_completed_by_append(0), vec![]);
        assert_eq!(nodes_completed_by_append(3), ids(&[(1, 1), (2, 0)]));
        assert_eq!(nodes_completed_by_append(5), ids(&[(1, 2)]));
        assert_eq!(nodes_completed_by_append(u64::MAX - 1), vec![]);
        assert_eq!(nodes_completed_by_append(u64::MAX).len(), 64);
    }

    #[test]
    fn roots_match_reference() {
        let all = leaves(MAX);
        let store = build_store(&all);
        for n in 0..=MAX {
            let ids = root_nodes(n as u64).unwrap();
            let root = assemble_root(n as u64, &fetcher(&store, &ids, n as u64)).unwrap();
            assert_eq!(root, ref_mth(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn every_inclusion_proof_up_to_64() {
        let all = leaves(MAX + 8);
        let store = build_store(&all);
        let roots: Vec<Hash> = (0..=all.len()).map(|n| ref_mth(&all[..n])).collect();
        for n in 1..=MAX {
            let size = n as u64;
            for i in 0..n {
                let index = i as u64;
                let ids = inclusion_nodes(index, size).unwrap();
                let proof = assemble_inclusion(index, size, &fetcher(&store, &ids, size)).unwrap();
                assert_eq!(proof, ref_path(i, &all[..n]), "PATH({i}, D[{n}])");
                let root = &roots[n];
                verify_inclusion(&all[i], index, size, &proof, root).unwrap();

                // Wrong root, wrong leaf.
                assert!(verify_inclusion(&all[i], index, size, &proof, &flip(root, i)).is_err());
                assert!(verify_inclusion(&flip(&all[i], 3), index, size, &proof, root).is_err());
                // Each element modified.
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k] = flip(&bad[k], k + i);
                    assert!(verify_inclusion(&all[i], index, size, &bad, root).is_err());
                }
                // Truncated at either end, extended at either end.
                if !proof.is_empty() {
                    assert!(verify_inclusion(&all[i], index, size, &proof[1..], root).is_err());
                    assert!(verify_inclusion(&all[i], index, size, &proof[..proof.len() - 1], root).is_err());
                }
                for extra in [*root, all[i], [0u8; 32]] {
                    let mut longer = proof.clone();
                    longer.push(extra);
                    assert!(verify_inclusion(&all[i], index, size, &longer, root).is_err());
                    longer.pop();
                    longer.insert(0, extra);
                    assert!(verify_inclusion(&all[i], index, size, &longer, root).is_err());
                }
                // Another index: with this leaf or with the leaf really there.
                for j in 0..n + 2 {
                    if j != i {
                        assert!(verify_inclusion(&all[i], j as u64, size, &proof, root).is_err());
                        if j < n {
                            assert!(verify_inclusion(&all[j], j as u64, size, &proof, root).is_err());
                            assert!(verify_inclusion(&all[j], index, size, &proof, root).is_err());
                        }
                    }
                }
                // Another size, with the genuine root of that size.
                for (m, root_m) in roots.iter().enumerate() {
                    if m != n {
                        let r = verify_inclusion(&all[i], index, m as u64, &proof, root_m);
                        assert!(r.is_err(), "PATH({i}, D[{n}]) accepted for size {m}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64() {
        let all = leaves(MAX + 8);
        let store = build_store(&all);
        let roots: Vec<Hash> = (0..=all.len()).map(|n| ref_mth(&all[..n])).collect();
        for n in 0..=MAX {
            for m in 0..=n {
                let (old, new) = (m as u64, n as u64);
                let ids = consistency_nodes(old, new).unwrap();
                let proof = assemble_consistency(old, new, &fetcher(&store, &ids, new)).unwrap();
                assert_eq!(proof, ref_proof(m, &all[..n]), "PROOF({m}, D[{n}])");
                let (r_old, r_new) = (&roots[m], &roots[n]);
                verify_consistency(old, new, r_old, r_new, &proof).unwrap();

                // Wrong roots (with m = 0 any new root is consistent with the empty tree).
                if m > 0 {
                    assert!(verify_consistency(old, new, r_old, &flip(r_new, m), &proof).is_err());
                    assert!(verify_consistency(old, new, &flip(r_old, n), r_new, &proof).is_err());
                }
                if m != n {
                    assert!(verify_consistency(old, new, r_new, r_old, &proof).is_err());
                }
                // Each element modified.
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k] = flip(&bad[k], k + m);
                    assert!(verify_consistency(old, new, r_old, r_new, &bad).is_err());
                }
                // Truncated, extended.
                if !proof.is_empty() {
                    assert!(verify_consistency(old, new, r_old, r_new, &proof[1..]).is_err());
                    assert!(verify_consistency(old, new, r_old, r_new, &proof[..proof.len() - 1]).is_err());
                }
                for extra in [*r_old, *r_new, [0u8; 32]] {
                    let mut longer = proof.clone();
                    longer.push(extra);
                    assert!(verify_consistency(old, new, r_old, r_new, &longer).is_err());
                    longer.pop();
                    longer.insert(0, extra);
                    assert!(verify_consistency(old, new, r_old, r_new, &longer).is_err());
                }
                // Other sizes, each with its genuine root.
                for n2 in 0..all.len() {
                    for m2 in 0..=n2 {
                        if (m2, n2) == (m, n) || (proof.is_empty() && (m2 == 0 || m2 == n2)) {
                            continue;
                        }
                        if n > 24 && (n2.abs_diff(n) > 3 || m2.abs_diff(m) > 3) {
                            continue; // keep the run time sane: every pair is covered for n <= 24
                        }
                        let r = verify_consistency(m2 as u64, n2 as u64, &roots[m2], &roots[n2], &proof);
                        assert!(r.is_err(), "PROOF({m}, D[{n}]) accepted for {m2} -> {n2}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let none = |_: NodeId| None;
        assert_eq!(
            inclusion_nodes(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(inclusion_nodes(0, 0).is_err());
        assert!(assemble_inclusion(u64::MAX, u64::MAX, &none).is_err());
        assert_eq!(
            consistency_nodes(6, 5),
            Err(ProofError::OldSizeTooLarge { old: 6, new: 5 })
        );
        assert!(assemble_consistency(6, 5, &none).is_err());
        assert!(matches!(assemble_root(3, &none), Err(ProofError::MissingNode(_))));
        let only_leaf_2 = |id: NodeId| (id == NodeId::leaf(2)).then_some([0u8; 32]);
        assert_eq!(
            assemble_root(3, &only_leaf_2),
            Err(ProofError::MissingNode(NodeId { level: 1, index: 0 }))
        );
        assert_eq!(assemble_root(0, &none), Ok(empty_root()));
        assert!(assemble_inclusion(2, 3, &none).is_err());
        assert!(assemble_consistency(3, 7, &none).is_err());

        // Extreme sizes work and stay within u64.
        let big = u64::MAX;
        assert_eq!(root_nodes(big).unwrap().len(), 64);
        let ids = inclusion_nodes(big - 1, big).unwrap();
        assert_eq!(ids.len(), 63);
        assert!(ids
            .iter()
            .all(|id| (u128::from(id.index) + 1) << id.level <= u128::from(big)));
        assert_eq!(consistency_nodes(big - 1, big).unwrap().len(), 64);
        assert!(consistency_nodes(1, big).is_ok());
        assert!(consistency_nodes(big / 2 + 1, big).is_ok());

        let h = [7u8; 32];
        assert!(verify_inclusion(&h, 0, 0, &[], &h).is_err());
        assert!(verify_inclusion(&h, u64::MAX, u64::MAX, &[], &h).is_err());
        assert!(verify_inclusion(&h, 0, u64::MAX, &[h; 200], &h).is_err());
        assert!(verify_consistency(2, 1, &h, &h, &[]).is_err());
        assert!(verify_consistency(1, u64::MAX, &h, &h, &[h; 200]).is_err());
        assert!(verify_consistency(3, 3, &h, &h, &[h]).is_err());
        assert!(
            verify_consistency(0, 3, &h, &h, &[]).is_err(),
            "old root of an empty tree is fixed"
        );
        assert!(verify_consistency(0, 3, &empty_root(), &h, &[]).is_ok());
        assert!(verify_consistency(1, 3, &h, &h, &[]).is_err());
    }

    // ---- docs/audit-test-vectors.md ----

    const VECTORS: &str = include_str!("../../docs/audit-test-vectors.md");

    fn is_hash_token(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn published_vectors_match() {
        let all = leaves(17);
        let store = build_store(&all);
        let get = |id: NodeId| store.get(&id).copied();
        let inclusion = assemble_inclusion(5, 17, &get).unwrap();
        let consistency = assemble_consistency(7, 17, &get).unwrap();

        let mut section = "";
        let mut seen: BTreeMap<(&str, usize), String> = BTreeMap::new();
        for line in VECTORS.lines() {
            if let Some(title) = line.strip_prefix("## ") {
                section = title;
                continue;
            }
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            if !line.starts_with('|') || cells.len() < 2 {
                continue;
            }
            let (Ok(key), Some(value)) = (cells[0].parse::<u64>(), cells.last()) else {
                continue;
            };
            let key = key as usize;
            let expected = match section {
                "Leaf hashes" => {
                    assert!(key < all.len(), "leaf row {key}");
                    assert_eq!(cells[1], format!("entry-{key}"), "entry column of row {key}");
                    all[key]
                }
                "Tree roots" => {
                    assert!(key <= all.len(), "root row {key}");
                    ref_mth(&all[..key])
                }
                s if s.starts_with("Inclusion proof") => *inclusion.get(key).expect("inclusion row in range"),
                s if s.starts_with("Consistency proof") => *consistency.get(key).expect("consistency row in range"),
                _ => continue,
            };
            assert_eq!(*value, hex::encode(expected), "{section}, row {key}");
            assert!(
                seen.insert((section, key), value.to_string()).is_none(),
                "{section} row {key} twice"
            );
        }
        let count = |prefix: &str| seen.keys().filter(|(s, _)| s.starts_with(prefix)).count();
        assert_eq!(count("Leaf hashes"), 17);
        assert_eq!(count("Tree roots"), 18);
        assert_eq!(count("Inclusion proof"), inclusion.len());
        assert_eq!(count("Consistency proof"), consistency.len());
        // No hex hash anywhere in the document escapes the checks above.
        let tokens = VECTORS
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|t| t.len() >= 60 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect::<Vec<_>>();
        assert!(tokens.iter().all(|t| is_hash_token(t)), "malformed hex in the document");
        assert_eq!(tokens.len(), seen.len(), "hex values outside the checked tables");

        // The example proofs verify.
        let root17 = ref_mth(&all);
        verify_inclusion(&all[5], 5, 17, &inclusion, &root17).unwrap();
        verify_consistency(7, 17, &ref_mth(&all[..7]), &root17, &consistency).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_sizes_up_to_2000(size in 1usize..=2000, index_seed in any::<u64>(), old_seed in any::<u64>()) {
            // One leaf more than the tree, for the root of the next size.
            let all_and_next = leaves(size + 1);
            let all = &all_and_next[..size];
            let store = build_store(all);
            let (n, index, old) = (size as u64, index_seed % size as u64, old_seed % (size as u64 + 1));
            let root = ref_mth(all);

            let ids = root_nodes(n).unwrap();
            prop_assert_eq!(assemble_root(n, &fetcher(&store, &ids, n)).unwrap(), root);

            let ids = inclusion_nodes(index, n).unwrap();
            let proof = assemble_inclusion(index, n, &fetcher(&store, &ids, n)).unwrap();
            prop_assert_eq!(&proof, &ref_path(index as usize, all));
            prop_assert!(verify_inclusion(&all[index as usize], index, n, &proof, &root).is_ok());
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][k % 32] ^= 0x80;
                prop_assert!(verify_inclusion(&all[index as usize], index, n, &bad, &root).is_err());
            }
            // The proof does not pass for the next size and its root.
            let next_root = ref_mth(&all_and_next);
            prop_assert!(verify_inclusion(&all[index as usize], index, n + 1, &proof, &next_root).is_err());

            let ids = consistency_nodes(old, n).unwrap();
            let proof = assemble_consistency(old, n, &fetcher(&store, &ids, n)).unwrap();
            prop_assert_eq!(&proof, &ref_proof(old as usize, all));
            let old_root = ref_mth(&all[..old as usize]);
            prop_assert!(verify_consistency(old, n, &old_root, &root, &proof).is_ok());
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][k % 32] ^= 0x80;
                prop_assert!(verify_consistency(old, n, &old_root, &root, &bad).is_err());
            }
            if !proof.is_empty() {
                prop_assert!(verify_consistency(old, n, &old_root, &root, &proof[..proof.len() - 1]).is_err());
            }
        }
    }
}
