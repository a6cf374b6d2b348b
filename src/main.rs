use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // An operator's own setting wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        cap_malloc_arenas();
    }
    let cli = carbon_ledger::cli::Cli::parse();
    // Logs go to stderr; stdout carries command output (e.g. a new API key).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(carbon_ledger::cli::run(cli))
}

/// glibc gives each thread that allocates an arena of its own, up to eight
/// per core, and memory freed in one arena is not reused by another: with
/// the runtime's workers and a SQLite worker thread per connection, the
/// server's peak under 60 batches of 1,000 events was 80-86 MB with the
/// default, 71-73 MB with four arenas at the same rate within noise, and
/// 60-62 MB with two but about 15% fewer events/s; after 200 batches,
/// 101.7 MB with the default and 88.0 MB with four (docs/performance.md).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in `main`, before any thread exists;
    // `mallopt` only sets a parameter of the allocator. Its result (0 when
    // the value is refused) leaves the default in place, which is safe.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
