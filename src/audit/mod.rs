//! The audit log: every write, read and policy load appends an entry, in the
//! same transaction as what it records. Entries carry no personal data:
//! subjects appear only as an audit reference derived from their salt.
//!
//! `entry` is the canonical binary encoding (hashed; never JSON), `chain`
//! the BLAKE3 hash chain and its verifier.

pub mod chain;
pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod offline;

pub use chain::{ChainVerifier, VerifyError, GENESIS};
pub use entry::{Action, AuditEntry, ErasureCounts, ReadScope, SweepCounts};
