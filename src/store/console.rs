//! The person's privacy center: console links and sessions. A platform that
//! has authenticated its user asks for a link; the link's token and the
//! session it opens are random and kept here only as hashes, bound to the
//! tenant and the person's pseudonym (never the platform's user id). Every
//! read or change made in a session goes through the one door
//! (`access.rs`) like the API's, with the session as the subject handle.

use sqlx::Row;

use super::access::{Audited, Enrol, SubjectRead, SubjectTx};
use super::{Access, Actor, Store, StoreError, SubjectHandle};
use crate::audit::{Action, AuditEntry, ReadScope};
use crate::crypto::{random_bytes, Pseudonym, PseudonymKey};
use crate::domain::{Role, SubjectId, TenantId};
use crate::policy::{Permission, Purpose};

/// How long a console link may wait before it is opened.
pub const CONSOLE_LINK_MINUTES: i64 = 10;
/// A session ends after this long without a request...
pub const CONSOLE_IDLE_MINUTES: i64 = 15;
/// ...and after this long in any case.
pub const CONSOLE_MAX_MINUTES: i64 = 60;
/// The most audit entries the "who touched my data" page lists.
pub const CONSOLE_ACCESSES_LISTED: u32 = 200;

/// A console link's token, shown once to the platform.
#[derive(Debug)]
pub struct ConsoleLink {
    pub token: String,
    pub expires_at: time::OffsetDateTime,
    pub audit_seq: u64,
}

/// An open console session: who it acts for. It names the person only by
/// their pseudonym under the tenant.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub tenant: TenantId,
    pseudonym: Pseudonym,
    /// The form token of this session (see the console's CSRF check).
    pub csrf: String,
}

impl ConsoleSession {
    /// The access the console acts with: the platform's own rights, on
    /// this one person only.
    pub fn access(&self, purpose: Purpose) -> Access {
        Access::new(
            Actor {
                tenant: self.tenant,
                role: Role::Platform,
            },
            purpose,
        )
    }
}

impl SubjectHandle for ConsoleSession {
    fn pseudonym_for(&self, _: &PseudonymKey, tenant: TenantId) -> Result<Pseudonym, StoreError> {
        if tenant != self.tenant {
            return Err(StoreError::Forbidden("act on another platform's user"));
        }
        Ok(self.pseudonym)
    }
}

/// One audit entry that concerns the person.
#[derive(Clone, Debug)]
pub struct SubjectAccess {
    pub entry: AuditEntry,
    /// Whether the platform holding the account logged it (otherwise
    /// another platform on a link, or the operator).
    pub by_own_platform: bool,
}

fn token_hash(token: &str) -> Vec<u8> {
    blake3::derive_key("carbon-ledger console token v1", token.as_bytes()).to_vec()
}

