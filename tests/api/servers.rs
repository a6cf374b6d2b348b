//! Several API servers, real processes, on one PostgreSQL database: they
//! start together (migrations and first-use set-up racing), share the load,
//! and between them record every event exactly once on one audit chain.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carbon_ledger::audit::checkpoint::{Checkpoint, NoteVerifier};
use carbon_ledger::audit::merkle::verify_consistency;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use tempfile::TempDir;

use crate::helpers::{batch, event, PgDatabase};

/// Long enough for a debug build on a busy machine; a hung server or
/// command fails the test instead of stalling it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

const SERVERS: usize = 2;
const TASKS_PER_SERVER: usize = 4;
const BATCHES_PER_TASK: usize = 5;
const EVENTS_PER_BATCH: usize = 100;
const SUBJECTS: usize = 40;

/// One deployment: a database, a root key all servers share, and a data
/// directory per process.
struct Deployment {
    dir: TempDir,
    database_url: String,
    root_key_file: PathBuf,
    // Dropped last: the database outlives the servers.
    _db: PgDatabase,
}

impl Deployment {
    /// A fresh database and root key; `None` when no PostgreSQL server is
    /// configured.
    async fn create() -> Option<Self> {
        sqlx::any::install_default_drivers();
        let db = PgDatabase::create().await?;
        let dir = tempfile::tempdir().unwrap();
        let root_key_file = dir.path().join("root.key");
        // Made before any server starts: a key file is not something two
        // processes should race to create.
        carbon_ledger::crypto::RootKey::load_or_create(&root_key_file).unwrap();
        Some(Self {
            database_url: db.url.clone(),
            root_key_file,
            dir,
            _db: db,
        })
    }

