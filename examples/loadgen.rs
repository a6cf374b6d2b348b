//! A load generator that drives the real server binary over HTTP and prints
//! throughput, latency and the server's memory.
//!
//! cargo build --release && cargo run --release --example loadgen
//! cargo run --release --example loadgen -- --database postgres://postgres@127.0.0.1:5432/postgres
//!
//! It starts `carbon-ledger serve` as a child process on a fresh data
//! directory (and, on PostgreSQL, a fresh database `cl_loadgen`), enrols
//! consenting subjects, then measures:
//! - "batches": batches of 1,000 mixed events from a few keep-alive
//!   connections, closed-loop (events/s, request latency, RSS);
//! - "single": single-event requests at a fixed offered rate, open-loop
//!   (latency measured from each request's scheduled time, so queueing
//!   behind a slow response counts);
//! - a baseline: raw SQLite inserts of as many rows, to compare against;
//! - with `--plaintext`, phase "batches" again on a fresh plaintext
//!   benchmark ledger (`--plaintext-benchmark`: record contents stored
//!   unsealed), and the ratio of the two rates: what sealing costs.
//!
//! All traffic goes to 127.0.0.1; the child server is stopped on every exit
//! path, including errors and Ctrl-C.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The batch size of phase "batches" and of the baseline: the API's maximum.
const BATCH: usize = 1000;
/// How long the server may take to answer /healthz after starting.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last scheduled single-event request, how long stragglers may
/// take before the phase ends without them.
const SINGLE_GRACE: Duration = Duration::from_secs(10);
/// How long the server gets to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The PostgreSQL database made for the run, and dropped after it.
const PG_DATABASE: &str = "cl_loadgen";

