//! How a record's content is stored. In service, always sealed (see
//! `crypto::seal`). The load generator also needs the same path with the
//! content in plaintext, to print what sealing costs; a ledger is made for
//! one or the other when it is created and can never be opened the other
//! way, so no switch can turn a real ledger's sealing off or mix the two.
//!
//! Only record contents change: pseudonyms, key derivation, consent,
//! audit, redemptions (always sealed) and everything else run as in
//! service.

use zeroize::Zeroizing;

use super::{Store, StoreError};
use crate::crypto::{open, seal, OpenError, RecordAad, SubjectKeys};

/// The mode a ledger was created in, stored in its `meta` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordSealing {
    /// AES-256-GCM under the subject's record key: every real ledger.
    #[default]
    Sealed,
    /// Record contents stored as their plaintext encoding: only for
    /// measuring the cost of sealing (`--plaintext-benchmark`).
    PlaintextBenchmark,
}

impl RecordSealing {
    fn stored_name(self) -> &'static str {
        match self {
            Self::Sealed => "sealed",
            Self::PlaintextBenchmark => "plaintext-benchmark",
        }
    }

    /// Content as it is stored in this mode.
    pub(super) fn seal(self, keys: &SubjectKeys, aad: &RecordAad<'_>, content: &[u8]) -> Vec<u8> {
        match self {
            Self::Sealed => seal(keys, aad, content),
            Self::PlaintextBenchmark => content.to_vec(),
        }
    }

    /// Stored content read back; fails as `crypto::open` does.
    pub(super) fn open(
        self,
        keys: &SubjectKeys,
        aad: &RecordAad<'_>,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        match self {
            Self::Sealed => open(keys, aad, stored),
            Self::PlaintextBenchmark => Ok(Zeroizing::new(stored.to_vec())),
        }
    }
}

impl Store {
    /// Fixes the ledger's mode on first use and refuses to open it in the
    /// other. A ledger from before modes were recorded is recorded as
    /// sealed: only a ledger never used (no tenant, no audit entry, nothing
    /// about anyone) can be made a plaintext one.
    pub(super) async fn check_sealing(&self) -> Result<(), StoreError> {
        let wanted = self.sealing.stored_name();
        let stored = self.stored_sealing().await?;
        if stored.is_none() {
            let first = if self.sealing == RecordSealing::PlaintextBenchmark && !self.never_used().await? {
                RecordSealing::Sealed.stored_name()
            } else {
                wanted
            };
            sqlx::query("INSERT INTO meta (name, value) VALUES ('record_sealing', $1) ON CONFLICT (name) DO NOTHING")
                .bind(first)
                .execute(&self.ledger)
                .await?;
        }
        // Read again: another process may have created it first.
        let stored = self
            .stored_sealing()
            .await?
            .ok_or_else(|| StoreError::Config("the ledger's record sealing mode was not stored".into()))?;
        if self.sealing == RecordSealing::PlaintextBenchmark && stored == wanted {
            tracing::warn!("plaintext benchmark ledger: record contents are not sealed; never use it for real data");
        }
        if stored != wanted {
            return Err(StoreError::Config(format!(
                "this ledger was created with record sealing `{stored}` and cannot be opened with `{wanted}`: \
                 a plaintext benchmark ledger and a sealed one never share a database \
                 (--plaintext-benchmark is for the load generator only)"
            )));
        }
        Ok(())
    }

    /// Whether the ledger has never been used: no tenant was ever added
    /// (every real ledger has one) and nothing was logged or recorded.
    async fn never_used(&self) -> Result<bool, StoreError> {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tenants UNION ALL SELECT 1 FROM audit_log UNION ALL SELECT 1 FROM records \
             UNION ALL SELECT 1 FROM ledger_entries UNION ALL SELECT 1 FROM consents \
             UNION ALL SELECT 1 FROM erasures LIMIT 1",
        )
        .fetch_optional(&self.ledger)
        .await?;
        Ok(held.is_none())
    }

    async fn stored_sealing(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'record_sealing'")
                .fetch_optional(&self.ledger)
                .await?,
        )
    }
}
