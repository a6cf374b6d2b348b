//! Privacy proven on the bytes: what the database files, the key store and
//! the logs do not contain, and that sealed records stay bound to their
//! subject.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use carbon_ledger::crypto::RootKey;
use carbon_ledger::policy::PolicySet;
use carbon_ledger::store::{RecordSealing, Store};

use crate::helpers::{batch, event, Backend, TestApp};

const SUBJECT: &str = "13800138000-alice";
const REFUSED_ROUTE: &str = "Zhongshan-Rd-to-Jiangyang-Station-7F3A9";
const DISTRICT: &str = "510502";

/// The events of the bytes tests: one with a district-level region, one
/// carrying a route (refused), one with a fine-grained distance.
fn revealing_events() -> Value {
    let mut with_region = event("bytes-1", SUBJECT, "clean_plate", json!({}));
    with_region["region"] = json!(DISTRICT);
    let with_route = event(
        "bytes-2",
        SUBJECT,
        "transit_ride",
        json!({"mode": "bus", "route": REFUSED_ROUTE}),
    );
    let mut ride = event("bytes-3", SUBJECT, "cycling", json!({"distance_m": 4321.987}));
    ride["region"] = json!(DISTRICT);
    batch(vec![with_region, with_route, ride])
}

fn forbidden_needles() -> Vec<(&'static str, Vec<u8>)> {
    let mut needles = Vec::new();
    for (name, value) in [
        ("subject id", SUBJECT),
        ("phone number", "13800138000"),
        ("refused route", REFUSED_ROUTE),
        ("district code", DISTRICT),
        ("exact distance", "4321.987"),
    ] {
        needles.push((name, value.as_bytes().to_vec()));
        // PostgreSQL renders bytea as hex: look for that form too.
        needles.push((name, hex::encode(value).into_bytes()));
    }
    needles
}

fn assert_absent(what: &str, haystack: &[u8]) {
    assert!(!haystack.is_empty(), "{what} is empty: nothing to search");
    for (name, needle) in forbidden_needles() {
        assert!(
            !haystack.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{what} contains the {name}"
        );
    }
}

