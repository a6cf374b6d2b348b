//! The audit entry decoder: no panic, one encoding per entry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carbon_ledger::fuzzing::audit_entry(data));
