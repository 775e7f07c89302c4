//! The plaintext / space / room model.
//!
//! A plaintext is `WWWROOT::LINK::CONTEXT::USER`. WWWROOT may itself contain `::` (an
//! IPv6 literal such as `http://[::1]:8888`), so a plaintext is split from the right.

use std::fmt;

use crate::error::{Error, Result};

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_BYTES: usize = 256;

const SEP: &str = "::";
const NO_CONTEXT: &str = "no_context";
const NO_USER: &str = "no_user";

/// Who a token was minted for: site, link, and optionally context (course) and user.
///
/// Held as its rendered text, `WWWROOT::LINK::CONTEXT::USER`, with the pieces' bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    text: String,
    /// End of WWWROOT, end of LINK, end of CONTEXT (each followed by `::`).
    ends: [usize; 3],
    has_context: bool,
    has_user: bool,
}

/// Can this id be put in a token so that a plaintext splits back into the same pieces?
/// Refuses empty ids, `::` anywhere, and a leading `:` (which would merge with the
/// separator before it when the plaintext is split from the right).
fn id_fits(id: &str) -> bool {
    !id.is_empty() && !id.contains(SEP) && !id.starts_with(':')
}

impl Plaintext {
    /// The plaintext of a launch, checked so that every token minted from it verifies.
    ///
    /// Refuses an empty wwwroot or one with control characters, and ids that are empty,
    /// contain `::` or start with `:`; the link id may not hold control characters.
    pub fn new(
        wwwroot: &str,
        link: &str,
        context: Option<&str>,
        user: Option<&str>,
    ) -> Result<Self> {
        if wwwroot.is_empty() || wwwroot.chars().any(char::is_control) {
            return Err(Error::InvalidWwwroot);
        }
        if !id_fits(link) || link.chars().any(char::is_control) {
            return Err(Error::InvalidId("link"));
        }
        if context.is_some_and(|c| !id_fits(c)) {
            return Err(Error::InvalidId("context"));
        }
        if user.is_some_and(|u| !id_fits(u)) {
            return Err(Error::InvalidId("user"));
        }
        Ok(Self::from_parts(wwwroot, link, context, user))
    }

    /// Builds a plaintext from parts already checked by a verifier.
    pub(crate) fn from_parts(
        wwwroot: &str,
        link: &str,
        context: Option<&str>,
        user: Option<&str>,
    ) -> Self {
        let c = context.unwrap_or(NO_CONTEXT);
        let u = user.unwrap_or(NO_USER);
        let mut text = String::with_capacity(wwwroot.len() + link.len() + c.len() + u.len() + 6);
        text.push_str(wwwroot);
        let w = text.len();
        text.push_str(SEP);
        text.push_str(link);
        let l = text.len();
        text.push_str(SEP);
        text.push_str(c);
        let cx = text.len();
        text.push_str(SEP);
        text.push_str(u);
        Plaintext {
            text,
            ends: [w, l, cx],
            has_context: context.is_some(),
            has_user: user.is_some(),
        }
    }

    /// Splits a plaintext string from the right: the last piece is USER, the one before
    /// CONTEXT, the one before LINK, everything before that WWWROOT. `no_context` and
    /// `no_user` read as absent. `None` when there are fewer than four pieces.
    pub fn parse(plain: &str) -> Option<Self> {
        let (rest, user) = plain.rsplit_once(SEP)?;
        let (rest, context) = rest.rsplit_once(SEP)?;
        let (wwwroot, link) = rest.rsplit_once(SEP)?;
        Some(Self::from_parts(
            wwwroot,
            link,
            Some(context).filter(|c| *c != NO_CONTEXT),
            Some(user).filter(|u| *u != NO_USER),
        ))
    }

