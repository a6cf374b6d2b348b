//! Data subject rights over HTTP, against the real router on an ephemeral
//! port: how export and erasure times and the server's peak memory move
//! with the size of the person's account.
//!
//! cargo bench --bench rights
//! CARBON_LEDGER_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench rights
//!
//! Peak RSS is the process's high-water mark (`VmHWM`), reset before each
//! export (Linux `clear_refs`), so each figure is the peak during that
//! export alone, client included.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use carbon_ledger::api::AppState;
use carbon_ledger::clock::SystemClock;
use carbon_ledger::crypto::RootKey;
use carbon_ledger::domain::{Role, SubjectId};
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::{Access, Actor, IngestItem, Kinds, Purpose, Store};

const SIZES: [usize; 3] = [1_000, 10_000, 30_000];

fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn items(subject: &str, from: usize, n: usize, policies: &PolicySet) -> Vec<IngestItem> {
    (from..from + n)
        .map(|i| support::bus_ride(format!("{subject}-{i}"), subject.to_owned(), policies))
        .collect()
}

async fn run(name: &str, url: &str) {
    let policies = Arc::new(PolicySet::load(None).unwrap());
    let store = Arc::new(
        Store::open(url, RootKey::generate(), Arc::new(SystemClock), policies.clone())
            .await
            .unwrap(),
    );
    store.record_policy_load().await.unwrap();
    let (tenant, key) = store.add_tenant("bench", Role::Platform).await.unwrap();
    let access = Access::new(
        Actor {
            tenant,
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(carbon_ledger::server::serve(
        listener,
        AppState::new(store.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let key = key.expose().to_owned();

    for size in SIZES {
        let person = format!("person-{size}");
        let subject = SubjectId::parse(person.clone()).unwrap();
        for purpose in [Purpose::Accounting, Purpose::Rewards] {
            store
                .grant_consent(&Access { purpose, ..access }, &subject, 1, Kinds::All)
                .await
                .unwrap();
        }
        for from in (0..size).step_by(1000) {
            store
                .ingest(&access, items(&person, from, 1000.min(size - from), &policies))
                .await
                .unwrap();
        }

        for format in ["json", "csv"] {
            reset_peak_rss();
            let before = proc_status_kb("VmRSS:");
            let started = Instant::now();
            let mut response = client
                .get(format!("http://{addr}/v1/subjects/{person}/export?format={format}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            let mut bytes = 0;
            while let Some(chunk) = response.chunk().await.unwrap() {
                bytes += chunk.len();
            }
            let elapsed = started.elapsed();
            println!(
                "{name:>10}: export ({format}) of {size:>6} records: {:>7.1} ms, {:>6.1} MB, RSS before {:>4} MB, peak during {:>4} MB",
                elapsed.as_secs_f64() * 1000.0,
                bytes as f64 / 1e6,
                before / 1024,
                proc_status_kb("VmHWM:") / 1024,
            );
        }

        let started = Instant::now();
        let response = client
            .delete(format!("http://{addr}/v1/subjects/{person}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let answered = started.elapsed();
        assert!(response.status().is_success());
        while store.erasures_pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!(
            "{name:>10}: erasure of {size:>6} records: answered in {:>6.1} ms; background purge done after {:>7.1} ms",
            answered.as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    store.close().await;
}

fn main() {
    support::on_each_engine("cl_bench_rights", run);
}
