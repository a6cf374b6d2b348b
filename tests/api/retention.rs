//! Retention: data past its period is invisible to every read at once and
//! purged by the sweeper, which leaves an audit entry counting what went.

use carbon_ledger::audit::{Action, SweepCounts};
use carbon_ledger::policy::DataClass;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;
use time::Duration;

use crate::helpers::{event, retention_days, Backend, TestApp};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn a_record_past_its_period_is_invisible_then_gone(app: TestApp) {
    let (status, _) = app.post_enrolled(&event("r1", "ivan", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let db = app.raw_ledger().await;
    let sealed: Vec<u8> = sqlx::query("SELECT sealed FROM records")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);

    // On the last day of the records' period the record is still there...
    app.clock.advance(Duration::days(retention_days(DataClass::Records)));
    let (_, page) = app.get("/v1/subjects/ivan/records").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);

    // ...the day after, every read hides it before any sweep has run.
    app.clock.advance(Duration::days(1));
    let (status, page) = app.get("/v1/subjects/ivan/records").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["records"], json!([]));
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM records")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "still stored until the sweep");
    // The accounting line lives longer (as long as the points).
    let (_, account) = app.get("/v1/subjects/ivan/account").await;
    assert_eq!(account["points_balance"], 5);

    let (counts, seq) = app.store.sweep_retention().await.unwrap();
    assert_eq!(counts.records, 1);
    assert_eq!(counts.idempotency_keys, 1);
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM records")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    if app.backend == Backend::Sqlite {
        let files =
            ["ledger.db", "ledger.db-wal"].map(|f| (f, std::fs::read(app.dir.path().join(f)).unwrap_or_default()));
        assert!(
            files.iter().any(|(_, bytes)| !bytes.is_empty()),
            "the ledger's files hold something to search"
        );
        for (file, bytes) in &files {
            assert!(!contains(bytes, &sealed), "the purged record's bytes remain in {file}");
        }
    }
    let entries = app.audit_entries(seq - 1, 1).await.unwrap();
    assert!(
        matches!(
            entries[0].action,
            Action::RetentionSwept(SweepCounts { records: 1, .. })
        ),
        "{entries:?}"
    );
    app.store.verify_audit(&[]).await.unwrap().expect("the chain verifies");
}

async fn expired_audit_entries_are_emptied_and_the_chain_still_verifies(app: TestApp) {
    app.post_enrolled(&event("a1", "jane", "clean_plate", json!({}))).await;
    let before = app.audit_entries(0, 1000).await.unwrap().len();
    let past_both_periods = retention_days(DataClass::AuditEntries).max(retention_days(DataClass::LedgerEntries)) + 1;
    app.clock.advance(Duration::days(past_both_periods));
    let (counts, _) = app.store.sweep_retention().await.unwrap();
    assert_eq!(counts.audit_entries as usize, before);
    assert_eq!(counts.ledger_entries, 1);
    // Only the sweep's own entry is still readable; the chain still verifies.
    assert_eq!(app.audit_entries(0, 1000).await.unwrap().len(), 1);
    let checked = app.store.verify_audit(&[]).await.unwrap().expect("the chain verifies");
    assert_eq!(checked.entries as usize, before + 1);

    // A pruned entry's hash is still guarded by the chain.
    let db = app.raw_ledger().await;
    sqlx::query("UPDATE audit_log SET leaf_hash = $1 WHERE seq = 2")
        .bind(vec![0u8; 32])
        .execute(&db)
        .await
        .unwrap();
    let err = app.store.verify_audit(&[]).await.unwrap().unwrap_err();
    assert_eq!(err.seq, 2);
}

async fn the_consent_in_force_outlives_its_history_period(app: TestApp) {
    let past_history_period = Duration::days(retention_days(DataClass::ConsentHistory) + 1);
    app.enroll("kim").await;
    app.clock.advance(past_history_period);
    let (counts, _) = app.store.sweep_retention().await.unwrap();
    assert_eq!(counts.consent_history, 0, "the grants behind consents in force stay");
    let url = app.url("/v1/subjects/kim/consents/rewards");
    app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    app.clock.advance(past_history_period);
    let (counts, _) = app.store.sweep_retention().await.unwrap();
    // The rewards grant and its withdrawal went; the accounting grant stays.
    assert_eq!(counts.consent_history, 2);
    let (_, consents) = app.get("/v1/subjects/kim/consents").await;
    assert_eq!(consents["consents"].as_array().unwrap().len(), 1);
}

on_both_engines!(
    a_record_past_its_period_is_invisible_then_gone,
    expired_audit_entries_are_emptied_and_the_chain_still_verifies,
    the_consent_in_force_outlives_its_history_period,
);
