//! PostgreSQL failover under load, against a pg_auto_failover formation (a
//! monitor, a primary and a synchronous standby) that `.ci/failover.sh run`
//! sets up, and tears down afterwards whatever happens here. Two
//! `carbon-ledger serve` processes share the formation through a multi-host
//! URL with `target_session_attrs=read-write`, while clients post batches
//! to both and the whole primary node (keeper and postmaster) is killed
//! with SIGKILL three times, the killed node restarted each time so that
//! it rejoins as the standby before the next kill.
//!
//! Checked: no acknowledged event is lost (each is stored, with the record
//! and audit entry its receipt named), account totals equal the
//! acknowledged receipts, `audit verify` passes against every checkpoint
//! signed along the way, and each of those checkpoints is consistent with
//! the last (the log did not fork at a failover). Printed: how long writes
//! were refused at each failover.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carbon_ledger::audit::checkpoint::NoteVerifier;
use carbon_ledger::audit::merkle::verify_consistency;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SERVERS: usize = 2;
const CLIENTS_PER_SERVER: usize = 2;
const EVENTS_PER_BATCH: usize = 50;
const SUBJECTS: usize = 40;
const FAILOVERS: usize = 3;
/// Load before each kill, and after the formation settled again.
const STEADY: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// One batch is retried until it is acknowledged, for at most this long.
const ACK_DEADLINE: Duration = Duration::from_secs(90);

struct Env {
    dir: PathBuf,
    script: PathBuf,
    url: String,
}

