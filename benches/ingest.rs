//! Ingest throughput of the data access layer: batches of 1,000 minimized
//! events, each sealed, cap-checked, recorded, ledgered and audited in one
//! transaction per batch. HTTP and JSON parsing are not included.
//!
//! cargo bench --bench ingest
//! CARBON_LEDGER_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench ingest

mod support;

use std::sync::Arc;
use std::time::Instant;

use carbon_ledger::clock::SystemClock;
use carbon_ledger::crypto::RootKey;
use carbon_ledger::domain::Role;
use carbon_ledger::domain::SubjectId;
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::{Access, IngestItem, Kinds, Purpose, Store};

const BATCHES: usize = 50;
const BATCH: usize = 1000;
const SUBJECTS: usize = 2_000;

fn items(batch: usize, policies: &PolicySet) -> Vec<IngestItem> {
    (0..BATCH)
        .map(|i| {
            let n = batch * BATCH + i;
            support::bus_ride(format!("bench-{n}"), format!("user-{}", n % SUBJECTS), policies)
        })
        .collect()
}

async fn run(name: &str, url: &str) {
    let policies = Arc::new(PolicySet::load(None).unwrap());
    let store = Store::open(url, RootKey::generate(), Arc::new(SystemClock), policies.clone())
        .await
        .unwrap();
    store.record_policy_load().await.unwrap();
    let (tenant, _) = store.add_tenant("bench", Role::Platform).await.unwrap();
    let access = Access::new(
        carbon_ledger::store::Actor {
            tenant,
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    // Set-up, not timed: every subject consents to accounting and rewards.
    for n in 0..SUBJECTS {
        let subject = SubjectId::parse(format!("user-{n}")).unwrap();
        for purpose in [Purpose::Accounting, Purpose::Rewards] {
            store
                .grant_consent(&Access { purpose, ..access }, &subject, 1, Kinds::All)
                .await
                .unwrap();
        }
    }
    let batches: Vec<Vec<IngestItem>> = (0..BATCHES).map(|b| items(b, &policies)).collect();

    let started = Instant::now();
    for batch in batches {
        store.ingest(&access, batch).await.unwrap();
    }
    let elapsed = started.elapsed();
    let events = (BATCHES * BATCH) as f64;
    println!(
        "{name:>10}: {} events in {BATCHES} batches of {BATCH}: {:.2} s, {:.0} events/s, {:.1} ms per batch",
        BATCHES * BATCH,
        elapsed.as_secs_f64(),
        events / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / BATCHES as f64
    );
    // Erasure of one subject with 10,000 records: shred first, purge in bulk.
    let heavy = SubjectId::parse("heavy-user".to_owned()).unwrap();
    store.grant_consent(&access, &heavy, 1, Kinds::All).await.unwrap();
    for b in 0..10 {
        let batch = items(1000 + b, &policies)
            .into_iter()
            .map(|i| IngestItem {
                subject: SubjectId::parse("heavy-user".to_owned()).unwrap(),
                ..i
            })
            .collect();
        store.ingest(&access, batch).await.unwrap();
    }
    let started = Instant::now();
    let receipt = store.erase_subject(&access, &heavy).await.unwrap();
    println!(
        "{name:>10}: erasure of a subject with {} records: {:.1} ms",
        receipt.counts.records,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let started = Instant::now();
    let checked = store.verify_audit(&[]).await.unwrap().unwrap();
    println!(
        "{name:>10}: audit verify of {} entries: {:.2} s",
        checked.entries,
        started.elapsed().as_secs_f64()
    );
    store.close().await;
}

fn main() {
    support::on_each_engine("cl_bench", run);
}
