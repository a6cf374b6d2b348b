//! Data subject rights: a complete export, and erasure by crypto-shredding
//! proven on the bytes, on backups, after crashes and after restores.

use carbon_ledger::audit::{Action, ErasureCounts};
use carbon_ledger::crypto::{open, RecordAad, RootKey, SubjectSalt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{batch, event, Backend, TestApp};

/// One event of every kind the methodology knows.
fn every_kind(subject: &str, prefix: &str) -> Value {
    let kinds = [
        ("transit_ride", json!({"mode": "bus"})),
        ("cycling", json!({"distance_m": 3100})),
        ("walking", json!({"steps": 4200})),
        ("clean_plate", json!({})),
        ("waste_sorting", json!({"weight_g": 2500})),
        ("clothes_recycling", json!({"weight_g": 1500})),
        ("no_drive_day", json!({})),
        ("paperless_bill", json!({})),
    ];
    let mut events: Vec<Value> = kinds
        .iter()
        .enumerate()
        .map(|(i, (k, d))| event(&format!("{prefix}-{i}"), subject, k, d.clone()))
        .collect();
    events[3]["region"] = json!("510502");
    batch(events)
}

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("../../docs/export.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// A stored record, as a backup would hold it.
#[derive(Clone, Debug)]
struct StoredRecord {
    seq: i64,
    record_id: Vec<u8>,
    subject: Vec<u8>,
    kind: String,
    day: i64,
    key_version: i64,
    sealed: Vec<u8>,
}

async fn copy_records(app: &TestApp) -> Vec<StoredRecord> {
    let db = app.raw_ledger().await;
    sqlx::query("SELECT record_id, subject, kind, day, key_version, sealed, seq FROM records")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| StoredRecord {
            record_id: r.get(0),
            subject: r.get(1),
            kind: r.get(2),
            day: r.get(3),
            key_version: r.get(4),
            sealed: r.get(5),
            seq: r.get(6),
        })
        .collect()
}

/// How many record rows the ledger holds, readable or not.
async fn stored_records(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM records")
        .fetch_one(&app.raw_ledger().await)
        .await
        .unwrap()
}

/// The one key in the key store, as a backup of it holds it.
type KeyBackup = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64);

async fn back_up_only_key(app: &TestApp) -> KeyBackup {
    let (keys_db, table) = app.raw_keys().await;
    sqlx::query_as(&format!(
        "SELECT subject, key_id, salt, ledger_ref, created_at FROM {table}"
    ))
    .fetch_one(&keys_db)
    .await
    .unwrap()
}

