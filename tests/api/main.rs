//! One integration-test binary (fast to link). Each story runs against the
//! real server on an ephemeral port, on SQLite and — when
//! CARBON_LEDGER_TEST_POSTGRES_URL names a server — on PostgreSQL, each
//! test in a database of its own. Without that server the PostgreSQL tests
//! are skipped, except under CI (`CI` set), where they fail.

#[macro_use]
mod helpers;

mod accounts;
mod audit;
mod auditing;
mod availability;
mod cli;
mod compliance;
mod consent;
mod console;
mod console_audit;
mod events;
mod hangups;
mod links;
mod model;
mod ops;
mod points;
mod privacy;
mod retention;
mod rights;
mod rotation;
mod servers;
mod shutdown;
