//! Accounts linked across platforms: link codes (single use, short-lived,
//! consent on both sides), unlinking (on request, by erasure, by
//! withdrawal), the consolidated view, and the same behaviour reported by
//! two linked platforms counted once.

use carbon_ledger::audit::{Action, UnlinkReason};
use carbon_ledger::domain::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{event, TestApp};

/// The city app's user id and the bank's user id of the same person.
const CITY_USER: &str = "city-user-4471";
const BANK_USER: &str = "bank-cust-9902";

const ALL: [&str; 3] = ["accounting", "rewards", "interconnection"];

/// The app's own platform (named "luzhou") plays the city app; a second
/// platform, "bank", is added. Both enrol their user with every consent
/// linking needs. Returns the bank's key.
async fn two_platforms(app: &TestApp) -> String {
    let bank = app.add_tenant("bank", Role::Platform).await;
    app.consent_as(&app.key, CITY_USER, &ALL).await;
    app.consent_as(&bank, BANK_USER, &ALL).await;
    bank
}

async fn issue_code(app: &TestApp, key: &str, subject: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/link-codes"));
    app.send(app.client.post(url).bearer_auth(key)).await
}

async fn redeem(app: &TestApp, key: &str, subject: &str, code: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/links"));
    app.send(app.client.post(url).bearer_auth(key).json(&json!({ "code": code })))
        .await
}

async fn unlink(app: &TestApp, key: &str, subject: &str, link: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/links/{link}"));
    app.send(app.client.delete(url).bearer_auth(key)).await
}

async fn linked_account(app: &TestApp, key: &str, subject: &str) -> (StatusCode, Value) {
    app.get_as(key, &format!("/v1/subjects/{subject}/linked-account")).await
}