/// `carbon-ledger serve` as a child process, with its stderr captured.
struct Served {
    child: Child,
    addr: String,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Served {
    fn start(data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CARBON_LEDGER_DATA_DIR", data_dir)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .env_remove("CARBON_LEDGER_DATABASE_URL")
            .env_remove("CARBON_LEDGER_ROOT_KEY_FILE")
            .env_remove("CARBON_LEDGER_POLICIES")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap().to_owned());
                }
                sink.lock().unwrap().extend_from_slice(line.as_bytes());
                line.clear();
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("server announces its address");
        Self { child, addr, logs }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// No second or millisecond of the test run is stored, in any of the forms
/// SQLite and the ledger's encodings write integers: big-endian in 4 or 6
/// bytes (also the low bytes of 8-byte values), or as decimal text. (The
/// day's midnight is allowed: days are what the ledger keeps.)
fn assert_no_time_finer_than_the_day(bytes: &[u8], started_ms: i64, ended_ms: i64) {
    let windows = |n: usize| bytes.windows(n).collect::<std::collections::HashSet<&[u8]>>();
    let (four, six) = (windows(4), windows(6));
    for second in started_ms / 1000..=ended_ms / 1000 {
        let be = (second as u32).to_be_bytes();
        assert!(!four.contains(&be[..]), "a time to the second ({second}) is stored");
        assert!(
            !contains(bytes, second.to_string().as_bytes()),
            "a time to the second ({second}) is stored as text"
        );
    }
    for ms in started_ms..=ended_ms {
        let be = ms.to_be_bytes();
        assert!(!six.contains(&be[2..]), "a time to the millisecond ({ms}) is stored");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn read_all(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.read_to_end(&mut bytes).unwrap();
    }
    bytes
}

/// The bytes test: the real binary on the embedded default, then the
/// raw SQLite files (databases and WAL) and the trace-level logs.
#[tokio::test]
async fn sqlite_files_and_logs_hold_no_subject_id_or_refused_value() {
    let started_ms = unix_ms();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
        .args(["tenant", "add", "--name", "luzhou", "--role", "platform"])
        .env("CARBON_LEDGER_DATA_DIR", &data)
        .env_remove("CARBON_LEDGER_DATABASE_URL")
        .env_remove("CARBON_LEDGER_ROOT_KEY_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();

    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", server.addr);
    for purpose in ["accounting", "rewards"] {
        let consent = client
            .put(url(&format!("/v1/subjects/{SUBJECT}/consents/{purpose}")))
            .bearer_auth(&key)
            .json(&json!({"notice_version": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), StatusCode::OK);
    }
    let response = client
        .post(url("/v1/events"))
        .bearer_auth(&key)
        .json(&revealing_events())
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let statuses: Vec<&str> = body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["recorded", "rejected", "recorded"]);
    for path in [
        format!("/v1/subjects/{SUBJECT}/account"),
        format!("/v1/subjects/{SUBJECT}/records"),
        "/v1/subjects/13800138000-alice%0A/account".into(),
    ] {
        let response = client.get(url(&path)).bearer_auth(&key).send().await.unwrap();
        assert!(response.status().is_success() || response.status().is_client_error());
    }
    // The data is there, coarsened and readable through the API.
    let records: Value = client
        .get(url(&format!("/v1/subjects/{SUBJECT}/records")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let regions: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["region"].as_str())
        .collect();
    assert_eq!(regions, ["510500", "510500"]);

    // Kill without a clean shutdown: the WAL files stay behind with their content.
    let logs = server.logs.clone();
    drop(server);

    let ended_ms = unix_ms();
    let mut files_read = 0;
    for name in ["ledger.db", "ledger.db-wal", "keys.db", "keys.db-wal"] {
        let bytes = read_all(&data.join(name));
        // A WAL may be absent; files_read checks that enough were searched.
        if bytes.is_empty() {
            continue;
        }
        files_read += 1;
        assert_absent(name, &bytes);
    }
    assert!(files_read >= 3, "expected the databases and at least one WAL");
    let all: Vec<u8> = ["ledger.db", "ledger.db-wal", "keys.db", "keys.db-wal"]
        .iter()
        .flat_map(|f| read_all(&data.join(f)))
        .collect();
    assert_no_time_finer_than_the_day(&all, started_ms, ended_ms);
    assert!(read_all(&data.join("ledger.db")).len() + read_all(&data.join("ledger.db-wal")).len() > 0);
    // A control that the search works: the tenant name is stored in clear.
    let ledger = [read_all(&data.join("ledger.db")), read_all(&data.join("ledger.db-wal"))].concat();
    assert!(ledger.windows(6).any(|w| w == b"luzhou"));

    let logs = logs.lock().unwrap().clone();
    assert_absent("the server log", &logs);
    assert!(
        String::from_utf8_lossy(&logs).contains("/v1/subjects/{id}/account"),
        "logs name route templates"
    );
    assert!(
        !String::from_utf8_lossy(&logs).contains(&key),
        "the log contains the API key"
    );
}

/// The same property on PostgreSQL: every table of both schemas, rendered
/// as text, holds neither the subject id nor any refused value.
async fn database_holds_no_subject_id_or_refused_value(app: TestApp) {
    let (status, _) = app.post_enrolled(&revealing_events()).await;
    assert_eq!(status, StatusCode::OK);
    app.get(&format!("/v1/subjects/{SUBJECT}/records")).await;
    let dump = app.stored_bytes().await;
    assert!(dump.windows(6).any(|w| w == b"luzhou"), "the dump reads the tables");
    assert_absent("the database", &dump);
}

/// A sealed record copied onto another subject's row does not open: the
/// associated data binds it to its record and subject.
async fn ciphertext_copied_to_another_subject_fails_to_open(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("c-1", "alice", "clean_plate", json!({})),
        event("c-2", "bob", "clean_plate", json!({})),
    ]))
    .await;
    let (_, alice) = app.get("/v1/subjects/alice/records").await;
    let (_, bob) = app.get("/v1/subjects/bob/records").await;
    let alice_id = hex::decode(alice["records"][0]["record_id"].as_str().unwrap()).unwrap();
    let bob_id = hex::decode(bob["records"][0]["record_id"].as_str().unwrap()).unwrap();

    let db = app.raw_ledger().await;
    let sealed: Vec<u8> = sqlx::query("SELECT sealed FROM records WHERE record_id = $1")
        .bind(alice_id.clone())
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    sqlx::query("UPDATE records SET sealed = $1 WHERE record_id = $2")
        .bind(sealed)
        .bind(bob_id)
        .execute(&db)
        .await
        .unwrap();

    let (status, body) = app.get("/v1/subjects/bob/records").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["type"], "urn:carbon-ledger:problem:record-integrity");
    assert!(body.get("records").is_none());
    // Alice's own record still opens.
    let (status, _) = app.get("/v1/subjects/alice/records").await;
    assert_eq!(status, StatusCode::OK);

