//! Log lines to stderr (journald takes them under systemd): text or JSON, filtered by
//! `log_level` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the process's log subscriber.
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Colours only on a terminal (not in journald or a file).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A failed write is dropped, never reported with eprintln!, which panics once
    // stderr is gone (a closed pipe): every task that logged, the SIGTERM handler
    // among them, would die with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
