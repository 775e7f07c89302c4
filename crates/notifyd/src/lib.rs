//! `tsugi-notifyd`: the Tsugi notification daemon.
//!
//! Browsers connect to `GET /notify?token=T&room=R`; the token (minted by Tsugi's
//! `WebSocket::getToken`) is checked before the upgrade, and every message a browser
//! sends goes to every other browser of the same space (site + link) and room, never
//! back to the sender and never anywhere else. Everything is bounded: message size and
//! rate, each receiver's queue (a reader that stops is closed, never waited for),
//! connections in total and per space, handshake time.
//!
//! The modules, from the socket inwards: `listener` accepts and routes, `http` reads
//! and answers requests, `upgrade` checks `/notify` and starts a `connection` (whose
//! frames `ws` reads and writes, holding memory only while one is in flight),
//! `publish` serves `POST /publish`; both hand messages to `fanout`, which delivers
//! through `hub` (this node's rooms, each member's `outbox`) and `backplane` (Redis, the
//! other nodes). `quota` holds the rate limiters and connection counts, `node` what all
//! of them share. Clients that offer the subprotocol `tsugi-notify.v1` get the JSON
//! frames of `protocol` (sequences, presence, recovery from `history`, or from Redis).

pub mod backplane;
pub mod cli;
pub mod config;
mod connection;
mod error;
mod fanout;
pub mod history;
pub mod http;
pub mod hub;
mod listener;
pub mod logging;
pub mod metrics;
mod node;
pub mod outbox;
pub mod protocol;
mod publish;
mod quota;
pub mod server;
pub mod shutdown;
pub mod systemd;
pub mod tls;
pub mod upgrade;
pub mod ws;

/// The tests' CA (rcgen), for unit tests of TLS.
#[cfg(test)]
#[path = "../tests/ca/mod.rs"]
mod test_ca;

pub use config::{Config, Limits, LogFormat};
pub use error::Error;
pub use server::{Running, Server};
