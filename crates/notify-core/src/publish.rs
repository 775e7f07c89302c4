//! The body of `POST /publish`, one type for the side that sends it (the extension's
//! `publish()`) and the side that reads it (the daemon).

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

#[cfg(test)]
mod tests {
    use super::*;

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
