//! The crash suite: the real binary under concurrent batch load, killed with
//! SIGKILL at random moments and restarted on the same data, many times.
//! Afterwards every acknowledged event is still there with the receipt it
//! was given, the accounts add up to the acknowledged receipts, and the
//! audit log verifies. Events in flight at a kill may or may not have been
//! stored: each such batch is sent again after the restart, and must come
//! back whole — all duplicates (it had committed) or all recorded (it had
//! not) — and is then counted like any other.
//!
//! Slow (a few minutes), so ignored by a plain `cargo test`; `.ci/run` runs
//! it with `cargo test --test crash -- --ignored --nocapture`.
//! `CRASH_SEED` replays a run (the seed is printed); `CRASH_CYCLES`
//! overrides the number of cycles on both engines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::AnyPool;

const POSTGRES_ENV: &str = "CARBON_LEDGER_TEST_POSTGRES_URL";
const SQLITE_CYCLES: usize = 30;
const POSTGRES_CYCLES: usize = 10;
/// Client tasks posting batches at once.
const CLIENTS: usize = 4;
const SUBJECTS: usize = 24;
const MAX_BATCH: usize = 40;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "the crash suite: slow; .ci/run runs it"]
async fn sqlite_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        engine: "sqlite",
        data_dir: dir.path().join("data"),
        database_url: None,
        root_key_file: dir.path().join("data").join("root.key"),
        logs: dir.path().to_path_buf(),
    };
    run(&deployment, cycles(SQLITE_CYCLES)).await;
}

#[tokio::test]
#[ignore = "the crash suite: slow; .ci/run runs it"]
async fn postgres_survives_sigkill_under_load() {
    let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
        if std::env::var_os("CI").is_some_and(|ci| !ci.is_empty()) {
            panic!("{POSTGRES_ENV} is not set, and CI is");
        }
        eprintln!("skipped: {POSTGRES_ENV} is not set");
        return;
    };
    let db = PgDatabase::create(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        engine: "postgres",
        data_dir: dir.path().join("data"),
        database_url: Some(db.url.clone()),
        root_key_file: dir.path().join("root.key"),
        logs: dir.path().to_path_buf(),
    };
    run(&deployment, cycles(POSTGRES_CYCLES)).await;
    drop(db);
}

fn cycles(default: usize) -> usize {
    std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// One batch as sent: its body, and for each event its id and subject.
#[derive(Clone)]
struct Batch {
    body: Value,
    events: Vec<(String, usize)>,
}

/// What a receipt promised about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Receipt {
    record_id: String,
    audit_seq: u64,
    reduction_mg: i64,
    points: i64,
}

#[derive(Default)]
struct Ledger {
    /// Every acknowledged event: its subject and its receipt.
    acked: HashMap<String, (usize, Receipt)>,
    /// The acknowledged batches, to send again at the end.
    acked_batches: Vec<Batch>,
    /// Batches whose answer the kill took away.
    in_flight: Vec<Batch>,
    /// Of those, found committed and found not committed after the restart.
    committed_unanswered: usize,
    not_committed: usize,
}

