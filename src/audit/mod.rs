//! The audit log: every write, read and policy load appends an entry, in the
//! same transaction as what it records. Entries carry no personal data:
//! subjects appear only as an audit reference derived from their salt.
//!
//! `entry` is the canonical binary encoding (hashed; never JSON), `chain`
//! the BLAKE3 hash chain, `merkle` the tree over the same leaves,
//! `checkpoint` the signed tree heads, `verify` the one verifier of a
//! stored log, and `offline` the reader of an export, which needs no
//! database.

pub mod chain;
pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod offline;
pub mod proof;
pub mod verify;

pub use chain::GENESIS;
pub use entry::{Action, AuditEntry, ErasureCounts, ReadScope, SweepCounts, UnlinkReason};
pub use verify::{LogVerifier, StoredRow, VerifiedLog, VerifyError};
