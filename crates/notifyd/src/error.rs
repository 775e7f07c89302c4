//! The library's error: what can stop a daemon from starting.

use std::net::SocketAddr;

/// Why a daemon could not start. Never holds a secret: a Redis URL's error is told by
/// its kind, not its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `websocket` or `metrics`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key does not load.
    #[error("{0}")]
    Tls(String),
    /// The Redis settings cannot make a client.
    #[error("[redis]: {0}")]
    Redis(String),
    /// Another I/O failure (signal handlers, a listener's address).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