/// Puts a backed-up key back into the live key store.
async fn restore_key(app: &TestApp, key: &KeyBackup) {
    let (keys_db, table) = app.raw_keys().await;
    sqlx::query(&format!(
        "INSERT INTO {table} (subject, key_id, salt, ledger_ref, created_at) VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(key.0.clone())
    .bind(key.1.clone())
    .bind(key.2.clone())
    .bind(key.3.clone())
    .bind(key.4)
    .execute(&keys_db)
    .await
    .unwrap();
}

/// Every salt in the live key store.
async fn live_salts(app: &TestApp) -> Vec<Vec<u8>> {
    let (keys_db, table) = app.raw_keys().await;
    sqlx::query(&format!("SELECT salt FROM {table}"))
        .fetch_all(&keys_db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many of `records` open with some salt in the live key store and the
/// root key: what an attacker holding a backup of the records could read.
async fn openable(app: &TestApp, records: &[StoredRecord]) -> usize {
    let salts = live_salts(app).await;
    let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
    let mut opened = 0;
    for record in records {
        let record_id: [u8; 16] = record.record_id.clone().try_into().unwrap();
        for salt in &salts {
            let keys = root.subject_keys(&SubjectSalt::from_slice(salt).unwrap(), record.key_version as u32);
            let aad = RecordAad {
                record_id: &record_id,
                subject: &keys.ledger_ref,
                key_version: record.key_version as u32,
                kind: &record.kind,
                day: record.day as i32,
            };
            if keys.ledger_ref.as_bytes().as_slice() == record.subject.as_slice()
                && open(&keys, &aad, &record.sealed).is_ok()
            {
                opened += 1;
            }
        }
    }
    opened
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn the_export_holds_everything_on_the_person_and_nothing_else(app: TestApp) {
    app.post_enrolled(&every_kind("maya", "m")).await;
    app.post_enrolled(&every_kind("noah", "n")).await;
    app.consent_as(&app.key, "maya", &["statistics", "interconnection"])
        .await;
    let url = app.url("/v1/subjects/maya/consents/interconnection");
    app.send(app.client.delete(url).bearer_auth(&app.key)).await;

    let (status, export) = app.get("/v1/subjects/maya/export").await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let validator = schema();
    let errors: Vec<String> = validator
        .iter_errors(&export)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "export does not match docs/export.schema.json: {errors:?}"
    );

    let records = export["records"].as_array().unwrap();
    let kinds: std::collections::BTreeSet<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let plate = records.iter().find(|r| r["kind"] == "clean_plate").unwrap();
    assert_eq!(plate["factor"]["g_per_unit"], 144.0);
    assert!(plate["factor"]["source"].as_str().unwrap().contains("Luzhou"));
    assert_eq!(plate["region"], "510500");
    assert_eq!(records.len(), 8);
    assert!(records.iter().all(|r| r["factor"].is_object()));

    let consents: Vec<&str> = export["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(consents, ["accounting", "rewards", "statistics"]);
    let history: Vec<(&str, &str)> = export["consent_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["purpose"].as_str().unwrap(), h["action"].as_str().unwrap()))
        .collect();
    assert_eq!(history.len(), 5);
    assert_eq!(history[4], ("interconnection", "withdraw"));

    let (_, account) = app.get("/v1/subjects/maya/account").await;
    assert_eq!(export["ledger"]["points_balance"], account["points_balance"]);
    assert_eq!(export["ledger"]["entries"].as_array().unwrap().len(), 8);
    let written = export["audit_entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "record_written")
        .count();
    assert_eq!(written, 8);
    let refs: std::collections::BTreeSet<&str> = export["audit_entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["details"]["subject_ref"].as_str())
        .collect();
    assert_eq!(refs.len(), 1, "only the person's own audit entries");
    assert_eq!(export["processing"]["retention"].as_array().unwrap().len(), 5);
    assert!(!export["processing"]["recipients"].as_array().unwrap().is_empty());

    // Nothing of anyone else.
    let (_, noah) = app.get("/v1/subjects/noah/records").await;
    let text = export.to_string();
    let noah_records = noah["records"].as_array().unwrap();
    assert_eq!(noah_records.len(), 8);
    for r in noah_records {
        assert!(!text.contains(r["record_id"].as_str().unwrap()));
    }
    assert!(!text.contains("noah") && !text.contains("maya"));

    // The export is itself logged.
    let last = app.audit_entries(0, 10_000).await.unwrap();
    assert!(last.iter().any(|e| matches!(
        e.action,
        Action::SubjectRead {
            scope: carbon_ledger::audit::ReadScope::Export,
            items: 8,
            ..
        }
    )));

    let response = app
        .client
        .get(app.url("/v1/subjects/maya/export?format=csv"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = response.text().await.unwrap();
    assert_eq!(csv.lines().count(), 9);
    assert!(csv.starts_with("record_id,day,kind,"));
    let (status, _) = app.get("/v1/subjects/maya/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// An export longer than one page of every list comes out whole: every
/// record, ledger line and audit entry once, in a valid document.
async fn a_long_export_streams_every_page(app: TestApp) {
    const EVENTS: usize = 1_100;
    app.enroll("vera").await;
    for part in 0..2 {
        let events = (0..EVENTS / 2)
            .map(|i| event(&format!("v{part}-{i}"), "vera", "transit_ride", json!({"mode": "bus"})))
            .collect();
        let (status, body) = app.post_events(&batch(events)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, export) = app.get("/v1/subjects/vera/export").await;
    assert_eq!(status, StatusCode::OK);
    assert!(schema().iter_errors(&export).next().is_none(), "schema-valid");
    let records = export["records"].as_array().unwrap();
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r["record_id"].as_str().unwrap()).collect();
    assert_eq!((records.len(), ids.len()), (EVENTS, EVENTS));
    let lines = export["ledger"]["entries"].as_array().unwrap();
    let line_ids: std::collections::BTreeSet<&str> = lines.iter().filter_map(|l| l["record_id"].as_str()).collect();
    assert_eq!(line_ids, ids, "one ledger line per record");
    let points: i64 = lines.iter().map(|l| l["points"].as_i64().unwrap()).sum();
    assert_eq!(export["ledger"]["points_balance"].as_i64(), Some(points));
    let written: std::collections::BTreeSet<u64> = export["audit_entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "record_written")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(written.len(), EVENTS);
    let csv = app
        .client
        .get(app.url("/v1/subjects/vera/export?format=csv"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), EVENTS + 1);
}

async fn erasure_shreds_first_then_purges(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("o1", "olga", "clean_plate", json!({})),
        event("o2", "olga", "transit_ride", json!({"mode": "metro"})),
        event("o3", "olga", "walking", json!({"steps": 3000})),
    ]))
    .await;
    let olga = copy_records(&app).await;
    assert_eq!(olga.len(), 3);
    app.post_enrolled(&event("p1", "pia", "clean_plate", json!({}))).await;
    let backup = copy_records(&app).await;
    assert_eq!(
        openable(&app, &backup).await,
        4,
        "the control: a backup opens with the live key store"
    );
    let salts = live_salts(&app).await;

    let url = app.url("/v1/subjects/olga");
    // A query string on a destructive route is refused, and nothing happens.
    let (status, _) = app
        .send(app.client.delete(format!("{url}?dry_run=1")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(openable(&app, &backup).await, 4);
    let (status, receipt) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(
        receipt["counts"],
        // Ledger entries: three behaviours' lines and the points lines they earned.
        json!({"records": 3, "ledger_entries": 6, "idempotency_keys": 3, "consents": 2, "consent_history": 2})
    );
    assert!(receipt["erased_on"].as_str().unwrap().len() == 10);
    let seq = receipt["audit_seq"].as_u64().unwrap();

    // The backup test: the copy taken before, the live key store and the
    // root key open none of her records; the other subject's still open.
    assert_eq!(openable(&app, &olga).await, 0);
    assert_eq!(openable(&app, &backup).await, 1);
    let (status, _) = app.get("/v1/subjects/olga/account").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Her audit entries stay and still verify; the erasure is the last word.
    app.store.verify_audit(&[]).await.unwrap().expect("the chain verifies");
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let erased = entries.iter().find(|e| e.seq == seq).unwrap();
    let Action::SubjectErased { subject, counts, .. } = &erased.action else {
        panic!("{erased:?}")
    };
    assert_eq!(
        *counts,
        ErasureCounts {
            records: 3,
            ledger_entries: 6,
            idempotency_keys: 3,
            consents: 2,
            consent_history: 2
        }
    );
    assert!(entries.iter().filter(|e| e.action.subject() == Some(subject)).count() > 3);
    assert!(!entries
        .iter()
        .any(|e| e.seq > seq && e.action.subject() == Some(subject)));

    // On the bytes, once the background purge is done: none of her
    // ciphertext, nor her salt, in any file.
    app.erasures_purged().await;
    if app.backend == Backend::Sqlite {
        let files: Vec<u8> = ["ledger.db", "ledger.db-wal", "keys.db", "keys.db-wal"]
            .iter()
            .flat_map(|f| std::fs::read(app.dir.path().join(f)).unwrap_or_default())
            .collect();
        assert!(!files.is_empty(), "the files hold something to search");
        for record in &olga {
            assert!(
                !contains(&files, &record.sealed),
                "erased ciphertext remains in the files"
            );
        }
        // Nor the reference her rows carried: no row about her is left,
        // her daily usage figures included.
        assert!(
            !contains(&files, &olga[0].subject),
            "her ledger reference remains in the files"
        );
        let remaining = live_salts(&app).await;
        let erased: Vec<_> = salts.iter().filter(|s| !remaining.contains(s)).collect();
        assert_eq!(erased.len(), 1, "her salt, and only hers, left the key store");
        for salt in erased {
            assert!(!contains(&files, salt), "the erased salt remains in the files");
        }
    }
}

async fn the_same_id_after_erasure_is_a_new_person(app: TestApp) {
    app.post_enrolled(&event("q1", "quinn", "clean_plate", json!({}))).await;
    let first_ref = app
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .iter()
        .find_map(|e| e.action.subject().copied())
        .unwrap();
    app.send(app.client.delete(app.url("/v1/subjects/quinn")).bearer_auth(&app.key))
        .await;

    let (status, _) = app.post_events(&event("q2", "quinn", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no consent carries over");
    app.enroll("quinn").await;
    let (status, account) = app.get("/v1/subjects/quinn/account").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (account["events"].as_i64(), account["points_balance"].as_i64()),
        (Some(0), Some(0))
    );
    // Re-sending the old event id records it afresh: its key went with her.
    let (status, body) = app.post_events(&event("q1", "quinn", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let entries = app.audit_entries(0, 1000).await.unwrap();
    let refs: std::collections::HashSet<_> = entries.iter().filter_map(|e| e.action.subject().copied()).collect();
    assert_eq!(refs.len(), 2, "a new audit reference");
    assert!(refs.contains(&first_ref));
}

async fn reshred_after_restoring_an_old_key_store(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("r1", "rosa", "clean_plate", json!({})),
        event("r2", "rosa", "paperless_bill", json!({})),
    ]))
    .await;
    let backup = copy_records(&app).await;
    let old_key = back_up_only_key(&app).await;

    app.send(app.client.delete(app.url("/v1/subjects/rosa")).bearer_auth(&app.key))
        .await;
    assert_eq!(openable(&app, &backup).await, 0);
    app.erasures_purged().await;

    // Restore the key store (and the records) from the old backup: the erased
    // person is readable again...
    restore_key(&app, &old_key).await;
    let db = app.raw_ledger().await;
    for r in &backup {
        sqlx::query("INSERT INTO records (record_id, tenant_id, subject, kind, day, key_version, sealed, created_at, seq) VALUES ($1, 1, $2, $3, $4, $5, $6, 0, $7)")
            .bind(r.record_id.clone())
            .bind(r.subject.clone())
            .bind(r.kind.clone())
            .bind(r.day)
            .bind(r.key_version)
            .bind(r.sealed.clone())
            .bind(r.seq)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_eq!(openable(&app, &backup).await, 2);

    // ...until the tombstone list is applied again.
    let out = app.cli(&["keys", "reshred"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("re-shredded 1 erased people's keys; purged 2 rows"),
        "{text}"
    );
    assert_eq!(openable(&app, &backup).await, 0);
    assert_eq!(stored_records(&app).await, 0);
    app.store.verify_audit(&[]).await.unwrap().expect("the chain verifies");
}

async fn an_interrupted_erasure_leaves_unreadable_rows_the_sweeper_removes(app: TestApp) {
    app.post_enrolled(&event("s1", "sam", "clean_plate", json!({}))).await;
    // A crash after shredding, before purging.
    let (keys_db, table) = app.raw_keys().await;
    sqlx::query(&format!("DELETE FROM {table}"))
        .execute(&keys_db)
        .await
        .unwrap();
    let (status, _) = app.get("/v1/subjects/sam/records").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unreadable rows are invisible");
    assert_eq!(stored_records(&app).await, 1);
    app.store.sweep_retention().await.unwrap();
    assert_eq!(stored_records(&app).await, 0);
    let entries = app.audit_entries(0, 1000).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| matches!(e.action, Action::OrphansPurged { rows } if rows >= 3)),
        "{entries:?}"
    );
}

/// An erasure cut after its tombstone and audit entry committed, before
/// the key was shredded: the person is already invisible, and a retry
/// completes the erasure with the same receipt and no second entry.
async fn a_retried_erasure_completes_a_cut_one_with_the_same_receipt(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("u1", "uma", "clean_plate", json!({})),
        event("u2", "uma", "paperless_bill", json!({})),
    ]))
    .await;
    let key = back_up_only_key(&app).await;
    let url = app.url("/v1/subjects/uma");
    let (status, first) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK, "{first}");

    // Put the state back to "committed, not shredded": the key returns
    // (after the background purge, which would shred it again).
    app.erasures_purged().await;
    restore_key(&app, &key).await;
    let (status, _) = app.get("/v1/subjects/uma/records").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the tombstone already hides her");

    let (status, again) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "the same receipt");
    assert_eq!(live_salts(&app).await.len(), 0, "the retry shredded the key");
    let erasures = app
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.action, Action::SubjectErased { .. }))
        .count();
    assert_eq!(erasures, 1, "one erasure entry");
    app.erasures_purged().await;
    assert_eq!(stored_records(&app).await, 0);
    app.store.verify_audit(&[]).await.unwrap().expect("the chain verifies");
}

/// An erasure whose shred failed after its tombstone committed is finished
/// by the background purge, which shreds the key itself.
async fn the_purge_shreds_a_committed_erasure_whose_shred_failed(app: TestApp) {
    app.post_enrolled(&event("w1", "wen", "clean_plate", json!({}))).await;
    let key = back_up_only_key(&app).await;
    let (status, _) = app
        .send(app.client.delete(app.url("/v1/subjects/wen")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.erasures_purged().await;
    // As if the shred had failed: the key is still there and the tombstone
    // still waits for its purge.
    restore_key(&app, &key).await;
    sqlx::query("UPDATE erasures SET tenant_id = 1, pending_ref = $1")
        .bind(key.3.clone())
        .execute(&app.raw_ledger().await)
        .await
        .unwrap();
    assert_eq!(live_salts(&app).await.len(), 1);
    app.store.purge_erased().await.unwrap();
    assert_eq!(live_salts(&app).await.len(), 0, "the purge shredded it");
}

async fn only_the_platform_holding_the_person_may_export_or_erase(app: TestApp) {
    app.post_enrolled(&event("t1", "tara", "clean_plate", json!({}))).await;
    let other = app.add_tenant("wuhan", carbon_ledger::domain::Role::Platform).await;
    let auditor = app.add_tenant("auditor", carbon_ledger::domain::Role::Auditor).await;
    let (status, _) = app.get_as(&other, "/v1/subjects/tara/export").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .send(app.client.delete(app.url("/v1/subjects/tara")).bearer_auth(&other))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get_as(&auditor, "/v1/subjects/tara/export").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .send(app.client.delete(app.url("/v1/subjects/tara")).bearer_auth(&auditor))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, account) = app.get("/v1/subjects/tara/account").await;
    assert_eq!(account["events"], 1);
}

on_both_engines!(
    the_export_holds_everything_on_the_person_and_nothing_else,
    a_long_export_streams_every_page,
    erasure_shreds_first_then_purges,
    the_same_id_after_erasure_is_a_new_person,
    reshred_after_restoring_an_old_key_store,
    an_interrupted_erasure_leaves_unreadable_rows_the_sweeper_removes,
    a_retried_erasure_completes_a_cut_one_with_the_same_receipt,
    the_purge_shreds_a_committed_erasure_whose_shred_failed,
    only_the_platform_holding_the_person_may_export_or_erase,
);
