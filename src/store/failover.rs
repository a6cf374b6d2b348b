//! Failover-aware PostgreSQL connections. sqlx does not implement libpq's
//! multi-host URLs (`postgres://u@h1:p1,h2:p2/db?target_session_attrs=read-write`),
//! so the host list is parsed here and each host is tried in turn with sqlx
//! itself, keeping the first whose `SHOW transaction_read_only` is `off` —
//! libpq's `read-write` semantics — rather than bringing in a second driver
//! (tokio-postgres) beside the one every query already goes through.
//!
//! A pool of such a URL points at one host at a time. A watcher task probes
//! that host every `PROBE_INTERVAL`; when it stops answering or turns
//! read-only (a demoted primary), the watcher marks every connection opened
//! before then as stale (the pool's `before_acquire` closes them; a write
//! refused as read-only, SQLSTATE 25006, does the same at once), scans the
//! hosts again and points the pool's future connections at the new primary
//! (`Pool::set_connect_options`). New connections are checked too
//! (`after_connect`): one that lands on a read-only host is refused, and the
//! pool's connect loop tries again with the options the watcher set.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Row};

use super::StoreError;

/// How often the watcher checks the host the pool points at.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one probe (connect and query) may take before the host counts
/// as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What libpq's `target_session_attrs` asks of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SessionAttrs {
    /// The first host that accepts a connection (libpq's default).
    Any,
    /// The first host whose sessions may write: the primary.
    ReadWrite,
}

/// A PostgreSQL URL with its host list split out: one single-host URL per
/// host, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostList {
    pub urls: Vec<String>,
    pub attrs: SessionAttrs,
}

impl HostList {
    /// Whether connections need watching: several hosts, or a demand that
    /// the one host be writable.
    pub fn needs_watching(&self) -> bool {
        self.urls.len() > 1 || self.attrs == SessionAttrs::ReadWrite
    }
}

/// Splits `postgres://user:pw@h1:p1,h2:p2/db?params` into one URL per host.
/// A host without a port takes 5432 (libpq's default); the
/// `target_session_attrs` parameter is taken out (sqlx does not know it)
/// and returned apart. Errors never repeat the URL: it may hold a password.
pub(super) fn parse_hosts(url: &str) -> Result<HostList, StoreError> {
    let bad = |why: &str| StoreError::Config(format!("the PostgreSQL URL is not valid: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    // The authority ends at the first '/', '?' or '#'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut attrs = SessionAttrs::Any;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                attrs = match value {
                    "any" => SessionAttrs::Any,
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    _ => return Err(bad("target_session_attrs must be any, read-write or primary")),
                }
            }
            _ => kept.push(pair),
        }
    }
    let mut urls = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err(bad("an empty host in the host list"));
        }
        // "[::1]:6000", "[::1]", "h:6000", "h".
        let has_port = match host.rfind(':') {
            Some(colon) => !host[colon..].contains(']'),
            None => false,
        };
        if has_port {
            let port = &host[host.rfind(':').unwrap_or(0) + 1..];
            if port.parse::<u16>().is_err() {
                return Err(bad("a port is not a number"));
            }
        }
        let host = if has_port {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        let mut one = format!("{scheme}://");
        if let Some(userinfo) = userinfo {
            one.push_str(userinfo);
            one.push('@');
        }
        one.push_str(&host);
        one.push_str(path);
        if !kept.is_empty() {
            one.push('?');
            one.push_str(&kept.join("&"));
        }
        urls.push(one);
    }
    Ok(HostList { urls, attrs })
}

/// When a statement last failed because its session was read-only
/// (SQLSTATE 25006: it reached a demoted primary), in this process.
static READ_ONLY_SEEN: Mutex<Option<Instant>> = Mutex::new(None);

