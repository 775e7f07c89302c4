//! Errors of the token core.

use std::fmt;

/// Why a token was refused. Never shown to a client (they see only "invalid token");
/// meant for a server's debug log. It never holds any part of the token or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// Empty, or longer than [`crate::MAX_TOKEN_BYTES`].
    Size,
    /// Not three non-empty dot-separated parts.
    Shape,
    /// A part is not strict base64url without padding (or a legacy token not strict base64).
    Encoding,
    /// No secret produced a matching signature or MAC.
    Signature,
    /// The header is not a JSON object, `alg` is not `HS256`, or `typ` is not `JWT`.
    Header,
    /// A claim is missing, of the wrong type, or holds a forbidden value.
    Claims,
    /// Expired (past the leeway).
    Expired,
    /// Issued in the future (past the leeway).
    NotYetValid,
    /// The token's scope is not the one this use needs.
    Scope,
    /// The token is bound to a room (`rom`) other than the one it was used for.
    Room,
    /// A legacy token, and legacy tokens are not accepted here.
    LegacyDisabled,
    /// A legacy token whose length cannot be IV + MAC + whole AES blocks.
    LegacyLength,
    /// A legacy token whose AES padding is wrong.
    LegacyPadding,
    /// A legacy token whose plaintext is not UTF-8 with at least four `::` pieces.
    LegacyPlaintext,
}

impl Rejection {
    /// Every check, in declaration order (for metrics, which export each from 0).
    pub const ALL: [Rejection; 14] = [
        Rejection::Size,
        Rejection::Shape,
        Rejection::Encoding,
        Rejection::Signature,
        Rejection::Header,
        Rejection::Claims,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::Scope,
        Rejection::Room,
        Rejection::LegacyDisabled,
        Rejection::LegacyLength,
        Rejection::LegacyPadding,
        Rejection::LegacyPlaintext,
    ];

    /// A stable snake_case name, for metrics labels and test vectors.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Size => "size",
            Rejection::Shape => "shape",
            Rejection::Encoding => "encoding",
            Rejection::Signature => "signature",
            Rejection::Header => "header",
            Rejection::Claims => "claims",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::Scope => "scope",
            Rejection::Room => "room",
            Rejection::LegacyDisabled => "legacy_disabled",
            Rejection::LegacyLength => "legacy_length",
            Rejection::LegacyPadding => "legacy_padding",
            Rejection::LegacyPlaintext => "legacy_plaintext",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Size => "token size out of bounds",
            Rejection::Shape => "not three non-empty parts",
            Rejection::Encoding => "bad base64",
            Rejection::Signature => "signature does not match any secret",
            Rejection::Header => "header not HS256/JWT",
            Rejection::Claims => "claims malformed",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "issued in the future",
            Rejection::Scope => "wrong scope",
            Rejection::Room => "bound to another room",
            Rejection::LegacyDisabled => "legacy tokens not accepted",
            Rejection::LegacyLength => "legacy token length",
            Rejection::LegacyPadding => "legacy token padding",
            Rejection::LegacyPlaintext => "legacy plaintext malformed",
        })
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token was refused. Deliberately says only "invalid token"; see [`Error::rejection`].
    #[error("invalid token")]
    InvalidToken(Rejection),
    /// An id (link, context or user) cannot be put in a token: empty, containing `::`,
    /// starting with `:`, or (for the link) holding a control character.
    #[error("the {0} id cannot be put in a token")]
    InvalidId(&'static str),
    /// The wwwroot is empty or holds a control character.
    #[error("wwwroot cannot be put in a token")]
    InvalidWwwroot,
    /// No secret was given, or one of them is empty.
    #[error("a non-empty secret is required")]
    NoSecret,
    /// A room name longer than [`crate::MAX_ROOM_BYTES`].
    #[error("room name longer than 256 bytes")]
    RoomTooLong,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl Error {
    /// The reason a token was refused, for a server-side debug log.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Error::InvalidToken(r) => Some(*r),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_check_once_in_order() {
        for (i, r) in Rejection::ALL.iter().enumerate() {
            // A variant added to the enum and not to ALL fails the match below.
            let index = match r {
                Rejection::Size => 0,
                Rejection::Shape => 1,
                Rejection::Encoding => 2,
                Rejection::Signature => 3,
                Rejection::Header => 4,
                Rejection::Claims => 5,
                Rejection::Expired => 6,
                Rejection::NotYetValid => 7,
                Rejection::Scope => 8,
                Rejection::Room => 9,
                Rejection::LegacyDisabled => 10,
                Rejection::LegacyLength => 11,
                Rejection::LegacyPadding => 12,
                Rejection::LegacyPlaintext => 13,
            };
            assert_eq!(index, i, "{r:?}");
        }
    }
}