#[derive(Debug, Parser)]
#[command(about = "HTTP load generator for carbon-ledger: throughput, latency and memory")]
struct Args {
    /// A PostgreSQL server (postgres://…/db on 127.0.0.1) on which a fresh
    /// database `cl_loadgen` is created and dropped [default: SQLite in a
    /// temporary directory]
    #[arg(long)]
    database: Option<String>,
    /// Consenting subjects the events are spread over.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    subjects: u64,
    /// Batches of 1,000 events in phase "batches".
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batches: u64,
    /// Concurrent keep-alive connections in phase "batches".
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    connections: u64,
    /// Offered rate of single-event requests in phase "single", per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Duration of phase "single", in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Concurrent keep-alive connections in phase "single": at 1,000/s and
    /// a few ms per answer, fewer than about ten cannot carry the rate.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    single_connections: u64,
    /// Also run phase "batches" on a plaintext benchmark ledger (record
    /// contents not sealed) and print the privacy overhead as a ratio.
    #[arg(long)]
    plaintext: bool,
    /// With --plaintext: alternate this many sealed and plaintext runs and
    /// print the median ratio.
    #[arg(long, default_value_t = 1, requires = "plaintext", value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C the run's future is dropped, and with it the guards that
    // stop the server and drop the database.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let binary = server_binary()?;
    let dir = tempfile::tempdir()?;
    println!(
        "engine: {}",
        if args.database.is_some() {
            "PostgreSQL (fresh database cl_loadgen)"
        } else {
            "SQLite (temporary directory)"
        }
    );
    let sealed = run_server(args, &binary, &dir.path().join("sealed"), Sealing::Sealed, true).await?;
    if args.plaintext {
        // The same load on a fresh ledger whose record contents are not
        // sealed: everything else (pseudonyms, keys, consent, caps, audit)
        // runs as in service, so the ratio is what sealing costs. Runs
        // move by more than that cost on a shared machine: with `--rounds`
        // sealed and plaintext runs alternate and the median ratio counts.
        let mut ratios = Vec::new();
        for round in 1..=args.rounds {
            // Which of the two goes first alternates, so that a drift of
            // the machine does not always favour the same one.
            let sealed_first = round % 2 == 1;
            let mut rates = [0.0; 2];
            for sealing in if sealed_first {
                [Sealing::Sealed, Sealing::Plaintext]
            } else {
                [Sealing::Plaintext, Sealing::Sealed]
            } {
                let i = usize::from(sealing == Sealing::Plaintext);
                if round == 1 && sealing == Sealing::Sealed {
                    rates[i] = sealed.events_per_sec;
                    continue;
                }
                let (name, title) = match sealing {
                    Sealing::Sealed => ("sealed", "sealed ledger"),
                    Sealing::Plaintext => ("plaintext", "plaintext benchmark ledger (record contents not sealed)"),
                };
                println!("\nround {round}: {title}, same load:");
                let dir = dir.path().join(format!("{name}-{round}"));
                rates[i] = run_server(args, &binary, &dir, sealing, false).await?.events_per_sec;
            }
            let ratio = rates[0] / rates[1];
            println!(
                "round {round}: sealed / plaintext events/s = {:.0} / {:.0} = {ratio:.3}",
                rates[0], rates[1]
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let median = if n % 2 == 1 {
            ratios[n / 2]
        } else {
            (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
        };
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "privacy overhead: sealed / plaintext events/s, median of {n} round(s) = {median:.3} (all: {})",
            shown.join(", ")
        );
    }

    let events = args.batches * BATCH as u64;
    let baseline = baseline_sqlite(dir.path(), events).await?;
    println!("baseline: raw SQLite insert of {events} rows (~300-byte BLOB, index on (subject, day)):");
    println!("  {baseline:.0} rows/s");
    println!(
        "  phase \"batches\" events/s / baseline rows/s = {:.3}",
        sealed.events_per_sec / baseline
    );
    Ok(())
}

/// Whether the ledger seals record contents (as in service) or is a
/// plaintext benchmark ledger.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sealing {
    Sealed,
    Plaintext,
}

/// One server on a fresh ledger in `dir`: phase "batches", then (if
/// `single`) phase "single". The server is stopped before this returns, so
/// what runs next does not share the CPU with it.
async fn run_server(args: &Args, binary: &Path, dir: &Path, sealing: Sealing, single: bool) -> Result<BatchResult> {
    std::fs::create_dir_all(dir)?;
    let data_dir = dir.join("data");
    // Declared before the server so it is dropped after it.
    let pg = match &args.database {
        Some(url) => Some(PgDatabase::create(url).await?),
        None => None,
    };
    let database = pg.as_ref().map(|db| db.url.clone());
    let ledger = Ledger {
        binary,
        data_dir: &data_dir,
        database: database.as_deref(),
        plaintext: sealing == Sealing::Plaintext,
    };
    let key = ledger.add_tenant()?;
    let mut server = Server::start(&ledger, &dir.join("server.log"))?;
    let base = format!("http://{}", server.addr);
    let result = async {
        server.wait_healthy().await?;
        let memory = server.memory()?;
        println!("server up (pid {}): {memory}", server.pid());

        let started = Instant::now();
        enrol(&base, &key, args.subjects).await?;
        println!(
            "enrolled {} subjects (accounting and rewards) in {:.1} s",
            args.subjects,
            started.elapsed().as_secs_f64()
        );

        let batches = phase_batches(&base, &key, args).await?;
        println!("  server memory after the phase: {}", server.memory()?);
        if single {
            phase_single(&base, &key, args).await?;
            println!("  server memory after the phase: {}", server.memory()?);
        }
        Ok::<_, Error>(batches)
    }
    .await;
    let result = match result {
        Ok(batches) => batches,
        Err(e) => {
            eprintln!("server log (last lines):\n{}", server.log_tail());
            return Err(e);
        }
    };
    server.stop();
    drop(pg);
    Ok(result)
}

/// The server binary beside this example's own (target/<profile>/examples/loadgen
/// runs target/<profile>/carbon-ledger).
fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from this executable")?;
    let binary = profile_dir.join(format!("carbon-ledger{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        return Err(format!(
            "the server binary {} is missing: run `cargo build --release` first",
            binary.display()
        )
        .into());
    }
    Ok(binary)
}

