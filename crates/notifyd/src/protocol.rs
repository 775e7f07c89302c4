//! The opt-in subprotocol `tsugi-notify.v1` (docs/protocol.md): its name, what a client
//! asks for in the URL, and the JSON frames the daemon sends. Raw clients never see any
//! of this.

use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::http::Request;

/// The subprotocol a client offers to get these frames.
pub const SUBPROTOCOL: &str = "tsugi-notify.v1";

/// The longest `epoch` a client may send back (ours are 16 hex digits).
const MAX_EPOCH: usize = 64;

pub use tsugi_notify_core::MAX_SEQ;

/// Whether the request offers our subprotocol (`Sec-WebSocket-Protocol`, any of its
/// comma-separated values, exact match as RFC 6455 wants).
pub fn offered(req: &Request) -> bool {
    req.headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == SUBPROTOCOL)
}

/// What a reconnecting client asks to recover: everything of the room after `since`
/// in the history named `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The last sequence the client saw.
    pub since: u64,
    /// The epoch it belongs to (`None`: not sent, which cannot be recovered).
    pub epoch: Option<String>,
}

/// Who a connection is, as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The user id of a v1 token; `None` for an anonymous socket (legacy tokens).
    pub user: Option<Arc<str>>,
    /// The socket's opaque id (node and connection).
    pub conn: Arc<str>,
}

/// A message as the protocol's clients get it, and as history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its place in the room (`None`: none could be given).
    pub seq: Option<u64>,
    /// The sender's user id (`None`: anonymous, or the server).
    pub from: Option<Arc<str>>,
    /// Sent by the server (`POST /publish`).
    pub server: bool,
    /// The payload, as raw clients get it.
    pub payload: Message,
}

/// The room's members now, on every node: each socket once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Every socket listed, sorted (by user, then socket).
    pub members: Vec<Identity>,
    /// Sockets counted but not listed (a node with more than `presence_max_users` in
    /// the room sends counts only).
    pub unlisted: Unlisted,
}

/// Counts of sockets a node did not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unlisted {
    /// Sockets.
    pub connections: u64,
    /// Distinct users among them (on that node).
    pub users: u64,
    /// Sockets without a user.
    pub anonymous: u64,
}

impl Presence {
    /// These sockets, listed.
    pub fn of(members: Vec<Identity>) -> Self {
        let mut p = Presence {
            members,
            unlisted: Unlisted::default(),
        };
        p.normalise();
        p
    }

    /// Adds another node's part.
    pub fn merge(&mut self, other: Presence) {
        self.members.extend(other.members);
        self.unlisted.connections += other.unlisted.connections;
        self.unlisted.users += other.unlisted.users;
        self.unlisted.anonymous += other.unlisted.anonymous;
        self.normalise();
    }

    /// The counts of these sockets, to stand for them unlisted.
    pub fn counts(&self) -> Unlisted {
        Unlisted {
            connections: self.members.len() as u64 + self.unlisted.connections,
            users: self.users().len() as u64 + self.unlisted.users,
            anonymous: self.anonymous() as u64 + self.unlisted.anonymous,
        }
    }

    /// Sorts and removes repeats (the same socket reported twice).
    pub fn normalise(&mut self) {
        self.members.sort();
        self.members.dedup();
    }

    /// Named users and their sockets, in order.
    fn users(&self) -> Vec<(&str, Vec<&str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for m in &self.members {
            let Some(user) = m.user.as_deref() else {
                continue;
            };
            match out.last_mut() {
                Some((u, conns)) if *u == user => conns.push(&m.conn),
                _ => out.push((user, vec![&m.conn])),
            }
        }
        out
    }

    fn anonymous(&self) -> usize {
        self.members.iter().filter(|m| m.user.is_none()).count()
    }

    /// The `presence` frame: every user and socket, or counts only past `max` sockets
    /// (or when a node sent counts only).
    pub fn frame(&self, max: usize) -> Message {
        let users = self.users();
        let counts = self.counts();
        let listed = (self.unlisted.connections == 0 && self.members.len() <= max).then(|| {
            users
                .iter()
                .map(|(u, conns)| serde_json::json!({ "user": u, "conns": conns }))
                .collect::<Vec<_>>()
        });
        json(&serde_json::json!({
            "type": "presence",
            "count": counts.users,
            "connections": counts.connections,
            "anonymous": counts.anonymous,
            "users": listed,
        }))
    }

