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
