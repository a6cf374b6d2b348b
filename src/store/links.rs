//! Accounts linked across platforms, with the person's consent on both
//! sides (`interconnection`).
//!
//! Platform A issues a short-lived, single-use code for its account;
//! platform B redeems it for its own account. Neither learns the other's
//! user id: the code row holds only a keyed hash of the code and A's
//! ledger reference, and the link is stored between the two accounts'
//! ledger references (derived from each person's salt), one row per side.
//! Erasure or withdrawal of `interconnection` on either side removes the
//! link in the same transaction; so does either platform's request.
//!
//! While linked, the same behaviour reported by both platforms is counted
//! once (`linked_claims`, used by ingest; see docs/linking.md), and each
//! platform may read the other side's totals, never its records.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};

use super::access::{Audited, Enrol, SubjectTx};
use super::reads::Totals;
use super::sql::{select_in, Arg};
use super::{Access, Store, StoreError, WriteTx};
use crate::audit::{Action, ReadScope, UnlinkReason};
use crate::crypto::{random_bytes, SubjectRef};
use crate::domain::{Day, Milligrams, SubjectId, TenantId};
use crate::policy::{Permission, Purpose};

/// How long a link code stays redeemable: long enough for a person to
/// carry it from one app to the other, short enough that a leaked code is
/// soon worthless.
pub const LINK_CODE_MINUTES: i64 = 10;

/// Crockford's base 32: no I, L, O or U to misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 20 characters of 5 bits: 100 random bits, beyond guessing in ten minutes.
const CODE_CHARS: usize = 20;

/// A link code as issued: shown once, stored only as a keyed hash.
#[derive(Debug)]
pub struct LinkCode {
    /// `XXXXX-XXXXX-XXXXX-XXXXX`; dashes and case are ignored on redemption.
    pub code: String,
    pub expires_at: time::OffsetDateTime,
    pub audit_seq: u64,
}

/// One link as its side sees it: an opaque id and the other platform's
/// public name, nothing about the other account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkView {
    pub link_id: [u8; 16],
    pub platform: String,
    pub linked_on: Day,
    /// The other side's totals, when it still consents to interconnection
    /// (only in the consolidated view).
    pub totals: Option<Totals>,
}

/// The consolidated view: this platform's own figures, only totals of
/// each linked account, and the sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedAccount {
    pub own: Totals,
    pub links: Vec<LinkView>,
    pub total: Totals,
}

/// A link row's far side, as ingest and the consolidated view need it.
pub(super) struct Peer {
    pub link_id: [u8; 16],
    pub tenant: TenantId,
    pub subject: Vec<u8>,
    pub audit_ref: [u8; 16],
    linked_at: i64,
    name: String,
}

/// What linked accounts already claimed per (account, day, kind, variant):
/// the largest claim among the account's links, and that link's id.
#[derive(Default)]
pub(super) struct LinkedClaims(HashMap<ClaimKey, (i64, [u8; 16])>);

/// An account, day, kind and variant.
type ClaimKey = (SubjectRef, Day, String, String);

impl LinkedClaims {
    pub(super) fn get(&self, subject: &SubjectRef, day: Day, kind: &str, variant: &str) -> Option<(i64, [u8; 16])> {
        self.0
            .get(&(*subject, day, kind.to_owned(), variant.to_owned()))
            .copied()
    }

    #[cfg(test)]
    pub(super) fn insert(&mut self, subject: SubjectRef, day: Day, kind: &str, variant: &str, mg: i64, link: [u8; 16]) {
        self.0
            .insert((subject, day, kind.to_owned(), variant.to_owned()), (mg, link));
    }
}

fn generate_code() -> String {
    let bytes = random_bytes::<CODE_CHARS>();
    let mut code = String::with_capacity(CODE_CHARS + 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        code.push(char::from(CODE_ALPHABET[usize::from(b & 31)]));
    }
    code
}

/// The code in its canonical form (no dashes or spaces, upper case), or
/// `None` when it cannot be one this service issued.
fn canonical_code(code: &str) -> Option<String> {
    if code.len() > 64 {
        return None;
    }
    let canonical: String = code
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (canonical.len() == CODE_CHARS && canonical.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(canonical)
}

fn id16(bytes: Vec<u8>, what: &str) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 16 bytes")))
}

fn day_of(at: i64) -> Result<Day, StoreError> {
    Day::from_days(at.div_euclid(86_400)).ok_or_else(|| StoreError::Corrupt("a link's day is out of range".into()))
}

