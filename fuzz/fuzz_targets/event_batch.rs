//! `POST /v1/events` bodies → domain events (strict JSON, batch split,
//! envelope parsing, minimization against the shipped methodology).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carbon_ledger::fuzzing::batch_body(data));
