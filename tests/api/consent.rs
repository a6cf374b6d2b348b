//! Consent, enforced in the access layer: refused events leave no trace,
//! consent is per kind and per notice version, withdrawal deletes at once,
//! and platforms and auditors see nothing of other platforms' users.

use std::sync::Arc;

use carbon_ledger::audit::Action;
use carbon_ledger::crypto::RootKey;
use carbon_ledger::domain::{minimize, parse_event, Role, SubjectId, TenantId};
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::{Access, Actor, IngestItem, IngestOutcome, Purpose, Store, StoreError};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{batch, event, TestApp};

async fn count(app: &TestApp, table: &str) -> i64 {
    let db = app.raw_ledger().await;
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The pseudonym the service would store for `subject` at the first tenant.
fn pseudonym_of(app: &TestApp, subject: &str) -> [u8; 32] {
    let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
    *root
        .pseudonym_key()
        .pseudonymize(TenantId::new(1), &SubjectId::parse(subject.into()).unwrap())
        .as_bytes()
}

async fn purposes_are_published_with_their_notices(app: TestApp) {
    let (status, body) = app.send(app.client.get(app.url("/v1/consent/purposes"))).await;
    assert_eq!(status, StatusCode::OK);
    let purposes = body["purposes"].as_array().unwrap();
    let names: Vec<&str> = purposes.iter().map(|p| p["purpose"].as_str().unwrap()).collect();
    assert_eq!(names, ["accounting", "rewards", "interconnection", "statistics"]);
    for p in purposes {
        assert!(p["notice"].as_str().unwrap().len() > 40);
        assert_eq!(p["notice_version"], 1);
        assert!(p["retention_days"].as_u64().unwrap() > 0);
    }
    assert_eq!(purposes[0]["necessary"], true);
    assert_eq!(purposes[1]["necessary"], false);
}

async fn an_event_without_consent_leaves_no_trace(app: TestApp) {
    let subject = "13900139000-carol";
    let mut e = event("nc-1", subject, "cycling", json!({"distance_m": 8765.4}));
    e["region"] = json!("510521");
    let (status, body) = app.post_events(&e).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], "urn:carbon-ledger:problem:consent-required");
    assert!(
        body["detail"].as_str().unwrap().contains("accounting") && body["detail"].as_str().unwrap().contains("cycling")
    );

    let (status, body) = app
        .post_events(&batch(vec![
            e.clone(),
            event("nc-2", subject, "clean_plate", json!({})),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let receipts = body["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "{body}");
    for receipt in receipts {
        assert_eq!(
            (receipt["status"].as_str(), receipt["problem"]["status"].as_u64()),
            (Some("rejected"), Some(403))
        );
    }
    for table in [
        "records",
        "ledger_entries",
        "idempotency_keys",
        "consents",
        "consent_history",
    ] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    let (status, _) = app.get(&format!("/v1/subjects/{subject}/account")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.store.verify_audit(&[]).await.unwrap().unwrap();

    let bytes = app.stored_bytes().await;
    assert!(!bytes.is_empty(), "nothing stored to search");
    let pseudonym = pseudonym_of(&app, subject);
    assert!(
        !contains(&bytes, &pseudonym),
        "the pseudonym of a subject who never consented is stored"
    );
    assert!(!contains(&bytes, hex::encode(pseudonym).as_bytes()));
    for needle in [subject, "510521", "8765", "nc-1"] {
        assert!(!contains(&bytes, needle.as_bytes()), "{needle} is stored");
    }
    // A control: a consenting subject's pseudonym is found by the same search.
    app.enroll("dave").await;
    app.store.close().await;
    let bytes = app.stored_bytes().await;
    assert!(
        contains(&bytes, &pseudonym_of(&app, "dave"))
            || contains(&bytes, hex::encode(pseudonym_of(&app, "dave")).as_bytes())
    );
}

async fn consent_is_per_kind_and_points_need_rewards(app: TestApp) {
    let put = |subject: &str, purpose: &str, body: Value| {
        app.client
            .put(app.url(&format!("/v1/subjects/{subject}/consents/{purpose}")))
            .bearer_auth(&app.key)
            .json(&body)
    };
    let (status, change) = app
        .send(put(
            "erin",
            "accounting",
            json!({"notice_version": 1, "kinds": ["clean_plate"]}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    let (_, body) = app
        .post_events(&batch(vec![
            event("k1", "erin", "clean_plate", json!({})),
            event("k2", "erin", "transit_ride", json!({"mode": "bus"})),
        ]))
        .await;
    let r = body["receipts"].as_array().unwrap();
    assert_eq!(r[0]["status"], "recorded");
    assert_eq!(r[0]["points"], 0, "no rewards consent, no points");
    assert_eq!(r[0]["reduction_g"], 144);
    assert_eq!(r[1]["problem"]["type"], "urn:carbon-ledger:problem:consent-required");
    assert!(r[1]["problem"]["detail"].as_str().unwrap().contains("transit_ride"));

    app.send(put("erin", "rewards", json!({"notice_version": 1}))).await;
    let (_, body) = app.post_events(&event("k3", "erin", "clean_plate", json!({}))).await;
    assert_eq!(body["receipts"][0]["points"], 5);

    // Stale, unknown or malformed notices and kinds are refused by name.
    let (status, body) = app.send(put("erin", "rewards", json!({"notice_version": 2}))).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:carbon-ledger:problem:stale-notice"))
    );
    let secret = "13800138000 Zhang San, 4 Jiuqu St";
    let (status, body) = app
        .send(put(
            "erin",
            "accounting",
            json!({"notice_version": 1, "kinds": ["walking", secret]}),
        ))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/kinds/1")),
        "{body}"
    );
    assert!(
        !body.to_string().contains("Zhang"),
        "the refused value is echoed: {body}"
    );
    let (status, body) = app
        .send(put("erin", "accounting", json!({"notice_version": 1, "scope": "all"})))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/scope"))
    );
    let (status, body) = app.send(put("erin", "accounting", json!({}))).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/notice_version"))
    );
    let (status, _) = app.send(put("erin", "marketing", json!({"notice_version": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = app.get("/v1/subjects/erin/consents").await;
    assert_eq!(status, StatusCode::OK);
    let consents = body["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2);
    assert_eq!(consents[0]["purpose"], "accounting");
    assert_eq!(consents[0]["kinds"], json!(["clean_plate"]));
    assert_eq!(consents[0]["all_kinds"], false);
    assert_eq!(consents[1]["all_kinds"], true);
    assert!(consents
        .iter()
        .all(|c| c["current"] == true && c["granted_at"].as_str().unwrap().contains('T')));
}

/// The daily usage rows, and the same sums computed from the ledger lines
/// with a behaviour: (kind, credited lines, reported milligrams).
async fn usage_and_lines(app: &TestApp) -> (Vec<(String, i64, i64)>, Vec<(String, i64, i64)>) {
    let db = app.raw_ledger().await;
    let usage = sqlx::query_as("SELECT kind, credited, reduction_mg FROM daily_usage ORDER BY kind, variant")
        .fetch_all(&db)
        .await
        .unwrap();
    let lines = sqlx::query_as(
        "SELECT kind, CAST(SUM(CASE WHEN reduction_mg + counted_elsewhere_mg > 0 THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(reduction_mg + counted_elsewhere_mg) AS BIGINT) FROM ledger_entries WHERE record_id IS NOT NULL \
         GROUP BY tenant_id, subject, day, kind, variant ORDER BY kind, variant",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    (usage, lines)
}

async fn withdrawal_deletes_at_once_and_points_stay(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("w1", "frank", "clean_plate", json!({})),
        event("w2", "frank", "transit_ride", json!({"mode": "bus"})),
        event("w3", "frank", "walking", json!({"steps": 5000})),
    ]))
    .await;
    let (_, before) = app.get("/v1/subjects/frank/account").await;
    assert_eq!(
        (before["events"].as_i64(), before["points_balance"].as_i64()),
        (Some(3), Some(25))
    );

    // Narrowing the kinds deletes the records of the kinds left out.
    let url = app.url("/v1/subjects/frank/consents/accounting");
    let (status, change) = app
        .send(
            app.client
                .put(&url)
                .bearer_auth(&app.key)
                .json(&json!({"notice_version": 1, "kinds": ["clean_plate", "walking"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (change["records_deleted"].as_u64(), change["points_kept"].as_i64()),
        (Some(1), Some(10))
    );
    let (_, account) = app.get("/v1/subjects/frank/account").await;
    assert_eq!(account["events"], 2);
    assert_eq!(account["points_balance"], 25, "points already earned stay");
    let by_kind = account["by_kind"].as_array().unwrap();
    assert_eq!(by_kind.len(), 2, "{account}");
    assert!(by_kind.iter().all(|k| k["key"] != "transit_ride"));
    // What the daily caps read went with the lines: it sums what is left.
    let (usage, lines) = usage_and_lines(&app).await;
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert_eq!(usage, lines);
    // So did the deleted record's retry key, and only it.
    assert_eq!(count(&app, "idempotency_keys").await, 2);

    let (status, change) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(
        (change["changed"].as_bool(), change["records_deleted"].as_u64()),
        (Some(true), Some(2))
    );
    let (_, account) = app.get("/v1/subjects/frank/account").await;
    assert_eq!(
        (account["events"].as_i64(), account["reduction_g"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(account["points_balance"], 25);
    let (_, records) = app.get("/v1/subjects/frank/records").await;
    assert_eq!(records["records"], json!([]));
    assert_eq!(count(&app, "records").await, 0);
    assert_eq!(count(&app, "daily_usage").await, 0);

    // Nothing new under the withdrawn purpose, not even a retry's old
    // receipt; the retry keys went with the records; the history keeps the
    // proof.
    let (status, _) = app.post_events(&event("w4", "frank", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.post_events(&event("w1", "frank", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(count(&app, "idempotency_keys").await, 0);
    assert_eq!(count(&app, "consent_history").await, 4); // 2 grants, 1 narrowing, 1 withdrawal
    let (_, again) = app.send(app.client.delete(&url).bearer_auth(&app.key)).await;
    assert_eq!(again["changed"], false);

    app.store
        .verify_audit(&[])
        .await
        .unwrap()
        .expect("the chain still verifies");
    let deletions: Vec<(u32, u32)> = app
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.action {
            Action::WithdrawnDataDeleted {
                records,
                ledger_entries,
                ..
            } => Some((records, ledger_entries)),
            _ => None,
        })
        .collect();
    assert_eq!(deletions, [(1, 1), (2, 2)]);
}

/// A new notice version: consents given under the old one stop counting
/// until renewed.
async fn a_new_notice_version_needs_renewed_consent(app: TestApp) {
    app.post_enrolled(&event("n1", "gina", "clean_plate", json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "access.toml",
        "consent.toml",
        "retention.toml",
        "methodology.toml",
        "points.toml",
    ] {
        let text = std::fs::read_to_string(format!("{}/policies/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let text = if name == "consent.toml" {
            text.replacen("notice_version = 1", "notice_version = 2", 1)
        } else {
            text
        };
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let policies = Arc::new(PolicySet::load(Some(dir.path())).unwrap());
    let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
    let store = Store::open(&app.database_url, root, app.clock.clone(), policies.clone())
        .await
        .unwrap();
    let access = Access::new(
        Actor {
            tenant: TenantId::new(1),
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    let item = || {
        let raw = parse_event(event("n2", "gina", "clean_plate", json!({}))).unwrap();
        let record = minimize(&raw, &policies.methodology, app.clock_now()).unwrap();
        IngestItem {
            event_id: raw.event_id,
            subject: raw.subject,
            record,
        }
    };
    // The purpose an access states must be the one the operation serves.
    let stated = Access::new(
        Actor {
            tenant: TenantId::new(1),
            role: Role::Platform,
        },
        Purpose::Statistics,
    );
    assert!(matches!(
        store.ingest(&stated, vec![item()]).await,
        Err(StoreError::Invalid(_))
    ));
    let outcome = store.ingest(&access, vec![item()]).await.unwrap();
    assert_eq!(
        outcome,
        [IngestOutcome::ConsentRequired {
            purpose: Purpose::Accounting,
            kind: "clean_plate".into()
        }]
    );
    let gina = SubjectId::parse("gina".into()).unwrap();
    let consents = store.consents(&access, &gina).await.unwrap();
    assert!(
        !consents
            .iter()
            .find(|c| c.purpose == Purpose::Accounting)
            .unwrap()
            .current
    );

    store
        .grant_consent(&access, &gina, 2, carbon_ledger::store::Kinds::All)
        .await
        .unwrap();
    assert!(matches!(
        store.ingest(&access, vec![item()]).await.unwrap()[0],
        IngestOutcome::Recorded(_)
    ));
    store.close().await;
}

/// Every personal-data route, called with another platform's key or an
/// auditor's, returns 404 or 403 and no data.
async fn other_platforms_and_auditors_see_nothing(app: TestApp) {
    app.post_enrolled(&event("iso-1", "henry", "clean_plate", json!({})))
        .await;
    let other = app.add_tenant("wuhan", Role::Platform).await;
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let admin = app.add_tenant("ops", Role::Admin).await;
    let reads = [
        "/v1/subjects/henry/account",
        "/v1/subjects/henry/records",
        "/v1/subjects/henry/consents",
    ];
    for path in reads {
        let (status, body) = app.get_as(&other, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body.get("records").is_none() && body.get("consents").is_none() && body.get("events").is_none());
        for key in [&auditor, &admin] {
            let (status, _) = app.get_as(key, path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    let (status, _) = app
        .send(
            app.client
                .delete(app.url("/v1/subjects/henry/consents/accounting"))
                .bearer_auth(&other),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for key in [&auditor, &admin] {
        let url = app.url("/v1/subjects/henry/consents/accounting");
        let (status, _) = app.send(app.client.delete(&url).bearer_auth(key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .send(
                app.client
                    .put(&url)
                    .bearer_auth(key)
                    .json(&json!({"notice_version": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .post_events_as(key, &event("iso-2", "henry", "clean_plate", json!({})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Refused for the role before the payload is looked at.
        let (status, _) = app.post_events_as(key, &json!({"gps": "30.88,105.44"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // Henry's data is untouched by all of it.
    let (_, account) = app.get("/v1/subjects/henry/account").await;
    assert_eq!(account["events"], 1);
}

on_both_engines!(
    purposes_are_published_with_their_notices,
    an_event_without_consent_leaves_no_trace,
    consent_is_per_kind_and_points_need_rewards,
    withdrawal_deletes_at_once_and_points_stay,
    a_new_notice_version_needs_renewed_consent,
    other_platforms_and_auditors_see_nothing,
);

/// No module but the access layer touches the database: `sqlx::` appears in
/// `src/store/` and nowhere else in `src/`.
#[test]
fn only_the_access_layer_touches_the_database() {
    fn walk(dir: &std::path::Path, searched: &mut usize, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("store") {
                    walk(&path, searched, found);
                }
            } else {
                *searched += 1;
                if std::fs::read_to_string(&path).unwrap().contains("sqlx::") {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let (mut searched, mut found) = (0, Vec::new());
    walk(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut searched,
        &mut found,
    );
    assert!(searched > 0, "no source file was searched");
    assert!(found.is_empty(), "database access outside src/store: {found:?}");
}
