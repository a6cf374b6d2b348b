//! Reading accounts and records; authentication, roles and tenant isolation.

use carbon_ledger::domain::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{batch, event, TestApp};

async fn account_totals_by_kind_and_month(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("a1", "u-1001", "clean_plate", json!({})),
        event("a2", "u-1001", "clean_plate", json!({})),
        event("a3", "u-1001", "transit_ride", json!({"mode": "bus"})),
        event("a4", "u-1001", "walking", json!({"steps": 1234})),
        event("other", "u-2002", "clean_plate", json!({})),
    ]))
    .await;
    let (status, account) = app.get("/v1/subjects/u-1001/account").await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["events"], 4);
    assert_eq!(account["reduction_g"], json!(384.4)); // 2 x 144 + 80 + 16.4
    assert_eq!(account["points_balance"], 5 * 2 + 10 + 2);
    let by_kind = account["by_kind"].as_array().unwrap();
    assert_eq!(by_kind.len(), 3);
    assert_eq!(
        by_kind[0],
        json!({"key": "clean_plate", "events": 2, "reduction_g": 288, "points": 10})
    );
    let by_month = account["by_month"].as_array().unwrap();
    assert_eq!(by_month.len(), 1);
    assert_eq!(by_month[0]["events"], 4);
    assert!(!account.to_string().contains("u-1001"));
}

async fn records_are_paginated_newest_first(app: TestApp) {
    let now = time::OffsetDateTime::now_utc();
    let events = (0..5)
        .map(|i| {
            let mut e = event(&format!("p{i}"), "u-pages", "paperless_bill", json!({}));
            let at = now - time::Duration::days(i);
            e["occurred_at"] = json!(at.format(&time::format_description::well_known::Rfc3339).unwrap());
            e
        })
        .collect();
    app.post_enrolled(&batch(events)).await;
    let mut days = Vec::new();
    let mut path = "/v1/subjects/u-pages/records?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let records = page["records"].as_array().unwrap();
        assert!(records.len() <= 2);
        days.extend(records.iter().map(|r| r["day"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/subjects/u-pages/records?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(days.len(), 5);
    let mut sorted = days.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(days, sorted);

    let (status, body) = app.get("/v1/subjects/u-pages/records?cursor=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = app.get("/v1/subjects/u-pages/records?limit=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn keys_roles_and_tenants_are_enforced(app: TestApp) {
    app.post_enrolled(&event("i1", "shared-user", "clean_plate", json!({})))
        .await;

    // No key, a malformed key, an unknown key.
    let (status, _) = app
        .send(app.client.get(app.url("/v1/subjects/shared-user/account")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get_as("not-a-key", "/v1/subjects/shared-user/account").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .get_as(
            "clk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "/v1/subjects/shared-user/account",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another platform does not see this platform's user, even by the same id.
    let other = app.add_tenant("wuhan", Role::Platform).await;
    for path in ["/v1/subjects/shared-user/account", "/v1/subjects/shared-user/records"] {
        let (status, body) = app.get_as(&other, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["type"], "urn:carbon-ledger:problem:subject-not-found");
    }
    // Its own user of the same id is a different person.
    app.consent_as(&other, "shared-user", &["accounting"]).await;
    app.post_events_as(
        &other,
        &event("i1", "shared-user", "transit_ride", json!({"mode": "bus"})),
    )
    .await;
    let (_, theirs) = app.get_as(&other, "/v1/subjects/shared-user/account").await;
    let (_, ours) = app.get("/v1/subjects/shared-user/account").await;
    assert_eq!(theirs["by_kind"][0]["key"], "transit_ride");
    assert_eq!(ours["by_kind"][0]["key"], "clean_plate");

    // Auditors see no personal data and record nothing.
    let auditor = app.add_tenant("city-auditor", Role::Auditor).await;
    for path in ["/v1/subjects/shared-user/account", "/v1/subjects/shared-user/records"] {
        let (status, body) = app.get_as(&auditor, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.get("by_kind").is_none() && body.get("records").is_none());
    }
    let (status, _) = app
        .post_events_as(&auditor, &event("x", "shared-user", "clean_plate", json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = app.get("/v1/subjects/never-seen/account").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn unknown_routes_and_methods_get_problems(app: TestApp) {
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_eq!((status, body["status"].as_u64()), (StatusCode::NOT_FOUND, Some(404)));
    let (status, _) = app
        .send(app.client.delete(app.url("/v1/events")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn methodology_and_health_are_public(app: TestApp) {
    let (status, body) = app.send(app.client.get(app.url("/v1/methodology"))).await;
    assert_eq!(status, StatusCode::OK);
    let m = &body["methodology"];
    assert_eq!(m["version"], "cn-inclusive-2026.1");
    for kind in [
        "transit_ride",
        "cycling",
        "walking",
        "clean_plate",
        "waste_sorting",
        "clothes_recycling",
        "no_drive_day",
        "paperless_bill",
    ] {
        assert!(m["kinds"][kind].is_object(), "{kind}");
    }
    assert!(m["kinds"]["clean_plate"]["credit"]["source"]
        .as_str()
        .unwrap()
        .contains("Luzhou"));
    assert_eq!(body["policy_digest"].as_str().unwrap().len(), 64);
    let (status, body) = app.send(app.client.get(app.url("/healthz"))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
}

on_both_engines!(
    account_totals_by_kind_and_month,
    records_are_paginated_newest_first,
    keys_roles_and_tenants_are_enforced,
    unknown_routes_and_methods_get_problems,
    methodology_and_health_are_public,
);