/// The ledger a run's commands open.
struct Ledger<'a> {
    binary: &'a Path,
    data_dir: &'a Path,
    database: Option<&'a str>,
    plaintext: bool,
}

impl Ledger<'_> {
    fn command(&self) -> Command {
        let mut command = Command::new(self.binary);
        command.arg("--data-dir").arg(self.data_dir);
        if let Some(url) = self.database {
            command.arg("--database").arg(url);
        }
        if self.plaintext {
            command.arg("--plaintext-benchmark");
        }
        // The run's settings only: nothing from the caller's environment.
        for var in [
            "CARBON_LEDGER_DATA_DIR",
            "CARBON_LEDGER_DATABASE_URL",
            "CARBON_LEDGER_POLICIES",
            "CARBON_LEDGER_ROOT_KEY_FILE",
            "CARBON_LEDGER_KEY_STORE_URL",
            "CARBON_LEDGER_LISTEN",
        ] {
            command.env_remove(var);
        }
        command.stdin(Stdio::null());
        command
    }

    /// `tenant add`: the platform key is the last line of its output.
    fn add_tenant(&self) -> Result<String> {
        let output = self
            .command()
            .args(["tenant", "add", "--name", "load", "--role", "platform"])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "tenant add failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8(output.stdout)?;
        let key = stdout.lines().last().unwrap_or_default().trim().to_owned();
        if key.is_empty() {
            return Err("tenant add printed no key".into());
        }
        Ok(key)
    }
}

/// The child server; stopped when dropped, whatever the exit path.
struct Server {
    child: Option<Child>,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(ledger: &Ledger<'_>, log: &Path) -> Result<Self> {
        // A free port: bound and released. Another process could take it in
        // between; the health check would then fail with a clear message.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let out = File::create(log)?;
        let child = ledger
            .command()
            .args(["serve", "--listen", &addr.to_string()])
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Self {
            child: Some(child),
            addr,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("http://{}/healthz", self.addr);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("the server exited at start-up ({status})").into());
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the server did not answer {url} within {STARTUP_TIMEOUT:?}").into())
    }

    /// The server's resident and peak resident memory, from /proc.
    fn memory(&self) -> Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        };
        match (field("VmRSS:"), field("VmHWM:")) {
            (Some(rss), Some(hwm)) => Ok(format!("RSS {rss:.1} MB (VmRSS), peak {hwm:.1} MB (VmHWM)")),
            _ => Err("no VmRSS/VmHWM in /proc/<pid>/status".into()),
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // std has no SIGTERM; `kill` is everywhere /proc is.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh PostgreSQL database for the run, dropped after it.
struct PgDatabase {
    admin_url: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Result<Self> {
        check_local(admin_url)?;
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url, None), |(b, q)| (b, Some(q)));
        let server = base
            .rfind('/')
            .filter(|&i| i > "postgres://".len())
            .map(|i| &base[..i])
            .ok_or("the PostgreSQL URL needs a database path, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
        let url = match query {
            Some(q) => format!("{server}/{PG_DATABASE}?{q}"),
            None => format!("{server}/{PG_DATABASE}"),
        };
        // A database left by an interrupted run is dropped first.
        pg_execute(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"),
        )
        .await?;
        pg_execute(admin_url, &format!("CREATE DATABASE {PG_DATABASE}")).await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        // Drop may run inside the runtime: the blocking work gets a thread
        // and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(pg_execute(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"),
            ))
        })
        .join()
        .map(|r| {
            if let Err(e) = r {
                eprintln!("could not drop database {PG_DATABASE}: {e}");
            }
        });
    }
}

async fn pg_execute(url: &str, statement: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    sqlx::raw_sql(statement).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Refuses a database URL naming any host but this machine's loopback.
fn check_local(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("--database must be a postgres:// URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        Ok(())
    } else {
        Err(format!("--database must name a server on 127.0.0.1, not {host:?}").into())
    }
}

/// One keep-alive HTTP/1.1 connection: a client that keeps one idle
/// connection and is used by one task at a time.
fn connection(key: &str) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}")
            .parse()
            .map_err(|_| "the key is not a valid header")?,
    );
    headers.insert(reqwest::header::CONTENT_TYPE, "application/json".parse()?);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

