//! `tsugi-notifyd`: the Tsugi notification daemon.
//!
//! Browsers connect to `GET /notify?token=T&room=R`; the token (minted by Tsugi's
//! `WebSocket::getToken`) is checked before the upgrade, and every message a browser
//! sends goes to every other browser of the same space (site + link) and room, never
//! back to the sender and never anywhere else. Everything is bounded: message size and
//! rate, each receiver's queue (a reader that stops is closed, never waited for),
//! connections in total and per space, handshake time.

pub mod backplane;
pub mod cli;
pub mod config;
mod connection;
pub mod handshake;
pub mod hub;
mod limits;
mod listener;
pub mod metrics;
mod publish;
mod server;
pub mod shutdown;
pub mod systemd;

pub use config::{Config, Limits, LogFormat};
pub use server::{Running, Server};
