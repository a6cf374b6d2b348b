//! Running the HTTP server: bind, serve, shut down gracefully.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;

use std::sync::Arc;
use std::time::Duration;

use crate::api::{router, AppState};
use crate::store::Store;

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
pub async fn checkpoint_periodically(store: Arc<Store>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = store.checkpoint().await {
            tracing::error!(error = %e, "signing a checkpoint failed");
        }
    }
}

/// Runs the retention sweeper every `interval` (the first sweep right away).
pub async fn sweep_periodically(store: Arc<Store>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.sweep_retention().await {
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
    }
}
