//! `GET /notify?token=T&room=R`: checks a request in order (upgrade headers, query,
//! origin, token, quotas), answers 101 and runs the connection as a task of its own.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, Instrument};
use tsugi_notify_core::{Format, Room, Scope, MAX_ROOM_BYTES, MAX_TOKEN_BYTES};

use crate::connection::{Connection, Progress, Sender};
use crate::http::{percent_decode, Request};
use crate::hub::{Member, Refused};
use crate::metrics::Refusal;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::protocol::{self, Resume};
use crate::ws::Reader;

/// What a `/notify` request asks, once checked.
struct Checked {
    /// The `Sec-WebSocket-Accept` answer.
    accept: String,
    room: Room,
    space: tsugi_notify_core::Space,
    /// Keys of the token and (v1) of the user, for the per-token and per-user counts.
    token_key: u64,
    user_key: Option<u64>,
    /// It offered the protocol.
    json: bool,
    /// The user, as presence shows it (`None`: anonymous).
    user: Option<Arc<str>>,
    /// What it asks to recover (the protocol only; boxed: the connection's task holds it).
    resume: Option<Box<Resume>>,
}

/// Checks a `/notify` request in order (upgrade headers, query, origin, token,
/// capacity) and upgrades it, or gives the stream back with the refusal. `stream` is
/// the TCP socket, or the TLS session on it, either way reporting the TCP socket's
/// write progress to `progress`.
pub(crate) async fn upgrade<S>(
    mut stream: S,
    progress: Arc<Progress>,
    req: Request,
    node: &Arc<Node>,
) -> Result<(), (Refusal, S)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let checked = (|| {
        let accept = websocket_accept(&req)?;
        let query = parse_notify_query(req.query.as_deref())?;
        if !origin_allowed(&req, &node.config.allowed_origins) {
            return Err(Refusal::Origin);
        }
        let json = protocol::offered(&req);
        let verified = node
            .tokens
            .verify(&query.token, Scope::Browser)
            .and_then(|v| v.for_room(&query.room))
            .map_err(|e| {
                node.token_refused("browser", &query.token, &e);
                Refusal::InvalidToken
            })?;
        if node.shutdown.is_cancelled() {
            return Err(Refusal::ShuttingDown);
        }
        let token_key = node.key_hasher.hash_one(query.token.as_str());
        // Only a v1 token's user is a user: a legacy token holds the course there.
        let p = &verified.plaintext;
        let user_key = match (verified.format, p.user()) {
            (Format::V1, Some(user)) => Some(node.key_hasher.hash_one((p.wwwroot(), user))),
            _ => None,
        };
        // Only a v1 token names a user; presence shows the others as anonymous.
        // (A user id longer than any a site gives is shown as anonymous too.)
        let user = match verified.format {
            Format::V1 => p
                .user()
                .filter(|u| u.len() <= crate::backplane::MAX_USER_BYTES)
                .map(Arc::<str>::from),
            Format::Legacy => None,
        };
        let resume = if json {
            query.resume()?.map(Box::new)
        } else {
            None
        };
        Ok(Checked {
            accept,
            room: query.room,
            space: p.space(),
            token_key,
            user_key,
            json,
            user,
            resume,
        })
    })();
    let Checked {
        accept,
        room,
        space,
        token_key,
        user_key,
        json,
        user,
        resume,
    } = match checked {
        Ok(v) => v,
        Err(why) => return Err((why, stream)),
    };
    // One page render mints one token: its sockets are bounded, so one page (or one
    // student with its token) cannot fill a link's space or the daemon.
    let limits = &node.config.limits;
    let Some(token_slot) = node.per_token.try_take(token_key) else {
        return Err((Refusal::TokenCapacity, stream));
    };
    // A student who reloads the page for fresh tokens is still one user.
    let user_slot = match user_key.map(|k| node.per_user.try_take(k)) {
        Some(None) => return Err((Refusal::UserCapacity, stream)),
        Some(Some(s)) => Some(s),
        None => None,
    };
    // One sender is one user (v1), or one token (legacy, or no user): all its sockets
    // share one rate limiter, so the rule that one sender cannot overflow a reader
    // holds however many sockets it opens.
    let rate = match user_key {
        Some(k) => Sender::new(Arc::clone(&node.per_user), k),
        None => Sender::new(Arc::clone(&node.per_token), token_key),
    };
    if !rate.may_connect(limits) {
        return Err((Refusal::ConnectRate, stream));
    }
    let Some(slot) = node.slots.try_take() else {
        return Err((Refusal::Capacity, stream));
    };
    let id = node.next_id.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::for_limits(limits));
    let member = Member {
        id,
        outbox: outbox.clone(),
        user,
        json,
    };
    let membership = match node.fanout.hub().join(space, room, member) {
        Ok(m) => m,
        Err(Refused::SpaceFull) => return Err((Refusal::SpaceCapacity, stream)),
        Err(Refused::Closing) => return Err((Refusal::ShuttingDown, stream)),
    };
    // Only the bytes a client sent past its request head are kept.
    let rest = req.rest;
    let response = switching_protocols(&accept, json);
    if stream.write_all(response.as_bytes()).await.is_err() {
        return Ok(());
    }
    node.metrics.accepted();
    // Every count this connection holds is released when the task ends, whichever way.
    // (The gauge last: when it says a connection is gone, its slots are free.)
    let held = (slot, token_slot, user_slot, node.metrics.open_connection());
    debug!(space = %membership.space(), "connected");
    // The connection runs as a task of its own, so that what the handshake needed is
    // freed now rather than held for the connection's lifetime.
    let mut conn = Connection {
        node: Arc::clone(node),
        preamble: Vec::new(),
        io: stream,
        reader: Reader::new(node.config.limits.max_message_bytes, rest),
        progress,
        rate,
        membership,
        outbox,
    };
    let task = async move {
        if json {
            // Boxed: the task of every connection, raw ones too, is as large as its
            // largest await, and this one holds a question to Redis.
            Box::pin(opening(&mut conn, resume.as_deref())).await;
        }
        conn.run().await;
        drop(held);
        debug!("disconnected");
    };
    node.tracker.spawn(task.in_current_span());
    Ok(())
}

