//! The HTTP side of a connection: read one request within bounds, route it, and either
//! answer it (`/healthz`, refusals) or accept the WebSocket upgrade on `/notify`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tsugi_notify_core::{Room, MAX_ROOM_BYTES, MAX_TOKEN_BYTES};

use crate::metrics::Refusal;

/// Largest request head (request line and headers) accepted; larger is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers accepted; more is 431.
const MAX_HEADERS: usize = 48;
/// Most query parameters looked at; more is 400.
const MAX_QUERY_PARAMS: usize = 32;

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query (after `?`), if any.
    pub query: Option<String>,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes read past the head (a request body, or a client's first frame).
    pub rest: Vec<u8>,
}

impl Request {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    pub fn header_has(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed or the socket failed before a whole head arrived.
    Closed,
    /// Not HTTP/1.1.
    Malformed,
    /// Over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    TooLarge,
    /// Not within the handshake timeout.
    Timeout,
}

/// Reads one request head within `timeout`, bounded in size.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Request, ReadError> {
    tokio::time::timeout(timeout, read_head(stream))
        .await
        .unwrap_or(Err(ReadError::Timeout))
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(ReadError::TooLarge);
        }
        let want = (MAX_HEAD_BYTES - buf.len()).min(4096);
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = match stream.read(&mut buf[start..]).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => n,
        };
        buf.truncate(start + n);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                let (Some(method), Some(target)) = (req.method, req.path) else {
                    return Err(ReadError::Malformed);
                };
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                    None => (target.to_owned(), None),
                };
                let headers = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                    .collect();
                return Ok(Request {
                    method: method.to_owned(),
                    path,
                    query,
                    headers,
                    rest: buf[len..].to_vec(),
                });
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
            Err(_) => return Err(ReadError::Malformed),
        }
    }
}

/// `%XX`-decodes a query component. `+` stays `+` (browsers encode spaces as `%20`,
/// and a raw legacy token may hold `+`). `None` on a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// What `/notify?token=T&room=R` asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct NotifyQuery {
    /// The token (absent: empty, refused as an invalid token).
    pub token: String,
    /// The room; absent and empty are the default room.
    pub room: Room,
}

/// Parses the query of `/notify`. Unknown parameters are ignored; a repeated `token`
/// or `room`, a bad escape, or too many parameters is a bad request.
pub fn parse_notify_query(query: Option<&str>) -> Result<NotifyQuery, Refusal> {
    let mut token: Option<String> = None;
    let mut room: Option<String> = None;
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
            _ => {}
        }
    }
    Ok(NotifyQuery {
        token: token.unwrap_or_default(),
        room: Room::new(room.as_deref().unwrap_or("")).map_err(|_| Refusal::RoomTooLong)?,
    })
}

/// The status, reason phrase and body of a refusal.
pub fn refusal_response(why: Refusal) -> (u16, &'static str, &'static str) {
    match why {
        Refusal::InvalidToken => (403, "Forbidden", "invalid token\n"),
        Refusal::Origin => (403, "Forbidden", "origin not allowed\n"),
        Refusal::BadRequest => (
            400,
            "Bad Request",
            "bad request: expected GET /notify?token=...&room=... with a WebSocket upgrade\n",
        ),
        Refusal::RoomTooLong => (400, "Bad Request", "room name longer than 256 bytes\n"),
        Refusal::NotFound => (404, "Not Found", "not found\n"),
        Refusal::Method => (405, "Method Not Allowed", "method not allowed\n"),
        Refusal::HeadersTooLarge => (
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Refusal::Capacity => (503, "Service Unavailable", "server full, try again later\n"),
        Refusal::SpaceCapacity => (
            503,
            "Service Unavailable",
            "too many connections for this link, try again later\n",
        ),
        Refusal::TokenCapacity => (
            429,
            "Too Many Requests",
            "too many connections with this token; reload the page\n",
        ),
        Refusal::UserCapacity => (
            429,
            "Too Many Requests",
            "too many connections for this user; close other tabs\n",
        ),
        Refusal::ShuttingDown => (503, "Service Unavailable", "shutting down\n"),
        // Never sent: an evicted socket is dropped without an answer (like a timeout).
        Refusal::Evicted => (503, "Service Unavailable", "server busy, try again\n"),
        Refusal::Timeout => (408, "Request Timeout", "request timeout\n"),
    }
}

/// `/healthz`: 200 with `body`, or only its head for `HEAD`.
pub async fn health<S: AsyncWrite + Unpin>(stream: &mut S, req: &Request, body: &str) {
    let head_only = req.method == "HEAD";
    write_response(
        stream,
        200,
        "OK",
        "text/plain; charset=utf-8",
        body,
        head_only,
    )
    .await;
}

/// Writes a complete plain-text response and closes the write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
) {
    write_response(stream, status, reason, content_type, body, false).await;
}

async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.flush().await?;
        stream.shutdown().await
    };
    // A client that does not read its refusal does not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// Writes a refusal.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, why: Refusal) {
    let (status, reason, body) = refusal_response(why);
    respond(stream, status, reason, "text/plain; charset=utf-8", body).await;
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

/// The 101 response. No extension (permessage-deflate is never negotiated) and no
/// subprotocol.
pub fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Whether the request's `Origin` is allowed (`allowed` empty: any, or none sent).
pub fn origin_allowed(req: &Request, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.header("origin") {
        Some(o) => {
            let o = o.trim_end_matches('/').to_ascii_lowercase();
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

    #[tokio::test]
    async fn head_is_bounded() {
        let big = format!("GET /notify HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        let mut r = big.as_bytes();
        assert_eq!(
            read_request(&mut r, Duration::from_secs(1))
                .await
                .unwrap_err(),
            ReadError::TooLarge
        );
        let mut r = &b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\n\r\nextra"[..];
        let req = read_request(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (req.path.as_str(), req.query.as_deref()),
            ("/x", Some("y=1"))
        );
        assert_eq!(req.rest, b"extra");
        let mut r = &b"NOT HTTP\r\n\r\n"[..];
        assert_eq!(
            read_request(&mut r, Duration::from_secs(1))
                .await
                .unwrap_err(),
            ReadError::Malformed
        );
    }
}
