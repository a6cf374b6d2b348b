use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use carbon_ledger::api::{AppState, Limits, LimitsConfig, Metrics};
use carbon_ledger::audit::AuditEntry;
use carbon_ledger::clock::ManualClock;
use carbon_ledger::crypto::RootKey;
use carbon_ledger::domain::Role;
use carbon_ledger::policy::{DataClass, PolicySet};
use carbon_ledger::store::{Access, Actor, Purpose, RecordSealing, Store, StoreError};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::AnyPool;
use tempfile::TempDir;

/// Names the PostgreSQL server tests may create databases on, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const POSTGRES_ENV: &str = "CARBON_LEDGER_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(TestApp)` on both engines.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let app = crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await.expect("sqlite app");
                super::$name(app).await
            }
            #[tokio::test]
            async fn postgres() {
                match crate::helpers::TestApp::spawn(crate::helpers::Backend::Postgres).await {
                    Some(app) => super::$name(app).await,
                    None => crate::helpers::postgres_not_configured(),
                }
            }
        }
    )* };
}

/// The PostgreSQL server tests may use, if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok()
}

/// What a PostgreSQL test does without a server: a plain `cargo test` on a
/// developer's machine skips it, but under CI (`CI` set) a skip would let
/// the PostgreSQL half of the suite pass without running, so it fails.
pub fn postgres_not_configured() {
    if std::env::var_os("CI").is_some_and(|ci| !ci.is_empty()) {
        panic!(
            "{POSTGRES_ENV} is not set, and CI is: set {POSTGRES_ENV} to a PostgreSQL server \
             the tests may create databases on, e.g. postgres://postgres@127.0.0.1:5432/postgres"
        );
    }
    eprintln!("skipped: {POSTGRES_ENV} is not set");
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        sqlx::any::install_default_drivers();
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=warn")
                .with_test_writer()
                .init();
        }
    });
}

