//! A fresh database for a unit test on either engine: a file in a
//! temporary folder, or a database of its own on the PostgreSQL server
//! that `CARBON_LEDGER_TEST_POSTGRES_URL` names, as for the integration
//! tests (skipped on a developer's machine without it, a failure under CI).

/// Names the PostgreSQL server the tests may create databases on.
const POSTGRES_ENV: &str = "CARBON_LEDGER_TEST_POSTGRES_URL";

pub(crate) struct ScratchDatabase {
    pub(crate) url: String,
    /// The server's administration URL and the database's name.
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl ScratchDatabase {
    /// `None` when PostgreSQL is asked for and not configured.
    pub(crate) async fn new(postgres: bool) -> Option<Self> {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        if !postgres {
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            return Some(Self {
                url,
                postgres: None,
                _dir: dir,
            });
        }
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            assert!(
                std::env::var_os("CI").is_none_or(|ci| ci.is_empty()),
                "{POSTGRES_ENV} is not set, and CI is"
            );
            eprintln!("skipped: {POSTGRES_ENV} is not set");
            return None;
        };
        let name = format!("cl_unit_{}", hex::encode(crate::crypto::random_bytes::<6>()));
        let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let server = &base[..base.rfind('/').unwrap()];
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Some(Self {
            url,
            postgres: Some((admin_url, name)),
            _dir: dir,
        })
    }

    /// Drops a PostgreSQL database (a SQLite file goes with its folder).
    pub(crate) async fn remove(self) {
        if let Some((admin_url, name)) = &self.postgres {
            let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}
