//! The points economy: redemption (idempotent, consented, never
//! overspending under concurrency), refunds by reversing lines, a running
//! balance that reconciles, expiry with notice by the sweeper, erasure, and
//! reports suppressed by people.

use std::collections::HashMap;

use carbon_ledger::audit::Action;
use carbon_ledger::domain::Role;
use carbon_ledger::policy::PolicySet;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use time::macros::offset;
use time::Duration;

use crate::helpers::{batch, event, Backend, TestApp};

/// Posts `rides` bus rides (10 points each) for `subject`, enrolled.
async fn earn(app: &TestApp, subject: &str, tag: &str, rides: usize) {
    let events: Vec<Value> = (0..rides)
        .map(|i| {
            event(
                &format!("{subject}-{tag}-{i}"),
                subject,
                "transit_ride",
                json!({"mode": "bus"}),
            )
        })
        .collect();
    let (status, body) = app.post_enrolled(&batch(events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn redeem(app: &TestApp, subject: &str, body: Value) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/redemptions"));
    app.send(app.client.post(url).bearer_auth(&app.key).json(&body)).await
}

async fn refund(app: &TestApp, subject: &str, reference: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/redemptions/{reference}/refund"));
    app.send(app.client.post(url).bearer_auth(&app.key)).await
}

async fn points(app: &TestApp, subject: &str) -> Value {
    let (status, account) = app.get(&format!("/v1/subjects/{subject}/account")).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["points_balance"], account["points"]["balance"]);
    account["points"].clone()
}

/// Recomputes every running balance from the lines, in order: each line's
/// balance is the previous one plus its points, never below zero. Returns
/// the lines' kinds.
async fn reconcile(app: &TestApp) -> Vec<String> {
    let db = app.raw_ledger().await;
    let rows = sqlx::query("SELECT tenant_id, subject, entry, points, balance FROM points_entries ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    let mut running: HashMap<(i64, Vec<u8>), i64> = HashMap::new();
    let mut kinds = Vec::new();
    for row in rows {
        let key = (row.get::<i64, _>(0), row.get::<Vec<u8>, _>(1));
        let (points, balance): (i64, i64) = (row.get(3), row.get(4));
        let b = running.entry(key).or_default();
        *b += points;
        assert_eq!(*b, balance, "a running balance does not reconcile");
        assert!(balance >= 0);
        kinds.push(row.get::<String, _>(2));
    }
    kinds
}

fn day_from_now(app: &TestApp, days: i64) -> String {
    (app.clock_now().to_offset(offset!(+8)).date() + Duration::days(days)).to_string()
}

async fn redemptions_are_idempotent_consented_and_refunded_by_reversal(app: TestApp) {
    // Without `rewards` consent: refused, naming the purpose.
    app.consent_as(&app.key, "bob", &["accounting"]).await;
    let (status, problem) = redeem(&app, "bob", json!({"points": 1, "reference": "b-1"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], "urn:carbon-ledger:problem:consent-required");
    assert!(problem["detail"].as_str().unwrap().contains("rewards"), "{problem}");

    earn(&app, "alice", "a", 3).await;
    assert_eq!(points(&app, "alice").await["balance"], 30);
    let body = json!({"points": 10, "reference": "A-1", "description": "coffee voucher"});
    let (status, first) = redeem(&app, "alice", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        (first["balance_after"].as_i64(), first["status"].as_str()),
        (Some(20), Some("redeemed"))
    );
    // A retry: the original receipt, nothing spent twice.
    let (status, again) = redeem(&app, "alice", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    // The same reference with another body.
    let (status, problem) = redeem(&app, "alice", json!({"points": 11, "reference": "A-1"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:carbon-ledger:problem:redemption-reference-reused");
    // More than the balance.
    let (status, problem) = redeem(&app, "alice", json!({"points": 21, "reference": "A-2"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:carbon-ledger:problem:insufficient-points");
    // Malformed requests.
    let (status, problem) = redeem(&app, "alice", json!({"points": 0, "reference": "A-3"})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/points"))
    );
    let (status, problem) = redeem(&app, "alice", json!({"points": 1, "reference": "A-3", "user": "x"})).await;
    assert_eq!(
        problem["type"], "urn:carbon-ledger:problem:field-not-collected",
        "{status}"
    );
    let points_now = points(&app, "alice").await;
    assert_eq!(
        (points_now["balance"].as_i64(), points_now["spent"].as_i64()),
        (Some(20), Some(10))
    );

    // Refund: a reversing line, idempotent.
    let (status, refunded) = refund(&app, "alice", "A-1").await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["refund"]["balance_after"], 30);
    let (_, again) = refund(&app, "alice", "A-1").await;
    assert_eq!(again, refunded);
    let (status, _) = refund(&app, "alice", "no-such").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let p = points(&app, "alice").await;
    assert_eq!(
        (p["balance"].as_i64(), p["earned"].as_i64(), p["spent"].as_i64()),
        (Some(30), Some(30), Some(0))
    );

    let (status, listed) = app.get("/v1/subjects/alice/redemptions").await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed["redemptions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0]["reference"].as_str(), listed[0]["description"].as_str()),
        (Some("A-1"), Some("coffee voucher"))
    );
    assert_eq!(listed[0]["status"], "refunded");

    // The export holds them too.
    let (status, export) = app.get("/v1/subjects/alice/export").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(export["points"]["summary"]["balance"], 30, "{export}");
    assert_eq!(export["points"]["redemptions"][0]["reference"], "A-1");
    assert_eq!(export["points"]["redemptions"][0]["refund"]["balance_after"], 30);

    // The ledger only grew: three earnings, the redemption, its reversal.
    assert_eq!(reconcile(&app).await, ["earn", "earn", "earn", "redeem", "refund"]);
    // Both are in the audit log, with the balance they left.
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let redeemed = entries
        .iter()
        .find(|e| matches!(e.action, Action::PointsRedeemed { .. }))
        .unwrap();
    assert_eq!(redeemed.seq, first["audit_seq"].as_u64().unwrap());
    assert!(matches!(
        redeemed.action,
        Action::PointsRedeemed {
            points: 10,
            balance: 20,
            ..
        }
    ));
    assert!(entries.iter().any(|e| matches!(
        e.action,
        Action::PointsRefunded {
            points: 10,
            balance: 30,
            ..
        }
    )));
    assert!(app.store.verify_audit(&[]).await.unwrap().is_ok());

    // Auditors never touch points.
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let url = app.url("/v1/subjects/alice/redemptions");
    let (status, _) = app
        .send(
            app.client
                .post(url)
                .bearer_auth(&auditor)
                .json(&json!({"points": 1, "reference": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Many redemptions at once against one balance: never more than it holds.
async fn concurrent_redemptions_never_overspend(app: TestApp) {
    earn(&app, "carol", "c", 10).await;
    assert_eq!(points(&app, "carol").await["balance"], 100);
    let url = app.url("/v1/subjects/carol/redemptions");
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (client, url, key) = (app.client.clone(), url.clone(), app.key.clone());
            tokio::spawn(async move {
                let body = json!({"points": 7, "reference": format!("c-{i}")});
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut spent = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => spent += 7,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(spent <= 100, "overspent: {spent}");
    assert_eq!(spent, 98, "every redemption the balance allowed went through");
    let p = points(&app, "carol").await;
    assert_eq!((p["balance"].as_i64(), p["spent"].as_i64()), (Some(2), Some(98)));
    reconcile(&app).await;
}

/// Erasure takes the points ledger and the redemptions with the person.
async fn erasure_removes_points_and_redemptions(app: TestApp) {
    earn(&app, "dan", "d", 2).await;
    let (status, _) = redeem(&app, "dan", json!({"points": 5, "reference": "d-1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, receipt) = app
        .send(app.client.delete(app.url("/v1/subjects/dan")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    app.erasures_purged().await;
    let db = app.raw_ledger().await;
    for table in ["points_entries", "redemptions"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} still holds the erased person's rows");
    }
    let (status, _) = app.get("/v1/subjects/dan/redemptions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Small cells are judged by people: many events of one person stay
/// suppressed however many they are.
async fn report_cells_need_enough_people(app: TestApp) {
    earn(&app, "eve", "e", 10).await;
    let plates: Vec<Value> = (0..5)
        .map(|i| event(&format!("p-{i}"), &format!("p{i}"), "clean_plate", json!({})))
        .collect();
    app.post_enrolled(&batch(plates)).await;
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let (status, report) = app.get_as(&auditor, "/v1/reports/reductions").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["min_cell_people"], 5);
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{report}");
    assert_eq!(
        (cells[0]["kind"].as_str(), cells[0]["events"].as_i64()),
        (Some("clean_plate"), Some(5))
    );
    assert_eq!(
        report["suppressed"][0]["events"], 10,
        "one person's ten rides: {report}"
    );
}

on_both_engines!(
    redemptions_are_idempotent_consented_and_refunded_by_reversal,
    concurrent_redemptions_never_overspend,
    erasure_removes_points_and_redemptions,
    report_cells_need_enough_people,
);

/// The shipped policies with points of the test platform ("luzhou")
/// expiring after ten days.
fn expiring_policies() -> PolicySet {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let points = std::fs::read_to_string(shipped.join("points.toml")).unwrap();
    std::fs::write(
        dir.path().join("points.toml"),
        format!("{points}\n[platforms.luzhou]\ndays = 10\n"),
    )
    .unwrap();
    PolicySet::load(Some(dir.path())).unwrap()
}

async fn points_expire_oldest_first_with_notice(app: TestApp) {
    earn(&app, "fay", "f1", 3).await;
    let (status, _) = redeem(&app, "fay", json!({"points": 5, "reference": "f-1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let p = points(&app, "fay").await;
    assert_eq!(
        p["expiring"],
        json!([{"date": day_from_now(&app, 10), "points": 25}]),
        "{p}"
    );

    // Five days on, more points, expiring later.
    app.clock.advance(Duration::days(5));
    earn(&app, "fay", "f2", 2).await;
    let p = points(&app, "fay").await;
    assert_eq!(
        p["expiring"],
        json!([{"date": day_from_now(&app, 5), "points": 25}, {"date": day_from_now(&app, 10), "points": 20}]),
        "{p}"
    );

    // Past the first expiry: invisible at once, written by the sweeper.
    app.clock.advance(Duration::days(6));
    let p = points(&app, "fay").await;
    assert_eq!(
        (p["balance"].as_i64(), p["expired"].as_i64()),
        (Some(20), Some(25)),
        "{p}"
    );
    let (status, problem) = redeem(&app, "fay", json!({"points": 21, "reference": "f-2"})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "expired points cannot be spent: {problem}"
    );
    app.store.sweep_retention().await.unwrap();
    app.store.sweep_retention().await.unwrap();
    let p = points(&app, "fay").await;
    assert_eq!(
        (
            p["balance"].as_i64(),
            p["earned"].as_i64(),
            p["spent"].as_i64(),
            p["expired"].as_i64()
        ),
        (Some(20), Some(50), Some(5), Some(25)),
        "{p}"
    );
    assert_eq!(p["expiring"], json!([{"date": day_from_now(&app, 4), "points": 20}]));
    // An audited debit line, once; the credits it expired are still there.
    let kinds = reconcile(&app).await;
    assert_eq!(kinds.iter().filter(|k| *k == "expire").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "earn").count(), 5, "{kinds:?}");
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let expired: Vec<_> = entries
        .iter()
        .filter(|e| matches!(e.action, Action::PointsExpired { .. }))
        .collect();
    assert_eq!(expired.len(), 1);
    assert!(matches!(
        expired[0].action,
        Action::PointsExpired {
            accounts: 1,
            points: 25,
            ..
        }
    ));
    let (status, _) = redeem(&app, "fay", json!({"points": 20, "reference": "f-3"})).await;
    assert_eq!(status, StatusCode::CREATED);
}

mod points_expire_oldest_first_with_notice {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let app = TestApp::spawn_with(Backend::Sqlite, expiring_policies()).await.unwrap();
        super::points_expire_oldest_first_with_notice(app).await;
    }

    #[tokio::test]
    async fn postgres() {
        match TestApp::spawn_with(Backend::Postgres, expiring_policies()).await {
            Some(app) => super::points_expire_oldest_first_with_notice(app).await,
            None => crate::helpers::postgres_not_configured(),
        }
    }
}
