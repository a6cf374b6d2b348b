//! Key rotation: root key versions with a resumable re-seal and
//! retirement, and tenant API keys replaced with the old one refused.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use carbon_ledger::audit::Action;
use carbon_ledger::clock::SystemClock;
use carbon_ledger::crypto::{keyring_path, Keyring, RootKey};
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::{ResealOptions, Store, StoreError};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{batch, event, Backend, TestApp};

on_both_engines!(
    rotation_reseals_resumably_then_retires_and_drops_old_keys,
    a_reseal_killed_midway_resumes_with_nothing_lost_or_sealed_twice,
    a_rotated_tenant_key_is_refused_at_once,
    a_server_that_missed_the_rotation_writes_nothing_then_catches_up,
    serve_reseals_in_the_background,
    a_redemption_sealed_before_a_rotation_is_resealed_before_its_version_retires,
);

const SUBJECTS: usize = 6;

/// Records `per_subject` events for each of `SUBJECTS` people; their ids.
async fn record_events(app: &TestApp, prefix: &str, per_subject: usize) -> Vec<String> {
    let subjects: Vec<String> = (0..SUBJECTS).map(|i| format!("u-rot-{i}")).collect();
    let mut events = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        for n in 0..per_subject {
            let kind = if n % 2 == 0 { "clean_plate" } else { "walking" };
            let data = if kind == "walking" {
                json!({"steps": 4000})
            } else {
                json!({})
            };
            events.push(event(&format!("{prefix}-{i}-{n}"), subject, kind, data));
        }
    }
    let (status, body) = app.post_enrolled(&batch(events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "recorded"),
        "{body}"
    );
    subjects
}

