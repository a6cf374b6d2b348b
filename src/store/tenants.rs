//! Tenants and their bearer keys. Keys are 256-bit random tokens; only a
//! BLAKE3 hash of each is stored and looked up.

use std::fmt;

use base64::Engine as _;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{Actor, Store, StoreError};
use crate::audit::Action;
use crate::crypto::random_bytes;
use crate::domain::{Role, TenantId};

const KEY_PREFIX: &str = "clk_";

/// A freshly issued bearer key. Shown once, never stored.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    fn generate() -> Self {
        let bytes = Zeroizing::new(random_bytes::<32>());
        Self(Zeroizing::new(format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*bytes)
        )))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

fn key_hash(token: &str) -> blake3::Hash {
    blake3::keyed_hash(
        &blake3::derive_key("carbon-ledger 2026 api key v1", b""),
        token.as_bytes(),
    )
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Store {
    /// Creates a tenant and issues its key (an operator action, audited).
    pub async fn add_tenant(&self, name: &str, role: Role) -> Result<(TenantId, ApiKey), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(
                "tenant names are 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let key = ApiKey::generate();
        let mut w = self.begin_write(self.today()).await?;
        let taken = sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(w.conn())
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!("a tenant named {name} exists already")));
        }
        let id: i64 =
            sqlx::query("INSERT INTO tenants (name, role, key_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(name)
                .bind(role.as_str())
                .bind(key_hash(key.expose()).as_bytes().to_vec())
                .bind(w.today.start)
                .fetch_one(w.conn())
                .await?
                .try_get(0)?;
        let tenant = TenantId::new(id);
        w.append(
            None,
            Action::TenantCreated {
                tenant,
                role,
                name: name.to_owned(),
            },
        );
        w.commit().await?;
        Ok((tenant, key))
    }

    /// Issues a new key for the tenant named `name`, replacing the old one
    /// (an operator action, audited). Keys are looked up on every request,
    /// never cached, so the old key is refused from the commit on, by
    /// every server on the database.
    pub async fn rotate_tenant_key(&self, name: &str) -> Result<(TenantId, ApiKey), StoreError> {
        let key = ApiKey::generate();
        let mut w = self.begin_write(self.today()).await?;
        let id: Option<i64> = sqlx::query_scalar("UPDATE tenants SET key_hash = $1 WHERE name = $2 RETURNING id")
            .bind(key_hash(key.expose()).as_bytes().to_vec())
            .bind(name)
            .fetch_optional(w.conn())
            .await?;
        let Some(id) = id else {
            w.rollback().await?;
            return Err(StoreError::Invalid(format!("there is no tenant named {name}")));
        };
        let tenant = TenantId::new(id);
        w.append(None, Action::TenantKeyRotated { tenant });
        w.commit().await?;
        Ok((tenant, key))
    }

    /// The tenant a bearer key belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Actor>, StoreError> {
        if !token.starts_with(KEY_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let hash = key_hash(token);
        let row: Option<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT id, role, key_hash FROM tenants WHERE key_hash = $1")
                .bind(hash.as_bytes().to_vec())
                .fetch_optional(&self.ledger)
                .await?;
        let Some((id, role, stored)) = row else { return Ok(None) };
        let stored: [u8; 32] = stored
            .try_into()
            .map_err(|_| StoreError::Corrupt("key hash is not 32 bytes".into()))?;
        // blake3::Hash compares in constant time.
        if blake3::Hash::from(stored) != hash {
            return Ok(None);
        }
        let role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt("unknown tenant role".into()))?;
        Ok(Some(Actor {
            tenant: TenantId::new(id),
            role,
        }))
    }
}
