//! Compliance evidence: notices in the language asked for, the language
//! shown kept with each consent, the incident query, the records of
//! processing, and the duty → test map in docs/compliance.md.

use std::collections::BTreeSet;
use std::path::Path;

use carbon_ledger::audit::Action;
use carbon_ledger::domain::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use time::Duration;

use crate::helpers::TestApp;

async fn purposes_in(app: &TestApp, accept_language: Option<&str>) -> (Value, String) {
    let mut request = app.client.get(app.url("/v1/consent/purposes"));
    if let Some(l) = accept_language {
        request = request.header("accept-language", l);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let language = response.headers()["content-language"].to_str().unwrap().to_owned();
    (response.json().await.unwrap(), language)
}

async fn notices_are_given_in_the_language_asked_for(app: TestApp) {
    let (en, en_header) = purposes_in(&app, None).await;
    let (zh, zh_header) = purposes_in(&app, Some("zh-CN,zh;q=0.9,en;q=0.8")).await;
    assert_eq!((en["language"].as_str(), en_header.as_str()), (Some("en"), "en"));
    assert_eq!((zh["language"].as_str(), zh_header.as_str()), (Some("zh-CN"), "zh-CN"));
    let (bare_zh, _) = purposes_in(&app, Some("zh")).await;
    assert_eq!(bare_zh, zh);
    let (prefers_en, _) = purposes_in(&app, Some("en-GB, zh;q=0.5")).await;
    assert_eq!(prefers_en, en);

    let (en, zh) = (en["purposes"].as_array().unwrap(), zh["purposes"].as_array().unwrap());
    assert_eq!(en.len(), 4);
    let han = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    for (e, z) in en.iter().zip(zh) {
        assert_eq!(e["purpose"], z["purpose"]);
        // One notice version for both languages.
        assert_eq!(e["notice_version"], z["notice_version"]);
        assert_eq!(e["retention_days"], z["retention_days"]);
        assert!(!han(e["title"].as_str().unwrap()) && !han(e["notice"].as_str().unwrap()));
        assert!(
            han(z["title"].as_str().unwrap()) && han(z["notice"].as_str().unwrap()),
            "{z}"
        );
    }
    assert_eq!(zh[0]["title"], "保留我的碳账户");
}

async fn a_consent_keeps_the_language_its_notice_was_shown_in(app: TestApp) {
    let put = |subject: &str, body: Value| {
        app.client
            .put(app.url(&format!("/v1/subjects/{subject}/consents/accounting")))
            .bearer_auth(&app.key)
            .json(&body)
    };
    let (status, body) = app
        .send(put("lang-zhang", json!({"notice_version": 1, "language": "zh-CN"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seq = body["audit_seq"].as_u64().unwrap();
    // Old clients, which do not say, keep working.
    let (status, body) = app.send(put("lang-old", json!({"notice_version": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .send(put("lang-bad", json!({"notice_version": 1, "language": "fr"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "/language");
    assert!(!body.to_string().contains("\"fr\""), "{body}");

    let (_, consents) = app.get("/v1/subjects/lang-zhang/consents").await;
    assert_eq!(consents["consents"][0]["language"], "zh-CN", "{consents}");
    let (_, consents) = app.get("/v1/subjects/lang-old/consents").await;
    assert!(consents["consents"][0].get("language").is_none(), "{consents}");
    let (_, export) = app.get("/v1/subjects/lang-zhang/export").await;
    assert_eq!(export["consents"][0]["language"], "zh-CN");
    assert_eq!(export["consent_history"][0]["language"], "zh-CN");
    let schema: Value = serde_json::from_str(include_str!("../../docs/export.schema.json")).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&export)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    let db = app.raw_ledger().await;
    let stored: Vec<Option<String>> = sqlx::query("SELECT language FROM consent_history ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, [Some("zh-CN".to_owned()), None]);

    // Audited with the grant, in the same transaction.
    let entries = app.audit_entries(0, 1000).await.unwrap();
    let shown: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.action {
            Action::NoticeLanguage {
                language,
                notice_version,
                ..
            } => Some((e.seq, language.as_str(), *notice_version)),
            _ => None,
        })
        .collect();
    assert_eq!(shown, [(seq, "zh-CN", 1)]);
    assert!(matches!(
        entries.iter().find(|e| e.seq == seq - 1).unwrap().action,
        Action::ConsentChanged { granted: true, .. }
    ));
}

fn out(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn the_incident_query_names_whom_a_key_touched(app: TestApp) {
    let enrolled = ["inc-alice", "inc-bob", "inc-carol"];
    for s in enrolled {
        app.enroll(s).await;
    }
    // Another platform's user with the same id is another person.
    let wuhan = app.add_tenant("wuhan", Role::Platform).await;
    app.consent_as(&wuhan, "inc-bob", &["accounting"]).await;

    // Two days later the key reads alice's and carol's data, not bob's.
    app.clock.advance(Duration::days(2));
    let day = carbon_ledger::domain::Day::from_date(app.clock_now().date()).to_string();
    assert_eq!(app.get("/v1/subjects/inc-alice/records").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/subjects/inc-alice/account").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/subjects/inc-carol/export").await.0, StatusCode::OK);
    assert_eq!(
        app.get_as(&wuhan, "/v1/subjects/inc-bob/account").await.0,
        StatusCode::OK
    );

    let list = app.dir.path().join("users.txt");
    std::fs::write(&list, "inc-alice\ninc-bob\n\ninc-carol\ninc-nobody\n").unwrap();
    let args = |format: &'static str| {
        vec![
            "audit".to_owned(),
            "accesses".into(),
            "--tenant".into(),
            "1".into(),
            "--since".into(),
            day.clone(),
            "--until".into(),
            day.clone(),
            "--match".into(),
            list.to_str().unwrap().to_owned(),
            "--format".into(),
            format.into(),
        ]
    };
    let run = |format| {
        let a = args(format);
        out(&app.cli(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let report: Value = serde_json::from_str(&run("json")).unwrap();
    let subjects = report["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 2, "{report}");
    let kinds: BTreeSet<String> = subjects
        .iter()
        .flat_map(|s| s["accesses"].as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(
        kinds,
        ["export", "read_account", "read_records"].map(String::from).into()
    );
    let matched = report["matched"].as_array().unwrap();
    let touched: Vec<(u64, bool)> = matched
        .iter()
        .map(|m| (m["line"].as_u64().unwrap(), m["touched"].as_bool().unwrap()))
        .collect();
    // alice (line 1) and carol (line 4) were read; bob (line 2) was not;
    // nobody (line 5) holds no key, so has no reference.
    assert_eq!(touched, [(1, true), (2, false), (4, true), (5, false)]);
    assert!(matched[3]["subject_ref"].is_null());
    assert_eq!(matched[0]["accesses"]["read_records"], 1);
    assert_eq!(matched[2]["accesses"]["export"], 1);

    let text = run("markdown");
    assert!(
        text.contains("2 subjects touched") && text.contains("2 of the 4 users listed"),
        "{text}"
    );
    assert!(text.contains("Not touched: lines 2."), "{text}");
    // References only: no listed id is ever printed.
    for id in ["inc-alice", "inc-bob", "inc-carol", "inc-nobody"] {
        assert!(!text.contains(id) && !report.to_string().contains(id), "{id}");
    }

    // The whole window: the consents given two days before count too.
    let since = carbon_ledger::domain::Day::from_days(
        carbon_ledger::domain::Day::from_date(app.clock_now().date()).days() as i64 - 2,
    )
    .unwrap()
    .to_string();
    let all: Value = serde_json::from_str(&out(&app.cli(&[
        "audit", "accesses", "--tenant", "1", "--since", &since, "--until", &day, "--format", "json",
    ])))
    .unwrap();
    assert_eq!(all["subjects"].as_array().unwrap().len(), 3, "{all}");
}

on_both_engines!(
    notices_are_given_in_the_language_asked_for,
    a_consent_keeps_the_language_its_notice_was_shown_in,
    the_incident_query_names_whom_a_key_touched,
);

fn cli(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
        .args(args)
        .env("CARBON_LEDGER_DATA_DIR", dir.path())
        .env_remove("CARBON_LEDGER_POLICIES")
        .output()
        .unwrap();
    out(&output)
}

/// The committed records document is what the command prints from the
/// shipped policies; a changed retention period changes it.
#[test]
fn the_records_of_processing_in_docs_are_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/records-of-processing.md")).unwrap();
    let printed = cli(&["compliance", "records"]);
    assert!(
        committed == printed,
        "docs/records-of-processing.md is stale: regenerate it with `carbon-ledger compliance records`"
    );
    let json: Value = serde_json::from_str(&cli(&["compliance", "records", "--format", "json"])).unwrap();
    assert_eq!(
        json["retention"][0],
        json!({"class": "records", "days": 730, "reason": json["retention"][0]["reason"]})
    );

    let dir = tempfile::tempdir().unwrap();
    for name in [
        "access.toml",
        "consent.toml",
        "methodology.toml",
        "points.toml",
        "retention.toml",
    ] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name)).unwrap();
        std::fs::write(dir.path().join(name), text.replacen("days = 730", "days = 400", 1)).unwrap();
    }
    let changed: Value = serde_json::from_str(&cli(&[
        "--policies",
        dir.path().to_str().unwrap(),
        "compliance",
        "records",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(changed["retention"][0]["days"], 400);
    assert_eq!(changed["purposes"][0]["retention_days"], 400);
    assert_ne!(changed["policy_digest"], json["policy_digest"]);
}

/// Every test named in docs/compliance.md exists, and every article the
/// map lists has at least one.
#[test]
fn the_compliance_map_names_real_tests_for_every_article() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("docs/compliance.md")).unwrap();
    let mut sources = String::new();
    let mut dirs = vec![root.join("src"), root.join("tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
                sources.push('\n');
            }
        }
    }
    let defined = |name: &str| sources.contains(&format!("fn {name}(")) || sources.contains(&format!("fn {name}<"));
    let required: Vec<String> = [
        "5", "6", "7", "13", "14", "15", "16", "17", "19", "28", "29", "30", "44", "45", "46", "47", "51", "54", "55",
        "56", "57", "73",
    ]
    .iter()
    .map(|a| format!("PIPL {a}"))
    .chain(
        ["5", "7", "12", "15", "16", "17", "20", "25", "30", "32", "33", "34"]
            .iter()
            .map(|a| format!("GDPR {a}")),
    )
    .collect();
    let mut covered = BTreeSet::new();
    let mut missing = Vec::new();
    // Rows of the map: | PIPL 6, GDPR 5(1)(c) | duty | how | `test`, `test` |
    for line in map
        .lines()
        .filter(|l| l.starts_with("| PIPL") || l.starts_with("| GDPR"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (articles, tests) = (cells[1], cells[cells.len() - 2]);
        let names: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        for name in &names {
            if !defined(name) {
                missing.push(format!("{name} (named for {articles})"));
            }
        }
        if !names.is_empty() {
            // `GDPR 5(1)(c)` covers GDPR 5.
            for a in articles.split(',') {
                covered.insert(a.split('(').next().unwrap_or("").trim().to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/compliance.md names tests that do not exist: {missing:#?}"
    );
    let uncovered: Vec<&String> = required.iter().filter(|a| !covered.contains(*a)).collect();
    assert!(
        uncovered.is_empty(),
        "articles with no test in docs/compliance.md: {uncovered:?}"
    );
}