/// A PostgreSQL database created for one test and dropped after it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<Self> {
        let admin_url = postgres_url()?;
        let name = format!("cl_test_{}", hex::encode(carbon_ledger::crypto::random_bytes::<6>()));
        let admin = AnyPool::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let server = &base[..base.rfind('/').expect("URL has a database path")];
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Some(Self { admin_url, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime we may block: use a thread of its own.
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

pub struct TestApp {
    pub backend: Backend,
    /// The service's clock: tests move time with `clock.advance`.
    pub clock: Arc<ManualClock>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// A platform tenant's key.
    pub key: String,
    pub store: Arc<Store>,
    /// The server's requests in flight, including those whose client left.
    pub in_flight: Arc<carbon_ledger::api::InFlight>,
    pub database_url: String,
    pub root_key_file: PathBuf,
    pub dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    // Dropped last: the database outlives the server.
    _pg: Option<PgDatabase>,
}

impl TestApp {
    /// Starts the service on a fresh database. `None` for PostgreSQL when no
    /// server is configured.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_configured(
            backend,
            PolicySet::load(None).unwrap(),
            LimitsConfig::default(),
            RecordSealing::Sealed,
        )
        .await
    }

    /// As `spawn`, on a plaintext benchmark ledger (record contents not
    /// sealed), as the load generator makes to measure what sealing costs.
    pub async fn spawn_plaintext_benchmark(backend: Backend) -> Option<Self> {
        Self::spawn_configured(
            backend,
            PolicySet::load(None).unwrap(),
            LimitsConfig::default(),
            RecordSealing::PlaintextBenchmark,
        )
        .await
    }

    /// As `spawn`, under `policies` instead of the compiled-in ones.
    pub async fn spawn_with(backend: Backend, policies: PolicySet) -> Option<Self> {
        Self::spawn_configured(backend, policies, LimitsConfig::default(), RecordSealing::Sealed).await
    }

    /// Starts the service with per-tenant rate limits.
    pub async fn spawn_with_limits(backend: Backend, limits: LimitsConfig) -> Option<Self> {
        Self::spawn_configured(backend, PolicySet::load(None).unwrap(), limits, RecordSealing::Sealed).await
    }

    async fn spawn_configured(
        backend: Backend,
        policies: PolicySet,
        limits: LimitsConfig,
        sealing: RecordSealing,
    ) -> Option<Self> {
        init();
        let dir = tempfile::tempdir().unwrap();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await?),
        };
        let database_url = match &pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", dir.path().join("ledger.db").display()),
        };
        let root_key_file = dir.path().join("root.key");
        let (root, _) = RootKey::load_or_create(&root_key_file).unwrap();
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let policies = Arc::new(policies);
        let store = Arc::new(
            Store::open_with_sealing(&database_url, None, root, None, clock.clone(), policies, sealing)
                .await
                .expect("open store"),
        );
        store.record_policy_load().await.unwrap();
        let (_, key) = store.add_tenant("luzhou", Role::Platform).await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::with(store.clone(), Arc::new(Metrics::new()), Limits::new(limits));
        let in_flight = state.in_flight.clone();
        tokio::spawn(async move {
            carbon_ledger::server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Some(Self {
            backend,
            clock,
            addr,
            client: reqwest::Client::new(),
            key: key.expose().to_owned(),
            store,
            in_flight,
            database_url,
            root_key_file,
            dir,
            shutdown: Some(tx),
            _pg: pg,
        })
    }

    pub fn clock_now(&self) -> time::OffsetDateTime {
        carbon_ledger::clock::Clock::now(self.clock.as_ref())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn add_tenant(&self, name: &str, role: Role) -> String {
        self.store.add_tenant(name, role).await.unwrap().1.expose().to_owned()
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                content_type.as_deref(),
                Some("application/problem+json"),
                "{status}: {body}"
            );
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "problem without detail: {body}"
            );
        }
        (status, body)
    }

    /// Records the subject's consent to `purposes` (all kinds, current notices).
    pub async fn consent_as(&self, key: &str, subject: &str, purposes: &[&str]) {
        for purpose in purposes {
            let body = json!({ "notice_version": 1 });
            let url = self.url(&format!("/v1/subjects/{subject}/consents/{purpose}"));
            let (status, body) = self.send(self.client.put(url).bearer_auth(key).json(&body)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    /// Consents to accounting and rewards for `subject`, with this app's platform key.
    pub async fn enroll(&self, subject: &str) {
        self.consent_as(&self.key, subject, &["accounting", "rewards"]).await;
    }

    /// Enrolls every subject the events name, then posts them.
    pub async fn post_enrolled(&self, body: &Value) -> (StatusCode, Value) {
        let events = body
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![body.clone()]);
        let subjects: std::collections::BTreeSet<String> = events
            .iter()
            .filter_map(|e| e["subject"].as_str().map(str::to_owned))
            .collect();
        for subject in subjects {
            self.enroll(&subject).await;
        }
        self.post_events(body).await
    }

    pub async fn post_events_as(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url("/v1/events")).bearer_auth(key).json(body))
            .await
    }

    pub async fn post_events(&self, body: &Value) -> (StatusCode, Value) {
        self.post_events_as(&self.key, body).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)).bearer_auth(key)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(&self.key, path).await
    }

    /// Up to `limit` readable audit entries after `after_seq`, read as an
    /// auditor would (the authorized paging the auditor API uses).
    pub async fn audit_entries(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let auditor = Access::new(
            Actor {
                tenant: carbon_ledger::domain::TenantId::new(0),
                role: Role::Auditor,
            },
            Purpose::Accounting,
        );
        let mut out = Vec::new();
        let mut from = after_seq + 1;
        while out.len() < limit {
            let page = self.store.audit_page(&auditor, from, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            out.extend(page.into_iter().filter_map(|e| e.entry.map(|(_, entry)| entry)));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Waits until the service's background purge has removed every erased
    /// person's rows (what an erasure leaves once it has answered).
    pub async fn erasures_purged(&self) {
        for _ in 0..200 {
            if self.store.erasures_pending().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the background purge did not finish erasures within 10 s");
    }

    /// A direct connection to the ledger database, for tests that play the
    /// attacker with database access.
    pub async fn raw_ledger(&self) -> AnyPool {
        AnyPool::connect(&self.database_url).await.unwrap()
    }

    /// Everything stored, as bytes: the SQLite files (databases and WAL), or
    /// every table of both PostgreSQL schemas rendered as text (bytea as hex).
    pub async fn stored_bytes(&self) -> Vec<u8> {
        match self.backend {
            Backend::Sqlite => ["ledger.db", "ledger.db-wal", "keys.db", "keys.db-wal"]
                .iter()
                .flat_map(|f| std::fs::read(self.dir.path().join(f)).unwrap_or_default())
                .collect(),
            Backend::Postgres => {
                let db = self.raw_ledger().await;
                let tables = sqlx::query(
                    "SELECT table_schema || '.' || table_name FROM information_schema.tables \
                     WHERE table_schema IN ('public', 'keystore')",
                )
                .fetch_all(&db)
                .await
                .unwrap();
                assert!(tables.len() >= 8, "the dump finds the tables");
                let mut dump = Vec::new();
                for t in tables {
                    let table: String = sqlx::Row::get(&t, 0);
                    for row in sqlx::query(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                        .fetch_all(&db)
                        .await
                        .unwrap()
                    {
                        dump.extend_from_slice(sqlx::Row::get::<String, _>(&row, 0).as_bytes());
                    }
                }
                dump
            }
        }
    }

    /// A direct connection to the key store, and its table's name there.
    pub async fn raw_keys(&self) -> (AnyPool, &'static str) {
        match self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("keys.db").display());
                (AnyPool::connect(&url).await.unwrap(), "subject_keys")
            }
            Backend::Postgres => (
                AnyPool::connect(&self.database_url).await.unwrap(),
                "keystore.subject_keys",
            ),
        }
    }

    /// Runs the real binary against this app's database and key.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
            .args(args)
            .env("CARBON_LEDGER_DATABASE_URL", &self.database_url)
            .env("CARBON_LEDGER_ROOT_KEY_FILE", &self.root_key_file)
            .env("CARBON_LEDGER_DATA_DIR", self.dir.path())
            .env_remove("CARBON_LEDGER_POLICIES")
            .output()
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How long the compiled-in retention policy, the one every test app runs
/// under, keeps `class`, in days.
pub fn retention_days(class: DataClass) -> i64 {
    let policies = PolicySet::load(None).expect("the compiled-in policies load");
    i64::from(policies.retention.days(class))
}

/// An event for `subject` that happened today (in the methodology's zone).
pub fn event(event_id: &str, subject: &str, kind: &str, data: Value) -> Value {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let at = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    json!({"event_id": event_id, "subject": subject, "kind": kind, "occurred_at": at, "data": data})
}

pub fn batch(events: Vec<Value>) -> Value {
    json!({ "events": events })
}