/// A client of the protocol is told where the room stands, and what it missed, before
/// any live frame; live ones that recovery wrote are skipped.
async fn opening<S>(conn: &mut Connection<S>, resume: Option<&Resume>) {
    let node = &conn.node;
    let opening = node.fanout.open(&conn.membership, resume).await;
    let (frames, covered) = opening.frames(
        &conn.membership.who(),
        resume.map(|r| r.since),
        node.config.limits.presence_max_users,
    );
    conn.outbox.skip_through(covered);
    conn.preamble = frames;
}

/// Most query parameters looked at; more is 400.
const MAX_QUERY_PARAMS: usize = 32;

/// What `/notify?token=T&room=R` asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct NotifyQuery {
    /// The token (absent: empty, refused as an invalid token).
    pub token: String,
    /// The room; absent and empty are the default room.
    pub room: Room,
    /// `since` and `epoch` as sent: what a client of the protocol asks to recover
    /// (read only for such a client: a raw client's are ignored like any unknown
    /// parameter).
    pub since: Option<String>,
    /// See `since`.
    pub epoch: Option<String>,
}

impl NotifyQuery {
    /// What a client of the protocol asks to recover; a malformed `since` is a bad
    /// request (an `epoch` that is not one of ours is answered "epoch").
    pub fn resume(&self) -> Result<Option<Resume>, Refusal> {
        protocol::parse_resume(self.since.as_deref(), self.epoch.clone())
            .map_err(|_| Refusal::BadRequest)
    }
}