    /// The binary with this deployment's global options, and nothing taken
    /// from the environment the test runs in.
    fn command(&self, name: &str) -> Command {
        let data_dir = self.dir.path().join(name);
        let mut c = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"));
        c.arg("--database")
            .arg(&self.database_url)
            .arg("--root-key-file")
            .arg(&self.root_key_file)
            .arg("--data-dir")
            .arg(&data_dir);
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

    /// Runs a command to its end (bounded): success, stdout, stderr.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let n = CLI_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (out, err) = (
            self.dir.path().join(format!("cli-{n}.out")),
            self.dir.path().join(format!("cli-{n}.err")),
        );
        let mut child = self
            .command("cli")
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`carbon-ledger {}` did not finish in {CLI_TIMEOUT:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.success(), read(&out), read(&err))
    }

    /// Starts servers `ids` at once, without waiting for them.
    fn start(&self, servers: &mut Servers, ids: std::ops::Range<usize>) {
        for i in ids {
            let addr = free_port();
            let log = self.dir.path().join(format!("server-{i}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = self
                .command(&format!("server-{i}"))
                .args(["serve", "--listen", &addr.to_string()])
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            servers.0.push(Server { addr, child, log });
        }
    }
}

static CLI_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A port nothing listens on now (the server binds it a moment later).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Server {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Server processes, killed when dropped: a failed assertion must not leave
/// them running.
struct Servers(Vec<Server>);

impl Drop for Servers {
    fn drop(&mut self) {
        for server in &mut self.0 {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

impl Servers {
    /// Waits (bounded) until every server answers `/healthz`; one that
    /// exits instead fails the test with its log.
    async fn healthy(&mut self, client: &reqwest::Client) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending: Vec<usize> = (0..self.0.len()).collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for i in pending {
                let server = &mut self.0[i];
                if let Some(status) = server.child.try_wait().unwrap() {
                    return Err(format!(
                        "server {i} exited ({status}) before it was healthy:\n{}",
                        read(&server.log)
                    ));
                }
                let ok = client
                    .get(server.url("/healthz"))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if !ok {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() {
                if Instant::now() > deadline {
                    return Err(format!("servers {pending:?} not healthy within {START_TIMEOUT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap()
}

/// Adds a tenant with the command line; its key is stdout's last line.
fn add_tenant(deployment: &Deployment, name: &str, role: &str) -> String {
    let (ok, out, err) = deployment.cli(&["tenant", "add", "--name", name, "--role", role]);
    assert!(ok, "tenant add: {err}");
    out.lines().last().expect("a key line").to_owned()
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post_batch(client: &reqwest::Client, server: &Server, key: &str, body: &Value) -> Vec<Value> {
    let request = client.post(server.url("/v1/events")).bearer_auth(key).json(body);
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{}: {body}", server.addr);
    body["receipts"].as_array().expect("receipts").clone()
}

/// The events of one batch: ids unique across the whole test.
fn batch_events(server: usize, task: usize, n: usize) -> Value {
    batch(
        (0..EVENTS_PER_BATCH)
            .map(|i| {
                let (kind, data) = if i % 2 == 0 {
                    ("paperless_bill", json!({}))
                } else {
                    ("transit_ride", json!({"mode": "bus"}))
                };
                let id = format!("s{server}-t{task}-b{n}-e{i}");
                event(&id, &format!("u-{}", (i + n + task) % SUBJECTS), kind, data)
            })
            .collect(),
    )
}

/// What a receipt says about its event: status, record id, audit entry.
fn receipt(r: &Value) -> (String, String, String, u64) {
    (
        r["event_id"].as_str().expect("event_id").to_owned(),
        r["status"].as_str().expect("status").to_owned(),
        r["record_id"].as_str().expect("record_id").to_owned(),
        r["audit_seq"].as_u64().expect("audit_seq"),
    )
}

/// Servers started together on a fresh database, in a cold start.
const STARTING_TOGETHER: usize = 3;

/// Several servers started together on a fresh database all come up: they
/// migrate, check the root key, pair the key store and sign their first
/// checkpoints concurrently, and leave one schema, one pairing and one
/// log. (Once, the second to pair the key store failed on the first's row
/// and exited; the pairing is now insert-if-absent, then read back.)
#[tokio::test]
async fn servers_start_together_on_a_fresh_database() {
    let client = client();
    // Several fresh databases: the start-up window is short.
    for round in 0..3 {
        let Some(deployment) = Deployment::create().await else {
            return crate::helpers::postgres_not_configured();
        };
        let mut servers = Servers(Vec::new());
        deployment.start(&mut servers, 0..STARTING_TOGETHER);
        if let Err(e) = servers.healthy(&client).await {
            panic!("round {round}: {e}");
        }
        let db = sqlx::AnyPool::connect(&deployment.database_url).await.unwrap();
        // Each server signs a checkpoint as it starts: wait for them (bounded).
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let counts = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM audit_checkpoints), (SELECT seq FROM audit_head), \
                 (SELECT COUNT(*) FROM audit_log)",
            )
            .fetch_one(&db)
            .await;
            let (checkpoints, head, entries): (i64, i64, i64) =
                counts.map(|r| (r.get(0), r.get(1), r.get(2))).unwrap_or((0, 0, 0));
            // One log: every server's start (its policy load) on one chain,
            // numbered without gaps.
            assert_eq!(head, entries, "round {round}");
            if checkpoints >= 1 && head >= STARTING_TOGETHER as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {checkpoints} checkpoints, {head} entries"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pairs: Vec<String> = sqlx::query_scalar(
            "SELECT value FROM meta WHERE name = 'key_store_pair' \
             UNION ALL SELECT value FROM keystore.meta WHERE name = 'key_store_pair'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert!(
            pairs.len() == 2 && pairs[0] == pairs[1],
            "round {round}: one pairing: {pairs:?}"
        );
        let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(migrations, 0, "round {round}: one schema, fully migrated");
        db.close().await;
        drop(servers);
        // The log verifies against every checkpoint the servers signed.
        let (ok, out, err) = deployment.cli(&["audit", "verify"]);
        assert!(ok, "round {round}: {out}{err}");
    }
}

#[tokio::test]
async fn two_servers_share_the_load_and_the_audit_log() {
    let Some(deployment) = Deployment::create().await else {
        return crate::helpers::postgres_not_configured();
    };
    let client = client();
    // The second server starts once the first is up, around the start-up
    // race shown by `servers_start_together_on_a_fresh_database`.
    let mut servers = Servers(Vec::new());
    deployment.start(&mut servers, 0..1);
    servers.healthy(&client).await.unwrap();
    deployment.start(&mut servers, 1..SERVERS);
    servers.healthy(&client).await.unwrap();
    let key = add_tenant(&deployment, "p", "platform");
    let auditor = add_tenant(&deployment, "a", "auditor");
    let servers = servers;
    let s = &servers.0;

    // Each subject consents to accounting through one server and to rewards
    // through the other, at the same time: both may create their salt.
    let consents = (0..SUBJECTS).flat_map(|i| {
        [("accounting", i % SERVERS), ("rewards", (i + 1) % SERVERS)].map(|(purpose, server)| {
            let url = s[server].url(&format!("/v1/subjects/u-{i}/consents/{purpose}"));
            send(client.put(url).bearer_auth(&key).json(&json!({"notice_version": 1})))
        })
    });
    for (status, body) in join_all(consents).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // Every batch, by the server it was first sent to.
    let bodies: Vec<(usize, Value)> = (0..SERVERS)
        .flat_map(|server| {
            (0..TASKS_PER_SERVER)
                .flat_map(move |task| (0..BATCHES_PER_TASK).map(move |n| (server, batch_events(server, task, n))))
        })
        .collect();
    let tasks = (0..SERVERS).flat_map(|server| {
        let (client, key, bodies) = (&client, &key, &bodies);
        (0..TASKS_PER_SERVER).map(move |task| async move {
            let first = (server * TASKS_PER_SERVER + task) * BATCHES_PER_TASK;
            let other = &s[(server + 1) % SERVERS];
            let mut receipts = Vec::new();
            for (n, (_, body)) in bodies[first..first + BATCHES_PER_TASK].iter().enumerate() {
                match n {
                    // A client that timed out retries at the other server
                    // while the first is still at work: the two race.
                    1 => {
                        let (a, b) = tokio::join!(
                            post_batch(client, &s[server], key, body),
                            post_batch(client, other, key, body)
                        );
                        receipts.extend(a.into_iter().chain(b));
                    }
                    // A retry after the first answer, at the other server.
                    3 => {
                        receipts.extend(post_batch(client, &s[server], key, body).await);
                        receipts.extend(post_batch(client, other, key, body).await);
                    }
                    _ => receipts.extend(post_batch(client, &s[server], key, body).await),
                }
            }
            receipts
        })
    });
    let receipts: Vec<Value> = join_all(tasks).await.into_iter().flatten().collect();

    // Each event recorded once; every other receipt for it a duplicate of
    // that record.
    let total = SERVERS * TASKS_PER_SERVER * BATCHES_PER_TASK * EVENTS_PER_BATCH;
    let mut recorded: HashMap<String, (String, u64)> = HashMap::new();
    let mut duplicates = Vec::new();
    for r in &receipts {
        let (id, status, record_id, seq) = receipt(r);
        match status.as_str() {
            "recorded" => {
                let first = recorded.insert(id.clone(), (record_id, seq));
                assert!(first.is_none(), "{id} recorded twice: {r}");
            }
            "duplicate" => duplicates.push((id, record_id, seq)),
            _ => panic!("unexpected receipt {r}"),
        }
    }
    assert_eq!(recorded.len(), total, "every event recorded once");
    let retried = SERVERS * TASKS_PER_SERVER * 2 * EVENTS_PER_BATCH;
    assert_eq!(duplicates.len(), retried);
    for (id, record_id, seq) in &duplicates {
        assert_eq!(recorded.get(id), Some(&(record_id.clone(), *seq)), "{id}");
    }
    let seqs: HashSet<u64> = recorded.values().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len(), total, "audit entries are unique across the servers");

    // Every batch again, at the other server: all duplicates of the same
    // records.
    let resent = bodies.iter().map(|(server, body)| {
        let (client, key) = (&client, &key);
        async move { post_batch(client, &s[(server + 1) % SERVERS], key, body).await }
    });
    for r in join_all(resent).await.iter().flatten() {
        let (id, status, record_id, seq) = receipt(r);
        assert_eq!(status, "duplicate", "{r}");
        assert_eq!(recorded.get(&id), Some(&(record_id, seq)), "{id}");
    }

    let db = sqlx::AnyPool::connect(&deployment.database_url).await.unwrap();
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM records")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    db.close().await;
    assert_eq!(rows, total as i64, "one row per distinct event");

    // Both servers sign checkpoints of the one log, under one key: the later
    // extends the earlier.
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for server in s {
        let vkey = client.get(server.url("/v1/audit/public-key")).send().await.unwrap();
        let verifier = NoteVerifier::from_vkey(vkey.text().await.unwrap().trim()).unwrap();
        let note = client
            .get(server.url("/v1/audit/checkpoint"))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap();
        assert_eq!(note.status(), StatusCode::OK);
        let note = note.text().await.unwrap();
        let origin = verifier.name().to_owned();
        checkpoints.push(verifier.verify(&note, &origin).unwrap());
    }
    let (old, new) = (&checkpoints[0], &checkpoints[1]);
    assert!(old.size as usize > total && old.size <= new.size, "{old:?} {new:?}");
    let path = format!("/v1/audit/proofs/consistency?from={}&to={}", old.size, new.size);
    for server in s {
        let (status, body) = send(client.get(server.url(&path)).bearer_auth(&auditor)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let proof: Vec<[u8; 32]> = body["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        verify_consistency(old.size, new.size, &old.root, &new.root, &proof).unwrap();
    }

    drop(servers);
    let (ok, out, err) = deployment.cli(&["audit", "verify"]);
    assert!(ok, "{out}{err}");
}