/// Links the city user (code issued by the city app) with the bank user;
/// returns the link id.
async fn link(app: &TestApp, bank: &str) -> String {
    let (status, issued) = issue_code(app, &app.key, CITY_USER).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let (status, linked) = redeem(app, bank, BANK_USER, issued["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    linked["link_id"].as_str().unwrap().to_owned()
}

/// Exports with links and counted-elsewhere lines still follow the schema.
fn assert_schema_valid(export: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../../docs/export.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(export).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

fn problem_type(body: &Value) -> &str {
    body["type"].as_str().unwrap_or_default()
}

/// Everything a platform was sent must leave the other's user id out.
fn assert_no_user_ids(body: &Value) {
    let text = body.to_string();
    for id in [CITY_USER, BANK_USER] {
        assert!(!text.contains(id), "a response carries a user id: {text}");
    }
}

fn bus(event_id: &str, subject: &str) -> Value {
    event(event_id, subject, "transit_ride", json!({"mode": "bus"}))
}

/// The receipt of one event posted by `key`.
async fn post_one(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, receipts) = app.post_events_as(key, &json!({ "events": [body] })).await;
    assert_eq!(status, StatusCode::OK, "{receipts}");
    let receipt = receipts["receipts"][0].clone();
    assert_eq!(receipt["status"], "recorded", "{receipt}");
    receipt
}

async fn account(app: &TestApp, key: &str, subject: &str) -> Value {
    let (status, account) = app.get_as(key, &format!("/v1/subjects/{subject}/account")).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    account
}

async fn link_and_unlink(app: TestApp) {
    let bank = two_platforms(&app).await;
    let (status, issued) = issue_code(&app, &app.key, CITY_USER).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["valid_minutes"], 10);
    let code = issued["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 23, "{code}");

    // A forged code, then the real one (typed in lower case, without dashes).
    let (status, forged) = redeem(&app, &bank, BANK_USER, "ABCDE-ABCDE-ABCDE-ABCDE").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{forged}");
    assert_eq!(problem_type(&forged), "urn:carbon-ledger:problem:link-code-invalid");
    let (status, linked) = redeem(&app, &bank, BANK_USER, &code.replace('-', "").to_lowercase()).await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    assert_eq!(linked["platform"], "luzhou");
    assert_no_user_ids(&linked);
    let link_id = linked["link_id"].as_str().unwrap().to_owned();

    // Single use: a second redemption is refused and changes nothing.
    let (status, again) = redeem(&app, &bank, BANK_USER, &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again}");
    assert_eq!(problem_type(&again), "urn:carbon-ledger:problem:link-code-invalid");

    // Both sides see the link, by the same opaque id, naming the other platform.
    for (key, subject, other) in [(&app.key, CITY_USER, "bank"), (&bank, BANK_USER, "luzhou")] {
        let (status, view) = linked_account(&app, key, subject).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["linked"].as_array().unwrap().len(), 1, "{view}");
        assert_eq!(view["linked"][0]["link_id"], link_id.as_str());
        assert_eq!(view["linked"][0]["platform"], other);
        assert_no_user_ids(&view);
    }

    // The person's export names the link, not the other account.
    let (status, export) = app.get(&format!("/v1/subjects/{CITY_USER}/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(
        export["links"],
        json!([{"link_id": link_id, "platform": "bank", "linked_on": linked["linked_on"]}])
    );
    assert_no_user_ids(&export);
    assert_schema_valid(&export);

    // A platform may not link its own two accounts.
    app.consent_as(&app.key, "city-user-2", &ALL).await;
    let (_, own) = issue_code(&app, &app.key, "city-user-2").await;
    let (status, body) = redeem(&app, &app.key, "city-user-3", own["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown account first: {body}");
    app.consent_as(&app.key, "city-user-3", &ALL).await;
    let (status, body) = redeem(&app, &app.key, "city-user-3", own["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_type(&body), "urn:carbon-ledger:problem:invalid-request");

    // A second link to the same platform is refused while one exists.
    let (_, second) = issue_code(&app, &app.key, "city-user-2").await;
    let (status, body) = redeem(&app, &bank, BANK_USER, second["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Either side unlinks, at once, for both.
    let (status, body) = unlink(&app, &app.key, CITY_USER, &link_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, view) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(view["linked"], json!([]), "{view}");
    let (status, body) = unlink(&app, &bank, BANK_USER, &link_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(problem_type(&body), "urn:carbon-ledger:problem:link-not-found");
    let (status, body) = unlink(&app, &bank, BANK_USER, "not-hex").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Linked, then unlinked: one entry per side each time, under each
    // side's platform; the log verifies.
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let linked = entries
        .iter()
        .filter(|e| matches!(e.action, Action::AccountsLinked { .. }))
        .count();
    let unlinked = entries
        .iter()
        .filter(|e| {
            matches!(
                e.action,
                Action::AccountsUnlinked {
                    reason: UnlinkReason::Requested,
                    ..
                }
            )
        })
        .count();
    assert_eq!((linked, unlinked), (2, 2));
    let actors: std::collections::BTreeSet<_> = entries
        .iter()
        .filter(|e| matches!(e.action, Action::AccountsLinked { .. }))
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors.len(), 2, "each side's entry is in its own platform's stream");
    app.store.verify_audit(&[]).await.unwrap().unwrap();
}

async fn codes_expire_and_consent_gates_both_sides(app: TestApp) {
    let bank = app.add_tenant("bank", Role::Platform).await;
    app.consent_as(&app.key, CITY_USER, &["accounting"]).await;
    app.consent_as(&bank, BANK_USER, &["accounting"]).await;

    // Without interconnection on the issuing side: no code.
    let (status, body) = issue_code(&app, &app.key, CITY_USER).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(problem_type(&body), "urn:carbon-ledger:problem:consent-required");
    assert!(body["detail"].as_str().unwrap().contains("interconnection"), "{body}");

    app.consent_as(&app.key, CITY_USER, &["interconnection"]).await;
    let (_, issued) = issue_code(&app, &app.key, CITY_USER).await;
    let code = issued["code"].as_str().unwrap().to_owned();
    // Without it on the redeeming side: refused, and the code still stands.
    let (status, body) = redeem(&app, &bank, BANK_USER, &code).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    app.consent_as(&bank, BANK_USER, &["interconnection"]).await;

    // The issuing side withdraws before the code is used: nothing is linked.
    let url = app.url(&format!("/v1/subjects/{CITY_USER}/consents/interconnection"));
    let (status, _) = app.send(app.client.delete(url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = redeem(&app, &bank, BANK_USER, &code).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "withdrawal deleted the code: {body}"
    );

    // An expired code is refused like a used one.
    app.consent_as(&app.key, CITY_USER, &["interconnection"]).await;
    let (_, issued) = issue_code(&app, &app.key, CITY_USER).await;
    app.clock.advance(time::Duration::minutes(11));
    let (status, body) = redeem(&app, &bank, BANK_USER, issued["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_type(&body), "urn:carbon-ledger:problem:link-code-invalid");

    // A new code replaces the previous one.
    let (_, first) = issue_code(&app, &app.key, CITY_USER).await;
    let (_, second) = issue_code(&app, &app.key, CITY_USER).await;
    let (status, _) = redeem(&app, &bank, BANK_USER, first["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = redeem(&app, &bank, BANK_USER, second["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The consolidated view needs the reader's consent too.
    let (status, _) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(status, StatusCode::OK);
    let url = app.url(&format!("/v1/subjects/{BANK_USER}/consents/interconnection"));
    let (status, _) = app.send(app.client.delete(url).bearer_auth(&bank)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Withdrawing unlinked both sides.
    app.consent_as(&bank, BANK_USER, &["interconnection"]).await;
    let (_, view) = linked_account(&app, &app.key, CITY_USER).await;
    assert_eq!(view["linked"], json!([]), "{view}");
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let withdrawn = entries
        .iter()
        .filter(|e| {
            matches!(
                e.action,
                Action::AccountsUnlinked {
                    reason: UnlinkReason::ConsentWithdrawn,
                    ..
                }
            )
        })
        .count();
    assert_eq!(withdrawn, 2);
}

async fn the_same_ride_from_two_linked_platforms_counts_once(app: TestApp) {
    let bank = two_platforms(&app).await;
    link(&app, &bank).await;

    let first = post_one(&app, &app.key, bus("city-ride-1", CITY_USER)).await;
    assert_eq!(
        (first["reduction_g"].clone(), first["points"].clone()),
        (json!(80), json!(10))
    );
    assert!(first.get("counted_elsewhere").is_none(), "{first}");

    // The bank reports the same ride: recorded, but counted at the city app.
    let second = post_one(&app, &bank, bus("bank-ride-1", BANK_USER)).await;
    assert_eq!(
        (second["reduction_g"].clone(), second["points"].clone()),
        (json!(0), json!(0)),
        "{second}"
    );
    assert_eq!(second["counted_elsewhere"]["reduction_g"], 80, "{second}");
    assert_eq!(second["counted_elsewhere"]["points"], 10, "{second}");
    assert!(second["counted_elsewhere"]["note"]
        .as_str()
        .unwrap()
        .contains("claimed once"));

    // A retry returns the same receipt, note included.
    let (_, retried) = app
        .post_events_as(&bank, &json!({"events": [bus("bank-ride-1", BANK_USER)]}))
        .await;
    assert_eq!(retried["receipts"][0]["status"], "duplicate");
    assert_eq!(retried["receipts"][0]["counted_elsewhere"], second["counted_elsewhere"]);

    // A second ride the same day is more than the city app reported.
    let third = post_one(&app, &bank, bus("bank-ride-2", BANK_USER)).await;
    assert_eq!(third["reduction_g"], 80, "{third}");
    assert!(third.get("counted_elsewhere").is_none(), "{third}");

    // Each account's totals are its receipts; the consolidated view adds
    // them, and counts the shared ride once.
    assert_eq!(account(&app, &app.key, CITY_USER).await["reduction_g"], 80);
    let bank_account = account(&app, &bank, BANK_USER).await;
    assert_eq!(
        (
            bank_account["reduction_g"].clone(),
            bank_account["points_balance"].clone()
        ),
        (json!(80), json!(10))
    );
    let (status, view) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["own"]["reduction_g"], 80);
    assert_eq!(view["linked"][0]["totals"]["reduction_g"], 80);
    assert_eq!(view["linked"][0]["consolidated"], true);
    assert_eq!(view["total"], json!({"events": 3, "reduction_g": 160, "points": 20}));
    assert!(view["linked"][0].get("records").is_none(), "totals only: {view}");
    assert_no_user_ids(&view);

    // The bank's export explains the zero line too.
    let (status, export) = app.get_as(&bank, &format!("/v1/subjects/{BANK_USER}/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let explained: Vec<&Value> = export["ledger"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.get("counted_elsewhere"))
        .collect();
    assert_eq!(explained, vec![&json!({"reduction_g": 80, "points": 10})]);
    assert_schema_valid(&export);

    // The log explains the zero, and its totals still reconcile.
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let explained: Vec<_> = entries
        .iter()
        .filter_map(|e| match e.action {
            Action::CountedElsewhere {
                reduction_mg, points, ..
            } => Some((reduction_mg, points)),
            _ => None,
        })
        .collect();
    assert_eq!(explained, vec![(80_000, 10)]);
    app.store.verify_audit(&[]).await.unwrap().unwrap();
}

async fn unlinked_or_other_days_count_on_each(app: TestApp) {
    let bank = two_platforms(&app).await;
    // Not linked: the same ride counts on each platform.
    let city = post_one(&app, &app.key, bus("city-ride-1", CITY_USER)).await;
    let bank_ride = post_one(&app, &bank, bus("bank-ride-1", BANK_USER)).await;
    assert_eq!(
        (city["reduction_g"].clone(), bank_ride["reduction_g"].clone()),
        (json!(80), json!(80))
    );
    assert!(bank_ride.get("counted_elsewhere").is_none(), "{bank_ride}");

    // Linked from now on. What each reported before stays each one's (the
    // ledger is never rewritten), and a ride on another day is another ride.
    let link_id = link(&app, &bank).await;
    let mut yesterday = bus("bank-ride-2", BANK_USER);
    let at = (time::OffsetDateTime::now_utc() - time::Duration::days(1)).to_offset(time::macros::offset!(+8));
    yesterday["occurred_at"] = json!(at.format(&time::format_description::well_known::Rfc3339).unwrap());
    let other_day = post_one(&app, &bank, yesterday).await;
    assert_eq!(other_day["reduction_g"], 80, "{other_day}");
    assert!(other_day.get("counted_elsewhere").is_none(), "{other_day}");

    // Another kind the same day is another behaviour.
    let plate = post_one(&app, &bank, event("bank-plate-1", BANK_USER, "clean_plate", json!({}))).await;
    assert_eq!(plate["reduction_g"], 144, "{plate}");

    // Today both now have one ride each: a second city ride today is
    // beyond what the bank reported, a third city ride too.
    let city_2 = post_one(&app, &app.key, bus("city-ride-2", CITY_USER)).await;
    assert_eq!(city_2["reduction_g"], 80, "{city_2}");
    // The bank's second ride today overlaps the city app's second.
    let bank_3 = post_one(&app, &bank, bus("bank-ride-3", BANK_USER)).await;
    assert_eq!(bank_3["reduction_g"], 0, "{bank_3}");

    // Unlinked again: counted on each.
    let (status, _) = unlink(&app, &bank, BANK_USER, &link_id).await;
    assert_eq!(status, StatusCode::OK);
    post_one(&app, &app.key, bus("city-ride-3", CITY_USER)).await;
    let bank_4 = post_one(&app, &bank, bus("bank-ride-4", BANK_USER)).await;
    assert_eq!(bank_4["reduction_g"], 80, "{bank_4}");
    assert!(bank_4.get("counted_elsewhere").is_none(), "{bank_4}");
}

async fn erasure_on_either_side_unlinks(app: TestApp) {
    let bank = two_platforms(&app).await;
    link(&app, &bank).await;
    post_one(&app, &app.key, bus("city-ride-1", CITY_USER)).await;

    let url = app.url(&format!("/v1/subjects/{CITY_USER}"));
    let (status, body) = app.send(app.client.delete(url).bearer_auth(&app.key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The bank's side is unlinked at once, and the same ride now counts there.
    let (status, view) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["linked"], json!([]), "{view}");
    let ride = post_one(&app, &bank, bus("bank-ride-1", BANK_USER)).await;
    assert_eq!(ride["reduction_g"], 80, "{ride}");

    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let erased = entries
        .iter()
        .filter(|e| {
            matches!(
                e.action,
                Action::AccountsUnlinked {
                    reason: UnlinkReason::Erased,
                    ..
                }
            )
        })
        .count();
    assert_eq!(erased, 2);
    app.erasures_purged().await;
    let db = app.raw_ledger().await;
    let rows: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM subject_links")
            .fetch_one(&db)
            .await
            .unwrap(),
        0,
    );
    assert_eq!(rows, 0);
    app.store.verify_audit(&[]).await.unwrap().unwrap();

    // And from the redeeming side: the bank erases its user after a new link.
    app.consent_as(&app.key, CITY_USER, &ALL).await;
    link(&app, &bank).await;
    let url = app.url(&format!("/v1/subjects/{BANK_USER}"));
    let (status, _) = app.send(app.client.delete(url).bearer_auth(&bank)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, view) = linked_account(&app, &app.key, CITY_USER).await;
    assert_eq!(view["linked"], json!([]), "{view}");
    app.store.verify_audit(&[]).await.unwrap().unwrap();
}

/// The bytes: a link and an outstanding code store neither platform's user
/// id (in any form) nor the code itself.
async fn a_link_stores_no_user_id_and_no_code(app: TestApp) {
    let bank = two_platforms(&app).await;
    // An outstanding code, then one redeemed.
    app.consent_as(&app.key, "city-user-5", &ALL).await;
    let (_, outstanding) = issue_code(&app, &app.key, "city-user-5").await;
    let (_, issued) = issue_code(&app, &app.key, CITY_USER).await;
    let (status, _) = redeem(&app, &bank, BANK_USER, issued["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    post_one(&app, &app.key, bus("city-ride-1", CITY_USER)).await;
    post_one(&app, &bank, bus("bank-ride-1", BANK_USER)).await;

    let stored = app.stored_bytes().await;
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in [("city user id", CITY_USER), ("bank user id", BANK_USER)] {
        needles.push((name.into(), value.as_bytes().to_vec()));
        needles.push((name.into(), hex::encode(value).into_bytes()));
    }
    for code in [&outstanding, &issued].map(|c| c["code"].as_str().unwrap().to_owned()) {
        for form in [code.clone(), code.replace('-', "")] {
            needles.push(("link code".into(), form.as_bytes().to_vec()));
            needles.push(("link code".into(), hex::encode(&form).into_bytes()));
        }
    }
    for (name, needle) in needles {
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle.as_slice()),
            "the stored bytes contain the {name}"
        );
    }

    // The link rows hold references, not pseudonyms of either side: no
    // column of subject_links matches a key store pseudonym.
    let db = app.raw_ledger().await;
    let rows = sqlx::query("SELECT subject, peer_subject FROM subject_links")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "one row per side");
    let (keys, table) = app.raw_keys().await;
    let pseudonyms: Vec<Vec<u8>> = sqlx::query(&format!("SELECT subject FROM {table}"))
        .fetch_all(&keys)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    for row in rows {
        for column in 0..2 {
            let value: Vec<u8> = sqlx::Row::get(&row, column);
            assert!(!pseudonyms.contains(&value), "a link stores a pseudonym");
        }
    }
}

/// Quantities overlap as far as they go: 3 km reported by one platform
/// and 5 km by the other earn 3 km and 2 km.
async fn overlapping_quantities_count_once(app: TestApp) {
    let bank = two_platforms(&app).await;
    link(&app, &bank).await;
    let city = post_one(
        &app,
        &app.key,
        event("city-bike-1", CITY_USER, "cycling", json!({"distance_m": 3000})),
    )
    .await;
    assert_eq!(
        (city["reduction_g"].clone(), city["points"].clone()),
        (json!(279.9), json!(3))
    );
    let bank_ride = post_one(
        &app,
        &bank,
        event("bank-bike-1", BANK_USER, "cycling", json!({"distance_m": 5000})),
    )
    .await;
    assert_eq!(
        (bank_ride["reduction_g"].clone(), bank_ride["points"].clone()),
        (json!(186.6), json!(2)),
        "{bank_ride}"
    );
    assert_eq!(bank_ride["counted_elsewhere"]["reduction_g"], json!(279.9));
    assert_eq!(bank_ride["counted_elsewhere"]["points"], json!(3));
    let (_, view) = linked_account(&app, &bank, BANK_USER).await;
    assert_eq!(view["total"]["reduction_g"], json!(466.5), "the 5 km, once: {view}");
}

/// One code, redeemed at once by several accounts: exactly one is linked.
async fn a_code_redeemed_concurrently_links_once(app: TestApp) {
    let bank = two_platforms(&app).await;
    let customers: Vec<String> = (0..6).map(|i| format!("bank-cust-{i}")).collect();
    for c in &customers {
        app.consent_as(&bank, c, &ALL).await;
    }
    let (_, issued) = issue_code(&app, &app.key, CITY_USER).await;
    let code = issued["code"].as_str().unwrap().to_owned();
    let outcomes = futures_util::future::join_all(customers.iter().map(|c| redeem(&app, &bank, c, &code))).await;
    let statuses: Vec<StatusCode> = outcomes.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::UNPROCESSABLE_ENTITY),
        "{statuses:?}"
    );
    let (_, view) = linked_account(&app, &app.key, CITY_USER).await;
    assert_eq!(view["linked"].as_array().unwrap().len(), 1, "{view}");
}

on_both_engines!(
    a_code_redeemed_concurrently_links_once,
    overlapping_quantities_count_once,
    link_and_unlink,
    codes_expire_and_consent_gates_both_sides,
    the_same_ride_from_two_linked_platforms_counts_once,
    unlinked_or_other_days_count_on_each,
    erasure_on_either_side_unlinks,
    a_link_stores_no_user_id_and_no_code,
    points_earned_on_one_platform_are_spent_on_the_other,
);

async fn transfer(app: &TestApp, key: &str, subject: &str, link: &str, body: Value) -> (StatusCode, Value) {
    let url = app.url(&format!("/v1/subjects/{subject}/links/{link}/transfers"));
    app.send(app.client.post(url).bearer_auth(key).json(&body)).await
}

fn balance(account: &Value) -> i64 {
    account["points"]["balance"].as_i64().unwrap()
}

async fn points_earned_on_one_platform_are_spent_on_the_other(app: TestApp) {
    let bank = two_platforms(&app).await;
    let link_id = link(&app, &bank).await;
    // 30 points on the city app (three bus rides), none at the bank.
    let rides: Vec<Value> = (0..3).map(|i| bus(&format!("pool-{i}"), CITY_USER)).collect();
    let (status, receipts) = app.post_events_as(&app.key, &json!({ "events": rides })).await;
    assert_eq!(status, StatusCode::OK, "{receipts}");
    assert_eq!(balance(&account(&app, &app.key, CITY_USER).await), 30);

    // One transfer moves 25 to the bank account: both balances move.
    let body = json!({"points": 25, "reference": "T-1"});
    let (status, sent) = transfer(&app, &app.key, CITY_USER, &link_id, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_no_user_ids(&sent);
    assert_eq!(
        (sent["points"].as_i64(), sent["balance_after"].as_i64()),
        (Some(25), Some(5))
    );
    let city = account(&app, &app.key, CITY_USER).await;
    let at_bank = account(&app, &bank, BANK_USER).await;
    assert_eq!(
        (balance(&city), city["points"]["transferred_out"].as_i64()),
        (5, Some(25))
    );
    assert_eq!(
        (balance(&at_bank), at_bank["points"]["transferred_in"].as_i64()),
        (25, Some(25))
    );
    assert_eq!(city["points"]["spent"], 0, "a transfer is not a redemption");
    // A retry answers the original receipt and moves nothing more.
    let (status, again) = transfer(&app, &app.key, CITY_USER, &link_id, body).await;
    assert_eq!((status, &again), (StatusCode::OK, &sent));
    assert_eq!(balance(&account(&app, &bank, BANK_USER).await), 25);
    // The same reference for another amount, more than the balance, an
    // unknown link: refused, nothing moves.
    let (status, p) = transfer(
        &app,
        &app.key,
        CITY_USER,
        &link_id,
        json!({"points": 3, "reference": "T-1"}),
    )
    .await;
    assert_eq!(
        (status, problem_type(&p)),
        (
            StatusCode::CONFLICT,
            "urn:carbon-ledger:problem:redemption-reference-reused"
        )
    );
    let (status, p) = transfer(
        &app,
        &app.key,
        CITY_USER,
        &link_id,
        json!({"points": 6, "reference": "T-2"}),
    )
    .await;
    assert_eq!(
        (status, problem_type(&p)),
        (StatusCode::CONFLICT, "urn:carbon-ledger:problem:insufficient-points")
    );
    let (status, p) = transfer(
        &app,
        &app.key,
        CITY_USER,
        &"0".repeat(32),
        json!({"points": 1, "reference": "T-3"}),
    )
    .await;
    assert_eq!(
        (status, problem_type(&p)),
        (StatusCode::NOT_FOUND, "urn:carbon-ledger:problem:link-not-found")
    );

    // The bank spends what was earned on the city app.
    let url = app.url(&format!("/v1/subjects/{BANK_USER}/redemptions"));
    let (status, spent) = app
        .send(
            app.client
                .post(url)
                .bearer_auth(&bank)
                .json(&json!({"points": 25, "reference": "R-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{spent}");
    assert_eq!(spent["balance_after"], 0);

    // Without `rewards` on the receiving side, nothing moves.
    let url = app.url(&format!("/v1/subjects/{BANK_USER}/consents/rewards"));
    let (status, _) = app.send(app.client.delete(url).bearer_auth(&bank)).await;
    assert!(status.is_success());
    let (status, p) = transfer(
        &app,
        &app.key,
        CITY_USER,
        &link_id,
        json!({"points": 5, "reference": "T-4"}),
    )
    .await;
    assert_eq!(
        (status, problem_type(&p)),
        (StatusCode::FORBIDDEN, "urn:carbon-ledger:problem:consent-required")
    );
    assert!(p["detail"].as_str().unwrap().contains("rewards"), "{p}");
    assert_eq!(balance(&account(&app, &app.key, CITY_USER).await), 5);

    // One transfer, one entry per side, each under its own platform, paired
    // by the transfer id; the log verifies.
    let entries = app.audit_entries(0, 10_000).await.unwrap();
    let moved: Vec<(Option<i64>, i64, [u8; 16])> = entries
        .iter()
        .filter_map(|e| match e.action {
            Action::PointsTransferred {
                transfer_id, points, ..
            } => Some((e.actor.map(|t| t.get()), points, transfer_id)),
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!((moved[0].1, moved[1].1), (-25, 25));
    assert_ne!(moved[0].0, moved[1].0, "each side under its own platform");
    assert_eq!(moved[0].2, moved[1].2);
    let out = app.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Each side's export lists its side of the transfer.
    for (key, subject, direction) in [(&app.key, CITY_USER, "out"), (&bank, BANK_USER, "in")] {
        let (status, export) = app.get_as(key, &format!("/v1/subjects/{subject}/export")).await;
        assert_eq!(status, StatusCode::OK, "{export}");
        assert_schema_valid(&export);
        let transfers = export["points"]["transfers"].as_array().unwrap();
        assert_eq!(transfers.len(), 1, "{export}");
        assert_eq!(
            (transfers[0]["direction"].as_str(), transfers[0]["points"].as_i64()),
            (Some(direction), Some(25))
        );
        assert_eq!(transfers[0]["transfer_id"].as_str().unwrap(), hex::encode(moved[0].2));
        assert_no_user_ids(&export);
    }
}
