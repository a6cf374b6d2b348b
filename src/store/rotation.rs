//! Root key rotation. A rotation adds a root key version to the keyring
//! file and to `key_versions`; new records are sealed under it at once. The
//! re-seal then moves the older records over in bounded write
//! transactions, each with its `RecordsResealed` audit entry: a record is
//! opened with its own version's subject key and sealed again under the
//! current one, and its row changes version in the same statement, so a
//! re-seal cut anywhere resumes where it stopped and never seals a record
//! twice. A version nothing is sealed under any more is retired: the
//! database then refuses records under it (a trigger, migration 0009) and
//! its key leaves the keyring file.
//!
//! Every change to the keyring file happens inside a write transaction,
//! whose audit head lock serializes it against every other process's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{AnyConnection, FromRow, Row};

use super::sql::{select_in, Arg};
use super::wal::Log;
use super::{RecordSealing, Store, StoreError, WriteTx};
use crate::audit::Action;
use crate::crypto::{Keyring, RecordAad, RootKey, SubjectKeys, SubjectRef, SubjectSalt};

/// Records opened and sealed again per transaction: a batch holds the
/// write lock for milliseconds.
pub const RESEAL_BATCH: usize = 500;

/// The root key versions this process can use.
pub(super) struct Ring {
    /// Versions 2 and up (version 1 is the store's root key).
    keys: Keyring,
    /// Versions not retired, ascending; the last seals new records.
    live: Vec<u32>,
}

impl Ring {
    /// Before migration 0009 and on a fresh database: version 1 alone.
    pub(super) fn first() -> Self {
        Self {
            keys: Keyring::default(),
            live: vec![1],
        }
    }

    fn current(&self) -> u32 {
        self.live.last().copied().unwrap_or(1)
    }
}

/// One root key version, for `keys status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub version: u32,
    /// Public fingerprint of the version's root key (version 1: the root
    /// key file's, kept in the ledger's meta table).
    pub fingerprint: Option<String>,
    pub retired: bool,
    /// Whether this process holds the version's key material.
    pub material_held: bool,
    /// Records still sealed under the version.
    pub records: u64,
    pub current: bool,
}

/// What a re-seal run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// The version the records were sealed under.
    pub version: u32,
    pub resealed: u64,
    /// Records of erased people (their key is gone; the purge removes them).
    pub erased: u64,
    /// Records that failed to open, or whose version's key is not held.
    pub unreadable: u64,
    /// Records still under older versions (all the above, and any a stopped
    /// run did not reach).
    pub remaining: u64,
    /// Versions retired at the end of the run.
    pub retired: Vec<u32>,
}

/// How a re-seal runs.
#[derive(Clone, Copy, Debug)]
pub struct ResealOptions {
    pub batch: usize,
    /// Stop after this many batches (a run cut short, as by a kill).
    pub max_batches: Option<usize>,
}

impl Default for ResealOptions {
    fn default() -> Self {
        Self {
            batch: RESEAL_BATCH,
            max_batches: None,
        }
    }
}

/// The error a database raises for a record sealed under a retired version.
pub(super) fn is_retired_version_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.message().contains("retired or unknown root key version"))
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    fingerprint: Option<String>,
    retired_on: Option<i64>,
}

/// The tables holding text sealed with subjects' record keys: each row
/// names the root key version it is sealed under, and a re-seal moves
/// them all before that version is retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SealedTable {
    Records,
    /// A redemption's reference and description (`points/redeem.rs`).
    Redemptions,
}

impl SealedTable {
    const ALL: [SealedTable; 2] = [SealedTable::Records, SealedTable::Redemptions];

    /// Rows under another version than `$1` after row key `$2`, in key
    /// order, at most `$3`, as `SealedRecord`s (kind and day as bound into
    /// the associated data).
    fn select_older(self) -> String {
        match self {
            SealedTable::Records => "SELECT seq, record_id, subject, kind, day, key_version, sealed FROM records \
                 WHERE key_version <> $1 AND seq > $2 ORDER BY seq LIMIT $3"
                .into(),
            SealedTable::Redemptions => format!(
                "SELECT CAST(NULL AS BIGINT) AS seq, redemption_id AS record_id, subject, \
                 CAST('{}' AS TEXT) AS kind, day, key_version, sealed \
                 FROM redemptions WHERE key_version <> $1 AND redemption_id > $2 ORDER BY redemption_id LIMIT $3",
                super::points::SEALED_KIND
            ),
        }
    }

