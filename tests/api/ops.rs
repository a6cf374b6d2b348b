//! Operations: the OpenAPI document, the metrics scrape, per-tenant rate
//! limits.

use carbon_ledger::api::LimitsConfig;
use carbon_ledger::domain::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{batch, event, Backend, TestApp};

on_both_engines!(
    openapi_is_served,
    docs_are_served,
    metrics_after_traffic,
    metrics_are_for_operators
);

async fn openapi_is_served(app: TestApp) {
    let (status, doc) = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/v1/events", "/v1/subjects/{id}/account", "/metrics", "/openapi.json"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

/// The documentation page comes from the binary, under a strict CSP; a
/// missing file is a problem like any other 404.
async fn docs_are_served(app: TestApp) {
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger-initializer.js"));
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert!(init.text().await.unwrap().contains("/openapi.json"));
    let (status, body) = app.send(app.client.get(app.url("/docs/no-such-file.js"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "urn:carbon-ledger:problem:not-found");
}

async fn metrics_after_traffic(app: TestApp) {
    let subject = "person-7f3a-unique";
    let (status, _) = app
        .post_enrolled(&batch(vec![
            event("m-1", subject, "clean_plate", json!({})),
            event("m-2", subject, "transit_ride", json!({"mode": "bus"})),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    // A rejected event: a field the service does not collect.
    let mut bad = event("m-3", subject, "clean_plate", json!({}));
    bad["phone"] = json!("13800000000");
    let (status, _) = app.post_events(&bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get(&format!("/v1/subjects/{subject}/account")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/v1/subjects/nobody-held/account").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let operator = app.add_tenant("operator", Role::Admin).await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for expected in [
        r#"carbon_ledger_http_requests_total{method="POST",route="/v1/events",status="200"} 1"#,
        r#"carbon_ledger_http_requests_total{method="GET",route="/v1/subjects/{id}/account",status="200"} 1"#,
        r#"carbon_ledger_http_requests_total{method="GET",route="/v1/subjects/{id}/account",status="404"} 1"#,
        r#"carbon_ledger_http_request_duration_seconds_count{method="POST",route="/v1/events"}"#,
        r#"carbon_ledger_events_total{outcome="recorded",reason=""} 2"#,
        r#"carbon_ledger_events_total{outcome="rejected",reason="field-not-collected"} 1"#,
        "carbon_ledger_audit_log_entries ",
        "carbon_ledger_audit_entries_unsigned ",
        "carbon_ledger_audit_checkpoint_age_seconds ",
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    // Entries: the policy load, the tenants, consents, records, reads.
    let entries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("carbon_ledger_audit_log_entries "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(entries >= 5, "{entries}");
    for secret in [
        subject,
        "nobody-held",
        "13800000000",
        app.key.as_str(),
        operator.as_str(),
        "luzhou",
    ] {
        assert!(!text.contains(secret), "the scrape shows {secret}");
    }
}

async fn metrics_are_for_operators(app: TestApp) {
    let (status, _) = app.send(app.client.get(app.url("/metrics"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A platform's key reads no metrics.
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let (status, _) = app.get_as(&auditor, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
}

mod rate_limits {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        limited(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        limited(Backend::Postgres).await;
    }
}

/// Each platform has its own budgets: a spent one answers 429 problem JSON
/// with Retry-After, and another platform is not slowed.
async fn limited(backend: Backend) {
    let config = LimitsConfig::parse(
        // Slow refills (one per 10 s): a loaded machine cannot refill a
        // bucket between two requests of the test.
        "[default]\nrequests_per_second = 0.1\nrequest_burst = 4\nevents_per_minute = 6\nevent_burst = 3\n",
    )
    .unwrap();
    let Some(app) = TestApp::spawn_with_limits(backend, config).await else {
        return crate::helpers::postgres_not_configured();
    };
    let other = app.add_tenant("other", Role::Platform).await;
    // The request budget: 4 at once, then 429.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, body) = app.get("/v1/subjects/u-1/account").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["type"], "urn:carbon-ledger:problem:rate-limited");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let response = app
        .client
        .get(app.url("/v1/subjects/u-1/account"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");

    // The other platform has its own budgets: consent (2 requests), then
    // its event budget of 3 takes a batch of 3 and refuses the next event.
    app.consent_as(&other, "u-9", &["accounting"]).await;
    let events: Vec<Value> = (0..3)
        .map(|i| event(&format!("e-{i}"), "u-9", "clean_plate", json!({})))
        .collect();
    let (status, body) = app.post_events_as(&other, &batch(events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post_events_as(&other, &event("e-3", "u-9", "clean_plate", json!({})))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("events budget"));
}
