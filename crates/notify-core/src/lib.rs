//! The notification token contract shared by the `tsugi_websocket` PHP extension and the
//! `tsugi-notifyd` daemon.
//!
//! Everything about tokens lives here and nowhere else: minting and verifying v1 tokens
//! (HS256 JWTs with expiry, scope, an optional room binding and key rotation) and legacy tokens (tsugi-php's
//! AES-256-CBC + HMAC-SHA256 format), the plaintext / space / room model, and the
//! parsing of Tsugi's `websocket_url` setting. The crate does no I/O beyond asking the
//! operating system for random bytes when it mints a legacy token, and it never panics
//! on any input.
//!
//! ```
//! use tsugi_notify_core::{FixedClock, Keyring, Plaintext, Scope, Tokens};
//!
//! let keyring = Keyring::new(["opensource"]).unwrap();
//! let tokens = Tokens::new(keyring).with_clock(FixedClock(1_700_000_000));
//! let launch = Plaintext::new("https://tsugi.example", "42", Some("7"), Some("9")).unwrap();
//! let token = tokens.mint(&launch, Scope::Browser).unwrap();
//! let verified = tokens.verify(&token, Scope::Browser).unwrap();
//! assert_eq!(verified.plaintext.to_string(), "https://tsugi.example::42::7::9");
//! assert_eq!(verified.plaintext.space().as_str(), "https://tsugi.example::42");
//! ```
//!
//! The wire formats are specified in `token-format.md`; the known-answer vectors in
//! `tests/vectors/tokens.json` are checked by this crate's tests and by the PHP suite.

mod clock;
mod error;
mod model;
mod publish;
mod secret;
mod site;
mod token;
mod url;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, Rejection, Result};
pub use model::{Plaintext, Room, Space, MAX_ROOM_BYTES};
pub use publish::{PresenceAnswer, PresenceUser, PublishAnswer, PublishRequest, MAX_SEQ};
pub use secret::Keyring;
pub use site::{CfgString, PublishEndpoint, Site, PUBLISH_CALL_TTL_SECS, PUBLISH_TTL_SECS};
pub use token::{Format, Scope, Tokens, Verified, DEFAULT_TTL_SECS, LEEWAY_SECS, MAX_TOKEN_BYTES};
pub use url::WebsocketUrl;