    /// The row key before every row.
    fn first_key(self) -> RowKey {
        match self {
            SealedTable::Records => RowKey::Seq(i64::MIN),
            SealedTable::Redemptions => RowKey::Id(Vec::new()),
        }
    }

    /// The row key of `row`, read by `select_older`.
    fn key_of(self, row: &SealedRecord) -> Result<RowKey, StoreError> {
        match self {
            SealedTable::Records => row
                .seq
                .map(RowKey::Seq)
                .ok_or_else(|| StoreError::Corrupt("a record has no sequence number".into())),
            SealedTable::Redemptions => Ok(RowKey::Id(row.record_id.clone())),
        }
    }

    /// Moves row `$3` (by row key) from version `$4` to `$1` with
    /// ciphertext `$2`.
    fn update(self) -> &'static str {
        match self {
            SealedTable::Records => {
                "UPDATE records SET key_version = $1, sealed = $2 WHERE seq = $3 AND key_version = $4"
            }
            SealedTable::Redemptions => {
                "UPDATE redemptions SET key_version = $1, sealed = $2 WHERE redemption_id = $3 AND key_version = $4"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            SealedTable::Records => "records",
            SealedTable::Redemptions => "redemptions",
        }
    }
}

/// Where a re-seal is in a table: records by their sequence number,
/// redemptions by their id.
#[derive(Clone, Debug)]
enum RowKey {
    Seq(i64),
    Id(Vec<u8>),
}

impl RowKey {
    fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            RowKey::Seq(seq) => query.bind(*seq),
            RowKey::Id(id) => query.bind(id.clone()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct SealedRecord {
    /// Records only.
    seq: Option<i64>,
    record_id: Vec<u8>,
    subject: Vec<u8>,
    kind: String,
    day: i64,
    key_version: i64,
    sealed: Vec<u8>,
}

fn version_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("a key version is out of range".into()))
}

async fn versions(conn: &mut AnyConnection) -> Result<Vec<VersionRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT version, fingerprint, retired_on FROM key_versions ORDER BY version")
            .fetch_all(conn)
            .await?,
    )
}

impl Store {
    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The root key of `version`, if held.
    fn root_of<'a>(&'a self, ring: &'a Ring, version: u32) -> Option<&'a RootKey> {
        if version == 1 {
            Some(&self.root)
        } else {
            ring.keys.get(version)
        }
    }

    /// The keys new records of a subject are sealed with (the current
    /// version's): what ingest needs.
    pub(super) fn sealing_keys(&self, salt: &SubjectSalt) -> SubjectKeys {
        let ring = self.ring();
        let current = ring.current();
        let root = self.root_of(&ring, current).unwrap_or(&self.root);
        self.root.subject_keys_under(salt, (current, root), &[])
    }

    /// A subject's keys for every version in use: reads open records of
    /// any of them.
    pub(super) fn subject_keys(&self, salt: &SubjectSalt) -> SubjectKeys {
        let ring = self.ring();
        let current = ring.current();
        let root = self.root_of(&ring, current).unwrap_or(&self.root);
        let also: Vec<(u32, &RootKey)> = ring
            .live
            .iter()
            .filter_map(|v| self.root_of(&ring, *v).map(|k| (*v, k)))
            .collect();
        self.root.subject_keys_under(salt, (current, root), &also)
    }

    /// Whether a version older than the current one is not retired yet:
    /// records may wait for a re-seal.
    pub fn older_key_versions_in_use(&self) -> bool {
        self.ring().live.len() > 1
    }

    /// The version new records are sealed under.
    pub fn key_version(&self) -> u32 {
        self.ring().current()
    }

