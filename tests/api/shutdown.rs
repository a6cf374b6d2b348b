//! Graceful shutdown of the real binary: SIGTERM under batch load drains
//! the requests in flight, every batch answered 2xx is stored, no batch is
//! stored in part, the process exits 0 and the audit log verifies.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{batch, event, Backend, PgDatabase};

const TASKS: usize = 6;
/// Each task stops after this many batches if the server is still up.
const MAX_BATCHES_PER_TASK: usize = 400;
const EVENTS_PER_BATCH: usize = 50;
const SUBJECTS: usize = 12;
const TIMEOUT: Duration = Duration::from_secs(60);

struct Binary {
    dir: TempDir,
    /// PostgreSQL's database, dropped after the processes; SQLite when `None`.
    pg: Option<PgDatabase>,
}

impl Binary {
    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"));
        c.arg("--data-dir").arg(self.dir.path().join("data"));
        if let Some(pg) = &self.pg {
            c.arg("--database").arg(&pg.url);
        }
        for var in [
            "CARBON_LEDGER_DATABASE_URL",
            "CARBON_LEDGER_ROOT_KEY_FILE",
            "CARBON_LEDGER_DATA_DIR",
            "CARBON_LEDGER_KEY_STORE_URL",
            "CARBON_LEDGER_POLICIES",
            "CARBON_LEDGER_LISTEN",
            "CARBON_LEDGER_LIMITS",
        ] {
            c.env_remove(var);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command to its end (bounded): success and stdout.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait(&mut child, TIMEOUT).unwrap_or_else(|| panic!("`{}` hung", args.join(" ")));
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        (status.success(), out)
    }

    fn serve(&self, addr: &str) -> Server {
        let log = self.dir.path().join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command()
            .args(["serve", "--listen", addr, "--sweep-interval-secs", "0"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Server { child, log }
    }
}

struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn healthy(client: &reqwest::Client, server: &mut Server, base: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("server exited ({status}):\n{}", log_of(&server.log));
        }
        let ok = client
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server not healthy:\n{}",
            log_of(&server.log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch_of(task: usize, n: usize) -> Value {
    batch(
        (0..EVENTS_PER_BATCH)
            .map(|i| {
                let id = format!("t{task}-b{n}-e{i}");
                event(&id, &format!("u-{}", (i + n) % SUBJECTS), "paperless_bill", json!({}))
            })
            .collect(),
    )
}

/// What became of one batch: its body and whether it was answered 2xx.
struct Sent {
    body: Value,
    acknowledged: bool,
}

mod sigterm_drains_in_flight_batches {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        drains(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        drains(Backend::Postgres).await;
    }
}

async fn drains(backend: Backend) {
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            match PgDatabase::create().await {
                Some(db) => Some(db),
                None => return crate::helpers::postgres_not_configured(),
            }
        }
    };
    let bin = Binary {
        dir: tempfile::tempdir().unwrap(),
        pg,
    };
    let (ok, out) = bin.run(&["tenant", "add", "--name", "drain", "--role", "platform"]);
    assert!(ok, "tenant add failed");
    let key = out.lines().last().unwrap().to_owned();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    let mut server = bin.serve(&addr);
    healthy(&client, &mut server, &base).await;
    for s in 0..SUBJECTS {
        let response = client
            .put(format!("{base}/v1/subjects/u-{s}/consents/accounting"))
            .bearer_auth(&key)
            .json(&json!({"notice_version": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, base, key, acknowledged) = (client.clone(), base.clone(), key.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..MAX_BATCHES_PER_TASK {
                    let body = batch_of(task, n);
                    let answer = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await;
                    let (ok, stop) = match answer {
                        Ok(r) => {
                            let status = r.status();
                            let ok = status.is_success() && r.bytes().await.is_ok();
                            (ok, !status.is_success())
                        }
                        // Refused or cut: the server is going away.
                        Err(_) => (false, true),
                    };
                    if ok {
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    sent.push(Sent { body, acknowledged: ok });
                    if stop {
                        break;
                    }
                }
                sent
            })
        })
        .collect();

    // SIGTERM mid-load: once some batches are in.
    let deadline = Instant::now() + TIMEOUT;
    while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < 2 * TASKS {
        assert!(Instant::now() < deadline, "no load got through");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_term = acknowledged.load(std::sync::atomic::Ordering::Relaxed);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || {
        let status = wait(&mut server.child, TIMEOUT);
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    let status = status.expect("the server did not exit within a minute of SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", log_of(&server.log));
    assert!(log_of(&server.log).contains("shutting down"));

    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    let acked = sent.iter().filter(|s| s.acknowledged).count();
    assert!(acked >= 2 * TASKS);

    let (ok, out) = bin.run(&["audit", "verify"]);
    assert!(ok, "audit verify failed: {out}");

    // Serve again: every acknowledged batch is there in full (a retry is a
    // duplicate of each event), and no other batch is there in part.
    let mut again = bin.serve(&addr);
    healthy(&client, &mut again, &base).await;
    let mut stored_unacknowledged = 0;
    for s in &sent {
        let response = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&s.body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let statuses: Vec<&str> = body["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        let duplicates = statuses.iter().filter(|s| **s == "duplicate").count();
        if s.acknowledged {
            assert_eq!(
                duplicates, EVENTS_PER_BATCH,
                "an acknowledged batch was lost: {statuses:?}"
            );
        } else {
            assert!(
                duplicates == 0 || duplicates == EVENTS_PER_BATCH,
                "a batch was stored in part: {statuses:?}"
            );
            stored_unacknowledged += usize::from(duplicates > 0);
        }
    }
    eprintln!(
        "{backend:?}: {} batches sent, {at_term} acknowledged at SIGTERM, {acked} before exit, \
         {stored_unacknowledged} stored without an answer",
        sent.len()
    );
    drop(again);
    let (ok, out) = bin.run(&["audit", "verify"]);
    assert!(ok, "audit verify failed after the retries: {out}");
}
