//! Ingest: receipts, published figures, partial batches, idempotency, caps
//! and limits.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{batch, event, TestApp};

fn receipts(body: &Value) -> &Vec<Value> {
    body["receipts"].as_array().expect("receipts")
}

async fn published_luzhou_figures(app: TestApp) {
    let (status, body) = app
        .post_enrolled(&batch(vec![
            event("plate-1", "u-1001", "clean_plate", json!({})),
            event("bus-1", "u-1001", "transit_ride", json!({"mode": "bus"})),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = receipts(&body);
    assert_eq!(r.len(), 2, "{body}");
    assert_eq!(
        (r[0]["reduction_g"].clone(), r[0]["points"].clone()),
        (json!(144), json!(5))
    );
    assert_eq!(
        (r[1]["reduction_g"].clone(), r[1]["points"].clone()),
        (json!(80), json!(10))
    );
    for receipt in r {
        assert_eq!(receipt["status"], "recorded");
        assert_eq!(receipt["methodology_version"], "cn-inclusive-2026.1");
        assert_eq!(receipt["record_id"].as_str().unwrap().len(), 32);
        assert!(receipt["audit_seq"].as_u64().unwrap() > 0);
    }
}

async fn single_event_is_created_or_refused_with_a_named_field(app: TestApp) {
    let (status, body) = app.post_enrolled(&event("one", "u-1", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(receipts(&body)[0]["status"], "recorded");

    let (status, body) = app.post_enrolled(&event("one", "u-1", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipts(&body)[0]["status"], "duplicate");

    let (status, body) = app
        .post_enrolled(&event(
            "two",
            "u-1",
            "walking",
            json!({"steps": 900, "gps": [30.8, 105.4]}),
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "/data/gps");
    assert_eq!(body["type"], "urn:carbon-ledger:problem:field-not-collected");
    assert!(body["detail"].as_str().unwrap().contains("not collected"));
    assert!(!body.to_string().contains("105.4"));
}

async fn batch_with_one_bad_event_records_the_others(app: TestApp) {
    let mut bad = event("b-2", "u-2", "transit_ride", json!({"mode": "bus"}));
    bad["station"] = json!("Jiangyang West");
    let (status, body) = app
        .post_enrolled(&batch(vec![
            event("b-1", "u-2", "clean_plate", json!({})),
            bad,
            event("b-3", "u-2", "cycling", json!({"distance_m": 5200})),
            event("b-4", "u-2", "teleport", json!({})),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = receipts(&body);
    let statuses: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["recorded", "rejected", "recorded", "rejected"], "{body}");
    assert_eq!(r[1]["event_id"], "b-2");
    assert_eq!(r[1]["problem"]["field"], "/events/1/station");
    assert_eq!(r[1]["problem"]["status"], 422);
    assert_eq!(r[3]["problem"]["field"], "/events/3/kind");
    assert_eq!(r[2]["reduction_g"], json!(485.16)); // 5.2 km x 93.3 g

    let (_, records) = app.get("/v1/subjects/u-2/records").await;
    assert_eq!(records["records"].as_array().unwrap().len(), 2);
}

async fn the_same_batch_twice_yields_one_set_of_records(app: TestApp) {
    let events: Vec<Value> = (0..20)
        .map(|i| event(&format!("ev-{i}"), &format!("u-{}", i % 3), "paperless_bill", json!({})))
        .collect();
    let (_, first) = app.post_enrolled(&batch(events.clone())).await;
    let (status, second) = app.post_enrolled(&batch(events)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((receipts(&first).len(), receipts(&second).len()), (20, 20));
    for (a, b) in receipts(&first).iter().zip(receipts(&second)) {
        assert_eq!(a["status"], "recorded");
        assert_eq!(b["status"], "duplicate");
        for field in ["record_id", "reduction_g", "points", "methodology_version", "audit_seq"] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
    let mut total = 0;
    for subject in ["u-0", "u-1", "u-2"] {
        let (_, account) = app.get(&format!("/v1/subjects/{subject}/account")).await;
        total += account["events"].as_i64().unwrap();
    }
    assert_eq!(total, 20);

    // An id reused for a different event is refused, not answered with the
    // first event's receipt.
    let (status, body) = app.post_enrolled(&event("ev-0", "u-0", "clean_plate", json!({}))).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:carbon-ledger:problem:event-id-reused"))
    );

    // A repeated id inside one batch is recorded once as well.
    let (_, body) = app
        .post_enrolled(&batch(vec![
            event("twice", "u-9", "clean_plate", json!({})),
            event("twice", "u-9", "clean_plate", json!({})),
        ]))
        .await;
    let r = receipts(&body);
    assert_eq!(
        (r[0]["status"].as_str(), r[1]["status"].as_str()),
        (Some("recorded"), Some("duplicate"))
    );
    assert_eq!(r[0]["record_id"], r[1]["record_id"]);
}

async fn daily_caps_limit_credit(app: TestApp) {
    let rides: Vec<Value> = (0..6)
        .map(|i| event(&format!("metro-{i}"), "u-cap", "transit_ride", json!({"mode": "metro"})))
        .collect();
    let (_, body) = app.post_enrolled(&batch(rides)).await;
    let r = receipts(&body);
    for receipt in &r[..5] {
        assert_eq!(
            (receipt["reduction_g"].clone(), receipt["capped"].clone()),
            (json!(52), json!(false))
        );
    }
    assert_eq!(
        (
            r[5]["reduction_g"].clone(),
            r[5]["points"].clone(),
            r[5]["capped"].clone()
        ),
        (json!(0), json!(0), json!(true))
    );

    // Bus rides share the kind's cap of 10 credited rides: the capped metro
    // ride used none of it, so four more bus rides are all credited.
    let buses: Vec<Value> = (0..4)
        .map(|i| event(&format!("bus-{i}"), "u-cap", "transit_ride", json!({"mode": "bus"})))
        .collect();
    let (_, body) = app.post_enrolled(&batch(buses)).await;
    let r = receipts(&body);
    assert_eq!(r.len(), 4, "{body}");
    assert!(
        r.iter().all(|r| r["capped"] == false && r["reduction_g"] == 80),
        "{body}"
    );
    let (_, body) = app
        .post_enrolled(&event("bus-4", "u-cap", "transit_ride", json!({"mode": "bus"})))
        .await;
    assert_eq!(receipts(&body)[0]["capped"], false, "the 10th credited ride");
    let (_, body) = app
        .post_enrolled(&event("bus-5", "u-cap", "transit_ride", json!({"mode": "bus"})))
        .await;
    assert_eq!(receipts(&body)[0]["capped"], true, "the 11th");

    // The cap also holds across requests.
    let (_, body) = app
        .post_enrolled(&event("metro-6", "u-cap", "transit_ride", json!({"mode": "metro"})))
        .await;
    assert_eq!(receipts(&body)[0]["capped"], true);
    let (_, body) = app
        .post_enrolled(&event("walk-1", "u-cap", "walking", json!({"steps": 30000})))
        .await;
    assert_eq!(receipts(&body)[0]["reduction_g"], json!(296));
}

async fn malformed_and_oversized_requests_get_problems(app: TestApp) {
    let post = |body: String| app.client.post(app.url("/v1/events")).bearer_auth(&app.key).body(body);
    let (status, body) = app.send(post("{\"events\": [".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));

    let (status, _) = app.send(post("[1, 2]".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A key given twice would let the second hide the first from every check.
    app.enroll("u-dup").await;
    let mut twice = event("dup-1", "u-dup", "clean_plate", json!({})).to_string();
    twice.pop();
    twice.push_str(r#", "data": {"route": "No. 7 Zhongshan Rd"}, "data": {}}"#);
    let (status, body) = app.send(post(twice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("appears twice"));
    assert!(!body.to_string().contains("Zhongshan"));

    let (status, _) = app.post_enrolled(&json!({"events": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = app.post_enrolled(&json!({"events": [], "source": "x"})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/source"))
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| event(&format!("e{i}"), "u", "clean_plate", json!({})))
        .collect();
    let (status, body) = app.post_enrolled(&batch(too_many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["detail"].as_str().unwrap().contains("1000"));

    let (status, _) = app.send(post("x".repeat(3 * 1024 * 1024))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

async fn a_full_batch_is_accepted(app: TestApp) {
    let events: Vec<Value> = (0..1000)
        .map(|i| {
            event(
                &format!("full-{i}"),
                &format!("u-{}", i % 97),
                "paperless_bill",
                json!({}),
            )
        })
        .collect();
    let (status, body) = app.post_enrolled(&batch(events)).await;
    assert_eq!(status, StatusCode::OK);
    let r = receipts(&body);
    assert_eq!(r.len(), 1000);
    assert!(r.iter().all(|r| r["status"] == "recorded"));
    assert!(app.store.verify_audit(&[]).await.unwrap().is_ok());
}

async fn concurrent_batches_keep_the_chain_intact(app: TestApp) {
    let bodies: Vec<Value> = (0..8)
        .map(|n| {
            batch(
                (0..25)
                    .map(|i| event(&format!("c{n}-{i}"), &format!("u-{i}"), "paperless_bill", json!({})))
                    .collect(),
            )
        })
        .collect();
    for i in 0..25 {
        app.enroll(&format!("u-{i}")).await;
    }
    let requests = bodies.iter().map(|body| app.post_events(body));
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let check = app.store.verify_audit(&[]).await.unwrap().expect("chain verifies");
    // policy load + tenant + 25 x 2 consents + 200 records
    assert_eq!(check.entries, 252);
}

/// Requests that arrive together are written in shared transactions (group
/// commit): across them an event id is still recorded once, and a daily cap
/// is still never exceeded.
async fn concurrent_requests_record_each_event_once_within_caps(app: TestApp) {
    app.enroll("u-rush").await;
    // Each of 12 metro rides is sent three times, every copy in its own
    // concurrent request; the kind's cap credits 10 rides a day.
    let bodies: Vec<Value> = (0..36)
        .map(|n| {
            event(
                &format!("rush-{}", n % 12),
                "u-rush",
                "transit_ride",
                json!({"mode": "metro"}),
            )
        })
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|body| app.post_events(body))).await;
    let mut first: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    let mut recorded = 0;
    for (body, (status, answer)) in bodies.iter().zip(&answers) {
        assert!(status.is_success(), "{status} {answer}");
        let receipt = receipts(answer)[0].clone();
        let id = body["event_id"].as_str().unwrap().to_owned();
        recorded += usize::from(receipt["status"] == "recorded");
        let mut same = receipt.clone();
        same["status"] = json!("recorded");
        if let Some(seen) = first.insert(id, same.clone()) {
            assert_eq!(seen, same, "every copy of an event gets the same receipt");
        }
    }
    assert_eq!(recorded, 12, "each event id is recorded once");
    let credited = first.values().filter(|r| r["capped"] == false).count();
    assert_eq!(credited, 5, "the metro cap of 5 credited rides a day holds: {first:?}");
    let check = app.store.verify_audit(&[]).await.unwrap().expect("chain verifies");
    // policy load + tenant + 2 consents + 12 records
    assert_eq!(check.entries, 16);
}

on_both_engines!(
    published_luzhou_figures,
    concurrent_requests_record_each_event_once_within_caps,
    single_event_is_created_or_refused_with_a_named_field,
    batch_with_one_bad_event_records_the_others,
    the_same_batch_twice_yields_one_set_of_records,
    daily_caps_limit_credit,
    malformed_and_oversized_requests_get_problems,
    a_full_batch_is_accepted,
    concurrent_batches_keep_the_chain_intact,
);