impl Store {
    /// Issues a link code for the account: single use, valid for
    /// `LINK_CODE_MINUTES`, replacing any code issued before for it.
    pub async fn issue_link_code(&self, access: &Access, subject: &SubjectId) -> Result<LinkCode, StoreError> {
        let code = generate_code();
        let hash = self
            .pseudonyms
            .link_code_hash(&canonical_code(&code).unwrap_or_default());
        let issue = async |tx: &mut SubjectTx<'_>| {
            let (tenant, own) = (tx.tenant(), tx.ledger_ref().as_bytes().to_vec());
            if !self
                .consents_now(tx.conn(), tenant, &own, Purpose::Interconnection)
                .await?
            {
                return Err(StoreError::ConsentRequired {
                    purpose: Purpose::Interconnection,
                    other_side: false,
                });
            }
            let now = tx.today().now;
            let expires_at = now + time::Duration::minutes(LINK_CODE_MINUTES);
            // Expired codes go as new ones come: the table holds at most one
            // code per account, and none for long.
            sqlx::query("DELETE FROM link_codes WHERE expires_at < $1")
                .bind(now.unix_timestamp())
                .execute(tx.conn())
                .await?;
            sqlx::query(
                "INSERT INTO link_codes (code_hash, tenant_id, subject, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, subject) DO UPDATE SET code_hash = $1, expires_at = $4",
            )
            .bind(hash.to_vec())
            .bind(tenant.get())
            .bind(own)
            .bind(expires_at.unix_timestamp())
            .execute(tx.conn())
            .await?;
            let issued = Action::LinkCodeIssued {
                subject: tx.audit_ref(),
            };
            Ok(Audited::new(expires_at, issued))
        };
        let done = self
            .with_subject(access, Permission::LinkSubjects, subject, Enrol::KnownOnly, issue)
            .await?;
        Ok(LinkCode {
            code,
            expires_at: done.value,
            audit_seq: done.audit_seq.unwrap_or_default(),
        })
    }

    /// Redeems a link code for the caller's account, linking it with the
    /// account that issued the code. An unknown, used or expired code is
    /// refused alike and changes nothing.
    pub async fn redeem_link_code(
        &self,
        access: &Access,
        subject: &SubjectId,
        code: &str,
    ) -> Result<(LinkView, u64), StoreError> {
        self.authorize(access, Permission::LinkSubjects)?;
        let hash = self
            .pseudonyms
            .link_code_hash(&canonical_code(code).ok_or(StoreError::LinkCodeInvalid)?);
        let redeem = async |tx: &mut SubjectTx<'_>| {
            let (tenant, own) = (tx.tenant(), tx.ledger_ref().as_bytes().to_vec());
            if !self
                .consents_now(tx.conn(), tenant, &own, Purpose::Interconnection)
                .await?
            {
                return Err(StoreError::ConsentRequired {
                    purpose: Purpose::Interconnection,
                    other_side: false,
                });
            }
            // Single use: the code is deleted as it is read, and the whole
            // redemption commits or rolls back with that deletion.
            let row =
                sqlx::query("DELETE FROM link_codes WHERE code_hash = $1 RETURNING tenant_id, subject, expires_at")
                    .bind(hash.to_vec())
                    .fetch_optional(tx.conn())
                    .await?;
            let Some(row) = row else {
                return Err(StoreError::LinkCodeInvalid);
            };
            let (peer_tenant, peer_subject, expires_at): (i64, Vec<u8>, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let peer_tenant = TenantId::new(peer_tenant);
            if expires_at < tx.today().now.unix_timestamp() {
                return Err(StoreError::LinkCodeInvalid);
            }
            if peer_tenant == tenant {
                return Err(StoreError::Invalid(
                    "a link code links accounts on two different platforms; this one was issued by the same platform"
                        .into(),
                ));
            }
            if !self
                .consents_now(tx.conn(), peer_tenant, &peer_subject, Purpose::Interconnection)
                .await?
            {
                return Err(StoreError::ConsentRequired {
                    purpose: Purpose::Interconnection,
                    other_side: true,
                });
            }
            // The issuing side's audit reference, for its own entry: derived
            // from its key, found by the ledger reference the code holds. An
            // erasure deletes the code with the key, so a missing key is a
            // code that no longer exists.
            let peer_key = self
                .key_by_ledger_ref(&peer_subject)
                .await?
                .ok_or(StoreError::LinkCodeInvalid)?;
            let peer_audit_ref = self.subject_keys(&peer_key.salt).audit_ref;
            drop(peer_key);
            let taken: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM subject_links WHERE (tenant_id = $1 AND subject = $2 AND peer_tenant = $3) \
                 OR (tenant_id = $3 AND subject = $4 AND peer_tenant = $1) LIMIT 1",
            )
            .bind(tenant.get())
            .bind(own.clone())
            .bind(peer_tenant.get())
            .bind(peer_subject.clone())
            .fetch_optional(tx.conn())
            .await?;
            if taken.is_some() {
                return Err(StoreError::Conflict(
                    "one of the two accounts is linked with an account on the other platform already; unlink it first"
                        .into(),
                ));
            }
            let link_id = random_bytes::<16>();
            let at = tx.today().start;
            let own_audit_ref = tx.audit_ref();
            for (t, s, a, pt, ps) in [
                (tenant, &own, own_audit_ref.as_bytes(), peer_tenant, &peer_subject),
                (peer_tenant, &peer_subject, peer_audit_ref.as_bytes(), tenant, &own),
            ] {
                sqlx::query(
                    "INSERT INTO subject_links (link_id, tenant_id, subject, audit_ref, peer_tenant, peer_subject, linked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(link_id.to_vec())
                .bind(t.get())
                .bind(s.clone())
                .bind(a.to_vec())
                .bind(pt.get())
                .bind(ps.clone())
                .bind(at)
                .execute(tx.conn())
                .await?;
            }
            let platform: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
                .bind(peer_tenant.get())
                .fetch_one(tx.conn())
                .await?;
            let view = LinkView {
                link_id,
                platform,
                linked_on: tx.today().utc_day(),
                totals: None,
            };
            let linked = Action::AccountsLinked {
                subject: own_audit_ref,
                link_id,
            };
            let peer_linked = Action::AccountsLinked {
                subject: peer_audit_ref,
                link_id,
            };
            Ok(Audited::new(Some(view), linked).and_for([(peer_tenant, peer_linked)]))
        };
        let done = self
            .with_subject(access, Permission::LinkSubjects, subject, Enrol::KnownOnly, redeem)
            .await?;
        let view = done
            .value
            .ok_or_else(|| StoreError::Corrupt("a committed link has no view".into()))?;
        Ok((view, done.audit_seq.unwrap_or_default()))
    }

    /// Removes one of the account's links, on both sides, at once. Needs no
    /// consent: unlinking is always possible.
    pub async fn unlink(&self, access: &Access, subject: &SubjectId, link_id: [u8; 16]) -> Result<u64, StoreError> {
        let unlink = async |tx: &mut SubjectTx<'_>| {
            let (tenant, own) = (tx.tenant(), tx.ledger_ref());
            let actions = delete_links(
                tx.conn(),
                "SELECT link_id FROM subject_links WHERE tenant_id = $1 AND subject = $2 AND link_id = $3",
                tenant,
                &own,
                Some(link_id),
                UnlinkReason::Requested,
            )
            .await?;
            let mut actions = actions.into_iter();
            let Some((_, first)) = actions.next() else {
                return Err(StoreError::LinkNotFound);
            };
            Ok(Audited::new((), first).and_for(actions))
        };
        let done = self
            .with_subject(access, Permission::LinkSubjects, subject, Enrol::KnownOnly, unlink)
            .await?;
        Ok(done.audit_seq.unwrap_or_default())
    }

    /// Removes every link of the account (and its outstanding code), in the
    /// caller's transaction: erasure and withdrawal of `interconnection`.
    /// Returns the audit entries, each with the tenant it is logged under.
    pub(super) async fn unlink_all(
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &SubjectRef,
        reason: UnlinkReason,
    ) -> Result<Vec<(TenantId, Action)>, StoreError> {
        sqlx::query("DELETE FROM link_codes WHERE tenant_id = $1 AND subject = $2")
            .bind(tenant.get())
            .bind(subject.as_bytes().to_vec())
            .execute(&mut *conn)
            .await?;
        delete_links(
            conn,
            "SELECT link_id FROM subject_links WHERE tenant_id = $1 AND subject = $2",
            tenant,
            subject,
            None,
            reason,
        )
        .await
    }

    /// The account's links, the far side of each.
    pub(super) async fn peers(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &[u8],
    ) -> Result<Vec<Peer>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.link_id, l.peer_tenant, l.peer_subject, p.audit_ref, l.linked_at, t.name \
             FROM subject_links l \
             JOIN subject_links p ON p.link_id = l.link_id AND p.tenant_id = l.peer_tenant \
             JOIN tenants t ON t.id = l.peer_tenant \
             WHERE l.tenant_id = $1 AND l.subject = $2 ORDER BY l.linked_at, l.link_id",
        )
        .bind(tenant.get())
        .bind(subject.to_vec())
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Peer {
                    link_id: id16(row.try_get(0)?, "a link id")?,
                    tenant: TenantId::new(row.try_get(1)?),
                    subject: row.try_get(2)?,
                    audit_ref: id16(row.try_get(3)?, "an audit reference")?,
                    linked_at: row.try_get(4)?,
                    name: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// The account's links as its export shows them: no totals, nothing
    /// about the other account.
    pub(super) async fn links_of(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &[u8],
    ) -> Result<Vec<LinkView>, StoreError> {
        self.peers(conn, tenant, subject)
            .await?
            .into_iter()
            .map(|peer| {
                Ok(LinkView {
                    link_id: peer.link_id,
                    platform: peer.name,
                    linked_on: day_of(peer.linked_at)?,
                    totals: None,
                })
            })
            .collect()
    }

    /// Events, grams and points of one account within retention.
    async fn account_totals(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        subject: &[u8],
        cutoff: i64,
    ) -> Result<Totals, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN record_id IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(reduction_mg), 0) AS BIGINT), CAST(COALESCE(SUM(points), 0) AS BIGINT) \
             FROM ledger_entries WHERE tenant_id = $1 AND subject = $2 AND day >= $3",
        )
        .bind(tenant.get())
        .bind(subject.to_vec())
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
        Ok(Totals {
            events: row.try_get(0)?,
            reduction: Milligrams(row.try_get(1)?),
            points: row.try_get(2)?,
        })
    }

    /// The consolidated view of a linked person (an audited read on every
    /// side whose totals it shows): this account's totals, each linked
    /// account's totals while it consents to interconnection, and the sum.
    /// Nothing but totals crosses between platforms.
    pub async fn linked_account(&self, access: &Access, subject: &SubjectId) -> Result<LinkedAccount, StoreError> {
        let read = async |tx: &mut SubjectTx<'_>| {
            let (tenant, own) = (tx.tenant(), tx.ledger_ref().as_bytes().to_vec());
            if !self
                .consents_now(tx.conn(), tenant, &own, Purpose::Interconnection)
                .await?
            {
                return Err(StoreError::ConsentRequired {
                    purpose: Purpose::Interconnection,
                    other_side: false,
                });
            }
            let cutoff = self.cutoffs(&tx.today()).ledger_day;
            let own_totals = self.account_totals(tx.conn(), tenant, &own, cutoff).await?;
            let mut total = own_totals;
            let mut links = Vec::new();
            let mut peer_reads = Vec::new();
            for peer in self.peers(tx.conn(), tenant, &own).await? {
                let totals = if self
                    .consents_now(tx.conn(), peer.tenant, &peer.subject, Purpose::Interconnection)
                    .await?
                {
                    let t = self
                        .account_totals(tx.conn(), peer.tenant, &peer.subject, cutoff)
                        .await?;
                    total.events += t.events;
                    total.reduction = Milligrams(total.reduction.0 + t.reduction.0);
                    total.points += t.points;
                    peer_reads.push((
                        peer.tenant,
                        Action::SubjectRead {
                            subject: crate::crypto::AuditRef::from_bytes(peer.audit_ref),
                            scope: ReadScope::LinkedAccount,
                            items: 1,
                        },
                    ));
                    Some(t)
                } else {
                    None
                };
                links.push(LinkView {
                    link_id: peer.link_id,
                    platform: peer.name,
                    linked_on: day_of(peer.linked_at)?,
                    totals,
                });
            }
            let read = Action::SubjectRead {
                subject: tx.audit_ref(),
                scope: ReadScope::LinkedAccount,
                items: u32::try_from(links.len()).unwrap_or(u32::MAX),
            };
            let view = LinkedAccount {
                own: own_totals,
                links,
                total,
            };
            Ok(Audited::new(Some(view), read).and_for(peer_reads))
        };
        let done = self
            .with_subject(access, Permission::LinkSubjects, subject, Enrol::KnownOnly, read)
            .await?;
        done.value
            .ok_or_else(|| StoreError::Corrupt("a committed read has no view".into()))
    }

    /// What the linked accounts of `subjects` claimed on `first..=last`,
    /// per day, kind and variant, as each platform reported it (its credit
    /// plus any part counted elsewhere). Only links whose far side consents
    /// to interconnection count; the near side's consent is ingest's check.
    pub(super) async fn linked_claims(
        &self,
        w: &mut WriteTx<'_>,
        tenant: TenantId,
        subjects: &[SubjectRef],
        first: Day,
        last: Day,
    ) -> Result<LinkedClaims, StoreError> {
        let mut claims = LinkedClaims::default();
        if subjects.is_empty() {
            return Ok(claims);
        }
        let current = self.policies.consent.get(Purpose::Interconnection).notice_version;
        let list: Vec<Arg> = subjects.iter().map(|s| Arg::Blob(s.as_bytes().to_vec())).collect();
        let leading = [
            Arg::Text(Purpose::Interconnection.as_str().to_owned()),
            Arg::Int(i64::from(current)),
            Arg::Int(i64::from(first.days())),
            Arg::Int(i64::from(last.days())),
            Arg::Int(tenant.get()),
        ];
        let rows = select_in(w.conn(), self.engine, &leading, &list, |p, n| {
            format!(
                "SELECT l.subject, l.link_id, e.day, e.kind, e.variant, \
                 CAST(SUM(e.reduction_mg) AS BIGINT) AS claimed \
                 FROM subject_links l \
                 JOIN consents c ON c.tenant_id = l.peer_tenant AND c.subject = l.peer_subject \
                   AND c.purpose = {} AND c.notice_version = {} \
                 JOIN daily_usage e ON e.tenant_id = l.peer_tenant AND e.subject = l.peer_subject \
                   AND e.day >= {} AND e.day <= {} \
                 WHERE l.tenant_id = {} AND l.subject IN ({}) \
                 GROUP BY l.subject, l.link_id, e.day, e.kind, e.variant",
                p.one(),
                p.one(),
                p.one(),
                p.one(),
                p.one(),
                p.list(n)
            )
        })
        .await?;
        for row in rows {
            let subject = SubjectRef::from_stored(&row.try_get::<Vec<u8>, _>(0)?)
                .ok_or_else(|| StoreError::Corrupt("subject is not 32 bytes".into()))?;
            let link_id = id16(row.try_get(1)?, "a link id")?;
            let day = Day::from_days(row.try_get(2)?).ok_or_else(|| StoreError::Corrupt("day out of range".into()))?;
            let (kind, variant): (String, String) = (row.try_get(3)?, row.try_get(4)?);
            let claimed: i64 = row.try_get(5)?;
            // Several links: the largest claim is the one the person's
            // behaviour could at most have produced elsewhere.
            let slot = claims.0.entry((subject, day, kind, variant)).or_insert((0, link_id));
            if claimed > slot.0 {
                *slot = (claimed, link_id);
            }
        }
        Ok(claims)
    }
}

