//! Running the HTTP server: bind, serve, shut down gracefully.

use std::future::Future;
use std::io;

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{router, AppState, Metrics};
use crate::store::Store;

/// Serves until `shutdown` completes, then finishes in-flight requests —
/// including those whose clients hung up, which no connection waits for —
/// and the erasure purge under way. Background work stops between runs,
/// never inside one.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let purger = tokio::spawn(purge_erasures(state.store.clone(), stopped));
    // No Nagle: a streamed response's last small write would otherwise wait
    // for the client's delayed acknowledgement (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    state.in_flight.drain().await;
    let _ = stop.send(true);
    let _ = purger.await;
    served
}

/// Purges erased people's rows whenever an erasure leaves some (and once at
/// start, for those a previous run left).
async fn purge_erasures(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = store.purge_wanted() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        match store.purge_erased().await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "purged erased people's rows"),
            // Left pending: the next erasure or sweep takes it up again.
            Err(e) => tracing::error!(error = %e, "purging erased people's rows failed"),
        }
    }
}

/// Runs `job` every `interval`, the first time at once, until `stop` turns
/// true. A run under way always finishes: only the wait between runs is
/// cut short.
pub async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        job().await;
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Signs a checkpoint every `interval`, so auditors can hold the log to
/// what it was even if nobody asked in between.
pub async fn checkpoint_periodically(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    every(interval, stop, || async {
        let signed = store.checkpoint().await;
        metrics.observe_checkpoint(signed.is_ok());
        if let Err(e) = signed {
            tracing::error!(error = %e, "signing a checkpoint failed");
        }
    })
    .await;
}

/// Runs the retention sweeper every `interval` (the first sweep right away).
pub async fn sweep_periodically(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    every(interval, stop, || async {
        let swept = store.sweep_retention().await;
        metrics.observe_sweep(swept.is_ok());
        match swept {
            Ok((counts, seq)) => tracing::info!(
                audit_seq = seq,
                records = counts.records,
                ledger_entries = counts.ledger_entries,
                idempotency_keys = counts.idempotency_keys,
                consent_history = counts.consent_history,
                audit_entries = counts.audit_entries,
                "retention sweep"
            ),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
    })
    .await;
}

/// How often a server checks for a root key rotation made by another
/// process: until it has, it seals under the older version, and once that
/// is retired its writes are refused (503, nothing written).
pub const KEY_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Picks up root key rotations every `KEY_WATCH_INTERVAL` and, every
/// `reseal` if set, re-seals records still under older versions.
pub async fn watch_keys(store: Arc<Store>, reseal: Option<Duration>, stop: watch::Receiver<bool>) {
    let mut last_reseal: Option<tokio::time::Instant> = None;
    every(KEY_WATCH_INTERVAL, stop, || {
        let store = store.clone();
        let due = reseal.is_some_and(|every| last_reseal.is_none_or(|at| at.elapsed() >= every));
        if due {
            last_reseal = Some(tokio::time::Instant::now());
        }
        async move {
            if let Err(e) = store.refresh_keyring().await {
                tracing::error!(error = %e, "checking the root key versions failed");
                return;
            }
            if !due {
                return;
            }
            if !store.older_key_versions_in_use() {
                return;
            }
            match store.reseal(Default::default(), |_| {}).await {
                Ok(r) => tracing::info!(
                    version = r.version,
                    resealed = r.resealed,
                    remaining = r.remaining,
                    retired = ?r.retired,
                    "re-seal"
                ),
                Err(e) => tracing::error!(error = %e, "re-seal failed"),
            }
        }
    })
    .await;
}