/// Notes a read-only refusal: every watched pool then closes the
/// connections it opened before it, without waiting for its watcher.
pub(super) fn note_error(e: &sqlx::Error) {
    if let sqlx::Error::Database(db) = e {
        if db.code().as_deref() == Some("25006") {
            *READ_ONLY_SEEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// When the watcher last saw the pool's host fail: connections opened
/// before then, or before the last read-only refusal, are closed on their
/// next acquire.
#[derive(Default)]
pub(super) struct Staleness {
    since: Mutex<Option<Instant>>,
}

impl Staleness {
    fn mark(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a connection of this age was opened before the last failure.
    pub fn is_stale(&self, age: Duration) -> bool {
        let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
        let read_only = *READ_ONLY_SEEN.lock().unwrap_or_else(|e| e.into_inner());
        [since, read_only].into_iter().flatten().any(|at| age > at.elapsed())
    }
}

/// Whether `conn`'s session may write.
pub(super) async fn is_writable(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SHOW transaction_read_only").fetch_one(&mut *conn).await?;
    Ok(row.try_get::<String, _>(0)? == "off")
}

/// One probe of one host: a connection that meets `attrs`, or none.
async fn probe(url: &str, attrs: SessionAttrs) -> Option<AnyConnection> {
    let attempt = async {
        let options: AnyConnectOptions = url.parse().ok()?;
        let mut conn = options.connect().await.ok()?;
        match attrs {
            SessionAttrs::Any => Some(conn),
            SessionAttrs::ReadWrite => is_writable(&mut conn).await.ok()?.then_some(conn),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt).await.ok().flatten()
}

/// The first host that meets the list's demand, with its probe connection.
pub(super) async fn find_host(hosts: &HostList) -> Option<(usize, AnyConnection)> {
    for (i, url) in hosts.urls.iter().enumerate() {
        if let Some(conn) = probe(url, hosts.attrs).await {
            return Some((i, conn));
        }
    }
    None
}

/// Keeps `pool` pointed at a host that meets the list's demand, until the
/// pool is closed. `current` is the host it points at now, with the probe
/// connection that chose it.
pub(super) fn watch(pool: AnyPool, hosts: HostList, stale: Arc<Staleness>, current: (usize, AnyConnection)) {
    tokio::spawn(async move {
        let (mut at, conn) = current;
        let mut conn = Some(conn);
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if pool.is_closed() {
                return;
            }
            let healthy = match conn.as_mut() {
                Some(c) => match hosts.attrs {
                    SessionAttrs::ReadWrite => {
                        matches!(tokio::time::timeout(PROBE_TIMEOUT, is_writable(c)).await, Ok(Ok(true)))
                    }
                    SessionAttrs::Any => matches!(tokio::time::timeout(PROBE_TIMEOUT, c.ping()).await, Ok(Ok(()))),
                },
                None => false,
            };
            if healthy {
                continue;
            }
            if conn.take().is_some() {
                // Everything opened to the failed host goes; only its
                // index is logged, never the URL (it may hold a password).
                stale.mark();
                tracing::warn!(
                    host = at,
                    "the database host stopped accepting writes; looking for another"
                );
            }
            if let Some((found, c)) = find_host(&hosts).await {
                if let Ok(options) = hosts.urls[found].parse::<AnyConnectOptions>() {
                    pool.set_connect_options(options);
                    // Connections opened between the failure and now may
                    // have reached a host that was still read-only.
                    stale.mark();
                    tracing::warn!(
                        host = found,
                        previous = at,
                        "the database pool now points at host {found}"
                    );
                    at = found;
                    conn = Some(c);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_keeps_its_url() {
        let hosts = parse_hosts("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(hosts.urls, ["postgres://postgres@127.0.0.1:5432/postgres"]);
        assert_eq!(hosts.attrs, SessionAttrs::Any);
        assert!(!hosts.needs_watching());
    }

    #[test]
    fn a_host_list_becomes_one_url_per_host() {
        let hosts = parse_hosts(
            "postgresql://u:p%40w@h1:6001,h2,[::1]:6002/ledger?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            hosts.urls,
            [
                "postgresql://u:p%40w@h1:6001/ledger?sslmode=disable",
                "postgresql://u:p%40w@h2:5432/ledger?sslmode=disable",
                "postgresql://u:p%40w@[::1]:6002/ledger?sslmode=disable",
            ]
        );
        assert_eq!(hosts.attrs, SessionAttrs::ReadWrite);
        assert!(hosts.needs_watching());
        for url in &hosts.urls {
            url.parse::<AnyConnectOptions>().unwrap();
        }
    }

    #[test]
    fn read_write_on_one_host_is_watched() {
        let hosts = parse_hosts("postgres://h/db?target_session_attrs=read-write").unwrap();
        assert_eq!(hosts.urls, ["postgres://h:5432/db"]);
        assert!(hosts.needs_watching());
        let hosts = parse_hosts("postgres://h1,h2?target_session_attrs=any").unwrap();
        assert_eq!(hosts.urls, ["postgres://h1:5432", "postgres://h2:5432"]);
        assert_eq!(hosts.attrs, SessionAttrs::Any);
    }

    #[test]
    fn bad_lists_are_refused_without_echoing_the_url() {
        for url in [
            "postgres://u:secret@h1,,h2/db",
            "postgres://u:secret@h1:port/db",
            "postgres://u:secret@h1/db?target_session_attrs=standby",
            "u:secret@h1/db",
        ] {
            let err = parse_hosts(url).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn connections_older_than_a_failure_are_stale() {
        let stale = Staleness::default();
        assert!(!stale.is_stale(Duration::from_secs(3600)));
        stale.mark();
        assert!(stale.is_stale(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!stale.is_stale(Duration::from_millis(1)));
    }
}
