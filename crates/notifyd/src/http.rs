//! HTTP/1.1 for both listeners: read one request head within bounds, and write a
//! complete response (an answer, a refusal, `/healthz`) and close.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::Refusal;

/// Largest request head (request line and headers) accepted; larger is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers accepted; more is 431.
const MAX_HEADERS: usize = 48;

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
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
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

/// The status and body of a refusal.
pub fn refusal_response(why: Refusal) -> (u16, &'static str) {
    const BAD_REQUEST: &str =
        "bad request: expected GET /notify?token=...&room=... with a WebSocket upgrade\n";
    const SPACE_FULL: &str = "too many connections for this link, try again later\n";
    const TOKEN_FULL: &str = "too many connections with this token; reload the page\n";
    const USER_FULL: &str = "too many connections for this user; close other tabs\n";
    match why {
        Refusal::InvalidToken => (403, "invalid token\n"),
        Refusal::Origin => (403, "origin not allowed\n"),
        Refusal::BadRequest => (400, BAD_REQUEST),
        Refusal::RoomTooLong => (400, "room name longer than 256 bytes\n"),
        Refusal::NotFound => (404, "not found\n"),
        Refusal::Method => (405, "method not allowed\n"),
        Refusal::HeadersTooLarge => (431, "request head too large\n"),
        Refusal::Capacity => (503, "server full, try again later\n"),
        Refusal::SpaceCapacity => (503, SPACE_FULL),
        Refusal::TokenCapacity => (429, TOKEN_FULL),
        Refusal::UserCapacity => (429, USER_FULL),
        Refusal::ConnectRate => (429, "connecting too often; try again in a moment\n"),
        Refusal::ShuttingDown => (503, "shutting down\n"),
        // Never sent: an evicted socket is dropped without an answer (like a timeout).
        Refusal::Evicted => (503, "server busy, try again\n"),
        Refusal::Timeout => (408, "request timeout\n"),
        Refusal::PlainHttp => (
            400,
            "this port speaks TLS: use https:// or wss:// (websocket_url is wss://)\n",
        ),
        // Never sent: a failed TLS handshake has no channel to answer on.
        Refusal::Tls => (400, "TLS handshake failed\n"),
    }
}

/// An `Origin` header or `allowed_origins` entry as compared: lower case, without a
/// trailing `/`.
pub fn origin_key(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

/// The reason phrase of a status this daemon sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// `/healthz`, the same on both listeners: 200 with `body` for `GET`, the head alone for
/// `HEAD`; any other method gets 405, returned so that the caller may count it.
/// `Tsugi-Notify-Time` (this daemon's clock, Unix seconds: a proxy in front replaces
/// `Date` with its own) and `Tsugi-Notify-Clock-Skew` (its `clock_skew_secs`) let a
/// web server tell how its tokens will be judged.
pub async fn health<S: AsyncWrite + Unpin>(
    stream: &mut S,
    req: &Request,
    body: &str,
    clock_skew_secs: u64,
) -> Result<(), Refusal> {
    match req.method.as_str() {
        "GET" | "HEAD" => {
            let head_only = req.method == "HEAD";
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let extra = format!(
                "Tsugi-Notify-Time: {now}\r\nTsugi-Notify-Clock-Skew: {clock_skew_secs}\r\n"
            );
            write_response(stream, 200, TEXT, body, head_only, &extra).await;
            Ok(())
        }
        _ => {
            refuse(stream, Refusal::Method).await;
            Err(Refusal::Method)
        }
    }
}

/// The content type of plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Writes a complete response (`content_type`: [`TEXT`], JSON, the metrics format) with
/// the status's reason phrase, and closes the write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
) {
    write_response(stream, status, content_type, body, false, "").await;
}

async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
    extra_headers: &str,
) {
    let reason = reason_phrase(status);
    // Date: the daemon's clock, which v1 tokens' `iat` is judged by (the doctor compares
    // it with the web server's).
    let date = http_date(std::time::SystemTime::now());
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\n{date}{extra_headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // Head and body in one write: one segment, so that a client which parses the
    // answer as soon as its head arrives (tungstenite's handshake does) has the body too.
    let mut answer = head.into_bytes();
    if !head_only {
        answer.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    // A client that does not read its refusal does not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// `Date: ...\r\n`, or nothing for a clock outside what the header can say (before
/// 1970, after 9999), which the formatter would panic on.
fn http_date(now: std::time::SystemTime) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => format!("Date: {}\r\n", httpdate::fmt_http_date(now)),
        _ => String::new(),
    }
}

/// Writes a refusal.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, why: Refusal) {
    let (status, body) = refusal_response(why);
    respond(stream, status, TEXT, body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn responses_carry_the_daemons_date() {
        let mut out = Vec::new();
        respond(&mut out, 200, TEXT, "ok\n").await;
        let text = String::from_utf8(out).unwrap();
        let date = text
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .expect("a Date header");
        let at = httpdate::parse_http_date(date).unwrap();
        let off = std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default();
        assert!(off.as_secs() <= 2, "{date}");
        let epoch = std::time::UNIX_EPOCH;
        assert_eq!(http_date(epoch - Duration::from_secs(1)), "");
        assert_eq!(http_date(epoch + Duration::from_secs(253_402_300_800)), "");
        assert_eq!(http_date(epoch), "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
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