impl Env {
    fn from_vars() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run this test through `.ci/failover.sh run`, which sets up the formation")
            })
        };
        Env {
            dir: var("CARBON_LEDGER_FAILOVER_DIR").into(),
            script: var("CARBON_LEDGER_FAILOVER_SCRIPT").into(),
            url: var("CARBON_LEDGER_FAILOVER_URL"),
        }
    }

    /// Runs one of the formation script's commands (bounded by the script's
    /// own waits): its stdout.
    fn formation(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let out = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() {
            Ok(out)
        } else {
            Err(format!("{args:?}: {out}{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    fn primary(&self) -> usize {
        self.formation(&["primary"]).unwrap().parse().expect("a primary node")
    }

    /// Waits (bounded) for one primary with a synchronous standby.
    fn wait_settled(&self, within: Duration) -> Duration {
        let started = Instant::now();
        while self.formation(&["settled"]).is_err() {
            assert!(
                started.elapsed() < within,
                "the formation did not settle within {within:?}: {}",
                self.formation(&["state"]).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        started.elapsed()
    }
}

/// The service's processes, killed when dropped (also on a failed assertion).
struct Servers {
    children: Vec<Child>,
    addrs: Vec<SocketAddr>,
    logs: Vec<PathBuf>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn command(work: &Path, url: &str, name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"));
    c.arg("--database")
        .arg(url)
        .arg("--root-key-file")
        .arg(work.join("root.key"))
        .arg("--data-dir")
        .arg(work.join(name));
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

/// Runs the command line to its end (bounded): success and its output.
fn cli(work: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let mut child = command(work, url, "cli")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`carbon-ledger {}` did not finish", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn event(id: &str, subject: usize, n: usize) -> Value {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let at = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (kind, data) = if n.is_multiple_of(2) {
        ("paperless_bill", json!({}))
    } else {
        ("transit_ride", json!({"mode": "bus"}))
    };
    json!({"event_id": id, "subject": format!("u-{subject}"), "kind": kind, "occurred_at": at, "data": data})
}

/// What a client saw: every acknowledged receipt, and every successful
/// write's start and end (for the refused windows).
#[derive(Default)]
struct Seen {
    receipts: Vec<Value>,
    writes: Vec<(Instant, Instant)>,
    refusals: HashMap<String, u64>,
}

/// What the clients share.
struct Load {
    client: reqwest::Client,
    addrs: Vec<SocketAddr>,
    key: String,
    stop: AtomicBool,
    seen: Mutex<Seen>,
    batches: AtomicU64,
}

/// Posts batches to server `first` (and, after a refusal, alternately to
/// the other) until `stop`: every batch is retried, with the same event
/// ids, until it is acknowledged.
async fn client_loop(load: Arc<Load>, first: usize, id: usize) {
    let Load {
        client,
        addrs,
        key,
        stop,
        seen,
        batches,
    } = &*load;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let events: Vec<Value> = (0..EVENTS_PER_BATCH)
            .map(|i| event(&format!("c{id}-b{n}-e{i}"), (id * 7 + n + i) % SUBJECTS, i))
            .collect();
        let body = json!({ "events": events });
        let started_batch = Instant::now();
        let mut attempt = 0;
        loop {
            let server = addrs[(first + attempt) % addrs.len()];
            attempt += 1;
            let started = Instant::now();
            let response = client
                .post(format!("http://{server}/v1/events"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await;
            let refusal = match response {
                Ok(r) if r.status() == StatusCode::OK => {
                    let body: Value = r.json().await.unwrap();
                    let mut seen = seen.lock().unwrap();
                    seen.writes.push((started, Instant::now()));
                    seen.receipts
                        .extend(body["receipts"].as_array().unwrap().iter().cloned());
                    break;
                }
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(r.headers().contains_key("retry-after"), "a 503 without Retry-After");
                    assert_eq!(r.headers()["content-type"], "application/problem+json");
                    let problem: Value = r.json().await.unwrap();
                    problem["type"]
                        .as_str()
                        .unwrap_or("?")
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .to_owned()
                }
                Ok(r) => {
                    let status = r.status();
                    panic!("a write answered {status}: {}", r.text().await.unwrap_or_default());
                }
                Err(e) => format!(
                    "client error: {}",
                    if e.is_timeout() { "timeout" } else { "connection" }
                ),
            };
            *seen.lock().unwrap().refusals.entry(refusal).or_default() += 1;
            assert!(
                started_batch.elapsed() < ACK_DEADLINE,
                "a batch was refused for {ACK_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        batches.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> (StatusCode, String) {
    let response = client.get(url).bearer_auth(key).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// A signed checkpoint from `server`, retried (bounded) while the database
/// is refusing.
async fn checkpoint(client: &reqwest::Client, server: SocketAddr, auditor: &str) -> String {
    let started = Instant::now();
    loop {
        let (status, note) = get(client, format!("http://{server}/v1/audit/checkpoint"), auditor).await;
        if status == StatusCode::OK {
            return note;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{note}");
        assert!(started.elapsed() < ACK_DEADLINE, "no checkpoint: {note}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pg_auto_failover formation that .ci/failover.sh sets up"]
async fn acknowledged_writes_survive_primary_failovers() {
    let env = Env::from_vars();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    carbon_ledger::crypto::RootKey::load_or_create(&work.join("root.key")).unwrap();

    // The servers, started together on the formation.
    let mut servers = Servers {
        children: Vec::new(),
        addrs: Vec::new(),
        logs: Vec::new(),
    };
    for i in 0..SERVERS {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = work.join(format!("server-{i}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command(work, &env.url, &format!("server-{i}"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--checkpoint-interval-secs",
                "0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        servers.children.push(child);
        servers.addrs.push(addr);
        servers.logs.push(log);
    }
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
    let started = Instant::now();
    for (i, addr) in servers.addrs.iter().enumerate() {
        loop {
            let ready = client.get(format!("http://{addr}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                break;
            }
            if let Some(status) = servers.children[i].try_wait().unwrap() {
                panic!(
                    "server {i} exited ({status}): {}",
                    std::fs::read_to_string(&servers.logs[i]).unwrap()
                );
            }
            assert!(started.elapsed() < Duration::from_secs(60), "server {i} not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let tenant = |name: &str, role: &str| {
        let (ok, out) = cli(work, &env.url, &["tenant", "add", "--name", name, "--role", role]);
        assert!(ok, "{out}");
        out.lines().last().unwrap().to_owned()
    };
    let key = tenant("platform", "platform");
    let auditor = tenant("auditor", "auditor");
    for s in 0..SUBJECTS {
        let url = format!(
            "http://{}/v1/subjects/u-{s}/consents/accounting",
            servers.addrs[s % SERVERS]
        );
        let response = client
            .put(url)
            .bearer_auth(&key)
            .json(&json!({"notice_version": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // The load.
    let load = Arc::new(Load {
        client: client.clone(),
        addrs: servers.addrs.clone(),
        key: key.clone(),
        stop: AtomicBool::new(false),
        seen: Mutex::new(Seen::default()),
        batches: AtomicU64::new(0),
    });
    let clients: Vec<_> = (0..SERVERS * CLIENTS_PER_SERVER)
        .map(|id| tokio::spawn(client_loop(load.clone(), id % SERVERS, id)))
        .collect();

    // The failovers, each with a checkpoint signed just before.
    let mut notes = Vec::new();
    let mut figures = Vec::new();
    for round in 0..FAILOVERS {
        tokio::time::sleep(STEADY).await;
        notes.push(checkpoint(&client, servers.addrs[round % SERVERS], &auditor).await);
        let before = load.batches.load(Ordering::Relaxed);
        let primary = env.primary();
        env.formation(&["kill", &primary.to_string()]).unwrap();
        // Measured from the node's death (the script returns once its
        // processes are gone): a write sent after it cannot reach it.
        let killed = Instant::now();
        // Writes are back once a write sent after the kill is acknowledged.
        let refused = loop {
            let back = load
                .seen
                .lock()
                .unwrap()
                .writes
                .iter()
                .filter(|(start, _)| *start >= killed)
                .map(|(_, end)| *end)
                .min();
            if let Some(end) = back {
                break end - killed;
            }
            assert!(
                killed.elapsed() < ACK_DEADLINE,
                "writes did not come back after failover {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let promoted = env.primary();
        assert_ne!(promoted, primary, "failover {round}: the standby took over");
        env.formation(&["start", &primary.to_string()]).unwrap();
        let rejoined = env.wait_settled(Duration::from_secs(180));
        println!(
            "failover {}: node{primary} killed, node{promoted} promoted; writes refused for {:.1} s; \
             node{primary} back as synchronous standby {:.1} s after its restart; {} batches acknowledged before",
            round + 1,
            refused.as_secs_f64(),
            rejoined.as_secs_f64(),
            before,
        );
        figures.push(refused);
    }
    tokio::time::sleep(STEADY).await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let last = checkpoint(&client, servers.addrs[0], &auditor).await;

    // Every acknowledged event: one record and one audit entry, whatever
    // receipts its retries got.
    let seen = std::mem::take(&mut *load.seen.lock().unwrap());
    let mut events: HashMap<String, (String, u64, i64, i64)> = HashMap::new();
    for r in &seen.receipts {
        let status = r["status"].as_str().unwrap();
        assert!(status == "recorded" || status == "duplicate", "{r}");
        let id = r["event_id"].as_str().unwrap().to_owned();
        let entry = (
            r["record_id"].as_str().unwrap().to_owned(),
            r["audit_seq"].as_u64().unwrap(),
            (r["reduction_g"].as_f64().unwrap() * 1000.0).round() as i64,
            r["points"].as_i64().unwrap(),
        );
        if let Some(before) = events.insert(id.clone(), entry.clone()) {
            assert_eq!(before.0, entry.0, "{id}: two records");
            assert_eq!(before.1, entry.1, "{id}: two audit entries");
        }
    }
    // The primary's own URL: node N is the N-th host of the list.
    let (user, rest) = env.url.split_once('@').unwrap();
    let (hosts, path) = rest.split_once('/').unwrap();
    let host = hosts.split(',').nth(env.primary() - 1).unwrap();
    let database = path.split('?').next().unwrap();
    let db_url = format!("{user}@{host}/{database}?sslmode=disable");
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&db_url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT encode(record_id, 'hex') FROM records")
        .fetch_all(&db)
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let lost: Vec<&String> = events.values().map(|e| &e.0).filter(|r| !stored.contains(*r)).collect();
    assert!(lost.is_empty(), "{} acknowledged records lost", lost.len());
    assert_eq!(
        stored.len(),
        events.len(),
        "one record per acknowledged event, and no other"
    );
    let seqs: std::collections::HashSet<u64> = events.values().map(|e| e.1).collect();
    assert_eq!(seqs.len(), events.len(), "one audit entry per event");
    let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(seqs.iter().all(|s| *s <= head as u64));
    db.close().await;

    // Account totals equal the acknowledged receipts, subject by subject.
    let mut expected: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for (id, (_, _, mg, points)) in &events {
        // The event id names the subject it was sent for.
        let (client_id, n, i) = parse_id(id);
        let subject = format!("u-{}", (client_id * 7 + n + i) % SUBJECTS);
        let e = expected.entry(subject).or_default();
        e.0 += 1;
        e.1 += mg;
        e.2 += points;
    }
    for (subject, (count, mg, points)) in &expected {
        let url = format!("http://{}/v1/subjects/{subject}/account", servers.addrs[1]);
        let (status, body) = get(&client, url, &key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let account: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(account["events"].as_i64(), Some(*count), "{subject}: {account}");
        let total = (account["reduction_g"].as_f64().unwrap() * 1000.0).round() as i64;
        assert_eq!(total, *mg, "{subject}: {account}");
        assert_eq!(
            account["points_balance"].as_i64(),
            Some(*points),
            "{subject}: {account}"
        );
    }

    // Every checkpoint signed before a failover is a prefix of the last.
    let vkey = get(&client, format!("http://{}/v1/audit/public-key", servers.addrs[1]), "")
        .await
        .1;
    let verifier = NoteVerifier::from_vkey(vkey.trim()).unwrap();
    let origin = verifier.name().to_owned();
    let last_cp = verifier.verify(&last, &origin).unwrap();
    for (i, note) in notes.iter().enumerate() {
        let old = verifier.verify(note, &origin).unwrap();
        assert!(old.size < last_cp.size);
        let url = format!(
            "http://{}/v1/audit/proofs/consistency?from={}&to={}",
            servers.addrs[i % SERVERS],
            old.size,
            last_cp.size
        );
        let (status, body) = get(&client, url, &auditor).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let proof: Vec<[u8; 32]> = body["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        verify_consistency(old.size, last_cp.size, &old.root, &last_cp.root, &proof)
            .unwrap_or_else(|e| panic!("checkpoint {i} (size {}) is not a prefix of the last: {e:?}", old.size));
    }
    drop(servers);

    // The whole log, offline, against every checkpoint kept.
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    for (i, note) in notes.iter().chain([&last]).enumerate() {
        let path = work.join(format!("checkpoint-{i}.txt"));
        std::fs::write(&path, note).unwrap();
        args.push("--checkpoint".into());
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cli(work, &env.url, &args);
    assert!(ok, "audit verify: {out}");

    let refusals: Vec<String> = seen.refusals.iter().map(|(k, v)| format!("{v} × {k}")).collect();
    let secs: Vec<String> = figures.iter().map(|d| format!("{:.1}", d.as_secs_f64())).collect();
    println!(
        "{} events acknowledged in {} batches, none lost; writes refused for {} s at the {FAILOVERS} failovers; \
         refused attempts: {}; audit log of {} entries verified against {} checkpoints",
        events.len(),
        seen.writes.len(),
        secs.join(", "),
        if refusals.is_empty() {
            "none".to_owned()
        } else {
            refusals.join(", ")
        },
        last_cp.size,
        notes.len() + 1,
    );
}

/// `c{client}-b{batch}-e{index}` → its three numbers.
fn parse_id(id: &str) -> (usize, usize, usize) {
    let mut parts = id.split('-').map(|p| p[1..].parse::<usize>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
}
