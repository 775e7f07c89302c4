//! The server side's HTTP API. `POST /publish`: a Tsugi server sends a message to every
//! browser of a space and room. `GET /presence?room=R`: who is in a room.
//!
//! Authorized by a v1 token with `"scp":"publish"` (or `"presence"`) for that space,
//! sent as `Authorization: Bearer <token>`; `/publish` takes the JSON body
//! `{"room": "...", "message": "..."}`. A token bound to a room (`rom`) is good only
//! for that room.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{PublishAnswer, PublishRequest, Room, Scope, Verified};

use crate::http::{refusal_response, Request};
use crate::metrics::Refusal;
use crate::node::Node;

/// The answer to a publish request.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

fn error(status: u16, message: &str) -> Outcome {
    Outcome {
        status,
        body: serde_json::json!({ "error": message }).to_string() + "\n",
    }
}

/// 403 for a refused token: counted by check, logged at debug level without the token.
fn invalid_token(node: &Node, token: &str, e: &tsugi_notify_core::Error) -> Outcome {
    node.token_refused("publish", token, e);
    error(403, "invalid token")
}

/// Reads the body (bounded) and broadcasts it; the answer says how many members of this
/// node got it.
pub async fn handle<S: AsyncRead + Unpin>(
    stream: &mut S,
    req: Request,
    node: &Arc<Node>,
) -> Outcome {
    let max = node.config.limits.max_message_bytes;
    // The JSON encoding of a message can be up to 6 bytes per byte (\u00XX).
    let max_body = max.saturating_mul(6).saturating_add(1024);
    if req.method != "POST" {
        return error(405, "use POST");
    }
    let (token, verified) = match bearer(&req, node, Scope::Publish) {
        Ok(v) => v,
        Err(out) => return out,
    };
    let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return error(411, "Content-Length required");
    };
    if len > max_body {
        return error(413, "body too large");
    }
    let mut body = req.rest;
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut rest)).await;
        if !matches!(read, Ok(Ok(_))) {
            return error(400, "incomplete body");
        }
        body.extend_from_slice(&rest);
    }
    body.truncate(len);
    let Ok(parsed) = serde_json::from_slice::<PublishRequest>(&body) else {
        return error(400, r#"expected {"room": "...", "message": "..."}"#);
    };
    if parsed.message.len() > max {
        return error(413, "message larger than max_message_bytes");
    }
    let Ok(room) = Room::new(&parsed.room) else {
        return error(400, refusal_response(Refusal::RoomTooLong).1.trim_end());
    };
    // A token bound to one room publishes to that room only.
    let verified = match verified.for_room(&room) {
        Ok(v) => v,
        Err(e) => return invalid_token(node, &token, &e),
    };
    let space = verified.plaintext.space();
    node.metrics.received(parsed.message.len());
    let msg = Message::text(parsed.message);
    let (delivered, seq) = node.fanout.publish(&space, &room, &msg).await;
    // `seq` only when the message has one: a room without the protocol's clients
    // answers as it always did.
    Outcome {
        status: 200,
        body: PublishAnswer { delivered, seq }.to_json() + "\n",
    }
}

/// The bearer token of a request, checked for `scope`.
fn bearer(req: &Request, node: &Node, scope: Scope) -> Result<(String, Verified), Outcome> {
    let Some(token) = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
    else {
        return Err(error(401, "missing Authorization: Bearer <token>"));
    };
    match node.tokens.verify(&token, scope) {
        Ok(v) => Ok((token, v)),
        Err(e) => Err(invalid_token(node, &token, &e)),
    }
}

/// `GET /presence?room=R`: who is in the room, on every node.
pub async fn presence(req: Request, node: &Arc<Node>) -> Outcome {
    if req.method != "GET" {
        return error(405, "use GET");
    }
    let (token, verified) = match bearer(&req, node, Scope::Presence) {
        Ok(v) => v,
        Err(out) => return out,
    };
    let room = match crate::upgrade::parse_notify_query(req.query.as_deref()) {
        Ok(q) => q.room,
        Err(why) => return error(400, refusal_response(why).1.trim_end()),
    };
    let verified = match verified.for_room(&room) {
        Ok(v) => v,
        Err(e) => return invalid_token(node, &token, &e),
    };
    let space = verified.plaintext.space();
    let presence = node.fanout.presence(&space, &room).await;
    Outcome {
        status: 200,
        body: presence.api_body(room.as_str(), node.config.limits.presence_max_users),
    }
}