    // Moving the whole row to Alice's pseudonym does not help either.
    let alice_subject: Vec<u8> = sqlx::query("SELECT subject FROM records WHERE record_id = $1")
        .bind(alice_id)
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    sqlx::query("UPDATE records SET subject = $1 WHERE subject <> $1")
        .bind(alice_subject)
        .execute(&db)
        .await
        .unwrap();
    let (status, _) = app.get("/v1/subjects/alice/records").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

on_both_engines!(
    database_holds_no_subject_id_or_refused_value,
    ciphertext_copied_to_another_subject_fails_to_open
);

/// The kind and day stored in clear beside a sealed record are bound into
/// its associated data: editing them makes it fail to open.
async fn clear_columns_are_bound_to_the_ciphertext(app: TestApp) {
    app.post_enrolled(&event("b-1", "lena", "clean_plate", json!({}))).await;
    let db = app.raw_ledger().await;
    sqlx::query("UPDATE records SET day = day - 1")
        .execute(&db)
        .await
        .unwrap();
    let (status, body) = app.get("/v1/subjects/lena/records").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("urn:carbon-ledger:problem:record-integrity")
        )
    );
    sqlx::query("UPDATE records SET day = day + 1, kind = 'walking'")
        .execute(&db)
        .await
        .unwrap();
    let (status, _) = app.get("/v1/subjects/lena/records").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    sqlx::query("UPDATE records SET kind = 'clean_plate'")
        .execute(&db)
        .await
        .unwrap();
    let (status, _) = app.get("/v1/subjects/lena/records").await;
    assert_eq!(status, StatusCode::OK);
}

/// A ledger line finds its record by the record's sequence number, which
/// the associated data does not bind: swapping two records' numbers would
/// pair each with the other's figures, and is caught instead.
async fn a_line_paired_with_another_record_fails_to_open(app: TestApp) {
    app.post_enrolled(&batch(vec![
        event("s-1", "mira", "clean_plate", json!({})),
        event("s-2", "mira", "paperless_bill", json!({})),
    ]))
    .await;
    let (status, _) = app.get("/v1/subjects/mira/records").await;
    assert_eq!(status, StatusCode::OK);
    let db = app.raw_ledger().await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM records ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(seqs.len(), 2);
    for (from, to) in [(seqs[0], -1), (seqs[1], seqs[0]), (-1, seqs[1])] {
        sqlx::query("UPDATE records SET seq = $1 WHERE seq = $2")
            .bind(to)
            .bind(from)
            .execute(&db)
            .await
            .unwrap();
    }
    let (status, body) = app.get("/v1/subjects/mira/records").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("urn:carbon-ledger:problem:record-integrity")
        )
    );
    assert!(body.get("records").is_none());
}