/// Deletes the links `select` names (parameters: tenant, subject, and the
/// link id when given), both rows of each, and returns one unlink entry per
/// side, each under the tenant whose account it concerns.
async fn delete_links(
    conn: &mut AnyConnection,
    select: &str,
    tenant: TenantId,
    subject: &SubjectRef,
    link_id: Option<[u8; 16]>,
    reason: UnlinkReason,
) -> Result<Vec<(TenantId, Action)>, StoreError> {
    let sql = format!("DELETE FROM subject_links WHERE link_id IN ({select}) RETURNING link_id, tenant_id, audit_ref");
    let mut q = sqlx::query(&sql)
        .persistent(false)
        .bind(tenant.get())
        .bind(subject.as_bytes().to_vec());
    if let Some(id) = link_id {
        q = q.bind(id.to_vec());
    }
    let mut removed = Vec::new();
    for row in q.fetch_all(conn).await? {
        let link_id = id16(row.try_get(0)?, "a link id")?;
        let side = TenantId::new(row.try_get(1)?);
        let audit_ref = id16(row.try_get(2)?, "an audit reference")?;
        removed.push((side, link_id, audit_ref));
    }
    // The acting side's entry first, then the far side's: a stable order
    // whatever order the database returns rows in.
    removed.sort_by_key(|(side, link_id, _)| (*link_id, *side != tenant, side.get()));
    Ok(removed
        .into_iter()
        .map(|(side, link_id, audit_ref)| {
            (
                side,
                Action::AccountsUnlinked {
                    subject: crate::crypto::AuditRef::from_bytes(audit_ref),
                    link_id,
                    reason,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_and_read_back_however_typed() {
        let code = generate_code();
        assert_eq!(code.len(), CODE_CHARS + 3);
        assert_ne!(code, generate_code());
        let canonical = canonical_code(&code).unwrap();
        assert_eq!(canonical_code(&code.to_lowercase().replace('-', " ")), Some(canonical));
        assert_eq!(canonical_code("not-a-code"), None);
        assert_eq!(canonical_code(&"A".repeat(100)), None);
        // I, L, O and U are not in the alphabet.
        assert_eq!(canonical_code("IIIII-LLLLL-OOOOO-UUUUU"), None);
    }
}
