//! Readiness and failover-aware connections: `/readyz` says whether the
//! database takes writes, and a database that stops taking them (a demoted
//! primary) is answered with 503 problems until the pool finds a writable
//! host, never with a 2xx for an uncommitted write or a 500.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carbon_ledger::api::AppState;
use carbon_ledger::clock::SystemClock;
use carbon_ledger::crypto::RootKey;
use carbon_ledger::domain::Role;
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::Store;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::AnyPool;

use crate::helpers::{batch, event, postgres_url, PgDatabase, TestApp};

on_both_engines!(ready_while_the_database_takes_writes);

async fn ready_while_the_database_takes_writes(app: TestApp) {
    let (status, body) = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let (status, _) = app.send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
}

/// `url` with a host nothing listens on put first in its host list, and
/// `target_session_attrs=read-write`.
fn behind_a_dead_host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find('/').unwrap_or(rest.len());
    let (before, after) = rest.split_at(rest[..end].rfind('@').map_or(0, |i| i + 1));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sep = if after.contains('?') { '&' } else { '?' };
    format!("{scheme}://{before}{dead},{after}{sep}target_session_attrs=read-write")
}

async fn admin(sql: &str) {
    let admin = AnyPool::connect(&postgres_url().unwrap()).await.unwrap();
    sqlx::query(sql).execute(&admin).await.unwrap();
    admin.close().await;
}

/// Polls `/readyz` until it answers `want` (bounded).
async fn wait_ready(client: &reqwest::Client, base: &str, want: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let response = client.get(format!("{base}/readyz")).send().await.unwrap();
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["type"], "urn:carbon-ledger:problem:not-ready");
        }
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/readyz stayed {status}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A multi-host URL whose first host is down and whose second turns
/// read-only and back, as a primary would that is demoted and then
/// promoted again: the pool skips the dead host, drops its read-only
/// connections, refuses writes with 503 meanwhile, and writes again once
/// the host takes them.
#[tokio::test]
async fn a_read_only_database_is_not_ready_and_writes_answer_503() {
    sqlx::any::install_default_drivers();
    let Some(db) = PgDatabase::create().await else {
        return crate::helpers::postgres_not_configured();
    };
    let name = db.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let url = behind_a_dead_host(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = RootKey::load_or_create(&dir.path().join("root.key")).unwrap();
    let policies = Arc::new(PolicySet::load(None).unwrap());
    let store = Arc::new(Store::open(&url, root, Arc::new(SystemClock), policies).await.unwrap());
    store.record_policy_load().await.unwrap();
    let (_, key) = store.add_tenant("p", Role::Platform).await.unwrap();
    let key = key.expose().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(carbon_ledger::server::serve(
        listener,
        AppState::new(store.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    wait_ready(&client, &base, StatusCode::OK).await;
    let consent = client
        .put(format!("{base}/v1/subjects/u-1/consents/accounting"))
        .bearer_auth(&key)
        .json(&json!({"notice_version": 1}));
    assert_eq!(consent.send().await.unwrap().status(), StatusCode::OK);
    let post = |id: &str| {
        client
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&batch(vec![event(id, "u-1", "paperless_bill", json!({}))]))
            .send()
    };
    assert_eq!(post("e-1").await.unwrap().status(), StatusCode::OK);

    // Demoted: new sessions are read-only, and the open ones are cut.
    admin(&format!("ALTER DATABASE {name} SET default_transaction_read_only = on")).await;
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    wait_ready(&client, &base, StatusCode::SERVICE_UNAVAILABLE).await;
    for id in ["e-2"] {
        let response = post(id).await.unwrap();
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            response.text().await.unwrap()
        );
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = response.json().await.unwrap();
        let kind = body["type"].as_str().unwrap();
        assert!(
            kind.ends_with(":unavailable") || kind.ends_with(":outcome-unknown"),
            "{body}"
        );
    }

    // Promoted again: the pool finds it, and the retried write goes through.
    admin(&format!("ALTER DATABASE {name} RESET default_transaction_read_only")).await;
    wait_ready(&client, &base, StatusCode::OK).await;
    let response = post("e-2").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["receipts"][0]["status"], "recorded", "{body}");
    let response = post("e-1").await.unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["receipts"][0]["status"], "duplicate", "{body}");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(store.verify_audit(&[]).await.is_ok());
    store.close().await;
}