/// With a key store URL, the salts live in a database of their own: a copy
/// of the ledger database holds none. The two name each other, so opening
/// the ledger without its key store is refused.
async fn the_key_store_can_live_in_its_own_database(app: TestApp) {
    use carbon_ledger::domain::{Role, SubjectId, TenantId};
    use carbon_ledger::store::{Access, Actor, Kinds, Purpose};

    let mut databases = Vec::new();
    let (ledger_url, keys_url) = match app.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", app.dir.path().join("apart/ledger.db").display()),
            format!("sqlite://{}", app.dir.path().join("elsewhere/salts.db").display()),
        ),
        Backend::Postgres => {
            let (ledger, keys) = (
                crate::helpers::PgDatabase::create().await.unwrap(),
                crate::helpers::PgDatabase::create().await.unwrap(),
            );
            let urls = (ledger.url.clone(), keys.url.clone());
            databases.extend([ledger, keys]);
            urls
        }
    };
    let root = || RootKey::from_bytes([5; 32]);
    let policies = app.store.policies().clone();
    let store = Store::open_with_key_store(
        &ledger_url,
        Some(&keys_url),
        root(),
        app.clock.clone(),
        policies.clone(),
    )
    .await
    .unwrap();
    let (tenant, _) = store.add_tenant("apart", Role::Platform).await.unwrap();
    let access = Access::new(
        Actor {
            tenant,
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    store
        .grant_consent(&access, &SubjectId::parse("zoe".into()).unwrap(), 1, Kinds::All)
        .await
        .unwrap();
    store.close().await;

    let pseudonym = root()
        .pseudonym_key()
        .pseudonymize(TenantId::new(tenant.get()), &SubjectId::parse("zoe".into()).unwrap());
    let keys = sqlx::AnyPool::connect(&keys_url).await.unwrap();
    let table = if keys_url.starts_with("postgres") {
        "keystore.subject_keys"
    } else {
        "subject_keys"
    };
    let held: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE subject = $1"))
        .bind(pseudonym.as_bytes().to_vec())
        .fetch_one(&keys)
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 1, "the salt is in the key store");
    keys.close().await;
    match app.backend {
        Backend::Sqlite => assert!(
            !app.dir.path().join("apart/keys.db").exists(),
            "no key store beside the ledger"
        ),
        Backend::Postgres => {
            let ledger = sqlx::AnyPool::connect(&ledger_url).await.unwrap();
            let tables: i64 = sqlx::query(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'keystore' AND table_name = 'subject_keys'",
            )
            .fetch_one(&ledger)
            .await
            .unwrap()
            .get(0);
            assert_eq!(tables, 0, "no key store in the ledger's database");
            ledger.close().await;
        }
    }

    // Forgetting --key-store: the ledger refuses the empty key store it gets.
    let err = Store::open(&ledger_url, root(), app.clock.clone(), policies)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--key-store"), "{err}");
}

on_both_engines!(
    clear_columns_are_bound_to_the_ciphertext,
    a_line_paired_with_another_record_fails_to_open,
    the_key_store_can_live_in_its_own_database
);

const REDEMPTION_REFERENCE: &str = "order-7731-zhang-wei-13800138000";
const REDEMPTION_TEXT: &str = "Bus pass top-up for Zhang Wei, Jiangyang";