    /// The answer of `GET /presence`: at most `max` users with their socket counts.
    pub fn api_body(&self, room: &str, max: usize) -> String {
        let users = self.users();
        let counts = self.counts();
        tsugi_notify_core::PresenceAnswer {
            room: room.to_owned(),
            count: counts.users,
            connections: counts.connections,
            anonymous: counts.anonymous,
            truncated: users.len() > max || self.unlisted.connections > 0,
            users: users
                .iter()
                .take(max)
                .map(|(u, conns)| tsugi_notify_core::PresenceUser {
                    user: (*u).to_owned(),
                    connections: conns.len() as u64,
                })
                .collect(),
        }
        .to_json()
            + "\n"
    }
}

/// Why a recovery failed (the `reason` of a `recovery` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecovered {
    /// Not the history `since` belongs to.
    Epoch,
    /// Messages after `since` are no longer kept.
    Trimmed,
    /// History cannot be read now, or is off.
    Unavailable,
}

impl Unrecovered {
    fn as_str(self) -> &'static str {
        match self {
            Unrecovered::Epoch => "epoch",
            Unrecovered::Trimmed => "trimmed",
            Unrecovered::Unavailable => "unavailable",
        }
    }
}

/// What a connection of the protocol is told when it opens.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    /// The room history's epoch.
    pub epoch: String,
    /// The room's last sequence when the socket joined.
    pub seq: u64,
    /// Who is in the room.
    pub presence: Presence,
    /// The answer to a resume: the missed messages, or why there are none.
    pub recovery: Option<Result<Vec<Stored>, Unrecovered>>,
}

impl Opening {
    /// The frames to write before any live one, in order, and the last sequence they
    /// cover: live messages up to it are not sent again.
    pub fn frames(
        &self,
        me: &Identity,
        since: Option<u64>,
        max_presence: usize,
    ) -> (Vec<Message>, u64) {
        let mut out = vec![json(&serde_json::json!({
            "type": "hello",
            "protocol": SUBPROTOCOL,
            "epoch": self.epoch,
            "seq": self.seq,
            "user": me.user.as_deref(),
            "conn": &*me.conn,
        }))];
        out.push(self.presence.frame(max_presence));
        // Live messages up to `seq` are not sent: the socket starts after them (and,
        // recovering, got them above).
        let covered = self.seq;
        match &self.recovery {
            None => {}
            Some(Ok(messages)) => {
                for m in messages {
                    out.push(message_frame(m, true));
                }
                out.push(json(&serde_json::json!({
                    "type": "recovery",
                    "recovered": true,
                    "since": since,
                    "count": messages.len(),
                })));
            }
            Some(Err(why)) => out.push(json(&serde_json::json!({
                "type": "recovery",
                "recovered": false,
                "since": since,
                "reason": why.as_str(),
            }))),
        }
        (out, covered)
    }
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: Option<u64>,
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    server: bool,
    data: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recovered: bool,
}

/// The `message` frame of a message (binary payloads in base64).
pub fn message_frame(m: &Stored, recovered: bool) -> Message {
    let (data, binary) = match &m.payload {
        Message::Text(t) => (std::borrow::Cow::Borrowed(t.as_str()), false),
        Message::Binary(b) => (
            std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
            true,
        ),
        _ => (std::borrow::Cow::Borrowed(""), false),
    };
    json(&MessageFrame {
        kind: "message",
        seq: m.seq,
        from: m.from.as_deref(),
        server: m.server,
        data,
        binary,
        recovered,
    })
}

/// The `ack` frame to a message's sender.
pub fn ack_frame(seq: Option<u64>) -> Message {
    json(&serde_json::json!({ "type": "ack", "seq": seq }))
}

/// A `join` or `leave` frame for one socket.
pub fn membership_frame(joined: bool, who: &Identity) -> Message {
    json(&serde_json::json!({
        "type": if joined { "join" } else { "leave" },
        "user": who.user.as_deref(),
        "conn": &*who.conn,
    }))
}

