//! What the benchmarks share: running one benchmark on SQLite in a
//! temporary directory and, when CARBON_LEDGER_BENCH_POSTGRES_URL names a
//! server, on a fresh PostgreSQL database of its own.

/// Runs `bench(engine name, database URL)` on each engine available.
pub fn on_each_engine(database: &str, bench: impl AsyncFn(&str, &str)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("ledger.db").display());
        bench("sqlite", &sqlite).await;
        let Ok(admin) = std::env::var("CARBON_LEDGER_BENCH_POSTGRES_URL") else {
            return;
        };
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        sqlx::query(&drop).execute(&pool).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&pool)
            .await
            .unwrap();
        let base = &admin[..admin.rfind('/').unwrap()];
        bench("postgres", &format!("{base}/{database}")).await;
        sqlx::query(&drop).execute(&pool).await.unwrap();
    });
}

/// A bus ride today, minimized, ready for `Store::ingest`.
pub fn bus_ride(
    event_id: String,
    subject: String,
    policies: &carbon_ledger::policy::PolicySet,
) -> carbon_ledger::store::IngestItem {
    let now = time::OffsetDateTime::now_utc();
    let at = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let raw = carbon_ledger::domain::parse_event(serde_json::json!({
        "event_id": event_id,
        "subject": subject,
        "kind": "transit_ride",
        "occurred_at": at,
        "region": "510502",
        "data": {"mode": "bus"}
    }))
    .unwrap();
    let record = carbon_ledger::domain::minimize(&raw, &policies.methodology, now).unwrap();
    carbon_ledger::store::IngestItem {
        event_id: raw.event_id,
        subject: raw.subject,
        record,
    }
}
