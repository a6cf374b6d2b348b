//! The auditor's console: public pages that check the log on the server,
//! fail visibly when a row is altered, carry strict headers, speak Chinese
//! and English, and hand out proof files the CLI checks offline.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

use crate::helpers::{batch, event, TestApp};

/// A few consents, records and reads, then two signed checkpoints.
async fn history(app: &TestApp) {
    for (i, subject) in ["ada", "bo"].iter().enumerate() {
        let events = (0..3)
            .map(|n| event(&format!("c{i}-{n}"), subject, "paperless_bill", json!({})))
            .collect();
        app.post_enrolled(&batch(events)).await;
        app.store.checkpoint().await.unwrap();
        app.get(&format!("/v1/subjects/{subject}/account")).await;
    }
    app.store.checkpoint().await.unwrap();
}

async fn page(app: &TestApp, path: &str, lang: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = app
        .client
        .get(app.url(path))
        .header("accept-language", lang)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn assert_strict_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

fn verified_count(body: &str) -> usize {
    body.matches("data-check=\"verified\"").count()
}

async fn renders_verified_in_both_languages(app: TestApp) {
    history(&app).await;
    let (status, headers, en) = page(&app, "/console/audit", "en-GB,en;q=0.9").await;
    assert_eq!(status, StatusCode::OK, "{en}");
    assert_strict_headers(&headers);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(en.contains("<html lang=\"en\""), "{en}");
    assert!(en.contains("Latest signed checkpoint"));
    assert!(!en.contains("data-check=\"failed\""), "{en}");
    // The latest signature, the whole log, and the history's signatures
    // and consistency proofs.
    assert!(verified_count(&en) >= 5, "{en}");
    assert!(
        en.contains(&app.store.audit_public_key()),
        "the key a result depends on is named"
    );
    assert!(en.contains("<svg"), "the size chart is drawn on the server");
    assert!(en.contains("id=\"totals-table\""), "{en}");
    // No script at all.
    assert!(!en.contains("<script"));

    let (_, _, zh) = page(&app, "/console/audit", "zh-CN,zh;q=0.9").await;
    assert!(zh.contains("<html lang=\"zh-CN\""));
    assert!(zh.contains("最新签名检查点"));
    let (_, _, switched) = page(&app, "/console/audit?lang=en", "zh-CN").await;
    assert!(
        switched.contains("<html lang=\"en\""),
        "the switch wins over the header"
    );

    let (status, headers, css) = page(&app, "/console/audit/console-audit.css", "en").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(css.contains(".badge"));
}

async fn an_entry_shows_its_inclusion_proof_and_the_file_verifies_offline(app: TestApp) {
    history(&app).await;
    let (status, headers, body) = page(&app, "/console/audit/entries/3", "en").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_strict_headers(&headers);
    for check in ["check-signature", "check-leaf", "check-decode", "check-inclusion"] {
        let at = body
            .find(&format!("id=\"{check}\""))
            .unwrap_or_else(|| panic!("{check}: {body}"));
        let item = &body[at..at + body[at..].find("</li>").unwrap()];
        assert!(item.contains("data-check=\"verified\""), "{check}: {item}");
    }
    assert!(
        body.contains("&quot;seq&quot;: 3"),
        "the decoded entry is shown: {body}"
    );

    // The lookup form redirects to the entry's address.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/console/audit/entries?seq=3&lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(redirect.headers()["location"], "/console/audit/entries/3?lang=en");

    let response = app
        .client
        .get(app.url("/console/audit/entries/3/proof"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_strict_headers(response.headers());
    let proof = response.text().await.unwrap();
    let file = app.dir.path().join("proof.txt");
    std::fs::write(&file, &proof).unwrap();
    let key = app.store.audit_public_key();
    let out = app.cli(&["audit", "verify-proof", file.to_str().unwrap(), "--key", &key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("proof OK: audit entry 3"), "{text}");

    // One byte changed in the entry: a clear failure.
    let mut changed = proof.clone().into_bytes();
    let at = proof.find("extra ").unwrap() + 12;
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&file, &changed).unwrap();
    let out = app.cli(&["audit", "verify-proof", file.to_str().unwrap(), "--key", &key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("proof verification FAILED"), "{text}");

    // Unknown and malformed entries are problems, with the headers.
    let (status, headers, body) = page(&app, "/console/audit/entries/99999", "en").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_strict_headers(&headers);
    let (status, _, _) = page(&app, "/console/audit/entries/0", "en").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = page(&app, "/console/audit/entries/x", "en").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn an_altered_row_shows_which_entry_and_which_check_failed(app: TestApp) {
    history(&app).await;
    let db = app.raw_ledger().await;
    let entry: Vec<u8> = sqlx::query("SELECT entry FROM audit_log WHERE seq = 4")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    let mut forged = entry.clone();
    let at = forged.len() - 30;
    forged[at] ^= 0x40;
    sqlx::query("UPDATE audit_log SET entry = $1 WHERE seq = 4")
        .bind(forged)
        .execute(&db)
        .await
        .unwrap();

    let (status, _, body) = page(&app, "/console/audit", "en").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = body.find("id=\"whole-log-result\"").expect("the whole-log result");
    let result = &body[at..at + 600.min(body.len() - at)];
    assert!(result.contains("data-check=\"failed\""), "{result}");
    assert!(result.contains("audit entry 4:"), "{result}");
    assert!(result.contains("/console/audit/entries/4"), "{result}");

    let (status, _, body) = page(&app, "/console/audit/entries/4", "en").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let item = |id: &str| {
        let at = body.find(&format!("id=\"{id}\"")).unwrap();
        body[at..at + body[at..].find("</li>").unwrap()].to_string()
    };
    assert!(item("check-signature").contains("data-check=\"verified\""));
    assert!(
        item("check-leaf").contains("data-check=\"failed\""),
        "{}",
        item("check-leaf")
    );
    assert!(
        item("check-inclusion").contains("data-check=\"failed\""),
        "{}",
        item("check-inclusion")
    );
    assert!(item("check-inclusion").contains("entry 4"));

    // The proof file carries the altered bytes and fails offline too.
    let proof = app
        .client
        .get(app.url("/console/audit/entries/4/proof"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = app.dir.path().join("proof.txt");
    std::fs::write(&file, proof).unwrap();
    let out = app.cli(&["audit", "verify-proof", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is not leaf 3"), "{text}");
}

on_both_engines!(
    renders_verified_in_both_languages,
    an_entry_shows_its_inclusion_proof_and_the_file_verifies_offline,
    an_altered_row_shows_which_entry_and_which_check_failed,
);

async fn a_log_without_a_checkpoint_says_so(app: TestApp) {
    let (status, _, body) = page(&app, "/console/audit", "en").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("No signed checkpoint yet."), "{body}");
    assert!(!body.contains("data-check=\"failed\""), "{body}");
    let (status, _, body) = page(&app, "/console/audit/entries/1", "en").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("No signed checkpoint covers this entry yet."), "{body}");
    let response = app
        .client
        .get(app.url("/console/audit/entries/1/proof"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

on_both_engines!(a_log_without_a_checkpoint_says_so);