    /// Uses the keyring file at `path` (see `crypto::keyring_path`):
    /// loads it and checks it against the database. Once per store.
    pub async fn attach_keyring(&self, path: PathBuf) -> Result<(), StoreError> {
        if self.keyring_path.set(path).is_err() {
            return Err(StoreError::Config("the store has a keyring already".into()));
        }
        self.load_ring().await
    }

    fn keyring_file(&self) -> Option<&Path> {
        self.keyring_path.get().map(PathBuf::as_path)
    }

    fn read_keyring(&self) -> Result<Keyring, StoreError> {
        match self.keyring_file() {
            Some(path) => Keyring::load(path).map_err(|e| StoreError::Config(e.to_string())),
            None => Ok(Keyring::default()),
        }
    }

    /// Reads `key_versions` and the keyring file and makes them this
    /// process's ring. Refuses a keyring whose keys are not the ones the
    /// database knows, and a version in use whose key is not held.
    pub(super) async fn load_ring(&self) -> Result<(), StoreError> {
        let rows = versions(&mut *self.ledger.acquire().await?).await?;
        let keys = self.read_keyring()?;
        let mut live = Vec::new();
        for row in rows {
            let version = version_of(row.version)?;
            if version >= 2 {
                if let (Some(key), Some(expected)) = (keys.get(version), &row.fingerprint) {
                    if &key.fingerprint() != expected {
                        return Err(StoreError::Config(format!(
                            "root key version {version} in the keyring file {} is not the one this database \
                             knows (fingerprint {expected}); restore the keyring file that belongs beside \
                             --root-key-file (CARBON_LEDGER_ROOT_KEY_FILE)",
                            self.keyring_display()
                        )));
                    }
                }
            }
            if row.retired_on.is_some() {
                continue;
            }
            if version >= 2 && keys.get(version).is_none() {
                return Err(StoreError::Config(format!(
                    "root key version {version} (fingerprint {}) is in use but not in the keyring file {}: \
                     copy the keyring file from where `keys rotate` ran, beside --root-key-file \
                     (CARBON_LEDGER_ROOT_KEY_FILE)",
                    row.fingerprint.as_deref().unwrap_or("?"),
                    self.keyring_display()
                )));
            }
            live.push(version);
        }
        if live.is_empty() {
            return Err(StoreError::Corrupt("every root key version is retired".into()));
        }
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Ring { keys, live });
        Ok(())
    }

    fn keyring_display(&self) -> String {
        self.keyring_file()
            .map_or_else(|| "(none configured)".to_owned(), |p| p.display().to_string())
    }

    /// Picks up a rotation or retirement another process made. Cheap when
    /// nothing changed (one small query); servers call it periodically.
    pub async fn refresh_keyring(&self) -> Result<bool, StoreError> {
        let rows = versions(&mut *self.ledger.acquire().await?).await?;
        let mut live = Vec::new();
        for row in rows.iter().filter(|r| r.retired_on.is_none()) {
            live.push(version_of(row.version)?);
        }
        if live == self.ring().live {
            return Ok(false);
        }
        self.load_ring().await?;
        tracing::info!(
            version = self.key_version(),
            "root key versions changed; sealing under the current one"
        );
        Ok(true)
    }

    /// Introduces a new root key version: its key is written to the keyring
    /// file, its fingerprint to the database, and new records are sealed
    /// under it from then on (by other servers once they refresh). Returns
    /// the new version.
    pub async fn rotate_root_key(&self) -> Result<u32, StoreError> {
        let Some(path) = self.keyring_file().map(Path::to_path_buf) else {
            return Err(StoreError::Config("no keyring file is configured".into()));
        };
        let mut w = self.begin_write(self.today()).await?;
        let rows = versions(w.conn()).await?;
        let version = rows
            .iter()
            .map(|r| version_of(r.version))
            .try_fold(1, |max, v| v.map(|v| v.max(max)))?
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("key versions are exhausted".into()))?;
        let key = RootKey::generate();
        let fingerprint = key.fingerprint();
        sqlx::query("INSERT INTO key_versions (version, fingerprint, created_on) VALUES ($1, $2, $3)")
            .bind(i64::from(version))
            .bind(&fingerprint)
            .bind(w.today.start)
            .execute(w.conn())
            .await?;
        let mut fp = [0u8; 16];
        hex::decode_to_slice(&fingerprint, &mut fp)
            .map_err(|_| StoreError::Corrupt("a key fingerprint is not 16 bytes of hex".into()))?;
        w.append(
            None,
            Action::RootKeyRotated {
                version,
                fingerprint: fp,
            },
        );
        // The key is on disk before the database names it: a crash in
        // between leaves an unused key in the file (the next rotation
        // replaces it), never a version in use without its key. A key left
        // there by such a crash is no version the database knows.
        let mut ring = self.read_keyring()?;
        ring.insert(version, key);
        ring.save(&path)
            .map_err(|e| StoreError::Config(format!("cannot write the keyring file {}: {e}", path.display())))?;
        w.commit().await?;
        self.load_ring().await?;
        Ok(version)
    }

    /// Records (and sealed redemption texts) not yet sealed under the
    /// current version.
    pub async fn records_to_reseal(&self) -> Result<u64, StoreError> {
        let current = i64::from(self.key_version());
        let mut total = 0;
        for table in SealedTable::ALL {
            let n: i64 = sqlx::query(&format!(
                "SELECT COUNT(*) FROM {} WHERE key_version <> $1",
                table.name()
            ))
            .bind(current)
            .fetch_one(&self.ledger)
            .await?
            .try_get(0)?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    /// Seals every record under an older version again under the current
    /// one, `options.batch` per transaction, calling `progress` with the
    /// records done after each; then retires the versions nothing is
    /// sealed under any more. Resumable: a run cut anywhere leaves each
    /// record under exactly one version, and the next run goes on.
    pub async fn reseal(
        &self,
        options: ResealOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<ResealReport, StoreError> {
        self.refresh_keyring().await?;
        let version = self.key_version();
        let mut report = ResealReport {
            version,
            ..ResealReport::default()
        };
        let mut batches = 0;
        'tables: for table in SealedTable::ALL {
            let mut after = table.first_key();
            loop {
                if options.max_batches.is_some_and(|max| batches >= max) {
                    break 'tables;
                }
                let Some(last) = self
                    .reseal_batch(table, version, &after, options.batch.max(1), &mut report)
                    .await?
                else {
                    break;
                };
                after = last;
                batches += 1;
                progress(report.resealed);
            }
        }
        if report.resealed > 0 {
            // On SQLite, the old ciphertext leaves the files now.
            self.flush_deleted_pages(&[Log::Ledger]).await;
        }
        report.remaining = self.records_to_reseal().await?;
        if report.remaining == 0 {
            report.retired = self.retire_unused().await?;
        }
        Ok(report)
    }

    /// One batch after row key `after`, in one write transaction; the
    /// last row key it looked at, or `None` when there was none.
    async fn reseal_batch(
        &self,
        table: SealedTable,
        version: u32,
        after: &RowKey,
        batch: usize,
        report: &mut ResealReport,
    ) -> Result<Option<RowKey>, StoreError> {
        let mut w = self.begin_write(self.today()).await?;
        // Another process may have rotated again: seal under the newest.
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM key_versions WHERE retired_on IS NULL")
            .fetch_one(w.conn())
            .await?;
        if current != Some(i64::from(version)) {
            w.rollback().await?;
            return Err(StoreError::Conflict(
                "the root key was rotated again during the re-seal; run it again".into(),
            ));
        }
        let select = table.select_older();
        let rows: Vec<SealedRecord> = after
            .bind(sqlx::query(&select).bind(i64::from(version)))
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .try_map(|row| SealedRecord::from_row(&row))
            .fetch_all(w.conn())
            .await?;
        let Some(last) = rows.last().map(|r| table.key_of(r)).transpose()? else {
            w.rollback().await?;
            return Ok(None);
        };
        let salts = self.salts_by_ledger_ref(&mut w, &rows).await?;
        let mut resealed = 0u32;
        for row in &rows {
            let Some(salt) = salts.get(&row.subject) else {
                report.erased += 1;
                continue;
            };
            let keys = self.subject_keys(salt);
            match self.reseal_one(&mut w, table, &keys, row).await? {
                true => resealed += 1,
                false => report.unreadable += 1,
            }
        }
        if resealed == 0 {
            w.rollback().await?;
        } else {
            w.append(
                None,
                Action::RecordsResealed {
                    version,
                    records: resealed,
                },
            );
            w.commit().await?;
            report.resealed += u64::from(resealed);
        }
        Ok(Some(last))
    }

    /// The salts of the subjects of `rows` that have a key and are not
    /// erased, by ledger reference.
    async fn salts_by_ledger_ref(
        &self,
        w: &mut WriteTx<'_>,
        rows: &[SealedRecord],
    ) -> Result<HashMap<Vec<u8>, SubjectSalt>, StoreError> {
        let mut refs: Vec<Vec<u8>> = rows.iter().map(|r| r.subject.clone()).collect();
        refs.sort();
        refs.dedup();
        let list: Vec<Arg> = refs.into_iter().map(Arg::Blob).collect();
        let found = select_in(&mut *self.keys.acquire().await?, self.engine, &[], &list, |p, n| {
            format!(
                "SELECT ledger_ref, key_id, salt FROM subject_keys WHERE ledger_ref IN ({})",
                p.list(n)
            )
        })
        .await?;
        let mut keys = Vec::with_capacity(found.len());
        for row in &found {
            let ledger_ref: Vec<u8> = row.try_get(0)?;
            let key_id: Vec<u8> = row.try_get(1)?;
            let salt = zeroize::Zeroizing::new(row.try_get::<Vec<u8>, _>(2)?);
            let salt = SubjectSalt::from_slice(&salt)
                .ok_or_else(|| StoreError::Corrupt("subject salt is not 32 bytes".into()))?;
            keys.push((ledger_ref, key_id, salt));
        }
        // A person whose erasure committed is not touched, even while their
        // key is still being shredded.
        let ids: Vec<&[u8]> = keys.iter().map(|(_, id, _)| id.as_slice()).collect();
        let erased = self.erased_among(w, &ids).await?;
        Ok(keys
            .into_iter()
            .filter(|(_, id, _)| !erased.contains(id))
            .map(|(r, _, salt)| (r, salt))
            .collect())
    }

    /// Opens one record under its version and seals it under the current
    /// one; false if it cannot be opened.
    async fn reseal_one(
        &self,
        w: &mut WriteTx<'_>,
        table: SealedTable,
        keys: &SubjectKeys,
        row: &SealedRecord,
    ) -> Result<bool, StoreError> {
        let (Ok(old), Ok(day), Ok(record_id), Some(subject)) = (
            u32::try_from(row.key_version),
            i32::try_from(row.day),
            <[u8; 16]>::try_from(row.record_id.as_slice()),
            SubjectRef::from_stored(&row.subject),
        ) else {
            return Ok(false);
        };
        let aad = |key_version| RecordAad {
            record_id: &record_id,
            subject: &subject,
            key_version,
            kind: &row.kind,
            day,
        };
        // Only records follow the ledger's sealing mode; redemptions are
        // always sealed.
        let sealing = match table {
            SealedTable::Records => self.sealing,
            SealedTable::Redemptions => RecordSealing::Sealed,
        };
        let Ok(plain) = sealing.open(keys, &aad(old), &row.sealed) else {
            return Ok(false);
        };
        let sealed = sealing.seal(keys, &aad(keys.key_version), &plain);
        // The old version in the condition: a row another run moved already
        // is left alone, so nothing is sealed twice.
        let update = sqlx::query(table.update())
            .bind(i64::from(keys.key_version))
            .bind(sealed);
        let moved = table
            .key_of(row)?
            .bind(update)
            .bind(row.key_version)
            .execute(w.conn())
            .await?
            .rows_affected();
        Ok(moved == 1)
    }

    /// Retires every version but the current one that no record is sealed
    /// under, and drops their keys from the keyring file. The versions
    /// retired now.
    pub async fn retire_unused(&self) -> Result<Vec<u32>, StoreError> {
        let mut w = self.begin_write(self.today()).await?;
        let rows = versions(w.conn()).await?;
        let live: Vec<u32> = rows
            .iter()
            .filter(|r| r.retired_on.is_none())
            .map(|r| version_of(r.version))
            .collect::<Result<_, _>>()?;
        let current = live.iter().copied().max().unwrap_or(1);
        let mut retired = Vec::new();
        for version in live.into_iter().filter(|v| *v != current) {
            let mut used = false;
            for table in SealedTable::ALL {
                let sql = format!("SELECT 1 FROM {} WHERE key_version = $1 LIMIT 1", table.name());
                let found: Option<i64> = sqlx::query_scalar(&sql)
                    .bind(i64::from(version))
                    .fetch_optional(w.conn())
                    .await?;
                used |= found.is_some();
            }
            if used {
                continue;
            }
            sqlx::query("UPDATE key_versions SET retired_on = $1 WHERE version = $2")
                .bind(w.today.start)
                .bind(i64::from(version))
                .execute(w.conn())
                .await?;
            w.append(None, Action::RootKeyRetired { version });
            retired.push(version);
        }
        if retired.is_empty() {
            w.rollback().await?;
        } else {
            w.commit().await?;
        }
        self.drop_unneeded_key_material().await?;
        self.load_ring().await?;
        Ok(retired)
    }

    /// Removes from the keyring file every key the database does not list
    /// as in use: retired versions, and a key a crashed rotation left.
    /// Under the write lock, like every change to the file.
    async fn drop_unneeded_key_material(&self) -> Result<(), StoreError> {
        let Some(path) = self.keyring_file().map(Path::to_path_buf) else {
            return Ok(());
        };
        let mut w = self.begin_write(self.today()).await?;
        let live: Vec<u32> = versions(w.conn())
            .await?
            .iter()
            .filter(|r| r.retired_on.is_none())
            .map(|r| version_of(r.version))
            .collect::<Result<_, _>>()?;
        let mut ring = self.read_keyring()?;
        let unneeded: Vec<u32> = ring.versions().filter(|v| !live.contains(v)).collect();
        if !unneeded.is_empty() {
            for v in &unneeded {
                ring.remove(*v);
            }
            ring.save(&path)
                .map_err(|e| StoreError::Config(format!("cannot write the keyring file {}: {e}", path.display())))?;
            tracing::info!(versions = ?unneeded, "dropped root key material nothing needs");
        }
        w.rollback().await
    }

    /// Every root key version, with how many records each still seals.
    pub async fn key_status(&self) -> Result<Vec<KeyVersion>, StoreError> {
        let mut conn = self.ledger.acquire().await?;
        let rows = versions(&mut conn).await?;
        let mut counts: Vec<(i64, i64)> = Vec::new();
        for table in SealedTable::ALL {
            let sql = format!(
                "SELECT key_version, COUNT(*) FROM {} GROUP BY key_version",
                table.name()
            );
            counts.extend(sqlx::query_as::<_, (i64, i64)>(&sql).fetch_all(&mut *conn).await?);
        }
        let ring = self.ring();
        let current = rows
            .iter()
            .filter(|r| r.retired_on.is_none())
            .map(|r| r.version)
            .max()
            .unwrap_or(1);
        rows.into_iter()
            .map(|row| {
                let version = version_of(row.version)?;
                let records: i64 = counts.iter().filter(|(v, _)| *v == row.version).map(|(_, n)| n).sum();
                Ok(KeyVersion {
                    version,
                    fingerprint: if version == 1 {
                        Some(self.root.fingerprint())
                    } else {
                        row.fingerprint
                    },
                    retired: row.retired_on.is_some(),
                    material_held: self.root_of(&ring, version).is_some(),
                    records: u64::try_from(records).unwrap_or(0),
                    current: row.version == current,
                })
            })
            .collect()
    }
}