/// Every subject's records as the API returns them, by record id.
async fn records_by_id(app: &TestApp, subjects: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for subject in subjects {
        let (status, body) = app.get(&format!("/v1/subjects/{subject}/records?limit=1000")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for record in body["records"].as_array().unwrap() {
            out.insert(record["record_id"].as_str().unwrap().to_owned(), record.clone());
        }
    }
    out
}

/// Record id -> (key version, sealed bytes), read from the database.
async fn sealed_rows(app: &TestApp) -> BTreeMap<Vec<u8>, (i64, Vec<u8>)> {
    // Closed at once: the PostgreSQL server's connections are shared.
    let db = app.raw_ledger().await;
    let rows = sqlx::query("SELECT record_id, key_version, sealed FROM records")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    db.close().await;
    rows
}

fn versions_count(rows: &BTreeMap<Vec<u8>, (i64, Vec<u8>)>, version: i64) -> usize {
    rows.values().filter(|(v, _)| *v == version).count()
}

/// The audit actions of the log so far.
async fn actions(app: &TestApp) -> Vec<Action> {
    app.audit_entries(0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

fn resealed_total(actions: &[Action], version: u32) -> u64 {
    actions
        .iter()
        .map(|a| match a {
            Action::RecordsResealed { version: v, records } if *v == version => u64::from(*records),
            _ => 0,
        })
        .sum()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How sealed bytes appear in `stored_bytes`: raw in SQLite's files, hex
/// in the PostgreSQL dump.
fn as_stored(app: &TestApp, sealed: &[u8]) -> Vec<u8> {
    match app.backend {
        Backend::Sqlite => sealed.to_vec(),
        Backend::Postgres => hex::encode(sealed).into_bytes(),
    }
}

async fn rotation_reseals_resumably_then_retires_and_drops_old_keys(app: TestApp) {
    let ring_file = keyring_path(&app.root_key_file);
    app.store.attach_keyring(ring_file.clone()).await.unwrap();
    let subjects = record_events(&app, "a", 5).await;
    let before = records_by_id(&app, &subjects).await;
    let old = sealed_rows(&app).await;
    assert_eq!(old.len(), SUBJECTS * 5);
    assert_eq!(versions_count(&old, 1), old.len());

    // Rotation: version 2, in the keyring file, sealing new records.
    assert_eq!(app.store.rotate_root_key().await.unwrap(), 2);
    assert_eq!(app.store.key_version(), 2);
    assert_eq!(
        Keyring::load(&ring_file).unwrap().versions().collect::<Vec<_>>(),
        vec![2]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ring_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    record_events(&app, "b", 1).await;
    let mixed = sealed_rows(&app).await;
    assert_eq!(
        versions_count(&mixed, 2),
        SUBJECTS,
        "new records are sealed under version 2"
    );

    // A store without the keyring is refused rather than left unable to
    // open version 2's records.
    let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
    let policies = Arc::new(PolicySet::load(None).unwrap());
    let refused = Store::open(&app.database_url, root, Arc::new(SystemClock), policies.clone()).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("not in the keyring file"), "{message}");

    // A re-seal cut short after two batches of 7: exactly 14 moved.
    let cut = ResealOptions {
        batch: 7,
        max_batches: Some(2),
    };
    let report = app.store.reseal(cut, |_| {}).await.unwrap();
    assert_eq!((report.resealed, report.remaining), (14, (SUBJECTS * 5 - 14) as u64));
    assert!(report.retired.is_empty());
    assert_eq!(versions_count(&sealed_rows(&app).await, 1), SUBJECTS * 5 - 14);
    // Reads open both versions meanwhile.
    let during = records_by_id(&app, &subjects).await;
    for (id, record) in &before {
        assert_eq!(during.get(id), Some(record));
    }

    // Resumed: the rest, once each, then version 1 is retired.
    let report = app.store.reseal(ResealOptions::default(), |_| {}).await.unwrap();
    assert_eq!((report.resealed, report.remaining), ((SUBJECTS * 5 - 14) as u64, 0));
    assert_eq!(report.retired, vec![1]);
    let after_rows = sealed_rows(&app).await;
    assert_eq!(versions_count(&after_rows, 2), after_rows.len());
    for (id, (_, sealed)) in &old {
        assert_ne!(&after_rows[id].1, sealed, "every old record was sealed again");
    }
    let log = actions(&app).await;
    assert_eq!(
        resealed_total(&log, 2),
        (SUBJECTS * 5) as u64,
        "each record re-sealed once"
    );
    assert!(log.contains(&Action::RootKeyRetired { version: 1 }));
    assert!(log
        .iter()
        .any(|a| matches!(a, Action::RootKeyRotated { version: 2, .. })));
    let after = records_by_id(&app, &subjects).await;
    for (id, record) in &before {
        assert_eq!(after.get(id), Some(record), "a re-sealed record reads the same");
    }

    // The old ciphertext is gone from the stored bytes.
    let stored = app.stored_bytes().await;
    for (_, sealed) in old.values() {
        assert!(
            !contains(&stored, &as_stored(&app, sealed)),
            "old-version ciphertext left in storage"
        );
    }

    // The database refuses a record under the retired version.
    let db = app.raw_ledger().await;
    let write = sqlx::query(
        "INSERT INTO records (seq, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at) \
         VALUES (1000000, $1, 1, $2, 'walking', 1, 1, $3, 0)",
    )
    .bind(vec![7u8; 16])
    .bind(vec![7u8; 32])
    .bind(vec![7u8; 40])
    .execute(&db)
    .await;
    assert!(
        matches!(StoreError::from(write.unwrap_err()), StoreError::KeyRotated),
        "a retired version is refused"
    );
    db.close().await;

    // A second rotation: version 2's key leaves the keyring file once
    // nothing is sealed under it.
    assert_eq!(app.store.rotate_root_key().await.unwrap(), 3);
    let report = app.store.reseal(ResealOptions::default(), |_| {}).await.unwrap();
    assert_eq!(report.retired, vec![2]);
    assert_eq!(
        Keyring::load(&ring_file).unwrap().versions().collect::<Vec<_>>(),
        vec![3]
    );
    let status = app.store.key_status().await.unwrap();
    let summary: Vec<(u32, bool, bool, u64, bool)> = status
        .iter()
        .map(|v| (v.version, v.retired, v.material_held, v.records, v.current))
        .collect();
    let total = (SUBJECTS * 6) as u64;
    assert_eq!(
        summary,
        vec![
            (1, true, true, 0, false),
            (2, true, false, 0, false),
            (3, false, true, total, true),
        ]
    );
    assert_eq!(records_by_id(&app, &subjects).await.len(), SUBJECTS * 6);
}

async fn a_reseal_killed_midway_resumes_with_nothing_lost_or_sealed_twice(app: TestApp) {
    app.store
        .attach_keyring(keyring_path(&app.root_key_file))
        .await
        .unwrap();
    let subjects = record_events(&app, "k", 50).await;
    let total = SUBJECTS * 50;
    let before = records_by_id(&app, &subjects).await;
    assert_eq!(before.len(), total);

    let out = app.cli(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        app.store.refresh_keyring().await.unwrap(),
        "the server picks up the rotation"
    );
    assert_eq!(app.store.key_version(), 2);

    // Killed (SIGKILL) after its first batch committed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
        .args(["keys", "reseal", "--batch-size", "5"])
        .env("CARBON_LEDGER_DATABASE_URL", &app.database_url)
        .env("CARBON_LEDGER_ROOT_KEY_FILE", &app.root_key_file)
        .env("CARBON_LEDGER_DATA_DIR", app.dir.path())
        .env_remove("CARBON_LEDGER_POLICIES")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a progress line").unwrap();
    assert!(first.starts_with("re-sealed 5 of"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
    let cut = sealed_rows(&app).await;
    let moved = versions_count(&cut, 2);
    eprintln!("killed after {moved} of {total} records");
    assert!(moved >= 5 && moved.is_multiple_of(5), "whole batches only: {moved}");
    assert_eq!(cut.len(), total);

    // Reads work in between, and the resumed run finishes the rest.
    assert_eq!(records_by_id(&app, &subjects).await, before);
    let out = app.cli(&["keys", "reseal"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("re-sealed {} records under root key version 2", total - moved)),
        "{stdout}"
    );
    // (Unless the killed run had finished, this run retires version 1.)
    assert!(moved == total || stdout.contains("retired version(s) 1"), "{stdout}");
    let done = sealed_rows(&app).await;
    assert_eq!(versions_count(&done, 2), total, "nothing lost");
    assert_eq!(
        resealed_total(&actions(&app).await, 2),
        total as u64,
        "nothing sealed twice"
    );
    app.store.refresh_keyring().await.unwrap();
    assert_eq!(records_by_id(&app, &subjects).await, before);

    let out = app.cli(&["keys", "status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    let lines: Vec<&str> = status.lines().collect();
    assert!(
        lines[1].contains("retired") && lines[1].trim_end().ends_with(" 0"),
        "{status}"
    );
    assert!(
        lines[2].contains("current") && lines[2].trim_end().ends_with(&format!(" {total}")),
        "{status}"
    );
    let out = app.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

async fn a_rotated_tenant_key_is_refused_at_once(app: TestApp) {
    app.enroll("u-tk").await;
    let (status, _) = app.get("/v1/subjects/u-tk/consents").await;
    assert_eq!(status, StatusCode::OK);

    // The operator rotates the key while the server runs.
    let out = app.cli(&["tenant", "rotate-key", "--tenant", "luzhou"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let new_key = stdout.lines().last().unwrap().to_owned();
    assert!(new_key.starts_with("clk_") && new_key != app.key);

    let (status, body) = app.get("/v1/subjects/u-tk/consents").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["type"], "urn:carbon-ledger:problem:unauthorized");
    let (status, body) = app.get_as(&new_key, "/v1/subjects/u-tk/consents").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the new key reaches the same tenant's data: {body}"
    );

    assert!(actions(&app).await.iter().any(|a| matches!(
        a,
        Action::TenantKeyRotated { tenant } if tenant.get() == 1
    )));
    let out = app.cli(&["tenant", "rotate-key", "--tenant", "nobody"]);
    assert!(!out.status.success());
}

/// A second server on the app's database with its own store, opened now
/// (so it knows the root key versions of this moment only).
async fn second_server(app: &TestApp) -> (Arc<Store>, std::net::SocketAddr) {
    let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
    let policies = Arc::new(PolicySet::load(None).unwrap());
    let store = Store::open_with_keyring(
        &app.database_url,
        None,
        root,
        Some(keyring_path(&app.root_key_file)),
        Arc::new(SystemClock),
        policies,
    )
    .await
    .unwrap();
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(carbon_ledger::server::serve(
        listener,
        carbon_ledger::api::AppState::new(store.clone()),
        std::future::pending(),
    ));
    (store, addr)
}

async fn a_server_that_missed_the_rotation_writes_nothing_then_catches_up(app: TestApp) {
    app.store
        .attach_keyring(keyring_path(&app.root_key_file))
        .await
        .unwrap();
    record_events(&app, "s", 1).await;

    // Two more servers, started before the rotation and not told of it
    // (their 5 s check has not run): one reads, one writes.
    let (reader, reader_addr) = second_server(&app).await;
    let (writer, writer_addr) = second_server(&app).await;
    app.store.rotate_root_key().await.unwrap();
    let report = app.store.reseal(ResealOptions::default(), |_| {}).await.unwrap();
    assert_eq!(report.retired, vec![1]);
    assert_eq!((reader.key_version(), writer.key_version()), (1, 1), "not looked yet");

    // A read of records sealed under the version it does not know: 503,
    // nothing returned; it catches up, and the retry reads them.
    let read = || {
        app.send(
            app.client
                .get(format!("http://{reader_addr}/v1/subjects/u-rot-0/records"))
                .bearer_auth(&app.key),
        )
    };
    let (status, problem) = read().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["type"], "urn:carbon-ledger:problem:unavailable");
    assert_eq!(reader.key_version(), 2);
    let (status, page) = read().await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 1);

    // A write under the retired version: refused by the database, 503,
    // nothing written; it catches up, and the retry is recorded.
    let stored = sealed_rows(&app).await.len();
    let body = event("late-1", "u-rot-0", "clean_plate", json!({}));
    let post = || {
        app.send(
            app.client
                .post(format!("http://{writer_addr}/v1/events"))
                .bearer_auth(&app.key)
                .json(&body),
        )
    };
    let (status, problem) = post().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["type"], "urn:carbon-ledger:problem:unavailable");
    assert_eq!(sealed_rows(&app).await.len(), stored, "nothing was written");
    assert_eq!(writer.key_version(), 2);
    let (status, receipt) = post().await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(receipt["receipts"][0]["status"], "recorded", "{receipt}");
    let rows = sealed_rows(&app).await;
    assert_eq!((rows.len(), versions_count(&rows, 2)), (stored + 1, stored + 1));
    reader.close().await;
    writer.close().await;
}

/// A child process killed when dropped, so a failed assertion leaves none.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve_reseals_in_the_background(app: TestApp) {
    app.store
        .attach_keyring(keyring_path(&app.root_key_file))
        .await
        .unwrap();
    let subjects = record_events(&app, "g", 4).await;
    let before = records_by_id(&app, &subjects).await;
    let out = app.cli(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = app.dir.path().join("serve.log");
    let file = std::fs::File::create(&log).unwrap();
    let _server = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
            .args(["serve", "--listen", &addr.to_string(), "--reseal-interval-secs", "1"])
            .args(["--sweep-interval-secs", "0", "--checkpoint-interval-secs", "0"])
            .env("CARBON_LEDGER_DATABASE_URL", &app.database_url)
            .env("CARBON_LEDGER_ROOT_KEY_FILE", &app.root_key_file)
            .env("CARBON_LEDGER_DATA_DIR", app.dir.path())
            .env_remove("CARBON_LEDGER_POLICIES")
            .env_remove("CARBON_LEDGER_RESEAL_INTERVAL_SECS")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let db = app.raw_ledger().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let retired: Option<i64> = sqlx::query_scalar("SELECT retired_on FROM key_versions WHERE version = 1")
            .fetch_one(&db)
            .await
            .unwrap();
        if retired.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not re-seal within 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.close().await;
    let rows = sealed_rows(&app).await;
    assert_eq!(versions_count(&rows, 2), rows.len());
    assert_eq!(resealed_total(&actions(&app).await, 2), (SUBJECTS * 4) as u64);
    app.store.refresh_keyring().await.unwrap();
    assert_eq!(records_by_id(&app, &subjects).await, before);
}

async fn a_redemption_sealed_before_a_rotation_is_resealed_before_its_version_retires(app: TestApp) {
    let ring_file = keyring_path(&app.root_key_file);
    app.store.attach_keyring(ring_file.clone()).await.unwrap();
    record_events(&app, "r", 2).await;
    let url = app.url("/v1/subjects/u-rot-0/redemptions");
    let body = json!({"points": 3, "reference": "R-1", "description": "a metro ticket"});
    let (status, receipt) = app.send(app.client.post(url).bearer_auth(&app.key).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let listed = || async {
        let (status, body) = app.get("/v1/subjects/u-rot-0/redemptions").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["redemptions"].clone()
    };
    let before = listed().await;
    let db = app.raw_ledger().await;
    let (old_version, old_sealed): (i64, Vec<u8>) = sqlx::query_as("SELECT key_version, sealed FROM redemptions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(old_version, 1);

    assert_eq!(app.store.rotate_root_key().await.unwrap(), 2);
    // Readable under both versions while the old one is in use.
    assert_eq!(listed().await, before);
    let report = app.store.reseal(ResealOptions::default(), |_| {}).await.unwrap();
    assert_eq!(report.remaining, 0);
    assert_eq!(report.retired, vec![1], "retired only once the redemption moved too");
    let (version, sealed): (i64, Vec<u8>) = sqlx::query_as("SELECT key_version, sealed FROM redemptions")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    assert_eq!(version, 2);
    assert_ne!(sealed, old_sealed);
    assert_eq!(listed().await, before, "the re-sealed redemption reads the same");
    let stored = app.stored_bytes().await;
    assert!(
        !contains(&stored, &as_stored(&app, &old_sealed)),
        "old-version ciphertext of the redemption left in storage"
    );
}
