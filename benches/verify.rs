//! Offline verification speed: one million exported audit entries (records
//! written, as most of a real log is), verified on one core — leaf hashes,
//! chain, decoding, the erasure rule, totals, and the tree root against a
//! signed checkpoint.
//!
//! cargo bench --bench verify

use std::time::Instant;

use carbon_ledger::audit::chain::{chain_hash, GENESIS};
use carbon_ledger::audit::checkpoint::{Checkpoint, NoteSigner};
use carbon_ledger::audit::merkle::{leaf_hash, Frontier};
use carbon_ledger::audit::offline::{verify_entries, write_record};
use carbon_ledger::audit::{Action, AuditEntry};
use carbon_ledger::crypto::AuditRef;
use carbon_ledger::domain::{Day, TenantId};

const ENTRIES: u64 = 1_000_000;

fn main() {
    let mut bytes = Vec::with_capacity(ENTRIES as usize * 170);
    let mut chain = GENESIS;
    let mut tree = Frontier::default();
    for seq in 1..=ENTRIES {
        let entry = AuditEntry {
            seq,
            at: 1_795_219_200,
            actor: Some(TenantId::new(1 + (seq % 3) as i64)),
            action: Action::RecordWritten {
                subject: AuditRef::from_bytes([(seq % 251) as u8; 16]),
                record_id: [(seq % 241) as u8; 16],
                kind: "transit_ride".into(),
                variant: Some("bus".into()),
                day: Day::from_days(20_778 + (seq % 60) as i64).unwrap(),
                reduction_mg: 80_000,
                points: 10,
                methodology_version: "cn-inclusive-2026.1".into(),
                capped: false,
            },
        }
        .encode();
        let leaf = leaf_hash(&entry);
        chain = chain_hash(&chain, &leaf);
        tree.push(leaf);
        write_record(&mut bytes, seq, &leaf, &chain, Some(&entry)).unwrap();
    }
    let signer = NoteSigner::from_seed("carbon-ledger/bench/audit/blake3-v1", &[7; 32]);
    let note = signer.sign(&Checkpoint::new(
        "carbon-ledger/bench/audit/blake3-v1",
        ENTRIES,
        tree.root(),
    ));
    let checkpoint = signer
        .verifier()
        .verify(&note, "carbon-ledger/bench/audit/blake3-v1")
        .unwrap();

    for run in 1..=3 {
        let started = Instant::now();
        let report = verify_entries(&bytes, std::slice::from_ref(&checkpoint), false).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "run {run}: verified {} entries ({:.0} MB) in {:.3} s: {:.2} million entries/s on one core",
            report.entries,
            bytes.len() as f64 / 1e6,
            seconds,
            report.entries as f64 / seconds / 1e6
        );
    }
}
