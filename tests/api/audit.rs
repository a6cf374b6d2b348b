//! The audit chain: every write and read is logged, and `audit verify`
//! names the first entry that was tampered with.

use carbon_ledger::audit::{Action, ReadScope};
use carbon_ledger::domain::SubjectId;
use carbon_ledger::store::{Access, Purpose, StoreError};
use serde_json::json;
use sqlx::Row;

use crate::helpers::{batch, event, TestApp};

async fn ingest_some(app: &TestApp) {
    app.post_enrolled(&batch(
        (0..4)
            .map(|i| event(&format!("t{i}"), "u-audit", "clean_plate", json!({})))
            .collect(),
    ))
    .await;
    app.get("/v1/subjects/u-audit/account").await;
}

fn verify(app: &TestApp) -> (bool, String) {
    let out = app.cli(&["audit", "verify"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn every_write_and_read_is_logged_without_personal_data(app: TestApp) {
    ingest_some(&app).await;
    app.get("/v1/subjects/u-audit/records").await;
    let entries = app.audit_entries(0, 1000).await.unwrap();
    let actions: Vec<&Action> = entries.iter().map(|e| &e.action).collect();
    assert!(matches!(actions[0], Action::PolicyLoaded { .. }));
    assert!(matches!(actions[1], Action::TenantCreated { .. }));
    // Every event is logged, the fourth of the day too: clean plates are
    // capped at three a day, so it is written with zero credit.
    let written: Vec<(i64, bool)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordWritten {
                reduction_mg, capped, ..
            } => Some((*reduction_mg, *capped)),
            _ => None,
        })
        .collect();
    assert_eq!(
        written,
        [(144_000, false), (144_000, false), (144_000, false), (0, true)]
    );
    let reads: Vec<ReadScope> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SubjectRead { scope, .. } => Some(*scope),
            _ => None,
        })
        .collect();
    assert_eq!(reads, [ReadScope::Account, ReadScope::Records]);
    // One subject, one audit reference.
    let refs: std::collections::HashSet<_> = actions.iter().filter_map(|a| a.subject()).collect();
    assert_eq!(refs.len(), 1);
    let (ok, text) = verify(&app);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{} entries checked", entries.len())), "{text}");
}

async fn tampering_with_one_row_is_named(app: TestApp) {
    ingest_some(&app).await;
    let db = app.raw_ledger().await;
    let entry: Vec<u8> = sqlx::query("SELECT entry FROM audit_log WHERE seq = 4")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    let mut forged = entry.clone();
    // Raise the record's points (bytes 30 to 23 from the end).
    let at = forged.len() - 30;
    forged[at] ^= 0x40;
    sqlx::query("UPDATE audit_log SET entry = $1 WHERE seq = 4")
        .bind(forged)
        .execute(&db)
        .await
        .unwrap();
    let (ok, text) = verify(&app);
    assert!(!ok, "{text}");
    assert!(text.contains("audit entry 4:"), "{text}");

    // Restore it, then delete a row instead.
    sqlx::query("UPDATE audit_log SET entry = $1 WHERE seq = 4")
        .bind(entry)
        .execute(&db)
        .await
        .unwrap();
    assert!(verify(&app).0);
    sqlx::query("DELETE FROM audit_log WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap();
    let (ok, text) = verify(&app);
    assert!(!ok && text.contains("audit entry 3: missing"), "{text}");
}

async fn truncating_the_tail_is_detected(app: TestApp) {
    ingest_some(&app).await;
    let db = app.raw_ledger().await;
    let last: i64 = sqlx::query("SELECT MAX(seq) FROM audit_log")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(last)
        .execute(&db)
        .await
        .unwrap();
    let (ok, text) = verify(&app);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("audit entry {last}:")), "{text}");
}

/// Each read of one person (account, records, consents, redemptions, the
/// console's list of accesses) leaves exactly one entry, about that person,
/// in the order the reads ran; once the person is erased, a read finds
/// nobody and logs nothing.
async fn every_read_leaves_one_entry_and_none_after_an_erasure(app: TestApp) {
    ingest_some(&app).await;
    let actor = app.store.authenticate(&app.key).await.unwrap().unwrap();
    let access = Access::new(actor, Purpose::Accounting);
    let person = SubjectId::parse("u-audit".into()).unwrap();
    let before = app.audit_entries(0, 1000).await.unwrap();
    let subject = *before.last().unwrap().action.subject().unwrap();
    app.store.account(&access, &person).await.unwrap();
    app.store.records(&access, &person, 10, None).await.unwrap();
    app.store.consents(&access, &person).await.unwrap();
    app.store.redemptions(&access, &person, 10).await.unwrap();
    app.store.subject_accesses(&access, &person).await.unwrap();
    let entries = app.audit_entries(0, 1000).await.unwrap();
    let reads: Vec<Option<ReadScope>> = entries[before.len()..]
        .iter()
        .map(|e| {
            assert_eq!(e.action.subject(), Some(&subject), "{e:?}");
            match &e.action {
                Action::SubjectRead { scope, .. } => Some(*scope),
                Action::RedemptionsRead { .. } => None,
                other => panic!("not a read: {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        reads,
        [
            Some(ReadScope::Account),
            Some(ReadScope::Records),
            Some(ReadScope::Consents),
            None,
            Some(ReadScope::Accesses),
        ]
    );

    let erased = app.store.erase_subject(&access, &person).await.unwrap().audit_seq;
    let not_found = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::SubjectNotFound)), "{r:?}");
    not_found(app.store.account(&access, &person).await.map(drop));
    not_found(app.store.records(&access, &person, 10, None).await.map(drop));
    not_found(app.store.consents(&access, &person).await.map(drop));
    not_found(app.store.redemptions(&access, &person, 10).await.map(drop));
    not_found(app.store.subject_accesses(&access, &person).await.map(drop));
    // Only the purge of the erased rows may follow, naming nobody.
    for e in app.audit_entries(erased, 1000).await.unwrap() {
        assert!(
            matches!(e.action, Action::OrphansPurged { .. }) && e.action.subject().is_none(),
            "{e:?}"
        );
    }
}

on_both_engines!(
    every_read_leaves_one_entry_and_none_after_an_erasure,
    every_write_and_read_is_logged_without_personal_data,
    tampering_with_one_row_is_named,
    truncating_the_tail_is_detected
);
