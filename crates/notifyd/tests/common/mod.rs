//! Helpers for the daemon's tests: a server on a free loopback port, tokens, a real
//! WebSocket client (tokio-tungstenite), raw HTTP for refusals and the publish API,
//! waiting for a condition, and a real redis-server child process. The root package's
//! tests (tests/cross.rs, tests/cluster.rs) use them too, through `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tsugi_notify_core::{Keyring, Plaintext, Scope, Tokens};
use tsugi_notifyd::metrics::Metrics;
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

/// `config` serving wss:// for `host` with `cert`/`key` (PEM files), the files looked at
/// every `check_every` for a renewal (`None`: only on reload).
pub fn on_wss(
    mut config: Config,
    host: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    check_every: Option<Duration>,
) -> Config {
    config.url = tsugi_notify_core::WebsocketUrl::parse(&format!("wss://{host}:443")).unwrap();
    config.tls = Some(tsugi_notifyd::tls::TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        check_every,
        host: Some(host.to_owned()),
    });
    config
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

/// A publish token (the whole space) for link `link` of site `https://site.example`.
pub fn publish_token(link: &str) -> String {
    let p = Plaintext::new("https://site.example", link, Some("course"), Some("u")).unwrap();
    tokens().mint(&p, Scope::Publish).unwrap()
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

/// Posts `body` to the publish API, with `auth` as the bearer token; the status and body.
pub async fn post_publish(addr: SocketAddr, auth: Option<&str>, body: &str) -> (u16, String) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_http(addr, req.as_bytes()).await
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

/// The next text message, or `None` when none (or something else) comes within `wait`.
pub async fn next_text(ws: &mut Ws, wait: Duration) -> Option<String> {
    match recv_within(ws, wait).await {
        Some(Message::Text(t)) => Some(t.to_string()),
        _ => None,
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

/// How long a polling helper waits between two looks.
const POLL: Duration = Duration::from_millis(20);

/// Waits for `f`, failing after `within`.
pub async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Tries `f` until it gives a value (a connection accepted, say), failing after
/// `within`.
pub async fn eventually<T, F>(what: &str, within: Duration, mut f: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The value of the row `row` of the metrics (its name and labels as rendered, e.g.
/// `tsugi_notify_messages_dropped_total{reason="rate_limit"}`); 0 when absent.
pub fn metric(metrics: &Metrics, row: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(row)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

pub async fn send(ws: &mut Ws, m: Message) {
    ws.send(m).await.unwrap();
}

/// Client `i` (socket `i`, in group `groups[i]`) sends `per` messages `i:k`; then each
/// must receive every message of the other members of its group exactly once, and
/// nothing else: no echo, no leak from another group, no duplicate.
pub async fn exactly_once_in_groups<G: PartialEq>(groups: &[G], sockets: &mut [Ws], per: usize) {
    assert_eq!(groups.len(), sockets.len());
    for (i, ws) in sockets.iter_mut().enumerate() {
        for k in 0..per {
            ws.feed(Message::text(format!("{i}:{k}"))).await.unwrap();
        }
        ws.flush().await.unwrap();
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let expected: HashSet<String> = groups
            .iter()
            .enumerate()
            .filter(|(j, g)| *j != i && *g == &groups[i])
            .flat_map(|(j, _)| (0..per).map(move |k| format!("{j}:{k}")))
            .collect();
        let mut got: HashMap<String, usize> = HashMap::new();
        while got.len() < expected.len() {
            let Some(m) = next_text(ws, Duration::from_secs(5)).await else {
                break;
            };
            *got.entry(m).or_default() += 1;
        }
        // Nothing more arrives after the expected set.
        if let Some(extra) = recv_within(ws, Duration::from_millis(100)).await {
            panic!("client {i} got an extra message {extra:?}");
        }
        for (m, n) in &got {
            assert_eq!(*n, 1, "client {i} got {m} {n} times");
        }
        let keys: HashSet<String> = got.into_keys().collect();
        let leaked: Vec<_> = keys.difference(&expected).collect();
        assert!(leaked.is_empty(), "client {i} got {leaked:?}: leaked");
        assert_eq!(keys.len(), expected.len(), "client {i} missed messages");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real redis-server on loopback, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// redis-server on a free port with `conf` (a redis.conf body; `port`/`tls-port`
    /// are added).
    pub fn start(name: &str, conf: &str, tls: bool) -> RedisServer {
        RedisServer::start_on(name, free_port(), conf, tls)
    }

    /// The same on `port` (a restart where the daemons expect it).
    pub fn start_on(name: &str, port: u16, conf: &str, tls: bool) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("notifyd-redis-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports = if tls {
            format!("port 0\ntls-port {port}\n")
        } else {
            format!("port {port}\n")
        };
        let file = dir.join("redis.conf");
        std::fs::write(
            &file,
            format!(
                "bind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n{ports}{conf}",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(POLL);
        }
        RedisServer { child, port, dir }
    }

    /// Freezes it (SIGSTOP: a Redis that hangs without closing anything), or thaws it.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Stops it now (Redis going away under the daemons).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Plain (no TLS, no password) Redis on loopback at `port`.
pub fn plain(port: u16) -> tsugi_notifyd::config::Redis {
    tsugi_notifyd::config::Redis {
        url: format!("redis://127.0.0.1:{port}/"),
        password: None,
        ca_pem: None,
    }
}

/// A daemon of the tests' config with `redis` as its backplane.
pub async fn node(redis: tsugi_notifyd::config::Redis) -> Running {
    let mut c = config();
    c.redis = Some(redis);
    start(c).await
}

/// Opens a socket that offers the protocol tsugi-notify.v1, resuming after `since` of
/// `epoch` when given; checks that the daemon selected it.
pub async fn open_protocol(
    addr: SocketAddr,
    token: &str,
    room: Option<&str>,
    resume: Option<(u64, &str)>,
) -> Ws {
    let mut u = url(addr, token, room);
    if let Some((since, epoch)) = resume {
        u.push_str(&format!("&since={since}&epoch={}", enc(epoch)));
    }
    let mut req = u.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "chat, tsugi-notify.v1".parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("accepted");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("tsugi-notify.v1")
    );
    ws
}

/// The next frame of the protocol, parsed (within 15 s).
pub async fn frame(ws: &mut Ws) -> serde_json::Value {
    let text = next_text(ws, Duration::from_secs(15))
        .await
        .expect("a frame");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Frames until one of type `kind` (returned), skipping the others.
pub async fn frame_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let f = frame(ws).await;
        if f["type"] == kind {
            return f;
        }
    }
}