/// A redemption's reference and description are the platform's free text:
/// only their keyed hash and their ciphertext are stored, yet the platform
/// reads them back.
async fn redemption_text_is_sealed(app: TestApp) {
    let rides: Vec<Value> = (0..3)
        .map(|i| event(&format!("r-{i}"), "alice", "transit_ride", json!({"mode": "bus"})))
        .collect();
    app.post_enrolled(&batch(rides)).await;
    let body = json!({"points": 20, "reference": REDEMPTION_REFERENCE, "description": REDEMPTION_TEXT});
    let url = app.url("/v1/subjects/alice/redemptions");
    let (status, receipt) = app.send(app.client.post(&url).bearer_auth(&app.key).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let (_, listed) = app.get("/v1/subjects/alice/redemptions").await;
    assert_eq!(listed["redemptions"][0]["reference"], REDEMPTION_REFERENCE);
    assert_eq!(listed["redemptions"][0]["description"], REDEMPTION_TEXT);
    let dump = app.stored_bytes().await;
    for (name, value) in [("reference", REDEMPTION_REFERENCE), ("description", REDEMPTION_TEXT)] {
        for needle in [value.as_bytes().to_vec(), hex::encode(value).into_bytes()] {
            assert!(!contains(&dump, &needle), "the database holds the redemption's {name}");
        }
    }
}

on_both_engines!(redemption_text_is_sealed);

/// The load generator measures what sealing costs against a plaintext
/// benchmark ledger. The mode is fixed when a ledger is first opened: a
/// real ledger never opens as a plaintext one (no switch turns its
/// sealing off), and a plaintext one never opens as real, so the two can
/// never be mixed. The bytes show which is which: only the plaintext
/// ledger holds a record's encoding.
async fn a_ledger_keeps_the_sealing_it_was_created_with(app: TestApp) {
    let ride = || event("p-1", "alice", "cycling", json!({"distance_m": 5000}));
    let encoding = b"\"quantity\":".to_vec();
    let needles = [encoding.clone(), hex::encode(&encoding).into_bytes()];

    let policies = Arc::new(PolicySet::load(None).unwrap());
    let open_as_plaintext = || async {
        let (root, _) = RootKey::load_or_create(&app.root_key_file).unwrap();
        let refused = Store::open_with_sealing(
            &app.database_url,
            None,
            root,
            None,
            app.clock.clone(),
            policies.clone(),
            RecordSealing::PlaintextBenchmark,
        )
        .await;
        let message = refused.expect_err("a sealed ledger opened as plaintext").to_string();
        assert!(message.contains("created with record sealing `sealed`"), "{message}");
    };

    // A ledger from before modes were recorded, in use but with nothing
    // recorded yet (a tenant, the policy load logged): not made plaintext.
    let db = app.raw_ledger().await;
    sqlx::query("DELETE FROM meta WHERE name = 'record_sealing'")
        .execute(&db)
        .await
        .unwrap();
    open_as_plaintext().await;
    let mode: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'record_sealing'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(mode, "sealed");

    // A real ledger: the record is sealed, and the benchmark mode refused.
    let (status, _) = app.post_enrolled(&ride()).await;
    assert_eq!(status, StatusCode::CREATED);
    let dump = app.stored_bytes().await;
    assert!(
        needles.iter().all(|n| !contains(&dump, n)),
        "a sealed ledger holds a record's encoding"
    );
    open_as_plaintext().await;

    // A plaintext benchmark ledger: the same path works and reads back, the
    // record's encoding is in the database, and a real opening is refused.
    let plain = TestApp::spawn_plaintext_benchmark(app.backend).await.unwrap();
    let (status, receipt) = plain.post_enrolled(&ride()).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let (status, records) = plain.get("/v1/subjects/alice/records").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(records["records"][0]["kind"], "cycling", "{records}");
    let dump = plain.stored_bytes().await;
    assert!(
        needles.iter().any(|n| contains(&dump, n)),
        "the benchmark ledger seals records"
    );
    let (root, _) = RootKey::load_or_create(&plain.root_key_file).unwrap();
    let refused = Store::open(&plain.database_url, root, plain.clock.clone(), policies).await;
    let message = refused.expect_err("a plaintext ledger opened as sealed").to_string();
    assert!(
        message.contains("created with record sealing `plaintext-benchmark`"),
        "{message}"
    );
}

on_both_engines!(a_ledger_keeps_the_sealing_it_was_created_with);