    /// The whole plaintext, `WWWROOT::LINK::CONTEXT::USER`: what `decodeToken` returns.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The site, `$CFG->wwwroot` of the minting server.
    pub fn wwwroot(&self) -> &str {
        &self.text[..self.ends[0]]
    }
    /// The link (resource link) id.
    pub fn link(&self) -> &str {
        &self.text[self.ends[0] + SEP.len()..self.ends[1]]
    }
    /// The context (course) id, if the launch had one.
    pub fn context(&self) -> Option<&str> {
        self.has_context
            .then(|| &self.text[self.ends[1] + SEP.len()..self.ends[2]])
    }
    /// The user id, if the launch had one.
    pub fn user(&self) -> Option<&str> {
        self.has_user
            .then(|| &self.text[self.ends[2] + SEP.len()..])
    }

    /// The space every browser of this link shares: `WWWROOT::LINK`.
    pub fn space(&self) -> Space {
        Space(self.text[..self.ends[1]].to_owned())
    }
}

impl fmt::Display for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A notification space, `WWWROOT::LINK`: every browser of one link in one course.
/// Spaces never see each other's messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Space(String);

impl Space {
    /// `getSpaceFromToken`: the space of a plaintext string, or `None` when it has fewer
    /// than four `::` pieces.
    pub fn from_plaintext(plain: &str) -> Option<Space> {
        let (rest, _user) = plain.rsplit_once(SEP)?;
        let (space, _context) = rest.rsplit_once(SEP)?;
        // Four pieces at least: the space itself must split once more.
        space.rsplit_once(SEP)?;
        Some(Space(space.to_owned()))
    }

    /// The space as a string, `WWWROOT::LINK`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room inside a space, chosen by the browser. Absent and empty are the same default
/// room; names compare byte for byte (`"1"`, `"01"` and `" 1"` are three rooms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Room(String);

impl Room {
    /// A room name of at most [`MAX_ROOM_BYTES`] bytes.
    pub fn new(name: &str) -> Result<Room> {
        if name.len() > MAX_ROOM_BYTES {
            return Err(Error::RoomTooLong);
        }
        Ok(Room(name.to_owned()))
    }

    /// The room name; empty for the default room.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the default room.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_splits_from_the_right() {
        let p = Plaintext::new("http://[::1]:8888", "42", None, Some("9")).unwrap();
        assert_eq!(p.to_string(), "http://[::1]:8888::42::no_context::9");
        assert_eq!(Plaintext::parse(&p.to_string()).unwrap(), p);
        assert_eq!(p.space().as_str(), "http://[::1]:8888::42");
        assert_eq!(
            Space::from_plaintext(&p.to_string()).unwrap().as_str(),
            "http://[::1]:8888::42"
        );
    }

    #[test]
    fn ids_that_cannot_round_trip_are_refused() {
        assert_eq!(
            Plaintext::new("w", "a::b", None, None).unwrap_err(),
            Error::InvalidId("link")
        );
        assert_eq!(
            Plaintext::new("w", "1", Some(":c"), None).unwrap_err(),
            Error::InvalidId("context")
        );
        assert_eq!(
            Plaintext::new("w", "1", None, Some("")).unwrap_err(),
            Error::InvalidId("user")
        );
        assert_eq!(
            Plaintext::new("", "1", None, None).unwrap_err(),
            Error::InvalidWwwroot
        );
        assert_eq!(
            Plaintext::new("w", "1\n", None, None).unwrap_err(),
            Error::InvalidId("link")
        );
        // A trailing colon is harmless to a right split.
        let p = Plaintext::new("w:", "l:", Some("c:"), Some("u:")).unwrap();
        assert_eq!(Plaintext::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn fewer_than_four_pieces_is_not_a_plaintext() {
        assert!(Plaintext::parse("a::b::c").is_none());
        assert!(Space::from_plaintext("a::b::c").is_none());
        assert!(Space::from_plaintext("").is_none());
        assert_eq!(
            Space::from_plaintext("a::b::c::d::e").unwrap().as_str(),
            "a::b::c"
        );
    }

    #[test]
    fn rooms_are_bounded_and_exact() {
        assert!(Room::new(&"x".repeat(256)).is_ok());
        assert_eq!(Room::new(&"x".repeat(257)).unwrap_err(), Error::RoomTooLong);
        assert_ne!(Room::new("1").unwrap(), Room::new("01").unwrap());
        assert!(Room::new("").unwrap().is_default());
    }
}