fn subject(n: u64) -> String {
    format!("load-{n}")
}

/// Every subject consents to accounting and rewards (not timed).
async fn enrol(base: &str, key: &str, subjects: u64) -> Result<()> {
    let body = serde_json::to_vec(&json!({ "notice_version": 1 }))?;
    let workers = 4.min(subjects);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = connection(key)?;
        let (base, body) = (base.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            for n in (w..subjects).step_by(workers as usize) {
                for purpose in ["accounting", "rewards"] {
                    let url = format!("{base}/v1/subjects/{}/consents/{purpose}", subject(n));
                    let r = client.put(url).body(body.clone()).send().await?;
                    let status = r.status();
                    if !status.is_success() {
                        return Err(format!("consent failed: {status}: {}", r.text().await?).into());
                    }
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Today in +08:00, a minute ago: never in the future, always accepted.
fn occurred_at() -> Result<String> {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8)) - time::Duration::minutes(1);
    Ok(now
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?)
}

/// The n-th event of the run: kinds and subjects round-robin.
fn event(id: String, n: u64, subjects: u64, at: &str) -> Value {
    let (kind, data) = match n % 6 {
        0 => ("transit_ride", json!({ "mode": "bus" })),
        1 => ("transit_ride", json!({ "mode": "metro" })),
        2 => ("walking", json!({ "steps": 2000 + (n % 16) * 500 })),
        3 => ("cycling", json!({ "distance_m": 1000 + (n % 50) * 100 })),
        4 => ("clean_plate", json!({})),
        _ => ("paperless_bill", json!({})),
    };
    json!({
        "event_id": id,
        "subject": subject(n % subjects),
        "kind": kind,
        "occurred_at": at,
        "region": "510502",
        "data": data,
    })
}

#[derive(Deserialize)]
struct Receipts {
    receipts: Vec<ReceiptStatus>,
}

#[derive(Deserialize)]
struct ReceiptStatus {
    status: String,
    #[serde(default)]
    problem: Option<Value>,
}

#[derive(Default)]
struct Counts {
    recorded: u64,
    duplicate: u64,
}

impl Counts {
    /// Counts the receipts; any other status fails the run, naming it.
    fn add(&mut self, receipts: &Receipts) -> Result<()> {
        for r in &receipts.receipts {
            match r.status.as_str() {
                "recorded" => self.recorded += 1,
                "duplicate" => self.duplicate += 1,
                other => {
                    return Err(format!(
                        "a receipt is {other}: {}",
                        r.problem.as_ref().map(Value::to_string).unwrap_or_default()
                    )
                    .into())
                }
            }
        }
        Ok(())
    }
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct BatchResult {
    events_per_sec: f64,
}

/// Runs of at most this many batches have their bodies built before the
/// clock starts.
const PREBUILT_BATCHES: u64 = 200;

enum Batch {
    Built(Vec<u8>),
    Number(u64),
}

/// Phase "batches": closed-loop, each connection sends its next batch when
/// the previous one is answered.
async fn phase_batches(base: &str, key: &str, args: &Args) -> Result<BatchResult> {
    let at = occurred_at()?;
    let subjects = args.subjects;
    let body = move |b: u64| -> Result<Vec<u8>> {
        let events: Vec<Value> = (0..BATCH as u64)
            .map(|i| {
                let n = b * BATCH as u64 + i;
                event(format!("lg-b-{n}"), n, subjects, &at)
            })
            .collect();
        Ok(serde_json::to_vec(&json!({ "events": events }))?)
    };
    // Bodies are built before the clock starts (the client's JSON encoding
    // is not the server's cost), except in long runs, where they would not
    // fit in memory: there each connection encodes its next body, about a
    // millisecond per batch.
    let mut bodies = VecDeque::new();
    for b in 0..args.batches {
        bodies.push_back(if args.batches <= PREBUILT_BATCHES {
            Batch::Built(body(b)?)
        } else {
            Batch::Number(b)
        });
    }
    let queue = Arc::new(Mutex::new(bodies));
    let url = format!("{base}/v1/events");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, queue, url) = (connection(key)?, queue.clone(), url.clone());
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut counts = Counts::default();
            let mut done = Vec::new();
            loop {
                let Some(next) = queue.lock().map_err(|_| "queue poisoned")?.pop_front() else {
                    break;
                };
                let body = match next {
                    Batch::Built(body) => body,
                    Batch::Number(b) => body(b)?,
                };
                let sent = Instant::now();
                let r = client.post(&url).body(body).send().await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                latencies.push(sent.elapsed());
                if status != reqwest::StatusCode::OK {
                    return Err(format!("batch answered {status}: {}", String::from_utf8_lossy(&bytes)).into());
                }
                let before = counts.recorded;
                counts.add(&serde_json::from_slice(&bytes)?)?;
                done.push((Instant::now(), counts.recorded - before));
            }
            Ok::<_, Error>((latencies, counts, done))
        }));
    }
    let mut latencies = Vec::new();
    let mut counts = Counts::default();
    let mut done = Vec::new();
    for task in tasks {
        let (l, c, d) = task.await??;
        latencies.extend(l);
        counts.recorded += c.recorded;
        counts.duplicate += c.duplicate;
        done.extend(d);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let events_per_sec = counts.recorded as f64 / elapsed.as_secs_f64();
    println!(
        "phase \"batches\": {} batches of {BATCH} from {} connections in {:.2} s",
        args.batches,
        args.connections,
        elapsed.as_secs_f64()
    );
    println!(
        "  receipts: {} recorded, {} duplicate",
        counts.recorded, counts.duplicate
    );
    println!("  {events_per_sec:.0} events/s (recorded)");
    // Sustained: the rate over the last tenth of the batches against the
    // first tenth (B-tree inserts slow down as tables grow).
    done.sort();
    let tenth = done.len() / 10;
    if tenth > 0 {
        let rate = |from: Instant, part: &[(Instant, u64)]| {
            let events: u64 = part.iter().map(|(_, n)| n).sum();
            events as f64 / part.last().map_or(0.0, |(t, _)| t.duration_since(from).as_secs_f64())
        };
        let first = rate(started, &done[..tenth]);
        let from = done[done.len() - tenth - 1].0;
        let last = rate(from, &done[done.len() - tenth..]);
        println!(
            "  first tenth {first:.0} events/s, last tenth {last:.0} events/s (after {} recorded): ratio {:.2}",
            counts.recorded - done[done.len() - tenth..].iter().map(|(_, n)| n).sum::<u64>(),
            last / first
        );
    }
    println!(
        "  request latency: p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    Ok(BatchResult { events_per_sec })
}

/// Phase "single": open-loop. A scheduler releases request n at
/// start + n/rate whatever the responses do; a few connections take the
/// released requests in order. Latency runs from the scheduled time, so
/// time spent waiting for a free connection counts.
async fn phase_single(base: &str, key: &str, args: &Args) -> Result<()> {
    let at = occurred_at()?;
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let url = format!("{base}/v1/events");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let started = Instant::now();
    // Everything ends by then, answered or not.
    let deadline = started + Duration::from_secs(args.seconds) + SINGLE_GRACE;

    let scheduler = tokio::spawn(async move {
        for n in 0..total {
            tokio::time::sleep_until((started + interval * n as u32).into()).await;
            if tx.send((n, Instant::now())).is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..args.single_connections {
        let (client, rx, url, at) = (connection(key)?, rx.clone(), url.clone(), at.clone());
        let subjects = args.subjects;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut service = Vec::new();
            let mut counts = Counts::default();
            let mut last = started;
            loop {
                let next = tokio::time::timeout_at(deadline.into(), async { rx.lock().await.recv().await }).await;
                let Ok(Some((n, scheduled))) = next else {
                    break;
                };
                let body = serde_json::to_vec(&event(format!("lg-s-{n}"), n, subjects, &at))?;
                let sent = Instant::now();
                let request = client.post(&url).body(body).send();
                let Ok(r) = tokio::time::timeout_at(deadline.into(), request).await else {
                    break;
                };
                let r = r?;
                let status = r.status();
                let bytes = r.bytes().await?;
                let done = Instant::now();
                latencies.push(done - scheduled);
                service.push(done - sent);
                last = last.max(done);
                if !status.is_success() {
                    return Err(format!("event answered {status}: {}", String::from_utf8_lossy(&bytes)).into());
                }
                counts.add(&serde_json::from_slice(&bytes)?)?;
            }
            Ok::<_, Error>((latencies, service, counts, last))
        }));
    }
    let mut latencies = Vec::new();
    let mut service = Vec::new();
    let mut counts = Counts::default();
    let mut last = started;
    for task in tasks {
        let (l, s, c, t) = task.await??;
        latencies.extend(l);
        service.extend(s);
        counts.recorded += c.recorded;
        counts.duplicate += c.duplicate;
        last = last.max(t);
    }
    scheduler.abort();
    latencies.sort();
    service.sort();
    let answered = latencies.len() as u64;
    let span = (last - started).as_secs_f64();
    println!(
        "phase \"single\": offered {} events/s for {} s ({total} requests) over {} connections",
        args.rate, args.seconds, args.single_connections
    );
    println!(
        "  answered {answered} of {total} ({} recorded, {} duplicate){}",
        counts.recorded,
        counts.duplicate,
        if answered < total {
            format!(
                "; {} not answered within {SINGLE_GRACE:?} after the schedule ended",
                total - answered
            )
        } else {
            String::new()
        }
    );
    println!(
        "  achieved {:.0} events/s (answered / {span:.2} s from the first scheduled send to the last answer)",
        answered as f64 / span
    );
    println!(
        "  latency from the scheduled time: p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    println!(
        "  service time (send to answer): p50 {}, p99 {}, max {}",
        ms(percentile(&service, 50.0)),
        ms(percentile(&service, 99.0)),
        ms(percentile(&service, 100.0))
    );
    Ok(())
}

/// The baseline: `rows` random rows into SQLite through sqlx, 1,000 per
/// transaction, WAL and synchronous=FULL like the server's SQLite ledger.
/// Returns rows per second.
async fn baseline_sqlite(dir: &Path, rows: u64) -> Result<f64> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let options = SqliteConnectOptions::new()
        .filename(dir.join("baseline.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, subject BLOB NOT NULL, day INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE INDEX rows_subject_day ON rows (subject, day);",
    )
    .execute(&pool)
    .await?;
    let day: i64 = time::OffsetDateTime::now_utc().unix_timestamp() / 86_400;
    // Random data made before the clock starts.
    let mut data = vec![0u8; rows as usize * (32 + 300)];
    getrandom::getrandom(&mut data)?;
    let placeholders = vec!["(?, ?, ?)"; BATCH].join(", ");
    let full = format!("INSERT INTO rows (subject, day, body) VALUES {placeholders}");

    let started = Instant::now();
    for chunk in data.chunks((32 + 300) * BATCH) {
        let n = chunk.len() / (32 + 300);
        // One multi-row statement per batch, as the server writes its rows.
        let sql = if n == BATCH {
            full.clone()
        } else {
            format!(
                "INSERT INTO rows (subject, day, body) VALUES {}",
                vec!["(?, ?, ?)"; n].join(", ")
            )
        };
        let mut query = sqlx::query(&sql);
        for row in chunk.chunks(32 + 300) {
            query = query.bind(&row[..32]).bind(day).bind(&row[32..]);
        }
        let mut tx = pool.begin().await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rows").fetch_one(&pool).await?;
    pool.close().await;
    if count as u64 != rows {
        return Err(format!("the baseline holds {count} rows, not {rows}").into());
    }
    Ok(rows as f64 / elapsed.as_secs_f64())
}
