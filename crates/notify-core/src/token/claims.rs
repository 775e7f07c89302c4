//! What both token formats produce and check against: the verified result, its scope
//! and format, and the size and clock-skew limits. The formats (`v1`, `legacy`) and the
//! policy above them (`Tokens`) use these; nothing here uses them.

use crate::error::{Error, Rejection, Result};
use crate::model::{Plaintext, Room};

/// Longest token accepted, in bytes (either format).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// What a token authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A browser's WebSocket connection (no `scp` claim).
    Browser,
    /// The server-side publish API (`"scp":"publish"`).
    Publish,
    /// The server-side presence API, reading who is in a room (`"scp":"presence"`).
    Presence,
}

impl Scope {
    pub(crate) fn claim(self) -> Option<&'static str> {
        match self {
            Scope::Browser => None,
            Scope::Publish => Some("publish"),
            Scope::Presence => Some("presence"),
        }
    }
}

/// The format a token came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HS256 JWT.
    V1,
    /// tsugi-php's AES-256-CBC + HMAC-SHA256 token.
    Legacy,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who it was minted for; `to_string()` is what `decodeToken` returns.
    pub plaintext: Plaintext,
    /// Which format it came in.
    pub format: Format,
    /// `iat` (v1 only).
    pub issued_at: Option<i64>,
    /// `exp` (v1 tokens that expire).
    pub expires_at: Option<i64>,
    /// What it authorizes.
    pub scope: Scope,
    /// The one room it is good for (`rom`, v1 only); `None`: every room of its space.
    pub room: Option<Room>,
}

impl Verified {
    /// Keeps the token for use in `room`: it must be bound to no room, or to exactly
    /// this one (byte for byte; the default room is the empty name). Otherwise
    /// [`Error::InvalidToken`] with [`Rejection::Room`].
    pub fn for_room(self, room: &Room) -> Result<Verified> {
        match &self.room {
            Some(bound) if bound != room => Err(Error::InvalidToken(Rejection::Room)),
            _ => Ok(self),
        }
    }
}