fn session_hash(id: &str) -> Vec<u8> {
    blake3::derive_key("carbon-ledger console session v1", id.as_bytes()).to_vec()
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

impl Store {
    /// Issues a single-use console link for the person, valid for
    /// `CONSOLE_LINK_MINUTES`. Several may be outstanding (a person on two
    /// devices); each opens once.
    pub async fn issue_console_link(&self, access: &Access, subject: &SubjectId) -> Result<ConsoleLink, StoreError> {
        let tenant = self.authorize(access, Permission::ReadSubjects)?;
        let pseudonym = subject.pseudonym_for(&self.pseudonyms, tenant)?;
        let token = random_token();
        let hash = token_hash(&token);
        let issue = async |tx: &mut SubjectTx<'_>| {
            let now = tx.today().now;
            let expires_at = now + time::Duration::minutes(CONSOLE_LINK_MINUTES);
            // Links nobody opened go as new ones come: the table stays small.
            sqlx::query("DELETE FROM console_tokens WHERE expires_at < $1")
                .bind(now.unix_timestamp())
                .execute(tx.conn())
                .await?;
            sqlx::query(
                "INSERT INTO console_tokens (token_hash, tenant_id, pseudonym, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash.clone())
            .bind(tx.tenant().get())
            .bind(pseudonym.as_bytes().to_vec())
            .bind(expires_at.unix_timestamp())
            .execute(tx.conn())
            .await?;
            let issued = Action::ConsoleLinkIssued {
                subject: tx.audit_ref(),
            };
            Ok(Audited::new(expires_at, issued))
        };
        let done = self
            .with_subject(access, Permission::ReadSubjects, subject, Enrol::KnownOnly, issue)
            .await?;
        Ok(ConsoleLink {
            token,
            expires_at: done.value,
            audit_seq: done.audit_seq.unwrap_or_default(),
        })
    }

    /// Opens a console link: burns the token and starts a session, whose
    /// id is returned (to be set as a cookie, never logged). An unknown,
    /// used or expired token is refused alike and starts nothing.
    pub async fn open_console_link(&self, token: &str) -> Result<(String, ConsoleSession), StoreError> {
        if token.is_empty() || token.len() > 64 {
            return Err(StoreError::ConsoleLinkInvalid);
        }
        let hash = token_hash(token);
        let row = sqlx::query("SELECT tenant_id, pseudonym FROM console_tokens WHERE token_hash = $1")
            .bind(hash.clone())
            .fetch_optional(&self.ledger)
            .await?
            .ok_or(StoreError::ConsoleLinkInvalid)?;
        let tenant = TenantId::new(row.try_get(0)?);
        let pseudonym = Pseudonym::from_stored(&row.try_get::<Vec<u8>, _>(1)?)
            .ok_or_else(|| StoreError::Corrupt("a console token's pseudonym is not 32 bytes".into()))?;
        let session_id = random_token();
        let session = ConsoleSession {
            tenant,
            pseudonym,
            csrf: random_token(),
        };
        let open = async |tx: &mut SubjectTx<'_>| {
            let now = tx.today().now.unix_timestamp();
            // Burnt and checked in one statement, inside the write lock: of
            // two requests with one token, one opens a session.
            let burnt = sqlx::query("DELETE FROM console_tokens WHERE token_hash = $1 AND expires_at >= $2")
                .bind(hash.clone())
                .bind(now)
                .execute(tx.conn())
                .await?
                .rows_affected();
            if burnt != 1 {
                return Err(StoreError::ConsoleLinkInvalid);
            }
            sqlx::query(
                "INSERT INTO console_sessions (session_hash, tenant_id, pseudonym, csrf, created_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(session_hash(&session_id))
            .bind(tenant.get())
            .bind(pseudonym.as_bytes().to_vec())
            .bind(&session.csrf)
            .bind(now)
            .execute(tx.conn())
            .await?;
            let opened = Action::ConsoleOpened {
                subject: tx.audit_ref(),
            };
            Ok(Audited::new((), opened))
        };
        let result = self
            .with_subject(
                &session.access(Purpose::Accounting),
                Permission::ReadSubjects,
                &session,
                Enrol::KnownOnly,
                open,
            )
            .await;
        match result {
            Ok(_) => Ok((session_id, session)),
            Err(StoreError::SubjectNotFound) => {
                // The person was erased since: the token goes too.
                sqlx::query("DELETE FROM console_tokens WHERE token_hash = $1")
                    .bind(hash)
                    .execute(&self.ledger)
                    .await?;
                Err(StoreError::ConsoleLinkInvalid)
            }
            Err(e) => Err(e),
        }
    }

    /// The session with this id, if it is open: not idle past
    /// `CONSOLE_IDLE_MINUTES`, nor older than `CONSOLE_MAX_MINUTES`. Each
    /// use moves its idle limit on.
    pub async fn console_session(&self, session_id: &str) -> Result<ConsoleSession, StoreError> {
        if session_id.is_empty() || session_id.len() > 64 {
            return Err(StoreError::ConsoleSessionInvalid);
        }
        let hash = session_hash(session_id);
        let now = self.now().unix_timestamp();
        let idle_from = now - CONSOLE_IDLE_MINUTES * 60;
        let born_from = now - CONSOLE_MAX_MINUTES * 60;
        let row = sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $2 WHERE session_hash = $1 AND last_seen_at >= $3 AND created_at >= $4 \
             RETURNING tenant_id, pseudonym, csrf",
        )
        .bind(hash.clone())
        .bind(now)
        .bind(idle_from)
        .bind(born_from)
        .fetch_optional(&self.ledger)
        .await?;
        let Some(row) = row else {
            // Ended sessions go as they are found.
            sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1 OR last_seen_at < $2 OR created_at < $3")
                .bind(hash)
                .bind(idle_from)
                .bind(born_from)
                .execute(&self.ledger)
                .await?;
            return Err(StoreError::ConsoleSessionInvalid);
        };
        Ok(ConsoleSession {
            tenant: TenantId::new(row.try_get(0)?),
            pseudonym: Pseudonym::from_stored(&row.try_get::<Vec<u8>, _>(1)?)
                .ok_or_else(|| StoreError::Corrupt("a console session's pseudonym is not 32 bytes".into()))?,
            csrf: row.try_get(2)?,
        })
    }

    /// The audit entries that concern the person, newest first (at most
    /// `CONSOLE_ACCESSES_LISTED`): an audited read.
    pub async fn subject_accesses(
        &self,
        access: &Access,
        subject: &(impl SubjectHandle + ?Sized),
    ) -> Result<Vec<SubjectAccess>, StoreError> {
        let read = async |tx: &mut SubjectRead| {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, entry FROM audit_log WHERE subject_ref = $1 AND entry IS NOT NULL ORDER BY seq DESC LIMIT $2",
            )
            .bind(tx.audit_ref().as_bytes().to_vec())
            .bind(i64::from(CONSOLE_ACCESSES_LISTED))
            .fetch_all(tx.conn())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (_, bytes) in &rows {
                let entry = AuditEntry::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push(SubjectAccess {
                    by_own_platform: entry.actor == Some(tx.tenant()),
                    entry,
                });
            }
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::Accesses,
                items: u32::try_from(out.len()).unwrap_or(u32::MAX),
            };
            Ok(Audited::new(out, read))
        };
        self.read_subject(access, Permission::ReadSubjects, subject, read).await
    }
}
