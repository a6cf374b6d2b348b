//! The strict JSON extractor against plain serde_json.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carbon_ledger::fuzzing::strict_json(data));