/// Parses the query of `/notify`. Unknown parameters are ignored; a repeated `token`
/// or `room`, a bad escape, or too many parameters is a bad request.
pub fn parse_notify_query(query: Option<&str>) -> Result<NotifyQuery, Refusal> {
    let mut token: Option<String> = None;
    let mut room: Option<String> = None;
    let mut since: Option<String> = None;
    let mut epoch: Option<String> = None;
    let query = query.unwrap_or("");
    for (n, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
        if n >= MAX_QUERY_PARAMS {
            return Err(Refusal::BadRequest);
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "token" => {
                if token.is_some() || value.len() > 3 * MAX_TOKEN_BYTES {
                    return Err(Refusal::BadRequest);
                }
                let raw = percent_decode(value).ok_or(Refusal::BadRequest)?;
                token = Some(String::from_utf8(raw).map_err(|_| Refusal::BadRequest)?);
            }
            "room" => {
                if room.is_some() {
                    return Err(Refusal::BadRequest);
                }
                let raw = percent_decode(value).ok_or(Refusal::BadRequest)?;
                if raw.len() > MAX_ROOM_BYTES {
                    return Err(Refusal::RoomTooLong);
                }
                room = Some(String::from_utf8(raw).map_err(|_| Refusal::BadRequest)?);
            }
            "since" | "epoch" => {
                let slot = if key == "since" {
                    &mut since
                } else {
                    &mut epoch
                };
                if slot.is_some() || value.len() > 64 {
                    return Err(Refusal::BadRequest);
                }
                *slot = Some(value.to_owned());
            }
            _ => {}
        }
    }
    Ok(NotifyQuery {
        token: token.unwrap_or_default(),
        room: Room::new(room.as_deref().unwrap_or("")).map_err(|_| Refusal::RoomTooLong)?,
        since,
        epoch,
    })
}

/// Checks the upgrade headers of a WebSocket request; returns the accept key.
pub fn websocket_accept(req: &Request) -> Result<String, Refusal> {
    if req.method != "GET" {
        return Err(Refusal::Method);
    }
    let key = req.header("sec-websocket-key").ok_or(Refusal::BadRequest)?;
    let upgrade_ok = req.header_has("upgrade", "websocket")
        && req.header_has("connection", "upgrade")
        && req.header("sec-websocket-version") == Some("13");
    if !upgrade_ok || key.len() != 24 {
        return Err(Refusal::BadRequest);
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The 101 response. No extension (permessage-deflate is never negotiated); the
/// subprotocol `tsugi-notify.v1` when the client offered it (`json`).
pub fn switching_protocols(accept: &str, json: bool) -> String {
    let protocol = if json {
        format!("Sec-WebSocket-Protocol: {}\r\n", protocol::SUBPROTOCOL)
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
}

/// Whether the request's `Origin` is allowed (`allowed` empty: any, or none sent).
pub fn origin_allowed(req: &Request, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.header("origin") {
        Some(o) => {
            let o = crate::http::origin_key(o);
            allowed.contains(&o)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_notify_query(Some("token=a%2Bb%3D&room=%20r%C3%A9")).unwrap();
        assert_eq!(q.token, "a+b=");
        assert_eq!(q.room.as_str(), " ré");
        let q = parse_notify_query(Some("token=a+b&x=1&room=")).unwrap();
        assert_eq!(q.token, "a+b");
        assert!(q.room.is_default());
        assert_eq!(parse_notify_query(None).unwrap().token, "");
        assert_eq!(
            parse_notify_query(Some("token=a&token=b")),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse_notify_query(Some("token=%zz")),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse_notify_query(Some("room=%ff")),
            Err(Refusal::BadRequest)
        );
        let long = format!("token=t&room={}", "r".repeat(257));
        assert_eq!(parse_notify_query(Some(&long)), Err(Refusal::RoomTooLong));
        let many = (0..10_000)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse_notify_query(Some(&many)), Err(Refusal::BadRequest));
    }
}
