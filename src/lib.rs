//! carbon-ledger: a privacy-preserving accounting service for personal
//! carbon accounts.
//!
//! The modules follow the data flow of one event:
//! `api` (HTTP, thin) → `domain` (parse, minimize, methodology: pure) →
//! `store` (the data access layer, the only door to personal data) with
//! `crypto` (keys, pseudonyms, sealing) and `audit` (the hash chain) beside
//! it. `policy` loads the policy files; `cli` and `server` wire it together.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod compliance;
pub mod console;
pub mod console_audit;
pub mod crypto;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod server;
pub mod store;
