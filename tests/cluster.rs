//! More than one node: three daemons share a real redis-server (started here on a free
//! loopback port). Delivery across nodes is exactly once, never an echo, never a leak;
//! with Redis stopped each node still serves its own clients and says the backplane is
//! down; with Redis back, cross-node delivery resumes; PHP's WebSocket::publish reaches
//! browsers on every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tsugi_notify_core::{Keyring, Plaintext, Scope, Tokens};
use tsugi_notifyd::{Config, Running, Server};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const SECRET: &str = "cluster-secret";
const SITE: &str = "https://tsugi.example.edu";

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn node(redis_port: u16) -> Running {
    let mut c = Config::for_loopback(SECRET).unwrap();
    c.redis = Some(tsugi_notifyd::config::Redis {
        url: format!("redis://127.0.0.1:{redis_port}/"),
        password: None,
        ca_pem: None,
    });
    c.limits.messages_per_second = 100_000;
    c.limits.burst = 100_000;
    c.limits.bytes_per_second = 1 << 30;
    c.limits.burst_bytes = 1 << 30;
    c.limits.max_connections_per_token = 1 << 20;
    c.limits.max_connections_per_user = 1 << 20;
    Server::bind(c)
        .await
        .unwrap()
        .start(CancellationToken::new())
        .unwrap()
}

fn token(link: &str, user: &str) -> String {
    let p = Plaintext::new(SITE, link, None, Some(user)).unwrap();
    Tokens::new(Keyring::new([SECRET]).unwrap())
        .mint(&p, Scope::Browser)
        .unwrap()
}

async fn connect(addr: SocketAddr, token: &str, room: &str) -> Ws {
    let url = format!("ws://{addr}/notify?token={token}&room={room}");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake")
        .0
}

async fn next(ws: &mut Ws, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exactly_once_survive_redis_restart_and_take_php_publish() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let nodes = [node(port).await, node(port).await, node(port).await];
    for n in &nodes {
        wait_until("backplane up", || n.metrics.backplane_is_up()).await;
    }

    // 36 clients spread over the nodes, 2 links x 2 rooms.
    let mut clients = Vec::new();
    for i in 0..36usize {
        let node = i % 3;
        let link = ["1", "2"][(i / 3) % 2];
        let room = ["a", "b"][(i / 6) % 2];
        let ws = connect(nodes[node].addr, &token(link, &format!("u{i}")), room).await;
        clients.push(((link, room), node, ws));
    }
    // Every node subscribed to every space it has members in (both here).
    for n in &nodes {
        wait_until("subscriptions", || n.metrics.backplane_channel_count() == 2).await;
    }
    let per = 10;
    for (i, (_, _, ws)) in clients.iter_mut().enumerate() {
        for k in 0..per {
            ws.feed(Message::text(format!("{i}:{k}"))).await.unwrap();
        }
        ws.flush().await.unwrap();
    }
    let groups: Vec<_> = clients.iter().map(|(g, _, _)| *g).collect();
    for (i, (group, _, ws)) in clients.iter_mut().enumerate() {
        let expected: HashSet<String> = groups
            .iter()
            .enumerate()
            .filter(|(j, g)| *j != i && *g == group)
            .flat_map(|(j, _)| (0..per).map(move |k| format!("{j}:{k}")))
            .collect();
        let mut got: HashMap<String, usize> = HashMap::new();
        while got.len() < expected.len() {
            let Some(m) = next(ws, Duration::from_secs(5)).await else {
                break;
            };
            *got.entry(m).or_default() += 1;
        }
        assert_eq!(
            next(ws, Duration::from_millis(100)).await,
            None,
            "client {i}: extra message"
        );
        assert!(
            got.values().all(|n| *n == 1),
            "client {i}: duplicates {got:?}"
        );
        let keys: HashSet<String> = got.into_keys().collect();
        assert_eq!(keys, expected, "client {i}: missing or leaked messages");
    }

    // Redis goes away: every node keeps serving its own clients.
    redis.kill();
    for n in &nodes {
        wait_until("backplane down", || !n.metrics.backplane_is_up()).await;
        assert_eq!(health(n.addr).await, "ok\nbackplane: down\n");
    }
    for n in &nodes {
        let mut a = connect(n.addr, &token("3", "x"), "local").await;
        let mut b = connect(n.addr, &token("3", "y"), "local").await;
        a.send(Message::text("local only")).await.unwrap();
        assert_eq!(
            next(&mut b, Duration::from_secs(5)).await.as_deref(),
            Some("local only")
        );
    }

    // Redis comes back on the same port: cross-node delivery resumes.
    let mut a = connect(nodes[0].addr, &token("4", "a"), "r").await;
    let mut b = connect(nodes[1].addr, &token("4", "b"), "r").await;
    let restarted = Instant::now();
    let _redis = Redis::start(redis.port);
    let mut n = 0;
    let resumed = loop {
        n += 1;
        a.send(Message::text(format!("probe {n}"))).await.unwrap();
        if let Some(m) = next(&mut b, Duration::from_millis(100)).await {
            assert!(m.starts_with("probe "));
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "delivery did not resume"
        );
    };
    println!(
        "cross-node delivery resumed {} ms after redis-server restarted",
        resumed.as_millis()
    );
    for n in &nodes {
        wait_until("backplane up again", || n.metrics.backplane_is_up()).await;
        assert_eq!(health(n.addr).await, "ok\nbackplane: up\n");
    }

    // PHP's WebSocket::publish, posted to node 2, reaches browsers on nodes 0 and 1.
    let mut c = connect(nodes[2].addr, &token("4", "c"), "r").await;
    while next(&mut b, Duration::from_millis(50)).await.is_some() {}
    wait_until("node 2 subscribed", || {
        nodes[2].metrics.backplane_channel_count() >= 1
    })
    .await;
    let so = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/libtsugi_websocket.so");
    assert!(so.exists(), "build the extension first (make test does)");
    let code = format!(
        "$CFG = new stdClass; $CFG->wwwroot = '{SITE}'; $CFG->websocket_secret = '{SECRET}'; \
         $CFG->websocket_url = 'ws://127.0.0.1:{}'; \
         var_export(Tsugi\\Core\\WebSocket::publish((object) ['link' => (object) ['id' => 4]], 'r', 'from php'));",
        nodes[2].addr.port()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("php")
            .arg("-d")
            .arg(format!("extension={}", so.display()))
            .arg("-r")
            .arg(code)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "true",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ws in [&mut a, &mut b, &mut c] {
        let mut got = None;
        while let Some(m) = next(ws, Duration::from_secs(5)).await {
            if m == "from php" {
                got = Some(m);
                break;
            }
        }
        assert_eq!(got.as_deref(), Some("from php"));
    }
}
