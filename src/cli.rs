//! The command line: `serve`, `migrate`, `tenant add|rotate-key`, `audit
//! verify`, `keys rotate|reseal|status`, `policy check`. Global options
//! each have an environment variable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::AppState;
use crate::audit::VerifiedLog;
use crate::clock::SystemClock;
use crate::crypto::RootKey;
use crate::domain::Role;
use crate::policy::PolicySet;
use crate::store::{RecordSealing, Store};

#[derive(Debug, Parser)]
#[command(
    name = "carbon-ledger",
    version,
    about = "Privacy-preserving accounting for personal carbon accounts"
)]
pub struct Cli {
    /// Where the embedded database and the root key live.
    #[arg(long, global = true, env = "CARBON_LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// sqlite://PATH or postgres://... [default: sqlite://<data-dir>/ledger.db]
    #[arg(long, global = true, env = "CARBON_LEDGER_DATABASE_URL")]
    pub database: Option<String>,
    /// A directory of policy files [default: the policies compiled into the binary]
    #[arg(long, global = true, env = "CARBON_LEDGER_POLICIES")]
    pub policies: Option<PathBuf>,
    /// The 32-byte root key, as 64 hex characters [default: <data-dir>/root.key, created if missing]
    #[arg(long, global = true, env = "CARBON_LEDGER_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Where subject salts live: a database apart from the ledger, same engine
    /// [default: keys.db beside a SQLite ledger; schema keystore of a PostgreSQL ledger's database]
    #[arg(long, global = true, env = "CARBON_LEDGER_KEY_STORE_URL")]
    pub key_store: Option<String>,
    /// For the load generator only: a ledger created with this flag stores
    /// record contents in plaintext, to measure what sealing costs; it can
    /// only ever be opened with the flag, and a ledger created without it
    /// never with it. Deliberately without an environment variable.
    #[arg(long, global = true, hide = true)]
    pub plaintext_benchmark: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (migrates first).
    Serve {
        #[arg(long, env = "CARBON_LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Seconds between retention sweeps; 0 turns the sweeper off.
        #[arg(long, env = "CARBON_LEDGER_SWEEP_INTERVAL_SECS", default_value_t = 3600)]
        sweep_interval_secs: u64,
        /// Seconds between signed audit checkpoints; 0 turns them off (they
        /// are still signed on request).
        #[arg(long, env = "CARBON_LEDGER_CHECKPOINT_INTERVAL_SECS", default_value_t = 300)]
        checkpoint_interval_secs: u64,
        /// Seconds between background re-seals after a root key rotation
        /// (`keys rotate`); 0 leaves re-sealing to `keys reseal`.
        #[arg(long, env = "CARBON_LEDGER_RESEAL_INTERVAL_SECS", default_value_t = 600)]
        reseal_interval_secs: u64,
        /// A TOML file of per-tenant rate limits and quotas (see
        /// docs/operations.md) [default: no per-tenant limits]
        #[arg(long, env = "CARBON_LEDGER_LIMITS")]
        limits: Option<PathBuf>,
    },
    /// Create or upgrade the database schema.
    Migrate,
    /// Manage tenants (platforms and auditors).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Audit log operations.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy file operations.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Retention operations.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Key operations.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Compliance evidence.
    Compliance {
        #[command(subcommand)]
        command: ComplianceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Print the record of processing activities (GDPR Art. 30) and the
    /// inputs of an impact assessment (PIPL Art. 55-56), from the policy
    /// files in force.
    Records {
        #[arg(long, value_enum, default_value = "markdown")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-apply every recorded erasure: delete the keys the tombstone list
    /// names (after restoring the key store from a backup) and purge rows
    /// whose key is gone.
    Reshred,
    /// Introduce a new root key version (kept in the keyring file beside
    /// the root key file): new records are sealed under it at once.
    Rotate,
    /// Seal every record still under an older root key version again under
    /// the current one, then retire the versions nothing needs and drop
    /// their keys. Resumable; a progress bar on a terminal.
    Reseal {
        /// Records per transaction.
        #[arg(long, default_value_t = crate::store::RESEAL_BATCH)]
        batch_size: usize,
    },
    /// List the root key versions and how many records each still seals.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Purge every piece of data past its retention period now.
    Sweep,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant; prints its new API key as the last line of stdout.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Issue a new API key for a tenant; the old key is refused at once.
    /// Prints the new key as the last line of stdout.
    RotateKey {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Platform,
    Auditor,
    Admin,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log: recompute every entry's hash, the chain and the
    /// Merkle tree, and check them against every signed checkpoint. Names the
    /// first failing entry; exit status 1.
    Verify {
        /// Verify an export written by `audit export` instead of the
        /// database: no database, no network, no secret needed.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Also check against a signed checkpoint you kept (catches a log cut
        /// short and re-signed); repeatable.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
        /// With --from: the verifier key you hold (a file with the vkey),
        /// instead of trusting the one in the export.
        #[arg(long, value_name = "FILE", requires = "from")]
        public_key: Option<PathBuf>,
    },
    /// Write the log, every signed checkpoint and the public key to a
    /// directory, for offline verification.
    Export {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Check a proof file downloaded from the auditor console
    /// (`/console/audit/entries/{seq}/proof`) offline: the checkpoint's
    /// signature, the entry, and its inclusion in the signed tree. Exit
    /// status 1 if it does not verify.
    VerifyProof {
        /// The proof file (docs/audit-format.md).
        file: PathBuf,
        /// The verifier key you hold (the vkey string, or a file holding
        /// it), instead of trusting the one in the file.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Print a signed checkpoint covering every entry so far.
    Checkpoint,
    /// Print the checkpoint verifier key.
    PublicKey,
    /// For a breach notice: whose data a tenant (or its leaked key) touched
    /// between two days, from the verified audit log, by pseudonymous
    /// reference and kind of access; never an external id.
    Accesses {
        /// The tenant's id (as `tenant add` printed it).
        #[arg(long)]
        tenant: i64,
        /// The first day, YYYY-MM-DD (UTC).
        #[arg(long, value_name = "DAY")]
        since: String,
        /// The last day, YYYY-MM-DD (UTC) [default: today].
        #[arg(long, value_name = "DAY")]
        until: Option<String>,
        /// The platform's own list of its user ids, one a line: says which
        /// of them were touched (they are pseudonymized as on arrival and
        /// never printed).
        #[arg(long = "match", value_name = "FILE")]
        match_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy files and print their digest.
    Check,
}

impl Cli {
    fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ledger.db").display()))
    }

    /// Creates the data directory readable by its owner only: it holds the
    /// databases and, by default, the root key.
    fn ensure_data_dir(&self) -> Result<(), String> {
        if self.data_dir.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot restrict {}: {e}", self.data_dir.display()))?;
        }
        Ok(())
    }

    fn root_key_path(&self) -> PathBuf {
        self.root_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("root.key"))
    }

    /// The root key; `create` allows making one on first run.
    fn root_key(&self, create: bool) -> Result<RootKey, String> {
        let path = self.root_key_path();
        if !create {
            return RootKey::load(&path).map_err(|e| e.to_string());
        }
        self.ensure_data_dir()?;
        let (key, created) = RootKey::load_or_create(&path).map_err(|e| e.to_string())?;
        if created {
            tracing::warn!(
                path = %path.display(),
                "created a new root key; production deployments must supply their own (--root-key-file) and back it up: \
                 without it every record is unreadable"
            );
        }
        Ok(key)
    }

    fn policies(&self) -> Result<PolicySet, String> {
        PolicySet::load(self.policies.as_deref()).map_err(|e| format!("policy files: {e}"))
    }

    /// Opens the store; `create_key` allows making a root key on first run
    /// (commands that only read refuse to invent one).
    async fn store(&self, create_key: bool) -> Result<Store, String> {
        let policies = Arc::new(self.policies()?);
        let root = self.root_key(create_key)?;
        let sealing = if self.plaintext_benchmark {
            RecordSealing::PlaintextBenchmark
        } else {
            RecordSealing::Sealed
        };
        Store::open_with_sealing(
            &self.database_url(),
            self.key_store.as_deref(),
            root,
            Some(crate::crypto::keyring_path(&self.root_key_path())),
            Arc::new(SystemClock),
            policies,
            sealing,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

fn read_text(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn read_all(files: &[PathBuf]) -> Result<Vec<String>, String> {
    files.iter().map(|f| read_text(f)).collect()
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match execute(&cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: &Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Serve {
            listen,
            sweep_interval_secs,
            checkpoint_interval_secs,
            reseal_interval_secs,
            limits,
        } => {
            let intervals = Intervals {
                sweep: *sweep_interval_secs,
                checkpoint: *checkpoint_interval_secs,
                reseal: *reseal_interval_secs,
            };
            serve(cli, listen, intervals, limits.as_deref()).await
        }
        Command::Migrate => migrate(cli).await,
        Command::Tenant {
            command: TenantCommand::Add { name, role },
        } => add_tenant(cli, name, *role).await,
        Command::Tenant {
            command: TenantCommand::RotateKey { tenant },
        } => rotate_tenant_key(cli, tenant).await,
        Command::Audit { command } => match command {
            AuditCommand::Verify {
                from: Some(dir),
                checkpoint,
                public_key,
            } => verify_audit_export(dir, checkpoint, public_key.as_deref()),
            AuditCommand::Verify {
                from: None, checkpoint, ..
            } => verify_audit_log(cli, checkpoint).await,
            AuditCommand::Export { out } => export_audit(cli, out).await,
            AuditCommand::VerifyProof { file, key } => verify_proof_file(file, key.as_deref()),
            AuditCommand::Checkpoint => print_checkpoint(cli).await,
            AuditCommand::PublicKey => print_audit_public_key(cli).await,
            AuditCommand::Accesses {
                tenant,
                since,
                until,
                match_file,
                format,
            } => audit_accesses(cli, *tenant, since, until.as_deref(), match_file.as_deref(), *format).await,
        },
        Command::Compliance {
            command: ComplianceCommand::Records { format },
        } => print_records(cli, *format),
        Command::Retention {
            command: RetentionCommand::Sweep,
        } => sweep_retention(cli).await,
        Command::Keys { command } => match command {
            KeysCommand::Reshred => reshred_keys(cli).await,
            KeysCommand::Rotate => rotate_root_key(cli).await,
            KeysCommand::Reseal { batch_size } => reseal(cli, *batch_size).await,
            KeysCommand::Status => key_status(cli).await,
        },
        Command::Policy {
            command: PolicyCommand::Check,
        } => check_policies(cli),
    }
}

/// Seconds between `serve`'s background runs; 0 turns one off.
struct Intervals {
    sweep: u64,
    checkpoint: u64,
    reseal: u64,
}

async fn serve(cli: &Cli, listen: &str, intervals: Intervals, limits: Option<&Path>) -> Result<ExitCode, String> {
    // Read before anything starts: a bad limits file stops the server here.
    let limits = match limits {
        Some(file) => crate::api::LimitsConfig::load(file)?,
        None => crate::api::LimitsConfig::default(),
    };
    let store = Arc::new(cli.store(true).await?);
    store.record_policy_load().await.map_err(|e| e.to_string())?;
    finish_interrupted_erasures(&store).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        %addr,
        engine = ?store.engine(),
        methodology = %store.policies().methodology.version,
        "listening on http://{addr}"
    );
    let metrics = Arc::new(crate::api::Metrics::new());
    let background = BackgroundTasks::start(&store, &metrics, &intervals);
    let state = AppState::with(store.clone(), metrics, crate::api::Limits::new(limits));
    crate::server::serve(listener, state, crate::server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    background.stop().await;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Finishes any erasure a crash interrupted, before anything is served.
async fn finish_interrupted_erasures(store: &Store) -> Result<(), String> {
    let (keys, rows) = store.reshred().await.map_err(|e| e.to_string())?;
    if keys + rows > 0 {
        tracing::warn!(keys, rows, "finished interrupted erasures at start-up");
    }
    Ok(())
}

/// The periodic retention sweeps and signed checkpoints beside the server;
/// an interval of 0 turns its task off.
struct BackgroundTasks {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BackgroundTasks {
    fn start(store: &Arc<Store>, metrics: &Arc<crate::api::Metrics>, intervals: &Intervals) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sweeper = (intervals.sweep > 0).then(|| {
            tokio::spawn(crate::server::sweep_periodically(
                store.clone(),
                metrics.clone(),
                Duration::from_secs(intervals.sweep),
                stopped.clone(),
            ))
        });
        let checkpoints = (intervals.checkpoint > 0).then(|| {
            tokio::spawn(crate::server::checkpoint_periodically(
                store.clone(),
                metrics.clone(),
                Duration::from_secs(intervals.checkpoint),
                stopped.clone(),
            ))
        });
        // Always on: a rotation made elsewhere is picked up within seconds.
        let keys = Some(tokio::spawn(crate::server::watch_keys(
            store.clone(),
            (intervals.reseal > 0).then(|| Duration::from_secs(intervals.reseal)),
            stopped,
        )));
        let tasks = [sweeper, checkpoints, keys].into_iter().flatten().collect();
        Self { stop, tasks }
    }

    /// Background work ends between runs, never inside one.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn migrate(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(true).await?;
    println!("database schema is up to date ({:?})", store.engine());
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn add_tenant(cli: &Cli, name: &str, role: RoleArg) -> Result<ExitCode, String> {
    let store = cli.store(true).await?;
    let role = match role {
        RoleArg::Platform => Role::Platform,
        RoleArg::Auditor => Role::Auditor,
        RoleArg::Admin => Role::Admin,
    };
    let (id, key) = store.add_tenant(name, role).await.map_err(|e| e.to_string())?;
    println!(
        "tenant {name} (id {id}, role {}) created; its API key is shown only now:",
        role.as_str()
    );
    println!("{}", key.expose());
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `audit verify` against the database: the log, its chain and tree, and
/// every signed checkpoint, stored or `kept`.
async fn verify_audit_log(cli: &Cli, kept_checkpoints: &[PathBuf]) -> Result<ExitCode, String> {
    let kept = read_all(kept_checkpoints)?;
    let store = cli.store(false).await?;
    let check = store.verify_audit(&kept).await.map_err(|e| e.to_string())?;
    store.close().await;
    match check {
        Ok(checked) => {
            println!(
                "audit log verified: {} entries checked, head {}",
                checked.entries,
                hex::encode(checked.head)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("audit log verification FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit verify --from`: an export, offline, with no database or secret.
fn verify_audit_export(
    dir: &Path,
    kept_checkpoints: &[PathBuf],
    pinned_key_file: Option<&Path>,
) -> Result<ExitCode, String> {
    let kept = read_all(kept_checkpoints)?;
    let pinned = pinned_key_file.map(read_text).transpose()?;
    if pinned.is_none() {
        eprintln!("note: trusting the public key shipped in the export; pin the one you hold with --public-key");
    }
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match crate::audit::offline::verify_dir(dir, pinned.as_deref(), &kept, progress) {
        Ok(report) => {
            print_export_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("audit export verification FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Checks one proof file offline: no database, no network, no secret.
fn verify_proof_file(file: &Path, key: Option<&str>) -> Result<ExitCode, String> {
    let text = read_text(file)?;
    // A key given as a file path is read from it; otherwise it is the key.
    let pinned = match key {
        Some(k) if Path::new(k).is_file() => Some(read_text(Path::new(k))?),
        Some(k) => Some(k.to_owned()),
        None => {
            eprintln!("note: trusting the verifier key in the file; pin the one you hold with --key");
            None
        }
    };
    let checked = crate::audit::proof::ProofFile::parse(&text).and_then(|f| f.verify(pinned.as_deref()));
    match checked {
        Ok(v) => {
            println!(
                "proof OK: audit entry {} is included in the tree of size {} signed by {}",
                v.entry.seq, v.checkpoint.size, v.vkey
            );
            println!("{}", v.entry.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("proof verification FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A verified export's counts, then its totals by tenant, kind and month.
fn print_export_report(report: &VerifiedLog) {
    if report.emptied > 0 {
        println!(
            "note: the oldest {} entries were emptied by retention; the totals cover the rest",
            report.emptied
        );
    }
    println!(
        "audit export verified: {} entries, {} signed checkpoints; totals from the log:",
        report.entries, report.checkpoints
    );
    println!(
        "{:>8}  {:<20} {:<8} {:>8} {:>16} {:>10}",
        "tenant", "kind", "month", "events", "reduction_g", "points"
    );
    for ((tenant, kind, month), t) in &report.totals {
        let grams = serde_json::to_string(&crate::domain::Milligrams(t.reduction_mg)).unwrap_or_default();
        let month = crate::domain::month_label(*month);
        println!(
            "{tenant:>8}  {kind:<20} {month:<8} {:>8} {grams:>16} {:>10}",
            t.events, t.points
        );
    }
}

async fn export_audit(cli: &Cli, out: &Path) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let n = store.export_audit(out).await.map_err(|e| e.to_string())?;
    store.close().await;
    println!(
        "exported {n} audit entries with their signed checkpoints and public key to {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn print_checkpoint(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let note = store.checkpoint().await.map_err(|e| e.to_string())?;
    store.close().await;
    print!("{note}");
    Ok(ExitCode::SUCCESS)
}

async fn print_audit_public_key(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    println!("{}", store.audit_public_key());
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn sweep_retention(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    // The sweep acts under the retention policy: its load is logged.
    store.record_policy_load().await.map_err(|e| e.to_string())?;
    let (counts, seq) = store.sweep_retention().await.map_err(|e| e.to_string())?;
    store.close().await;
    println!(
        "retention sweep done (audit entry {seq}): {} records, {} ledger entries, {} idempotency keys, \
         {} consent history entries purged; {} audit entries emptied",
        counts.records, counts.ledger_entries, counts.idempotency_keys, counts.consent_history, counts.audit_entries
    );
    Ok(ExitCode::SUCCESS)
}

async fn rotate_tenant_key(cli: &Cli, name: &str) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let rotated = store.rotate_tenant_key(name).await.map_err(|e| e.to_string());
    store.close().await;
    let (id, key) = rotated?;
    println!(
        "tenant {name} (id {id}) has a new API key; the old one is refused from now on. The new key, shown only now:"
    );
    println!("{}", key.expose());
    Ok(ExitCode::SUCCESS)
}

async fn rotate_root_key(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let rotated = store.rotate_root_key().await.map_err(|e| e.to_string());
    store.close().await;
    let version = rotated?;
    println!(
        "root key version {version} is in {}; new records are sealed under it (running servers switch within seconds).",
        crate::crypto::keyring_path(&cli.root_key_path()).display()
    );
    println!(
        "Back the keyring file up with the root key, and copy it to every server before the re-seal \
         (`carbon-ledger keys reseal`, or `serve` every --reseal-interval-secs) retires the older versions."
    );
    Ok(ExitCode::SUCCESS)
}

async fn reseal(cli: &Cli, batch: usize) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let result = reseal_with_progress(&store, batch).await;
    store.close().await;
    let report = result?;
    println!(
        "re-sealed {} records under root key version {}; {} still under older versions{}",
        report.resealed,
        report.version,
        report.remaining,
        if report.retired.is_empty() {
            String::new()
        } else {
            format!(
                "; retired version(s) {}",
                report.retired.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )
        }
    );
    if report.erased > 0 {
        println!("{} records of erased people wait for the erasure purge", report.erased);
    }
    if report.unreadable > 0 {
        println!(
            "{} records failed to open (tampered, or their version's key is missing): they keep their version",
            report.unreadable
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The re-seal with a progress bar on a terminal, a line per batch
/// otherwise.
async fn reseal_with_progress(store: &Store, batch: usize) -> Result<crate::store::ResealReport, String> {
    // Rows of people erased but not yet purged would keep an old version
    // alive: purge them first.
    store.reshred().await.map_err(|e| e.to_string())?;
    store.refresh_keyring().await.map_err(|e| e.to_string())?;
    let total = store.records_to_reseal().await.map_err(|e| e.to_string())?;
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records re-sealed ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let options = crate::store::ResealOptions {
        batch,
        ..Default::default()
    };
    let report = store
        .reseal(options, |done| match &bar {
            Some(bar) => bar.set_position(done),
            None => eprintln!("re-sealed {done} of {total} records"),
        })
        .await
        .map_err(|e| e.to_string());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report
}

async fn key_status(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let status = store.key_status().await.map_err(|e| e.to_string());
    store.close().await;
    println!(
        "{:>7}  {:<32}  {:<8}  {:<13}  {:>10}",
        "version", "fingerprint", "state", "key material", "records"
    );
    for v in status? {
        let state = match (v.current, v.retired) {
            (true, _) => "current",
            (_, true) => "retired",
            _ => "older",
        };
        let material = match (v.material_held, v.version) {
            (true, 1) => "root key file",
            (true, _) => "keyring file",
            (false, _) => "dropped",
        };
        println!(
            "{:>7}  {:<32}  {state:<8}  {material:<13}  {:>10}",
            v.version,
            v.fingerprint.as_deref().unwrap_or("-"),
            v.records
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn reshred_keys(cli: &Cli) -> Result<ExitCode, String> {
    let store = cli.store(false).await?;
    let (keys, rows) = store.reshred().await.map_err(|e| e.to_string())?;
    store.close().await;
    println!("re-shredded {keys} erased people's keys; purged {rows} rows whose key is gone");
    Ok(ExitCode::SUCCESS)
}

fn print_records(cli: &Cli, format: Format) -> Result<ExitCode, String> {
    let record = crate::compliance::ProcessingRecord::from_policies(&cli.policies()?);
    match format {
        Format::Markdown => print!("{}", record.to_markdown()),
        Format::Json => println!("{}", record.to_json()),
    }
    Ok(ExitCode::SUCCESS)
}

fn check_policies(cli: &Cli) -> Result<ExitCode, String> {
    let policies = cli.policies()?;
    let m = &policies.methodology;
    println!("policies ({}) are valid", policies.source);
    println!(
        "methodology {} with {} kinds: {}",
        m.version,
        m.kinds.len(),
        m.kinds.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!("digest {}", policies.digest);
    Ok(ExitCode::SUCCESS)
}

fn parse_day(s: &str, option: &str) -> Result<crate::domain::Day, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, format)
        .map(crate::domain::Day::from_date)
        .map_err(|_| format!("{option} must be a day, YYYY-MM-DD"))
}

/// `audit accesses`: the subjects a tenant touched, by audit reference,
/// and, given the platform's list of its user ids, which of those (by line
/// number, so no id is printed) were among them.
async fn audit_accesses(
    cli: &Cli,
    tenant: i64,
    since: &str,
    until: Option<&str>,
    match_file: Option<&Path>,
    format: Format,
) -> Result<ExitCode, String> {
    use serde_json::json;

    let since_day = parse_day(since, "--since")?;
    let until_day = match until {
        Some(u) => parse_day(u, "--until")?,
        None => crate::domain::Day::from_date(time::OffsetDateTime::now_utc().date()),
    };
    if until_day < since_day {
        return Err("--until is before --since".into());
    }
    let (lines, list): (Vec<usize>, Vec<crate::domain::SubjectId>) = match match_file {
        None => (Vec::new(), Vec::new()),
        Some(file) => {
            // The list is personal data: overwritten once parsed, never echoed.
            let text = zeroize::Zeroizing::new(read_text(file)?);
            let mut ids = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let id = crate::domain::SubjectId::parse(line.to_owned())
                    .ok_or_else(|| format!("{} line {}: not a valid user id", file.display(), i + 1))?;
                ids.push((i + 1, id));
            }
            ids.into_iter().unzip()
        }
    };
    let tenant = crate::domain::TenantId::new(tenant);
    let store = cli.store(false).await?;
    let report = store.audit_accesses(tenant, since_day, until_day).await;
    let refs = store.audit_refs_of(tenant, &list).await;
    store.close().await;
    let report = match report.map_err(|e| e.to_string())? {
        Ok(report) => report,
        Err(e) => {
            println!("audit log verification FAILED: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let refs = refs.map_err(|e| e.to_string())?;
    let accesses = |kinds: &std::collections::BTreeMap<&'static str, u32>| {
        kinds
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let matched: Vec<Matched<'_>> = lines
        .iter()
        .zip(&refs)
        .map(|(line, r)| Matched {
            line: *line,
            subject_ref: r.map(|r| hex::encode(r.as_bytes())),
            touched: r.and_then(|r| report.subjects.get(r.as_bytes())),
        })
        .collect();
    match format {
        Format::Json => {
            let subjects: Vec<_> = report
                .subjects
                .iter()
                .map(|(r, s)| {
                    json!({"subject_ref": hex::encode(r), "first_day": s.first_day, "last_day": s.last_day, "accesses": s.kinds})
                })
                .collect();
            let mut out = json!({
                "tenant": tenant.get(),
                "since": since_day.to_string(),
                "until": until_day.to_string(),
                "entries_verified": report.entries_verified,
                "entries_emptied_by_retention": report.emptied,
                "subjects": subjects,
                "other": report.other,
            });
            if match_file.is_some() {
                out["matched"] = matched
                    .iter()
                    .map(|m| {
                        json!({"line": m.line, "subject_ref": m.subject_ref, "touched": m.touched.is_some(), "accesses": m.touched.map(|t| &t.kinds)})
                    })
                    .collect();
            }
            println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        }
        Format::Markdown => {
            println!(
                "Accesses by tenant {} from {since_day} to {until_day} (UTC days), from the verified audit log ({} entries):\n",
                tenant.get(),
                report.entries_verified
            );
            println!("| subject reference | first day | last day | accesses |\n|---|---|---|---|");
            for (r, s) in &report.subjects {
                println!(
                    "| `{}` | {} | {} | {} |",
                    hex::encode(r),
                    s.first_day,
                    s.last_day,
                    accesses(&s.kinds)
                );
            }
            println!("\n{} subjects touched.", report.subjects.len());
            if report.emptied > 0 {
                println!(
                    "Note: the oldest {} entries were emptied by retention; accesses they recorded cannot be listed.",
                    report.emptied
                );
            }
            if !report.other.is_empty() {
                println!("Other accesses, concerning no one person: {}.", accesses(&report.other));
            }
            if let Some(file) = match_file {
                let touched = matched.iter().filter(|m| m.touched.is_some()).count();
                println!(
                    "\n{} of the {} users listed in {} were touched (by line):\n",
                    touched,
                    matched.len(),
                    file.display()
                );
                println!("| line | subject reference | accesses |\n|---|---|---|");
                for m in &matched {
                    if let (Some(r), Some(t)) = (&m.subject_ref, m.touched) {
                        println!("| {} | `{r}` | {} |", m.line, accesses(&t.kinds));
                    }
                }
                let lines = |want: &dyn Fn(&Matched<'_>) -> bool| {
                    matched
                        .iter()
                        .filter(|m| want(m))
                        .map(|m| m.line.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "\nNot touched: lines {}.",
                    or_none(lines(&|m| m.subject_ref.is_some() && m.touched.is_none()))
                );
                println!(
                    "No data held (never enrolled, or erased, so no entry links to them): lines {}.",
                    or_none(lines(&|m| m.subject_ref.is_none()))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of a `--match` list: its audit reference, if the person has a
/// key, and what the tenant's entries in the window did to them.
struct Matched<'a> {
    line: usize,
    subject_ref: Option<String>,
    touched: Option<&'a crate::store::SubjectAccesses>,
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}
