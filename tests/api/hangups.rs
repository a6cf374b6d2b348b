//! Clients that hang up mid-request hurt nobody else (invariant 9): many
//! connections reset (TCP RST) 0–2 ms after sending single events, batches,
//! consent changes, reads, exports and erasures, round after round. After
//! each round a write succeeds; at the end every acknowledged event is
//! still there, every erasure that began is complete, no connection is
//! left inside a transaction, and the audit log verifies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{batch, event, Backend, TestApp};

const ROUNDS: usize = 60;
const HANGUPS_PER_ROUND: usize = 16;
const STEADY: [&str; 3] = ["steady-a", "steady-b", "steady-c"];

/// A small deterministic generator: the test's schedule is the same every
/// run, yet spread over the request kinds and delays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn raw_request(method: &str, path: &str, key: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` and resets the connection `delay_us` later.
async fn send_and_reset(addr: std::net::SocketAddr, request: Vec<u8>, delay_us: u64) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    // Linger 0: closing sends RST instead of FIN, as a dropped mobile
    // connection or a killed client does. (Deprecated because a non-zero
    // linger blocks the dropping thread; zero does not.)
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    let _ = stream.write_all(&request).await;
    tokio::time::sleep(Duration::from_micros(delay_us)).await;
    drop(stream);
}

async fn clients_that_hang_up_hurt_nobody(app: TestApp) {
    for subject in STEADY {
        app.enroll(subject).await;
    }
    let doomed: Vec<String> = (0..ROUNDS).map(|r| format!("doomed-{r}")).collect();
    for subject in &doomed {
        app.enroll(subject).await;
        let (status, _) = app
            .post_events(&event(&format!("{subject}-e"), subject, "clean_plate", json!({})))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    let mut rng = Lcg(0x5eed);
    let mut acknowledged: Vec<(Value, String)> = Vec::new();
    let mut sent = 0usize;
    for round in 0..ROUNDS {
        let mut hangups = Vec::new();
        for i in 0..HANGUPS_PER_ROUND {
            let subject = STEADY[rng.next(STEADY.len() as u64) as usize];
            let id = format!("hangup-{round}-{i}");
            let request = match rng.next(7) {
                0 => raw_request(
                    "POST",
                    "/v1/events",
                    &app.key,
                    Some(&event(&id, subject, "transit_ride", json!({"mode": "bus"}))),
                ),
                1 => raw_request(
                    "POST",
                    "/v1/events",
                    &app.key,
                    Some(&batch(
                        (0..50)
                            .map(|n| event(&format!("{id}-{n}"), subject, "walking", json!({"steps": 1000 + n})))
                            .collect(),
                    )),
                ),
                2 => raw_request(
                    "PUT",
                    &format!("/v1/subjects/{subject}/consents/statistics"),
                    &app.key,
                    Some(&json!({"notice_version": 1})),
                ),
                3 => raw_request(
                    "DELETE",
                    &format!("/v1/subjects/{subject}/consents/statistics"),
                    &app.key,
                    None,
                ),
                4 => raw_request("GET", &format!("/v1/subjects/{subject}/account"), &app.key, None),
                5 => raw_request("GET", &format!("/v1/subjects/{subject}/export"), &app.key, None),
                _ => raw_request("DELETE", &format!("/v1/subjects/{}", doomed[round]), &app.key, None),
            };
            hangups.push(tokio::spawn(send_and_reset(app.addr, request, rng.next(2_000))));
        }
        // A client that stays connected meanwhile is served.
        let steady = event(
            &format!("steady-{round}"),
            STEADY[round % STEADY.len()],
            "clean_plate",
            json!({}),
        );
        let (status, body) = app.post_events(&steady).await;
        assert_eq!(status, StatusCode::CREATED, "round {round}: {body}");
        acknowledged.push((steady, body["receipts"][0]["record_id"].as_str().unwrap().to_owned()));
        for hangup in hangups {
            hangup.await.unwrap();
        }
        sent += HANGUPS_PER_ROUND;

        // And right after the round, a write goes through.
        let after = event(
            &format!("after-{round}"),
            STEADY[(round + 1) % STEADY.len()],
            "paperless_bill",
            json!({}),
        );
        let (status, body) = app.post_events(&after).await;
        assert_eq!(status, StatusCode::CREATED, "a write after round {round}: {body}");
        acknowledged.push((after, body["receipts"][0]["record_id"].as_str().unwrap().to_owned()));
        let (status, body) = app
            .send(
                app.client
                    .put(app.url("/v1/subjects/steady-a/consents/interconnection"))
                    .bearer_auth(&app.key)
                    .json(&json!({"notice_version": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "a consent change after round {round}: {body}");
    }
    assert_eq!(sent, ROUNDS * HANGUPS_PER_ROUND);
    // Work whose client left finishes on its own.
    app.in_flight.idle().await;

    // Every acknowledged event is still there, with its receipt.
    assert_eq!(acknowledged.len(), 2 * ROUNDS);
    for (sent, record_id) in &acknowledged {
        let (status, body) = app.post_events(sent).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["receipts"][0]["status"], "duplicate", "{body}");
        assert_eq!(body["receipts"][0]["record_id"].as_str(), Some(record_id.as_str()));
    }

    // Every erasure that began is complete: no tombstone left a key behind,
    // and once the background purge is done no row is without its key.
    app.erasures_purged().await;
    assert_eq!(
        app.store.reshred().await.unwrap(),
        (0, 0),
        "an erasure was left half done"
    );
    for subject in &doomed {
        let (status, _) = app.get(&format!("/v1/subjects/{subject}/account")).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{subject}: {status}"
        );
    }

    // No connection is left inside a transaction.
    if app.backend == Backend::Postgres {
        let db = app.raw_ledger().await;
        let stuck: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
        assert_eq!(stuck, 0, "sessions left idle in a transaction");
    }

    app.store
        .verify_audit(&[])
        .await
        .unwrap()
        .expect("the audit log verifies");
    let out = app.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

on_both_engines!(clients_that_hang_up_hurt_nobody);