async fn run(deployment: &Deployment, cycles: usize) {
    sqlx::any::install_default_drivers();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from_le_bytes(carbon_ledger::crypto::random_bytes::<8>()));
    let engine = deployment.engine;
    println!("[{engine}] crash suite: {cycles} cycles, seed {seed} (CRASH_SEED={seed} replays the kill times)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();

    let (ok, out, err) = deployment.cli(&["tenant", "add", "--name", "crash", "--role", "platform"]);
    assert!(ok, "tenant add: {out}{err}");
    let key = out.lines().last().expect("a key line").to_owned();

    // Consent first, on a server nobody kills.
    let mut server = deployment.start("setup");
    server.healthy(&client).await;
    for subject in 0..SUBJECTS {
        for purpose in ["accounting", "rewards"] {
            let url = server.url(&format!("/v1/subjects/{}/consents/{purpose}", subject_id(subject)));
            let response = client
                .put(url)
                .bearer_auth(&key)
                .json(&json!({"notice_version": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "consent");
        }
    }
    server.kill();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut batch_no = 0usize;
    let mut startup_kills = 0usize;
    for cycle in 1..=cycles {
        let t0 = Instant::now();
        // Now and then a kill comes while the server is still starting (an
        // extra kill: each cycle still ends with one under load).
        if rng.below(5) == 0 {
            let mut server = deployment.start(&format!("cycle-{cycle}-start"));
            let wait = rng.below(400);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            server.kill();
            server.assert_no_panic();
            startup_kills += 1;
            println!("[{engine}] cycle {cycle:>2}: killed {wait:>3} ms into start-up");
        }
        let mut server = deployment.start(&format!("cycle-{cycle}"));
        server.healthy(&client).await;
        let (stored, not_stored) = resolve_in_flight(&client, &server, &key, &ledger).await;

        // The load: client tasks posting batches until the server dies.
        let before = ledger.lock().unwrap().acked.len();
        let sizes: Vec<Vec<usize>> = (0..CLIENTS)
            .map(|_| (0..10_000).map(|_| 1 + rng.below(MAX_BATCH as u64) as usize).collect())
            .collect();
        let tasks: Vec<_> = sizes
            .into_iter()
            .enumerate()
            .map(|(c, sizes)| {
                let (client, key, ledger, url) =
                    (client.clone(), key.clone(), ledger.clone(), server.url("/v1/events"));
                tokio::spawn(async move {
                    let mut requests = 0usize;
                    for (n, size) in sizes.into_iter().enumerate() {
                        let batch = make_batch(&format!("c{cycle}-k{c}-b{n}"), size, cycle + c + n);
                        match send_batch(&client, &url, &key, &batch).await {
                            Some(receipts) => {
                                let mut ledger = ledger.lock().unwrap();
                                acknowledge(&mut ledger, &batch, &receipts, "recorded");
                                ledger.acked_batches.push(batch);
                            }
                            None => {
                                ledger.lock().unwrap().in_flight.push(batch);
                                break;
                            }
                        }
                        requests += 1;
                    }
                    requests
                })
            })
            .collect();
        let load_ms = 200 + rng.below(1800);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        server.kill();
        let mut requests = 0;
        for task in tasks {
            requests += task.await.expect("client task");
        }
        server.assert_no_panic();
        batch_no += requests;
        let ledger = ledger.lock().unwrap();
        println!(
            "[{engine}] cycle {cycle:>2}: killed after {load_ms:>4} ms of load; {:>5} events acknowledged in {requests:>3} batches, \
             {:>2} batches in flight; last cycle's in-flight events found stored {stored}, not stored {not_stored}; \
             {:>6} acknowledged in all; {:.1} s",
            ledger.acked.len() - before,
            ledger.in_flight.len(),
            ledger.acked.len(),
            t0.elapsed().as_secs_f64(),
        );
    }

    // The last restart: settle what was in flight, then check everything.
    let mut server = deployment.start("final");
    server.healthy(&client).await;
    let (stored, not_stored) = resolve_in_flight(&client, &server, &key, &ledger).await;
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(ledger.in_flight.is_empty());
    println!(
        "[{engine}] final restart: last in-flight events found stored {stored}, not stored {not_stored}; \
         {} events acknowledged in {} batches ({batch_no} answered under load); of the batches a kill \
         left unanswered, {} had committed and {} had not",
        ledger.acked.len(),
        ledger.acked_batches.len(),
        ledger.committed_unanswered,
        ledger.not_committed,
    );
    assert!(!ledger.acked.is_empty(), "no batch was ever acknowledged");

    // Every acknowledged event is there with its receipt: sending it again
    // answers `duplicate` with the same record, audit entry and figures.
    let t0 = Instant::now();
    for batch in &ledger.acked_batches {
        let receipts = post(&client, &server, &key, batch).await;
        for (receipt, (id, _)) in receipts.iter().zip(&batch.events) {
            assert_eq!(receipt["status"], "duplicate", "{id}: {receipt}");
            assert_eq!(
                Some(&parse_receipt(receipt)),
                ledger.acked.get(id).map(|(_, r)| r),
                "{id}"
            );
        }
    }

    // Account totals equal the sum of the acknowledged receipts.
    let mut expected: HashMap<usize, (i64, i64, i64)> = HashMap::new();
    for (subject, r) in ledger.acked.values() {
        let e = expected.entry(*subject).or_default();
        e.0 += 1;
        e.1 += r.reduction_mg;
        e.2 += r.points;
    }
    for subject in 0..SUBJECTS {
        let url = server.url(&format!("/v1/subjects/{}/account", subject_id(subject)));
        let response = client.get(url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let account: Value = response.json().await.unwrap();
        let got = (
            account["events"].as_i64().unwrap(),
            milligrams(&account["reduction_g"]),
            account["points_balance"].as_i64().unwrap(),
        );
        let want = expected.get(&subject).copied().unwrap_or_default();
        assert_eq!(
            got, want,
            "subject {subject}: (events, reduction_mg, points) of {account}"
        );
    }
    server.kill();
    server.assert_no_panic();
    let checked = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let (ok, out, err) = deployment.cli(&["audit", "verify"]);
    assert!(ok, "audit verify failed:\n{out}{err}");
    println!(
        "[{engine}] after {cycles} kills under load and {startup_kills} in start-up: every acknowledged event found \
         with its receipt, {SUBJECTS} accounts add up ({checked:.1} s); {} ({:.1} s); {:.1} s in all",
        out.lines().find(|l| l.contains("verified")).unwrap_or(out.trim()),
        t0.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Sends every batch whose answer a kill took away again: it comes back
/// whole — all `duplicate` if it had committed, all `recorded` if not —
/// and is acknowledged from then on. Returns (events stored, not stored).
async fn resolve_in_flight(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    ledger: &Mutex<Ledger>,
) -> (usize, usize) {
    let batches = std::mem::take(&mut ledger.lock().unwrap().in_flight);
    let (mut stored, mut not_stored) = (0, 0);
    for batch in batches {
        let receipts = post(client, server, key, &batch).await;
        let status = receipts[0]["status"].as_str().expect("status").to_owned();
        assert!(status == "recorded" || status == "duplicate", "{}", receipts[0]);
        let mut ledger = ledger.lock().unwrap();
        match status.as_str() {
            "duplicate" => {
                stored += receipts.len();
                ledger.committed_unanswered += 1;
            }
            _ => {
                not_stored += receipts.len();
                ledger.not_committed += 1;
            }
        }
        // A batch is one transaction: all of it or none of it committed.
        acknowledge(&mut ledger, &batch, &receipts, &status);
        ledger.acked_batches.push(batch);
    }
    (stored, not_stored)
}

/// Records a batch's receipts, each of which must have `status`.
fn acknowledge(ledger: &mut Ledger, batch: &Batch, receipts: &[Value], status: &str) {
    assert_eq!(receipts.len(), batch.events.len(), "one receipt per event");
    for (receipt, (id, subject)) in receipts.iter().zip(&batch.events) {
        assert_eq!(receipt["event_id"], id.as_str(), "receipts in order");
        assert_eq!(receipt["status"], status, "{id}: {receipt}");
        let previous = ledger.acked.insert(id.clone(), (*subject, parse_receipt(receipt)));
        assert!(previous.is_none(), "{id} acknowledged twice");
    }
}

async fn post(client: &reqwest::Client, server: &Server, key: &str, batch: &Batch) -> Vec<Value> {
    send_batch(client, &server.url("/v1/events"), key, batch)
        .await
        .expect("a live server answers")
}

/// Posts a batch: its receipts, or `None` when the server died before the
/// whole answer arrived. A 429 or 503 (load shed, nothing committed) is
/// retried after its `Retry-After` (at most a second); any other answer but
/// 200 fails the test.
async fn send_batch(client: &reqwest::Client, url: &str, key: &str, batch: &Batch) -> Option<Vec<Value>> {
    loop {
        let response = client.post(url).bearer_auth(key).json(&batch.body).send().await.ok()?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body: Value = response.json().await.ok()?;
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_secs(1));
            tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "batch answered {status}: {body}");
        return Some(body["receipts"].as_array().expect("receipts").clone());
    }
}

fn parse_receipt(r: &Value) -> Receipt {
    Receipt {
        record_id: r["record_id"].as_str().expect("record_id").to_owned(),
        audit_seq: r["audit_seq"].as_u64().expect("audit_seq"),
        reduction_mg: milligrams(&r["reduction_g"]),
        points: r["points"].as_i64().expect("points"),
    }
}

/// Grams as the API writes them (an integer, or a decimal when not whole).
fn milligrams(v: &Value) -> i64 {
    match v.as_i64() {
        Some(g) => g * 1000,
        None => (v.as_f64().expect("grams") * 1000.0).round() as i64,
    }
}

fn subject_id(i: usize) -> String {
    format!("crash-u-{i}")
}

/// A batch of `size` events with ids made from `prefix`, spread over the
/// subjects and a few kinds.
fn make_batch(prefix: &str, size: usize, spread: usize) -> Batch {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let at = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let mut events = Vec::with_capacity(size);
    let mut body = Vec::with_capacity(size);
    for i in 0..size {
        let id = format!("{prefix}-e{i}");
        let subject = (spread + i * 7) % SUBJECTS;
        let (kind, data) = match i % 3 {
            0 => ("paperless_bill", json!({})),
            1 => ("transit_ride", json!({"mode": "bus"})),
            _ => ("clean_plate", json!({})),
        };
        body.push(json!({
            "event_id": id, "subject": subject_id(subject), "kind": kind, "occurred_at": at, "data": data
        }));
        events.push((id, subject));
    }
    Batch {
        body: json!({ "events": body }),
        events,
    }
}

/// splitmix64: kill times and batch sizes, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where the binary keeps its data across restarts.
struct Deployment {
    engine: &'static str,
    data_dir: PathBuf,
    /// `None`: the embedded SQLite default under the data directory.
    database_url: Option<String>,
    root_key_file: PathBuf,
    logs: PathBuf,
}

impl Deployment {
    /// The binary with this deployment's options and nothing from the
    /// environment the test runs in.
    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"));
        c.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--root-key-file")
            .arg(&self.root_key_file);
        if let Some(url) = &self.database_url {
            c.arg("--database").arg(url);
        }
        for var in [
            "CARBON_LEDGER_DATABASE_URL",
            "CARBON_LEDGER_ROOT_KEY_FILE",
            "CARBON_LEDGER_DATA_DIR",
            "CARBON_LEDGER_KEY_STORE_URL",
            "CARBON_LEDGER_POLICIES",
            "CARBON_LEDGER_LISTEN",
            "CARBON_LEDGER_SWEEP_INTERVAL_SECS",
            "CARBON_LEDGER_CHECKPOINT_INTERVAL_SECS",
        ] {
            c.env_remove(var);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command to its end: success, stdout, stderr.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `serve` without waiting for it. Checkpoints are signed every
    /// second, so kills land in those transactions too.
    fn start(&self, name: &str) -> Server {
        let addr = free_port();
        let log = self.logs.join(format!("{}-{name}.log", self.engine));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command()
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--checkpoint-interval-secs",
                "1",
            ])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Server {
            addr,
            child: Some(child),
            log,
        }
    }
}

/// A port nothing listens on now (the server binds it a moment later).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Server {
    addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) until `/healthz` answers; a server that exits
    /// instead fails the test with its log.
    async fn healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("a running server");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server exited ({status}) before it was healthy:\n{}", read(&self.log));
            }
            let ok = client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "server not healthy within {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn assert_no_panic(&self) {
        let log = read(&self.log);
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A fresh PostgreSQL database for one run, dropped after it. Named like the
/// other tests' databases, so `.ci/run` clears one an interrupted run left.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        sqlx::any::install_default_drivers();
        let name = format!("cl_test_{}", hex::encode(carbon_ledger::crypto::random_bytes::<6>()));
        let admin = AnyPool::connect(admin_url).await.expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create the database");
        admin.close().await;
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url, None), |(b, q)| (b, Some(q)));
        let server = &base[..base.rfind('/').expect("URL has a database path")];
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = AnyPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}