fn json<T: Serialize>(value: &T) -> Message {
    // Serialising these types cannot fail (string keys, no maps of other keys).
    Message::text(serde_json::to_string(value).unwrap_or_default())
}

/// A `since` that is not a whole number from 0 to [`MAX_SEQ`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSince;

/// Parses `since` and `epoch` of a `/notify` query; `Ok(None)` when `since` is absent.
pub fn parse_resume(
    since: Option<&str>,
    epoch: Option<String>,
) -> Result<Option<Resume>, BadSince> {
    let Some(since) = since else {
        return Ok(None);
    };
    let since: u64 = since.parse().map_err(|_| BadSince)?;
    if since > MAX_SEQ {
        return Err(BadSince);
    }
    let epoch = epoch.filter(|e| !e.is_empty() && e.len() <= MAX_EPOCH);
    Ok(Some(Resume { since, epoch }))
}

/// A fresh random epoch: 16 hex digits.
pub fn new_epoch() -> String {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one((std::time::SystemTime::now(), std::process::id()));
    format!("{r:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: Option<&str>, conn: &str) -> Identity {
        Identity {
            user: user.map(Arc::from),
            conn: Arc::from(conn),
        }
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let m = Stored {
            seq: Some(42),
            from: Some(Arc::from("42")),
            server: false,
            payload: Message::text("hé \"x\""),
        };
        assert_eq!(
            message_frame(&m, false).to_text().unwrap(),
            r#"{"type":"message","seq":42,"from":"42","data":"hé \"x\""}"#
        );
        let b = Stored {
            seq: None,
            from: None,
            server: true,
            payload: Message::binary(vec![0u8, 1, 2, 255]),
        };
        assert_eq!(
            message_frame(&b, true).to_text().unwrap(),
            r#"{"type":"message","seq":null,"from":null,"server":true,"data":"AAEC/w==","binary":true,"recovered":true}"#
        );
        let mut p = Presence::of(vec![
            who(Some("7"), "b"),
            who(None, "c"),
            who(Some("42"), "a2"),
            who(Some("42"), "a1"),
            who(Some("7"), "b"),
        ]);
        assert_eq!(
            p.frame(10).to_text().unwrap(),
            r#"{"type":"presence","count":2,"connections":4,"anonymous":1,"users":[{"user":"42","conns":["a1","a2"]},{"user":"7","conns":["b"]}]}"#
        );
        assert!(p.frame(3).to_text().unwrap().contains(r#""users":null"#));
        // Another node's counts only: no list, the counts added.
        p.merge(Presence {
            members: Vec::new(),
            unlisted: Unlisted {
                connections: 200,
                users: 150,
                anonymous: 3,
            },
        });
        assert_eq!(
            p.frame(1000).to_text().unwrap(),
            r#"{"type":"presence","count":152,"connections":204,"anonymous":4,"users":null}"#
        );
        p.unlisted = Unlisted::default();
        assert_eq!(
            p.api_body("r", 1),
            "{\"room\":\"r\",\"count\":2,\"connections\":4,\"anonymous\":1,\"truncated\":true,\"users\":[{\"user\":\"42\",\"connections\":2}]}\n"
        );
        assert_eq!(
            membership_frame(false, &who(None, "c")).to_text().unwrap(),
            r#"{"type":"leave","user":null,"conn":"c"}"#
        );
    }

    #[test]
    fn resume_parameters() {
        assert_eq!(parse_resume(None, Some("e".into())), Ok(None));
        assert_eq!(
            parse_resume(Some("40"), Some("ab".into())),
            Ok(Some(Resume {
                since: 40,
                epoch: Some("ab".into())
            }))
        );
        assert_eq!(
            parse_resume(Some("40"), Some(String::new())),
            Ok(Some(Resume {
                since: 40,
                epoch: None
            }))
        );
        for bad in ["-1", "x", "9007199254740992", ""] {
            assert_eq!(parse_resume(Some(bad), None), Err(BadSince), "{bad}");
        }
    }
}
