//! Helpers for the daemon's tests: a server on a free loopback port, tokens, a real
//! WebSocket client (tokio-tungstenite), and raw HTTP for refusals.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tsugi_notify_core::{Keyring, Plaintext, Scope, Tokens};
use tsugi_notifyd::{Config, Running, Server};

pub const SECRET: &str = "test-secret-for-notifyd";
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A config on 127.0.0.1, any port, generous rates (tests of the rate limit set theirs).
pub fn config() -> Config {
    let mut c = Config::for_loopback(SECRET).unwrap();
    c.limits.messages_per_second = 100_000;
    c.limits.burst = 100_000;
    c.limits.bytes_per_second = 1 << 30;
    c.limits.burst_bytes = 1 << 30;
    // Tests of these caps set their own.
    c.limits.max_connections_per_token = 1 << 20;
    c.limits.max_connections_per_user = 1 << 20;
    c
}

pub async fn start(config: Config) -> Running {
    Server::bind(config)
        .await
        .unwrap()
        .start(CancellationToken::new())
        .unwrap()
}

pub fn tokens() -> Tokens {
    Tokens::new(Keyring::new([SECRET]).unwrap())
}

/// A browser token for link `link` of site `https://site.example`, user `user`.
pub fn token(link: &str, user: &str) -> String {
    token_on("https://site.example", link, user)
}

pub fn token_on(site: &str, link: &str, user: &str) -> String {
    let p = Plaintext::new(site, link, Some("course"), Some(user)).unwrap();
    tokens().mint(&p, Scope::Browser).unwrap()
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn url(addr: SocketAddr, token: &str, room: Option<&str>) -> String {
    let mut u = format!("ws://{addr}/notify?token={}", enc(token));
    if let Some(r) = room {
        u.push_str(&format!("&room={}", enc(r)));
    }
    u
}

pub async fn connect(addr: SocketAddr, token: &str, room: Option<&str>) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(url(addr, token, room))
        .await
        .expect("handshake accepted");
    assert_eq!(resp.status(), 101);
    ws
}

/// The HTTP status of a refused handshake.
pub async fn refused_status(addr: SocketAddr, token: &str, room: Option<&str>) -> u16 {
    match tokio_tungstenite::connect_async(url(addr, token, room)).await {
        Ok(_) => panic!("handshake unexpectedly accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

pub async fn connect_with_origin(addr: SocketAddr, token: &str, origin: &str) -> Result<Ws, u16> {
    let mut req = url(addr, token, None).into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Sends raw bytes as an HTTP request and reads the whole response.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The next data message, or `None` when none comes within `wait`.
pub async fn recv_within(ws: &mut Ws, wait: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return None,
            Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

pub async fn recv(ws: &mut Ws) -> Message {
    recv_within(ws, Duration::from_secs(5))
        .await
        .expect("a message within 5 s")
}

/// Reads until the server's close frame; returns its code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(f.code.into()),
            Ok(Some(Ok(Message::Close(None)))) => return None,
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Waits for `f`, failing after `within`.
pub async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn send(ws: &mut Ws, m: Message) {
    ws.send(m).await.unwrap();
}
