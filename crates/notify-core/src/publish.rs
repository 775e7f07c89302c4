//! The daemon's HTTP API, one type each for the side that writes it and the side that
//! reads it: the body of `POST /publish` (the extension's `publish()` writes it, the
//! daemon reads it) and the answers of `POST /publish` and `GET /presence` (the daemon
//! writes them, the extension's `publish()` and `presence()` read them).

use serde::{Deserialize, Serialize};

/// `{"room": "...", "message": "..."}`: a message for every browser of one room.
///
/// Read with `serde_json::from_slice::<PublishRequest>`: `room` may be left out (the
/// default room, the same as `""`), `message` is required, both must be strings, and
/// any other field refuses the body (serde's derive also reads the two fields as a
/// JSON array, `["room", "message"]`). The room name is not checked here: [`Room::new`]
/// checks it, as it does for a browser's `room`.
///
/// [`Room::new`]: crate::Room::new
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The room (`""`: the default room).
    #[serde(default)]
    pub room: String,
    /// The message, as the browsers receive it.
    pub message: String,
}

impl PublishRequest {
    /// A request for `message` in `room`.
    pub fn new(room: impl Into<String>, message: impl Into<String>) -> Self {
        PublishRequest {
            room: room.into(),
            message: message.into(),
        }
    }

    /// The JSON body, `{"room":...,"message":...}`.
    pub fn to_json(&self) -> String {
        // Two strings always serialize; the default is never reached.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The largest room sequence (JavaScript's safe integers: exact in JSON everywhere).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// The answer of `POST /publish`: `{"delivered": N, "seq": S}`, `seq` left out when the
/// message has no sequence (its room keeps no history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    /// Sockets of the answering node that got the message at once.
    #[serde(default)]
    pub delivered: u64,
    /// The message's sequence in its room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl PublishAnswer {
    /// The JSON answer.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The sequence of an answer: a whole number up to [`MAX_SEQ`]; `None` for anything
    /// else (no sequence, or not an answer).
    pub fn seq_of(answer: &[u8]) -> Option<u64> {
        serde_json::from_slice::<PublishAnswer>(answer)
            .ok()?
            .seq
            .filter(|s| *s <= MAX_SEQ)
    }
}

/// A user of a [`PresenceAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUser {
    /// The user id (from the tokens).
    pub user: String,
    /// Its sockets in the room.
    pub connections: u64,
}

/// The answer of `GET /presence?room=R`: who is in the room, on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceAnswer {
    /// The room asked.
    pub room: String,
    /// Users in the room.
    pub count: u64,
    /// Sockets in the room.
    pub connections: u64,
    /// Sockets without a user (legacy tokens).
    pub anonymous: u64,
    /// `users` does not list every user.
    pub truncated: bool,
    /// The users, at most the daemon's `presence_max_users`.
    pub users: Vec<PresenceUser>,
}

impl PresenceAnswer {
    /// The JSON answer.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The user ids of an answer for `room`; `None` for anything else.
    pub fn users_of(answer: &[u8], room: &str) -> Option<Vec<String>> {
        let answer = serde_json::from_slice::<PresenceAnswer>(answer).ok()?;
        (answer.room == room).then(|| answer.users.into_iter().map(|u| u.user).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_round_trip_and_anything_else_is_none() {
        let seq = PublishAnswer {
            delivered: 2,
            seq: Some(7),
        };
        assert_eq!(seq.to_json(), r#"{"delivered":2,"seq":7}"#);
        assert_eq!(PublishAnswer::seq_of(seq.to_json().as_bytes()), Some(7));
        let none = PublishAnswer {
            delivered: 2,
            seq: None,
        };
        assert_eq!(none.to_json(), r#"{"delivered":2}"#);
        for bad in [
            &b"{\"seq\":null}"[..],
            b"{\"seq\":\"7\"}",
            b"{\"seq\":9007199254740992}",
            b"[",
            b"{\"seq\":-1}",
        ] {
            assert_eq!(
                PublishAnswer::seq_of(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let p = PresenceAnswer {
            room: "r".into(),
            count: 1,
            connections: 2,
            anonymous: 0,
            truncated: false,
            users: vec![PresenceUser {
                user: "42".into(),
                connections: 2,
            }],
        };
        assert_eq!(
            p.to_json(),
            r#"{"room":"r","count":1,"connections":2,"anonymous":0,"truncated":false,"users":[{"user":"42","connections":2}]}"#
        );
        assert_eq!(
            PresenceAnswer::users_of(p.to_json().as_bytes(), "r"),
            Some(vec!["42".to_owned()])
        );
        assert_eq!(
            PresenceAnswer::users_of(p.to_json().as_bytes(), "other"),
            None
        );
        assert_eq!(PresenceAnswer::users_of(b"{\"room\":\"r\"}", "r"), None);
    }

    fn parse(body: &str) -> Option<PublishRequest> {
        serde_json::from_slice(body.as_bytes()).ok()
    }

    #[test]
    fn the_body_round_trips() {
        assert_eq!(
            PublishRequest::new("r", "a\"b").to_json(),
            r#"{"room":"r","message":"a\"b"}"#
        );
        let sent = PublishRequest::new("gr\u{e4}des", "line\none \u{e9}\u{1f600}\u{0}");
        assert_eq!(parse(&sent.to_json()), Some(sent));
        let default = PublishRequest::new("", "x");
        assert_eq!(parse(&default.to_json()), Some(default));
    }

    #[test]
    fn what_the_daemon_accepts() {
        assert_eq!(
            parse(r#"{"message":"x"}"#),
            Some(PublishRequest::new("", "x"))
        );
        assert_eq!(
            parse(r#"{"message":"x","room":"q"}"#),
            Some(PublishRequest::new("q", "x"))
        );
        assert_eq!(
            parse(r#" {"room":"q","message":"graded \u00e9"} "#),
            Some(PublishRequest::new("q", "graded \u{e9}"))
        );
        // serde's derive also takes a struct as an array of its fields, in order.
        assert_eq!(parse(r#"["q","x"]"#), Some(PublishRequest::new("q", "x")));
        for refused in [
            r#"{"room":"q"}"#,
            r#"{}"#,
            r#"{"room":5,"message":"x"}"#,
            r#"{"room":null,"message":"x"}"#,
            r#"{"message":{"a":1}}"#,
            r#"{"message":"x","extra":1}"#,
            r#"{"message":"x","message":"y"}"#,
            r#""x""#,
            r#"{"message":"x"} {}"#,
            "",
        ] {
            assert_eq!(parse(refused), None, "{refused}");
        }
    }
}
